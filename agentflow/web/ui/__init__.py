"""The Gradio UI: `build_ui(state)` lays out the tabs — Chat, Overview, Workflows, Runs, Costs, Tools, MLflow,
Settings — and routes addresses to them (`/?tab=runs&run=ID`; docs/live-operations.md).

Every handler reads the AgentFlow process through `state` when it runs (the
flow opens with the server, after the UI is built). The server mounts the
returned Blocks at `/` (agentflow/web/server.py).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from agentflow.web.ui import agents, chat, costs, evaluate, memory, mlflow, overview, runs, settings, tools, workflows
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
        gr.HTML(f"<style>{CSS}</style>", elem_id="agentflow-style", padding=False)
        with gr.Tabs(selected="chat") as tabs:
            with gr.Tab("Chat", id="chat") as chat_tab:
                chat_view = chat.build(state, session)
            with gr.Tab("Overview", id="overview") as overview_tab:
                overview_view = overview.build(state)
            with gr.Tab("Workflows", id="workflows") as workflows_tab:
                workflows_view = workflows.build(state, chat_view, tabs)
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs_view = runs.build(state)
            with gr.Tab("Costs", id="costs") as costs_tab:
                costs_view = costs.build(state)
            with gr.Tab("Memory", id="memory") as memory_tab:
                memory_view = memory.build(state)
            with gr.Tab("Evaluate", id="evaluate") as evaluate_tab:
                evaluate_view = evaluate.build(state)
            with gr.Tab("Agents", id="agents") as agents_tab:
                agents_view = agents.build(state)
            with gr.Tab("Tools", id="tools") as tools_tab:
                tools_view = tools.build(state)
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

        # The address opens what it names: /?tab=runs&run=ID, /?tab=workflows&workflow=NAME&version=V&compare=W.
        def route(request: gr.Request) -> Updates:
            params = request.query_params
            tab = params.get("tab", "")
            if tab not in TABS:
                return {tabs: gr.update()}  # the Chat, or whatever the person opened while the page loaded
            updates: Updates = {tabs: gr.Tabs(selected=tab)}
            if tab == "runs":
                updates.update(
                    {runs_view.table: runs_view.listing(runs.ALL), **runs_view.open(params.get("run", ""), request)}
                )
            elif tab == "workflows":
                updates.update(workflows_view.refresh())
                if params.get("workflow"):
                    updates.update(
                        workflows_view.show(params["workflow"], params.get("version"), params.get("compare"))
                    )
            elif tab == "overview":
                updates.update(overview_view.refresh())
            elif tab == "costs":
                updates.update(costs_view.refresh(costs.DEFAULT_WINDOW))
            elif tab == "settings":
                updates.update(settings_view.refresh())
            elif tab == "tools":
                updates.update(tools_view.refresh())
            elif tab == "memory":
                updates.update(memory_view.refresh())
            elif tab == "evaluate":
                updates.update(evaluate_view.refresh())
            elif tab == "agents":
                updates.update(agents_view.refresh())
            return updates

        routed = _unique(
            [tabs, *runs_view.outputs_all, *workflows_view.outputs, *overview_view.outputs, *costs_view.outputs,
             *settings_view.outputs, *tools_view.outputs, *memory_view.outputs, *agents_view.outputs,
             *evaluate_view.outputs]
        )  # fmt: skip
        live = [runs_view.table, *runs_view.detail]
        watched = [runs_view.status_filter, runs_view.selected]
        on_load = blocks.load(route, outputs=routed, show_progress="hidden", **private)
        on_load.then(None, js="() => { window.agentflowRouted = true; }", **private)
        # Selecting the tab — by a click, or by the route above — starts its live stream; leaving it stops it.
        runs_tab.select(runs_view.follow, inputs=watched, outputs=live, show_progress="hidden", **private)
        address_js = ADDRESS_JS % json.dumps({LABELS[tab_id]: tab_id for tab_id in TABS})
        runs_tab.select(None, js=address_js, **private)

        def on_open(tab: gr.Tab, handler: Any = None, **listener: Any) -> None:
            # A tab's select event also fires when it is left: only opening it stops the Runs stream
            # and refreshes it.
            def opened(event: gr.SelectData, request: gr.Request) -> Updates | None:
                return opened_with(None, event, request)

            def opened_with(value: Any, event: gr.SelectData, request: gr.Request) -> Updates | None:
                if event.selected:
                    runs_view.stop(request)
                if handler is None:
                    return None  # no outputs
                if not event.selected:
                    return {}
                return handler(value) if "inputs" in listener else handler()

            tab.select(None, js=address_js, **private)
            tab.select(opened_with if "inputs" in listener else opened, **listener, **private)

        on_open(chat_tab)
        on_open(overview_tab, overview_view.refresh, outputs=overview_view.outputs)
        on_open(workflows_tab, workflows_view.refresh, outputs=workflows_view.outputs)
        on_open(costs_tab, costs_view.refresh, inputs=costs_view.window, outputs=costs_view.outputs)
        on_open(tools_tab, tools_view.refresh, outputs=tools_view.outputs)
        on_open(memory_tab, memory_view.refresh, outputs=memory_view.outputs)
        on_open(evaluate_tab, evaluate_view.refresh, outputs=evaluate_view.outputs)
        on_open(agents_tab, agents_view.refresh, outputs=agents_view.outputs)
        on_open(mlflow_tab)
        on_open(settings_tab, settings_view.refresh, outputs=settings_view.outputs)
    return blocks


CSS = """
#agentflow-style { display: none; }
.console details { margin: 0.2em 0; }
.console-node { border-left: 3px solid #93c5fd; padding: 0.1em 0 0.1em 0.7em; margin: 0.4em 0; }
.console-node > summary { cursor: pointer; }
.console-call { margin: 0.3em 0 0.3em 1.2em; }
.console-call > summary { cursor: pointer; color: #4b5563; }
.console-pre { white-space: pre-wrap; word-break: break-word; max-height: 24em; overflow: auto;
  background: rgba(127, 127, 127, 0.08); padding: 0.4em 0.6em; border-radius: 4px; margin: 0.2em 0; }
.console-msg { margin: 0.3em 0 0.3em 0.5em; }
.console-error, .console-failed { color: #dc2626; }
.console-succeeded { color: #16a34a; }
.console-running { color: #2563eb; }
.console-waiting { border-left: 3px solid #f59e0b; padding: 0.3em 0.7em; margin: 0.5em 0; }
.console h5 { margin: 0.4em 0 0.1em 0; font-size: 0.85em; text-transform: uppercase; color: #6b7280; }
"""

LABELS = {
    "chat": "Chat", "overview": "Overview", "workflows": "Workflows", "runs": "Runs", "costs": "Costs",
    "memory": "Memory", "agents": "Agents", "tools": "Tools", "mlflow": "MLflow", "settings": "Settings",
    "evaluate": "Evaluate",
}  # fmt: skip
TABS = tuple(LABELS)

# The address bar follows what is open, read from the page once it has settled (a tab's select
# event also fires when it is left, so the handler must not trust which tab fired it).
ADDRESS_JS = """() => {
  if (!window.agentflowRouted) return;  // the first selects come before the address was read
  setTimeout(() => {
    const tabs = %s;
    const label = document.querySelector('button[role="tab"][aria-selected="true"]')?.textContent.trim();
    const tab = tabs[label];
    if (!tab) return;
    let address = `/?tab=${tab}`;
    if (tab === "runs") {
      const run = document.querySelector('#run-detail a[href^="/?tab=runs&run="]');
      if (run) address = run.getAttribute("href");
    } else if (tab === "workflows") {
      const version = document.querySelector("#workflow-heading a.permalink");
      if (version) address = version.getAttribute("href");
    }
    window.history.replaceState(null, "", address);
  }, 50);
}"""


def _unique(components: list[Any]) -> list[Any]:
    """Each component once (Gradio refuses an output listed twice), in order."""
    kept: dict[int, Any] = {}
    for component in components:
        kept.setdefault(id(component), component)
    return list(kept.values())
