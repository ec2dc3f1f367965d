"""The Settings tab: detected LLM providers, which model is used where, and how to configure each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.providers import detect
from agentflow.web.ui.chat import Updates, engine_of

if TYPE_CHECKING:
    from agentflow.web.server import AppState

PROVIDER_COLUMNS = ["provider", "available", "detail", "default model"]


@dataclass
class SettingsTab:
    state: AppState
    models: gr.Markdown
    providers: gr.Dataframe
    how_to: gr.Markdown
    model: gr.Textbox
    result: gr.Markdown

    @property
    def outputs(self) -> list[Component]:
        return [self.models, self.providers, self.how_to, self.model]

    def refresh(self) -> Updates:
        engine = engine_of(self.state)
        found = detect()  # probes Ollama on localhost (0.3 s at most); runs in a worker thread
        rows = [[p.name, "✓" if p.available else "—", p.detail, p.model or ""] for p in found]
        how_to = "\n".join(f"- **{p.name}** — {p.how_to}" for p in found)
        return {
            self.models: _models(engine.default_model, engine.flow.settings.model),
            self.providers: pd.DataFrame(rows, columns=PROVIDER_COLUMNS),
            self.how_to: "### How to configure each\n" + how_to,
            self.model: engine.default_model or "",
        }

    def set_model(self, model: str) -> Updates:
        engine = engine_of(self.state)
        engine.default_model = model.strip() or None
        if engine.default_model:
            message = (
                f"The assistant now uses `{engine.default_model}` in conversations without their own `/model`, "
                "until this server restarts (set AGENTFLOW_MODEL to keep it)."
            )
        else:
            message = "The assistant has no model now; the Chat tab says what to configure. Slash commands still work."
        return {self.result: message, self.models: _models(engine.default_model, engine.flow.settings.model)}


def _models(assistant: str | None, workflows: str | None) -> str:
    return "\n".join(
        [
            f"- **The assistant** uses `{assistant}`." if assistant else "- **The assistant** has no model configured.",
            "  A conversation can pick another with `/model NAME` (any LiteLLM name, e.g. `ollama/llama3.2`).",
            f"- **Workflow nodes** without `model:` (on the node or in `spec.defaults`) use `{workflows}`."
            if workflows
            else "- **Workflow nodes** must name their model (`model:` on the node or in `spec.defaults`): "
            "AGENTFLOW_MODEL is not set.",
        ]
    )


def build(state: AppState) -> SettingsTab:
    models = gr.Markdown(elem_id="settings-models")
    with gr.Row():
        model = gr.Textbox(
            label="The assistant's default model (this server process)",
            placeholder="e.g. ollama/llama3.2, openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest",
            scale=4,
        )
        use = gr.Button("Use this model", scale=1)
    result = gr.Markdown()
    providers = gr.Dataframe(headers=PROVIDER_COLUMNS, interactive=False, label="Detected providers", wrap=True)
    how_to = gr.Markdown()
    refresh = gr.Button("Detect again", size="sm")
    tab = SettingsTab(state, models, providers, how_to, model, result)
    private: dict[str, Any] = {"api_visibility": "private"}
    refresh.click(tab.refresh, outputs=tab.outputs, **private)
    use.click(tab.set_model, inputs=model, outputs=[result, models], **private)
    model.submit(tab.set_model, inputs=model, outputs=[result, models], **private)
    return tab
