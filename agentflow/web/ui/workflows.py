"""The Workflows tab: saved workflows, their numbered versions, a diff between any two, who granted what,
their deployment (Deploy, Rollback, Undeploy; triggers, last deliveries, history), their runs and where
their time goes; "Open in chat".

A view has an address, `/?tab=workflows&workflow=NAME&version=v2&compare=v1` (`show` opens it);
the page's address follows what is shown, so a reload or a shared link opens the same view.
The words follow docs/versions.md: a version is a stored one (v1, v2, … per workflow).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

import gradio as gr
from gradio.components import Component

from agentflow import versions
from agentflow.chat.commands import open_stored
from agentflow.chat.engine import ConversationEngine, Reply
from agentflow.chat.workspace import Turn
from agentflow.spec.errors import SpecErrors
from agentflow.store.base import WorkflowVersion
from agentflow.triggers.deployments import DeployError, DeployResult
from agentflow.trust.grants import NeedsGrantError
from agentflow.web.ui import workflow_views as views
from agentflow.web.ui.chat import ChatTab, Updates, chat_messages, engine_of, person_of
from agentflow.web.ui.variants import variants_html

if TYPE_CHECKING:
    from agentflow.web.server import AppState

EMPTY = "No saved workflows yet. In the Chat tab, `/save NAME` saves the current draft as a version; Run saves it too."
PICK = "Click a workflow in the table to see its versions."
# After a view is shown, the address bar says which (the heading's permalink), so a reload reopens it.
FOLLOW_ADDRESS_JS = """() => {
  const link = document.querySelector('#workflow-heading a.permalink');
  if (link) window.history.replaceState(null, '', link.getAttribute('href'));
}"""


def open_version(engine: ConversationEngine, session_id: str, name: str, version: str) -> tuple[str, Reply]:
    """Make a saved workflow version the session's current draft, noted in the conversation."""
    workspace = engine.workspace(session_id)
    turn = Turn()
    try:
        stored: WorkflowVersion | None = versions.resolve(engine.flow.store, name, version)
    except versions.UnknownVersionError as exc:
        stored, problem = None, str(exc)
    asked = f"Open {versions.title(stored)}" if stored is not None else f"Open '{name}' {version}"
    engine.history.add_message(session_id, "user", asked)
    if stored is None:
        answer = f"Cannot open it: {problem}. Pick another in the Workflows tab."
    else:
        answer = open_stored(workspace, stored, turn, note=f"opened {versions.title(stored)}")
    reply = engine.snapshot(session_id, turn=turn, text=answer)
    engine.history.add_message(session_id, "assistant", answer, {"version": reply.version})
    return asked, reply


