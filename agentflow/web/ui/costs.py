"""The Costs tab: spend and tokens by day, by model and by workflow, from the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
from gradio.components import Component

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

    @property
    def outputs(self) -> list[Component]:
        return [
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
        return {
            self.summary: summary,
            self.cost_by_day: daily,
            self.tokens_by_day: daily,
            self.by_model: models,
            self.by_workflow: workflows,
            self.models: models,
            self.workflows: workflows,
        }


def build(state: AppState) -> CostsTab:
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
        models = gr.Dataframe(interactive=False, label="By model")
        workflows = gr.Dataframe(interactive=False, label="By workflow")
    tab = CostsTab(state, window, summary, cost_by_day, tokens_by_day, by_model, by_workflow, models, workflows)
    window.change(tab.refresh, inputs=window, outputs=tab.outputs, api_visibility="private", concurrency_limit=None)
    return tab
