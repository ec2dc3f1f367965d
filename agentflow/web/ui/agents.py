"""The Agents tab: every A2A agent the registry knows — its skills, how it came, its state, when it was last
heard from — with add by URL, remove, and one-time enrolment tokens (shown once) to issue and revoke."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.web.ui.chat import Updates

if TYPE_CHECKING:
    from agentflow.registry import Agent, Registry
    from agentflow.store.base import EnrolmentToken
    from agentflow.web.server import AppState

COLUMNS = ["name", "id", "skills", "source", "state", "last heartbeat", "latency"]
TOKEN_COLUMNS = ["id", "note", "status", "expires"]
SOURCES = {"registered": "registered itself", "url": "added by URL"}
EMPTY = (
    "No agents yet. Add one by its card URL below, or issue a token for an agent to enrol itself "
    "(`POST /api/registry/enrol`; see docs/agents.md)."
)


@dataclass
class AgentsTab:
    state: AppState
    status: gr.Markdown
    table: gr.Dataframe
    chosen: gr.Textbox
    token: gr.Textbox
    tokens: gr.Dataframe

    @property
    def outputs(self) -> list[Component]:
        return [self.status, self.table, self.chosen, self.token, self.tokens]

    @property
    def registry(self) -> Registry | None:
        return self.state.flow.engine.services.registry

    def refresh(self) -> Updates:
        registry = self.registry
        if registry is None:
            return {self.status: "The agent registry is not open in this process."}
        agents = registry.list()  # once: the summary and the table agree even as a TTL passes
        counts = {state: sum(agent.state == state for agent in agents) for state in ("healthy", "stale", "offline")}
        summary = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
        return {
            self.status: f"{len(agents)} agent{'s' if len(agents) != 1 else ''}: {summary}." if agents else EMPTY,
            self.table: _agents_frame(agents),
            self.chosen: "",
            self.token: "",
            self.tokens: _tokens_frame(registry.tokens()),
        }

    async def add(self, url: str) -> Updates:
        from agentflow.registry import RegistryError
        from agentflow.registry.cards import CardError

        registry = self.registry
        if registry is None or not url.strip():
            return {self.status: "Give the agent's card URL (or its base URL) first."}
        try:
            agent = await registry.add_url(url.strip())
        except (RegistryError, CardError) as exc:
            return {self.status: f"Not added: {exc}"}
        updates = self.refresh()
        updates[self.status] = f"Added **{agent.name}** (`{agent.id}`), polled every {registry.heartbeat_s:g} s."
        return updates

    def remove(self, agent_id: str) -> Updates:
        from agentflow.registry import RegistryError

        registry = self.registry
        if registry is None or not agent_id:
            return {self.status: "Pick an agent in the table first."}
        try:
            registry.remove(agent_id)
        except RegistryError as exc:
            return {self.status: str(exc)}
        updates = self.refresh()
        updates[self.status] = f"Removed `{agent_id}`."
        return updates

    def issue(self, note: str, ttl: str) -> Updates:
        from agentflow.settings import parse_duration

        registry = self.registry
        ttl_s = parse_duration(ttl or "24h")
        if registry is None or ttl_s is None:
            return {self.status: f"“{ttl}” is not a duration; give e.g. 30m, 24h or 7d."}
        token, value = registry.issue_token(note=note.strip() or None, ttl_s=ttl_s)
        updates = self.refresh()
        updates[self.token] = value
        updates[self.status] = (
            f"Issued `{token.id}`: copy the token now, it is not shown again. It enrols one agent until "
            f"{_when(token.expires_at)}."
        )
        return updates

    def revoke(self, token_id: str) -> Updates:
        from agentflow.registry import RegistryError

        registry = self.registry
        if registry is None or not token_id.strip():
            return {self.status: "Give the id of the token to revoke (tok_…)."}
        try:
            registry.revoke_token(token_id.strip())
        except RegistryError as exc:
            return {self.status: str(exc)}
        updates = self.refresh()
        updates[self.status] = f"Revoked `{token_id.strip()}`."
        return updates

    def select(self, event: gr.SelectData, table: pd.DataFrame) -> Updates:
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        if not isinstance(row, int) or not 0 <= row < len(table):
            return {}
        return {self.chosen: str(table.iloc[row]["id"])}


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "never"


def _agents_frame(agents: list[Agent]) -> pd.DataFrame:
    rows = [
        [
            agent.name,
            agent.id,
            ", ".join(skill.id for skill in agent.skills),
            SOURCES.get(agent.source, agent.source),
            agent.state,
            _when(agent.last_seen),
            "" if agent.latency_ms is None else f"{agent.latency_ms:.0f} ms",
        ]
        for agent in agents
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _tokens_frame(tokens: list[EnrolmentToken]) -> pd.DataFrame:
    now = time.time()

    def status(token: EnrolmentToken) -> str:
        if token.used_at:
            return f"used by {token.used_by}"
        if token.revoked_at:
            return "revoked"
        return "expired" if token.expires_at <= now else "unused"

    rows = [[token.id, token.note or "", status(token), _when(token.expires_at)] for token in tokens]
    return pd.DataFrame(rows, columns=TOKEN_COLUMNS)


def build(state: AppState) -> AgentsTab:
    gr.Markdown(
        "A2A agents that `remote` nodes can call: those that enrolled themselves with a token, and those added "
        "here by URL. Silent for one TTL an agent is *stale*, for three *offline*."
    )
    status = gr.Markdown(elem_id="agents-status")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="agents-table")
    with gr.Row():
        url = gr.Textbox(label="Add an agent by URL", placeholder="https://agent.example.com/", elem_id="agents-url")
        add = gr.Button("Add", variant="primary", elem_id="agents-add")
        refresh = gr.Button("Refresh", elem_id="agents-refresh")
    with gr.Row():
        chosen = gr.Textbox(label="Selected agent", interactive=False, elem_id="agents-chosen")
        remove = gr.Button("Remove this agent", variant="stop", elem_id="agents-remove")
    gr.Markdown("### Enrolment tokens\nOne-time: each enrols one agent, then it is spent.")
    with gr.Row():
        note = gr.Textbox(label="Note", placeholder="what it is for", elem_id="agents-token-note")
        ttl = gr.Textbox(label="Valid for", value="24h", elem_id="agents-token-ttl")
        issue = gr.Button("Issue a token", elem_id="agents-issue")
    token = gr.Textbox(label="New token (shown once)", interactive=False, elem_id="agents-token")
    tokens = gr.Dataframe(headers=TOKEN_COLUMNS, interactive=False, elem_id="agents-tokens")
    with gr.Row():
        revoke_id = gr.Textbox(label="Token id to revoke", placeholder="tok_…", elem_id="agents-revoke-id")
        revoke = gr.Button("Revoke", variant="stop", elem_id="agents-revoke")
    tab = AgentsTab(state, status, table, chosen, token, tokens)
    private: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
    add.click(tab.add, inputs=url, outputs=tab.outputs, **private)
    url.submit(tab.add, inputs=url, outputs=tab.outputs, **private)
    refresh.click(tab.refresh, outputs=tab.outputs, **private)
    table.select(tab.select, inputs=table, outputs=chosen, **private)
    remove.click(tab.remove, inputs=chosen, outputs=tab.outputs, **private)
    issue.click(tab.issue, inputs=[note, ttl], outputs=tab.outputs, **private)
    revoke.click(tab.revoke, inputs=revoke_id, outputs=tab.outputs, **private)
    return tab
