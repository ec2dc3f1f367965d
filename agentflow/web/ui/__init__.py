"""The Gradio UI: `build_ui(state)` lays out the tabs — Chat, Workflows, Runs, Costs, MLflow, Settings.

Every handler reads the AgentFlow process through `state` when it runs (the
flow opens with the server, after the UI is built). The server mounts the
returned Blocks at `/` (agentflow/web/server.py).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from agentflow.web.ui import chat, costs, mlflow, runs, settings, workflows
from agentflow.web.ui.chat import Updates

if TYPE_CHECKING:
    from agentflow.web.server import AppState

__all__ = ["build_ui"]

SECRET_FILE = "ui-browser-state.key"


def browser_secret(home: Path) -> str:
    """The key sealing the session id in the browser's localStorage, kept in the data directory.

    Gradio picks a new random key at every start, which would orphan every
    browser's conversation when the server restarts.
    """
    path = home / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    try:
        with open(path, "x", encoding="utf-8", opener=lambda name, flags: os.open(name, flags, 0o600)) as file:
            file.write(secret)
    except FileExistsError:  # another process wrote it first: use theirs
        return path.read_text().strip()
    return secret


def build_ui(state: AppState) -> gr.Blocks:
    with gr.Blocks(title="AgentFlow", analytics_enabled=False) as blocks:
        session = gr.BrowserState(None, storage_key=chat.SESSION_KEY, secret=browser_secret(state.settings.home))
        gr.Markdown("## AgentFlow", elem_id="title")
        with gr.Tabs(selected="chat") as tabs:
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat_view = chat.build(state, session)
            with gr.Tab("Workflows", id="workflows") as workflows_tab:
                workflows_view = workflows.build(state, chat_view, tabs)
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs_view = runs.build(state)
            with gr.Tab("Costs", id="costs") as costs_tab:
                costs_view = costs.build(state)
            with gr.Tab("MLflow", id="mlflow") as mlflow_tab:
                mlflow.build(state)
            with gr.Tab("Settings", id="settings") as settings_tab:
                settings_view = settings.build(state)

        private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
        # No progress overlay: it would animate a timer on each of the Chat tab's ~25 outputs at once.
        blocks.load(
            chat_view.load,
            inputs=[session, chat_view.form_key],
            outputs=chat_view.outputs,
            show_progress="hidden",
            **private,
        )

        # Each tab reads the store when opened; only the Runs tab keeps polling, and only while open.
        def polling(active: bool) -> Updates:
            return {runs_view.timer: gr.Timer(active=active)}

        def open_chat() -> Updates:
            return polling(False)

        def open_workflows() -> Updates:
            return {**workflows_view.refresh(), **polling(False)}

        def open_runs(status: str, run_id: str, shown: str) -> Updates:
            return {**runs_view.refresh(status, run_id, shown), **polling(True)}

        def open_mlflow() -> Updates:
            return polling(False)

        def open_costs(window: str) -> Updates:
            return {**costs_view.refresh(window), **polling(False)}

        def open_settings() -> Updates:
            return {**settings_view.refresh(), **polling(False)}

        timer = runs_view.timer
        chat_tab.select(open_chat, outputs=timer, **private)
        workflows_tab.select(open_workflows, outputs=[workflows_view.table, workflows_view.hint, timer], **private)
        runs_tab.select(
            open_runs,
            inputs=[runs_view.status_filter, runs_view.selected, runs_view.shown],
            outputs=[runs_view.table, *runs_view.detail, timer],
            **private,
        )
        costs_tab.select(open_costs, inputs=costs_view.window, outputs=[*costs_view.outputs, timer], **private)
        mlflow_tab.select(open_mlflow, outputs=timer, **private)
        settings_tab.select(open_settings, outputs=[*settings_view.outputs, timer], **private)
    return blocks