@dataclass
class WorkflowsTab:
    state: AppState
    chat: ChatTab
    tabs: gr.Tabs
    table: gr.Dataframe
    hint: gr.Markdown
    name: gr.State
    heading: gr.HTML
    versions: gr.Dropdown
    compare: gr.Dropdown
    source: gr.Code
    diff: gr.Code
    grant: gr.Markdown
    runs: gr.HTML
    profile: gr.HTML
    open: gr.Button
    result: gr.Markdown
    deployment: gr.HTML
    deploy_button: gr.Button
    rollback_button: gr.Button
    undeploy_button: gr.Button
    deployed: gr.Markdown
    triggers: gr.HTML

    @property
    def outputs(self) -> list[Component]:
        """Everything `refresh` and `show` may update."""
        return [
            self.table,
            self.hint,
            self.name,
            self.heading,
            self.versions,
            self.compare,
            self.source,
            self.diff,
            self.grant,
            self.runs,
            self.profile,
            self.open,
            self.result,
            self.deployment,
            self.deploy_button,
            self.rollback_button,
            self.undeploy_button,
            self.deployed,
            self.triggers,
        ]

    @property
    def detail(self) -> list[Component]:
        """What `show` updates (all but the table)."""
        return self.outputs[2:]

    def refresh(self) -> Updates:
        """The table of saved workflows (on opening the tab)."""
        frame = views.workflows_frame(engine_of(self.state).flow)
        return {self.table: frame, self.hint: gr.update(visible=frame.empty, value=EMPTY)}

    def show(self, name: str, version: str | None = None, compare: str | None = None) -> Updates:
        """One workflow's version (its current one when `version` is empty), diffed against `compare` if given.

        An unknown workflow or version is said in the heading, with what exists."""
        flow = engine_of(self.state).flow
        name = (name or "").strip()
        if not name:
            return self._blank("", PICK)
        saved = flow.store.list_versions(name)
        if not saved:
            return self._blank(name, f"⚠ {versions.missing(flow.store, name)}")
        current = flow.store.get_workflow(name)
        choices = [(views.choice(stored, current), versions.label(stored)) for stored in saved]
        try:
            stored = versions.resolve(flow.store, name, version)
            other = versions.resolve(flow.store, name, compare) if compare else None
        except versions.UnknownVersionError as exc:
            blank = self._blank(name, f"⚠ {exc}")
            return {**blank, self.versions: gr.update(choices=choices, value=None, label=f"Versions of {name}")}
        other = None if other == stored else other
        by_hash = {item.version: item for item in saved}
        return {
            self.name: name,
            self.heading: views.heading(stored, current, other, len(saved)),
            self.versions: gr.update(choices=choices, value=versions.label(stored), label=f"Versions of {name}"),
            self.compare: gr.update(
                choices=[("(none)", "")] + [item for item in choices if item[1] != versions.label(stored)],
                value=versions.label(other) if other else "",
            ),
            self.source: gr.update(value=stored.source, label=f"{name} {versions.label(stored)} (YAML)"),
            self.diff: gr.update(
                value=versions.diff(other, stored) if other else "",
                visible=other is not None,
                label=f"Changes from {versions.label(other)} to {versions.label(stored)}" if other else "Diff",
            ),
            self.grant: views.grant_text(flow, stored, by_hash),
            self.runs: views.runs_html(flow, name, stored, by_hash),
            self.profile: views.profile_html(flow, name) + variants_html(flow, name),
            self.open: gr.update(interactive=True),
            self.result: "",
            **self._deployment(stored),
        }

    def _deployment(self, stored: WorkflowVersion) -> Updates:
        """The Deployment section of the version shown; a secret shown after a deploy is cleared here."""
        flow = engine_of(self.state).flow
        current = flow.store.current_deployment(stored.name)
        history = flow.store.deployment_history(stored.name, limit=200)
        return {
            self.deployment: views.deployment_html(flow, stored, current),
            self.deploy_button: gr.update(interactive=True, value=f"Deploy {versions.label(stored)}"),
            self.rollback_button: gr.update(interactive=views.can_roll_back(current, history)),
            self.undeploy_button: gr.update(interactive=current is not None),
            self.deployed: "",
            self.triggers: views.triggers_html(flow, stored.name, current),
        }

    def deploy(self, name: str, version: str | None, compare: str | None, request: gr.Request) -> Updates:
        """A person deploys the version shown; refused (with what to do) when it needs a grant."""
        flow = engine_of(self.state).flow
        return self._changed(
            name,
            version,
            compare,
            lambda: flow.deployments.deploy(name, version or None, by=person_of(request), note="the Workflows tab"),
        )

    def rollback(self, name: str, version: str | None, compare: str | None, request: gr.Request) -> Updates:
        flow = engine_of(self.state).flow
        return self._changed(name, version, compare, lambda: flow.deployments.rollback(name, by=person_of(request)))

    def undeploy(self, name: str, version: str | None, compare: str | None, request: gr.Request) -> Updates:
        flow = engine_of(self.state).flow

        def undeploy() -> str:
            flow.deployments.undeploy(name, by=person_of(request))
            return f"✓ **Undeployed '{name}'**: none of its triggers fire now; **Deploy** puts a version back."

        return self._changed(name, version, compare, undeploy)

    def _changed(
        self, name: str, version: str | None, compare: str | None, change: Callable[[], DeployResult | str]
    ) -> Updates:
        """Make the change, then show the view again with what it did (or why not) under the buttons."""
        if not name:
            return {self.deployed: "Pick a workflow first."}
        flow = engine_of(self.state).flow
        try:
            done = change()
        except (DeployError, NeedsGrantError) as exc:  # their messages say what to do
            message = f"⚠ **Not done:** {exc}"
        except SpecErrors as exc:  # a version stored before a rule it breaks existed
            message = f"⚠ **Not done:** this version no longer validates here ({exc.errors[0].message})."
        else:
            message = done if isinstance(done, str) else views.deployed_text(flow, done)
        return {**self.show(name, version, compare), self.deployed: message}

    def _blank(self, name: str, message: str) -> Updates:
        return {
            self.name: name,
            self.heading: f'<p class="workflow-message">{escape(message, quote=False)}</p>',
            self.versions: gr.update(choices=[], value=None, label="Versions"),
            self.compare: gr.update(choices=[], value=None),
            self.source: gr.update(value="", label="Source"),
            self.diff: gr.update(value="", visible=False),
            self.grant: "",
            self.runs: "",
            self.profile: "",
            self.open: gr.update(interactive=False),
            self.result: "",
            self.deployment: "",
            self.deploy_button: gr.update(interactive=False, value="Deploy"),
            self.rollback_button: gr.update(interactive=False),
            self.undeploy_button: gr.update(interactive=False),
            self.deployed: "",
            self.triggers: "",
        }

    def pick(self, event: gr.SelectData) -> Updates:
        """A row was clicked: that workflow's current version."""
        row = event.row_value or []
        return self.show(str(row[0]) if row else "")

    def open_in_chat(
        self,
        session_id: str | None,
        name: str,
        version: str | None,
        history: list[dict[str, Any]] | None,
        form_key: str,
    ) -> Updates:
        """Make this version the chat session's current draft and switch to the Chat tab."""
        if not name or not version:
            return {self.result: "Pick a workflow and a version first."}
        engine = engine_of(self.state)
        session_id = session_id or uuid.uuid4().hex
        asked, reply = open_version(engine, session_id, name, version)
        messages = [
            *chat_messages(history),
            {"role": "user", "content": asked},
            {"role": "assistant", "content": reply.text},
        ]
        updates: Updates = dict(self.chat.show(engine, session_id, reply, form_key))
        updates.update({self.chat.chatbot: messages, self.result: reply.text, self.tabs: gr.Tabs(selected="chat")})
        return updates


