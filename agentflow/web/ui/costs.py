"""The Costs tab: spend and tokens by day, model, provider, workflow and node; today against the budgets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.observability.costs import CostRow, Ledger, spend
from agentflow.spec.errors import SpecErrors
from agentflow.spec.validate import load_workflow
from agentflow.store.base import WorkflowStore
from agentflow.web.ui import queries
from agentflow.web.ui.chat import Updates, engine_of

if TYPE_CHECKING:
    from agentflow.web.server import AppState

WINDOWS = {"Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "All time": 0}
DEFAULT_WINDOW = "Last 30 days"


@dataclass
class CostsTab:
    state: AppState
    window: gr.Dropdown
    summary: gr.Markdown
    cost_by_day: gr.BarPlot
    tokens_by_day: gr.BarPlot
    by_model: gr.BarPlot
    by_workflow: gr.BarPlot
    models: gr.Dataframe
    workflows: gr.Dataframe
    budgets: gr.Markdown
    by_provider: gr.BarPlot
    by_node: gr.BarPlot
    ledger: gr.Dataframe

    @property
    def outputs(self) -> list[Component]:
        return [
            self.budgets,
            self.by_provider,
            self.by_node,
            self.ledger,
            self.summary,
            self.cost_by_day,
            self.tokens_by_day,
            self.by_model,
            self.by_workflow,
            self.models,
            self.workflows,
        ]

    def refresh(self, window: str) -> Updates:
        store = engine_of(self.state).flow.store
        days = WINDOWS.get(window, 30) or None
        total = queries.totals(store, days)
        daily = queries.spend_by_day(store, days)
        models = queries.spend_by_model(store, days)
        workflows = queries.spend_by_workflow(store, days)
        summary = (
            f"**{window}:** {queries.money(total['cost_usd'])} over {total['runs']} runs, {total['tokens']:,} tokens."
        )
        if total["runs"] and not total["cost_usd"] and total["tokens"]:
            summary += (
                " Tokens without a price: local models are free, or set prices with AGENTFLOW_PRICES "
                '(`{"ollama/llama3.2": {"input": 0.1, "output": 0.4}}`, USD per million tokens).'
            )
        start = queries.since(days)
        providers = _frame(spend(store, by="provider", since=start), "provider")
        nodes = _frame(spend(store, by="node", since=start), "node")
        return {
            self.budgets: budget_status(engine_of(self.state).flow.engine.services.ledger, store),
            self.by_provider: providers,
            self.by_node: nodes,
            self.ledger: _frame(spend(store, by="model", since=start), "model"),
            self.summary: summary,
            self.cost_by_day: daily,
            self.tokens_by_day: daily,
            self.by_model: models,
            self.by_workflow: workflows,
            self.models: models,
            self.workflows: workflows,
        }


def _frame(rows: list[CostRow], key: str) -> pd.DataFrame:
    columns = [key, "calls", "input_tokens", "output_tokens", "cost_usd"]
    return pd.DataFrame([list(asdict(row).values()) for row in rows], columns=columns)


def daily_budgets(store: WorkflowStore) -> dict[str, float]:
    """Each saved workflow's `spec.budget.daily_usd`, from its latest version."""
    found: dict[str, float] = {}
    for stored in store.list_workflows():
        try:
            workflow = load_workflow(stored.source, stored.name, network_tools=())
        except SpecErrors:
            continue
        if workflow.spec.budget.daily_usd is not None:
            found[workflow.name] = workflow.spec.budget.daily_usd
    return found


def budget_status(ledger: Ledger | None, store: WorkflowStore) -> str:
    """Today's spend against the daily budgets; a tripped one is an alert naming it."""
    if ledger is None:
        return ""
    rows = ledger.status(daily_budgets(store))
    today = f"**Today:** {queries.money(ledger.today())} spent on models."
    if not rows:
        return (
            today + " No daily budget is set (AGENTFLOW_DAILY_BUDGET_USD, or `budget: {daily_usd: …}` in a workflow)."
        )
    lines = [today, "", "| budget | spent today | limit | |", "|---|---|---|---|"]
    for row in rows:
        mark = "🛑 **tripped: new runs are refused, running ones stop**" if row["tripped"] else "ok"
        lines.append(
            f"| {row['budget']} | {queries.money(float(row['spent_usd']))} | {queries.money(float(row['limit_usd']))} "
            f"| {mark} |"
        )
    return "\n".join(lines)


def build(state: AppState) -> CostsTab:
    budgets = gr.Markdown(elem_id="costs-budgets")
    with gr.Row():
        window = gr.Dropdown(list(WINDOWS), value=DEFAULT_WINDOW, label="Period", scale=1)
        summary = gr.Markdown(elem_id="costs-summary")
    with gr.Row():
        cost_by_day = gr.BarPlot(x="day", y="cost_usd", title="Spend by day (USD)", y_title="USD", x_label_angle=-45)
        tokens_by_day = gr.BarPlot(x="day", y="tokens", title="Tokens by day", x_label_angle=-45)
    with gr.Row():
        by_model = gr.BarPlot(x="model", y="cost_usd", color="provider", title="Spend by model (USD)", y_title="USD")
        by_workflow = gr.BarPlot(x="workflow", y="cost_usd", title="Spend by workflow (USD)", y_title="USD")
    with gr.Row():
        by_provider = gr.BarPlot(x="provider", y="cost_usd", title="Spend by provider (USD)", y_title="USD")
        by_node = gr.BarPlot(x="node", y="cost_usd", title="Spend by node (USD)", y_title="USD", x_label_angle=-45)
    ledger = gr.Dataframe(interactive=False, label="Ledger by model: calls, tokens in and out, cost")
    with gr.Row():
        models = gr.Dataframe(interactive=False, label="By model")
        workflows = gr.Dataframe(interactive=False, label="By workflow")
    tab = CostsTab(
        state,
        window,
        summary,
        cost_by_day,
        tokens_by_day,
        by_model,
        by_workflow,
        models,
        workflows,
        budgets,
        by_provider,
        by_node,
        ledger,
    )
    window.change(tab.refresh, inputs=window, outputs=tab.outputs, api_visibility="private", concurrency_limit=None)
    return tab
