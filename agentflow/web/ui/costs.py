"""The Costs tab: the cost ledger by day, source, workflow, node, model and provider; today against the budgets.

Every figure is read from the ledger (`llm_calls`): a run's model calls and the
chat assistant's own, the latter as a series and a line of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from gradio.blocks import Block

from agentflow.observability.costs import Ledger, start_of_day
from agentflow.spec.errors import SpecErrors
from agentflow.spec.validate import load_workflow
from agentflow.store.base import LedgerStore, WorkflowStore
from agentflow.web.ui import queries
from agentflow.web.ui.chat import Updates, engine_of

if TYPE_CHECKING:
    from agentflow.web.server import AppState

WINDOWS = {"Last 7 days": 7, "Last 30 days": 30, "Last 90 days": 90, "All time": 0}
DEFAULT_WINDOW = "Last 30 days"
COLORS = {"runs": "#2563eb", "assistant": "#f59e0b", "analyses": "#10b981"}
USD_AXIS = "$,.4~f"  # d3 formats: $0.0015, $12.5
TOKEN_AXIS = "~s"  # 1.2k, 3M
NO_CALLS_YET = (
    "**No model calls yet** — run a workflow from the Chat (try `/new summarize`, then Run), or describe one "
    "to the assistant. Every model call lands here, the assistant's own included."
)


@dataclass
class CostsTab:
    state: AppState
    window: gr.Dropdown
    budgets: gr.Markdown
    summary: gr.Markdown
    empty: gr.Markdown
    charts: gr.Column
    cost_by_day: gr.BarPlot
    tokens_by_day: gr.BarPlot
    by_workflow: gr.BarPlot
    by_model: gr.BarPlot
    sources: gr.Dataframe
    workflows: gr.Dataframe
    nodes: gr.Dataframe
    models: gr.Dataframe

    @property
    def outputs(self) -> list[Block]:
        return [
            self.budgets,
            self.summary,
            self.empty,
            self.charts,
            self.cost_by_day,
            self.tokens_by_day,
            self.by_workflow,
            self.by_model,
            self.sources,
            self.workflows,
            self.nodes,
            self.models,
        ]

    def refresh(self, window: str) -> Updates:
        flow = engine_of(self.state).flow
        store = flow.store
        days = WINDOWS.get(window, 30) or None
        total = queries.totals(store, queries.since(days))["all"]
        updates: Updates = {
            self.budgets: budget_status(flow.engine.services.ledger, store),
            self.summary: summary(store, window, days),
        }
        if not total.calls:
            ever = queries.totals(store, 0.0)["all"].calls
            message = f"**No model calls in the {window.lower()}** — choose a longer period." if ever else NO_CALLS_YET
            return {
                **updates,
                self.empty: gr.update(value=message, visible=True),
                self.charts: gr.update(visible=False),
            }
        priced = total.cost_usd > 0
        workflows = queries.ledger_frame(store, "workflow", days)
        models = queries.ledger_frame(store, "model", days)
        return {
            **updates,
            self.empty: gr.update(visible=False),
            self.charts: gr.update(visible=True),
            self.cost_by_day: gr.update(value=queries.spend_by_day(store, days), visible=priced),
            self.tokens_by_day: queries.spend_by_day(store, days),
            self.by_workflow: gr.update(value=workflows, visible=priced),
            self.by_model: gr.update(value=models, visible=priced),
            self.sources: table(queries.ledger_frame(store, "source", days)),
            self.workflows: table(workflows),
            self.nodes: table(queries.ledger_frame(store, "node", days)),
            self.models: table(models),
        }


def summary(store: LedgerStore, window: str, days: int | None) -> str:
    """The window in one line: spend, calls (the assistant's apart), tokens, runs started."""
    start = queries.since(days)
    found = queries.totals(store, start)
    total, assistant = found["all"], found.get("assistant")
    runs = sum(store.run_counts(since=start).values())
    text = f"**{window}:** {queries.money(total.cost_usd)} on {_count(total.calls, 'model call')}"
    if assistant is not None:
        text += f" ({assistant.calls} by the assistant, {queries.money(assistant.cost_usd)})"
    text += (
        f", {total.input_tokens + total.output_tokens:,} tokens ({total.input_tokens:,} in, "
        f"{total.output_tokens:,} out); {_count(runs, 'run')} started."
    )
    if total.calls and not total.cost_usd and total.input_tokens + total.output_tokens:
        text += (
            " Tokens without a price: local models are free, or set prices with AGENTFLOW_PRICES "
            '(`{"ollama/llama3.2": {"input": 0.1, "output": 0.4}}`, USD per million tokens).'
        )
    return text


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """A ledger frame for reading: cost as money."""
    shown = frame.copy()
    shown["cost_usd"] = shown["cost_usd"].map(queries.money)
    return shown.rename(columns={"cost_usd": "cost"})


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
    """Today's spend (from the ledger) against the daily budgets; a tripped one is an alert naming it."""
    if ledger is None:
        return ""
    rows = ledger.status(daily_budgets(store))
    found = queries.totals(ledger.store, start_of_day())
    today = f"**Today:** {queries.money(found['all'].cost_usd)} spent on models"
    if "assistant" in found:
        today += f", {queries.money(found['assistant'].cost_usd)} of it by the assistant"
    today += "."
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
    if ledger.global_daily_usd is not None:
        lines += ["", "_The assistant's calls count against the global budget, and stop with it._"]
    return "\n".join(lines)


def _plot(**options: Any) -> gr.BarPlot:
    # Bars start at zero: Vega-Lite's own domain can start near the smallest bar and hide it.
    return gr.BarPlot(x_label_angle=-45, height=280, y_lim=[0, None], **options)


def build(state: AppState) -> CostsTab:
    budgets = gr.Markdown(elem_id="costs-budgets")
    with gr.Row():
        window = gr.Dropdown(list(WINDOWS), value=DEFAULT_WINDOW, label="Period", scale=1)
        summary_line = gr.Markdown(elem_id="costs-summary")
    empty = gr.Markdown(NO_CALLS_YET, elem_id="costs-empty")
    with gr.Column(visible=False, elem_id="costs-charts") as charts:
        with gr.Row():
            money = {"y": "cost_usd", "y_title": "USD", "y_axis_format": USD_AXIS}
            cost_by_day = _plot(x="day", color="source", color_map=COLORS, title="Spend by day", **money)
            tokens_by_day = _plot(
                x="day",
                y="tokens",
                color="source",
                color_map=COLORS,
                title="Tokens by day",
                y_title="tokens",
                y_axis_format=TOKEN_AXIS,
            )
        with gr.Row():
            by_workflow = _plot(x="workflow", title="Spend by workflow", sort="-y", **money)
            by_model = _plot(x="model", color="provider", title="Spend by model", sort="-y", **money)
        with gr.Row():
            sources = gr.Dataframe(
                interactive=False, label="By source: runs and the assistant", elem_id="costs-sources"
            )
            workflows = gr.Dataframe(interactive=False, label="By workflow", elem_id="costs-workflows")
        with gr.Row():
            nodes = gr.Dataframe(interactive=False, label="By node (workflow.node)", elem_id="costs-nodes")
            models = gr.Dataframe(interactive=False, label="By model", elem_id="costs-models")
    tab = CostsTab(
        state,
        window,
        budgets,
        summary_line,
        empty,
        charts,
        cost_by_day,
        tokens_by_day,
        by_workflow,
        by_model,
        sources,
        workflows,
        nodes,
        models,
    )
    window.change(tab.refresh, inputs=window, outputs=tab.outputs, api_visibility="private", concurrency_limit=None)
    return tab
