"""The Settings tab: detected LLM providers, which model is used where, and how to configure each; the chat
channels (Telegram, WhatsApp): configured or not, how messages arrive, who is served, how to connect one.
Token values are never shown, only whether they are set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.providers import detect
from agentflow.settings import Settings
from agentflow.web.ui.chat import Updates, engine_of

if TYPE_CHECKING:
    from agentflow.web.server import AppState

PROVIDER_COLUMNS = ["provider", "available", "detail", "default model"]
TELEGRAM_PATH = "/channels/telegram"
WHATSAPP_PATH = "/channels/whatsapp"


@dataclass
class SettingsTab:
    state: AppState
    models: gr.Markdown
    providers: gr.Dataframe
    how_to: gr.Markdown
    model: gr.Textbox
    result: gr.Markdown
    channels: gr.Markdown

    @property
    def outputs(self) -> list[Component]:
        return [self.models, self.providers, self.how_to, self.model, self.channels]

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
            self.channels: channels_text(self.state.settings),
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
            "  A conversation can pick another with `/model NAME` (any LiteLLM name, e.g. `ollama_chat/llama3.2`).",
            f"- **Workflow nodes** without `model:` (on the node or in `spec.defaults`) use `{workflows}`."
            if workflows
            else "- **Workflow nodes** must name their model (`model:` on the node or in `spec.defaults`): "
            "AGENTFLOW_MODEL is not set.",
        ]
    )


def channels_text(settings: Settings) -> str:
    """Telegram and WhatsApp: configured or not, how messages arrive, the allow-list, and the variables to set."""
    return "\n\n".join(["### Channels", _telegram(settings), _whatsapp(settings), _proxy(settings)])


def _allowed(people: tuple[str, ...], variable: str) -> str:
    if not people:
        return f"**nobody** (set {variable} to serve someone)"
    return ", ".join(f"`{person}`" for person in people)


def _telegram(settings: Settings) -> str:
    if settings.public_url:
        mode = (
            f"webhook: Telegram delivers to `{settings.public_url}{TELEGRAM_PATH}` "
            "(AGENTFLOW_PUBLIC_URL is set; the bot's secret header is checked)"
        )
    else:
        mode = "long polling: this server asks Telegram for messages, nothing has to reach it (no AGENTFLOW_PUBLIC_URL)"
    state = "✓ configured (AGENTFLOW_TELEGRAM_TOKEN is set)" if settings.telegram_token else "not configured"
    return "\n".join(
        [
            f"**Telegram** — {state}",
            f"- Mode: {mode}",
            f"- Allow-list (user ids or @usernames): {_allowed(settings.telegram_allow, 'AGENTFLOW_TELEGRAM_ALLOW')}",
            "- To connect: create a bot with @BotFather, then set `AGENTFLOW_TELEGRAM_TOKEN` (the bot's token) and "
            "`AGENTFLOW_TELEGRAM_ALLOW` (your user id, comma-separated for several) and restart the server; "
            "with `AGENTFLOW_PUBLIC_URL` (https) Telegram delivers by webhook instead of long polling.",
        ]
    )


def _whatsapp(settings: Settings) -> str:
    # Served once Twilio's account and auth token are set (channels/hub.py); replies also need the sender.
    needed = {
        "AGENTFLOW_TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
        "AGENTFLOW_TWILIO_AUTH_TOKEN": settings.twilio_auth_token,
    }
    missing = [name for name, value in needed.items() if not value]
    if missing:
        state = "not configured" + (f" ({', '.join(missing)} missing)" if len(missing) < len(needed) else "")
    elif settings.whatsapp_from:
        state = f"✓ configured (sender `{settings.whatsapp_from}`; Twilio account and auth token set)"
    else:
        state = "⚠ configured without a sender: set AGENTFLOW_WHATSAPP_FROM, or no reply can be sent"
    if settings.public_url:
        webhook = f"`{settings.public_url}{WHATSAPP_PATH}`"
    else:
        webhook = f"AGENTFLOW_PUBLIC_URL + `{WHATSAPP_PATH}` (set AGENTFLOW_PUBLIC_URL: Twilio must reach this server)"
    return "\n".join(
        [
            f"**WhatsApp (Twilio)** — {state}",
            f"- Allow-list (numbers): {_allowed(settings.whatsapp_allow, 'AGENTFLOW_WHATSAPP_ALLOW')}",
            "- To connect: set `AGENTFLOW_TWILIO_ACCOUNT_SID`, `AGENTFLOW_TWILIO_AUTH_TOKEN`, "
            "`AGENTFLOW_WHATSAPP_FROM` (e.g. whatsapp:+14155238886) and `AGENTFLOW_WHATSAPP_ALLOW` (+33612345678, "
            "comma-separated), and `AGENTFLOW_PUBLIC_URL`; restart the server.",
            f"- In the Twilio console, the sender's incoming-message webhook (HTTP POST): {webhook}",
        ]
    )


def _proxy(settings: Settings) -> str:
    trusted = "on" if settings.trust_proxy else "off"
    return (
        f"**Behind a TLS proxy** (AGENTFLOW_TRUST_PROXY is {trusted}): set `AGENTFLOW_TRUST_PROXY=1` so the public "
        "scheme and host are read from X-Forwarded-Proto/-Host, as Twilio signs the public URL."
    )


def build(state: AppState) -> SettingsTab:
    models = gr.Markdown(elem_id="settings-models")
    with gr.Row():
        model = gr.Textbox(
            label="The assistant's default model (this server process)",
            placeholder="e.g. ollama_chat/llama3.2, openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest",
            scale=4,
        )
        use = gr.Button("Use this model", scale=1)
    result = gr.Markdown()
    providers = gr.Dataframe(headers=PROVIDER_COLUMNS, interactive=False, label="Detected providers", wrap=True)
    how_to = gr.Markdown()
    refresh = gr.Button("Detect again", size="sm")
    channels = gr.Markdown(elem_id="settings-channels")
    tab = SettingsTab(state, models, providers, how_to, model, result, channels)
    private: dict[str, Any] = {"api_visibility": "private"}
    refresh.click(tab.refresh, outputs=tab.outputs, **private)
    use.click(tab.set_model, inputs=model, outputs=[result, models], **private)
    model.submit(tab.set_model, inputs=model, outputs=[result, models], **private)
    return tab