def build(state: AppState, chat: ChatTab, tabs: gr.Tabs) -> WorkflowsTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            hint = gr.Markdown(EMPTY, visible=False)
            table = gr.Dataframe(
                headers=views.COLUMNS,
                interactive=False,
                wrap=True,
                column_widths=views.COLUMN_WIDTHS,
                label="Saved workflows (click one)",
                elem_id="workflows-table",
            )
            refresh = gr.Button("Refresh", size="sm")
        with gr.Column(scale=6):
            name = gr.State("")
            heading_view = gr.HTML(f"<p>{PICK}</p>", elem_id="workflow-heading")
            with gr.Row():
                version_pick = gr.Dropdown(label="Versions", choices=[], interactive=True, elem_id="workflow-versions")
                compare = gr.Dropdown(label="Compare with", choices=[], interactive=True, elem_id="workflow-compare")
            diff = gr.Code(language=None, interactive=False, visible=False, label="Diff", elem_id="workflow-diff")
            source = gr.Code(
                language="yaml", interactive=False, lines=14, max_lines=30, label="Source", elem_id="workflow-source"
            )
            open_button = gr.Button("Open in chat", variant="primary", interactive=False, elem_id="open-in-chat")
            result = gr.Markdown()
            grant = gr.Markdown(elem_id="workflow-grant")
            deployment = gr.HTML(elem_id="workflow-deployment")
            with gr.Row():
                deploy_button = gr.Button("Deploy", variant="primary", interactive=False, elem_id="deploy-button")
                rollback_button = gr.Button("Rollback", interactive=False, elem_id="rollback-button")
                undeploy_button = gr.Button("Undeploy", variant="stop", interactive=False, elem_id="undeploy-button")
            deployed = gr.Markdown(elem_id="deploy-result")
            triggers = gr.HTML(elem_id="workflow-triggers")
            runs = gr.HTML(elem_id="workflow-runs")
            profile_view = gr.HTML(elem_id="workflow-profile")
    tab = WorkflowsTab(
        state,
        chat,
        tabs,
        table,
        hint,
        name,
        heading_view,
        version_pick,
        compare,
        source,
        diff,
        grant,
        runs,
        profile_view,
        open_button,
        result,
        deployment,
        deploy_button,
        rollback_button,
        undeploy_button,
        deployed,
        triggers,
    )
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    refresh.click(tab.refresh, outputs=[table, hint], **private)
    follow: dict[str, Any] = {"fn": None, "js": FOLLOW_ADDRESS_JS, **private}
    table.select(tab.pick, outputs=tab.detail, **private).then(**follow)
    for picker in (version_pick, compare):
        picker.input(tab.show, inputs=[name, version_pick, compare], outputs=tab.detail, **private).then(**follow)
    for button, change in (
        (deploy_button, tab.deploy),
        (rollback_button, tab.rollback),
        (undeploy_button, tab.undeploy),
    ):
        button.click(change, inputs=[name, version_pick, compare], outputs=tab.detail, **private)
    open_button.click(
        tab.open_in_chat,
        inputs=[chat.session, name, version_pick, chat.chatbot, chat.form_key],
        outputs=[*chat.outputs, result, tabs],
        **private,
    )
    return tab
