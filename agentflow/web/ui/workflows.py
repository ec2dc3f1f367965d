"""The Workflows tab: saved workflows, their versions and sources, and "Open in chat"."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from agentflow.chat.engine import ConversationEngine, Reply
from agentflow.chat.workspace import Turn, plain_errors
from agentflow.trust.capabilities import Capabilities
from agentflow.web.ui import queries
from agentflow.web.ui.chat import ChatTab, Updates, chat_messages, engine_of

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.web.server import AppState

EMPTY = "No saved workflows yet. In the Chat tab, `/save NAME` saves the current one; running it saves it too."


def open_version(engine: ConversationEngine, session_id: str, name: str, version: str) -> tuple[str, Reply]:
    """Make a saved workflow version the session's current workflow, noted in the conversation."""
    stored = engine.flow.store.get_workflow(name, version)
    asked = f"Open workflow '{name}' version {version}"
    workspace = engine.workspace(session_id)
    engine.history.add_message(session_id, "user", asked)
    turn = Turn()
    if stored is None:
        answer = f"There is no version {version} of '{name}' any more; pick another in the Workflows tab."
    else:
        proposal = workspace.propose(stored.source, author="command", note=f"opened {name} {version}", turn=turn)
        turn.errors = plain_errors(proposal.errors)
        answer = (
            f"Opened '{name}' ({version}). Describe changes, edit the YAML, or press Run."
            if proposal.ok
            else f"'{name}' ({version}) is no longer valid here:\n" + "\n".join(f"- {e}" for e in turn.errors)
        )
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
    versions: gr.Dropdown
    source: gr.Code
    open: gr.Button
    result: gr.Markdown
    grant: gr.Markdown

    def refresh(self) -> Updates:
        flow = engine_of(self.state).flow
        frame = queries.workflows_frame(flow.store)
        if not frame.empty:
            frame["grant"] = [grant_cell(flow, str(name), str(version)) for name, version in frame.iloc[:, :2].values]
        return {self.table: frame, self.hint: gr.update(visible=frame.empty, value=EMPTY)}

    def pick(self, event: gr.SelectData) -> Updates:
        """A row was clicked: list that workflow's versions, newest first, and show the newest."""
        row = event.row_value or []
        name = str(row[0]) if row else ""
        store = engine_of(self.state).flow.store
        versions = store.list_versions(name)
        choices = [(f"{stored.version} — {queries.when(stored.created_at)}", stored.version) for stored in versions]
        latest = store.get_workflow(name)
        chosen = latest.version if latest else (versions[0].version if versions else None)
        return {
            self.name: name,
            self.versions: gr.update(choices=choices, value=chosen, label=f"Versions of {name}"),
            self.source: latest.source if latest else "",
            self.open: gr.update(interactive=latest is not None),
            self.result: "",
            self.grant: grant_text(engine_of(self.state).flow, name, chosen),
        }

    def view(self, name: str, version: str | None) -> Updates:
        flow = engine_of(self.state).flow
        stored = flow.store.get_workflow(name, version) if name and version else None
        return {self.source: stored.source if stored else "", self.grant: grant_text(flow, name, version)}

    def open_in_chat(
        self,
        session_id: str | None,
        name: str,
        version: str | None,
        history: list[dict[str, Any]] | None,
        form_key: str,
    ) -> Updates:
        """Make this version the chat session's workflow and switch to the Chat tab."""
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


def grant_cell(flow: AgentFlow, name: str, version: str) -> str:
    stored = flow.store.get_workflow(name, version)
    if stored is None:
        return ""
    try:
        review = flow.review(stored)
    except Exception:  # an old version that no longer compiles: say so rather than fail the table
        return "cannot be checked"
    return f"needs review: {review.missing.describe()}" if review.needs_review else "granted"


def grant_text(flow: AgentFlow, name: str, version: str | None) -> str:
    """What a version may use, what of it waits for a person, and who granted the workflow what, when."""
    stored = flow.store.get_workflow(name, version) if name and version else None
    if stored is None:
        return ""
    review = flow.review(stored)
    lines = [f"**Uses:** {review.wanted.describe()}"]
    if review.needs_review:
        lines.append(
            f"⚠ **Needs review** — it cannot run until a person grants: {review.missing.describe()} "
            f"(open it in the chat and click **Grant**, or `agentflow grant {name} --version {stored.version}`)"
        )
    records = flow.store.list_grants(name)[:5]
    if records:
        lines.append("**Grants** (newest first):")
        lines += [
            f"- {queries.when(record.granted_at)} by {record.granted_by}: "
            f"{Capabilities.from_dict(record.capabilities).describe()}"
            for record in records
        ]
    return "\n".join(lines)


def build(state: AppState, chat: ChatTab, tabs: gr.Tabs) -> WorkflowsTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            hint = gr.Markdown(EMPTY, visible=False)
            table = gr.Dataframe(
                headers=[*queries.WORKFLOW_COLUMNS, "grant"],
                interactive=False,
                wrap=True,
                label="Saved workflows (click one)",
                elem_id="workflows-table",
            )
            refresh = gr.Button("Refresh", size="sm")
        with gr.Column(scale=5):
            name = gr.State("")
            versions = gr.Dropdown(label="Versions", choices=[], interactive=True, elem_id="workflow-versions")
            source = gr.Code(language="yaml", interactive=False, lines=18, max_lines=30, label="Source")
            grant = gr.Markdown(elem_id="workflow-grant")
            open_button = gr.Button("Open in chat", variant="primary", interactive=False, elem_id="open-in-chat")
            result = gr.Markdown()
    tab = WorkflowsTab(state, chat, tabs, table, hint, name, versions, source, open_button, result, grant)
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    refresh.click(tab.refresh, outputs=[table, hint], **private)
    table.select(tab.pick, outputs=[name, versions, source, open_button, result, grant], **private)
    versions.input(tab.view, inputs=[name, versions], outputs=[source, grant], **private)
    open_button.click(
        tab.open_in_chat,
        inputs=[chat.session, name, versions, chat.chatbot, chat.form_key],
        outputs=[*chat.outputs, result, tabs],
        **private,
    )
    return tab
