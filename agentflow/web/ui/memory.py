"""The Memory tab: what each workflow remembers — browse and search its scopes, delete one memory or forget a
whole scope. What a run read or wrote is in its console too (`memory_recall`, `memory_write` events)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.cli_memory import belongs, items_of
from agentflow.web.ui.chat import Updates

if TYPE_CHECKING:
    from agentflow.memory.base import MemoryItem, MemoryStore
    from agentflow.web.server import AppState

COLUMNS = ["id", "scope", "updated", "tags", "text"]
SHOWN = 200
EVERY = "every scope"
SHARED = "global (shared)"
NO_MEMORY = "Memory is not available in this process."


@dataclass
class MemoryTab:
    state: AppState
    workflow: gr.Dropdown
    scope: gr.Dropdown
    query: gr.Textbox
    table: gr.Dataframe
    chosen: gr.Textbox
    detail: gr.Markdown
    status: gr.Markdown
    sure: gr.Checkbox

    @property
    def outputs(self) -> list[Component]:
        return [self.workflow, self.scope, self.table, self.chosen, self.detail, self.status]

    @property
    def store(self) -> MemoryStore | None:
        return self.state.flow.engine.services.memory

    def workflows(self) -> list[str]:
        from agentflow.memory.base import parse_scope

        store = self.store
        names: set[str] = set()
        for scope, _ in store.scopes() if store is not None else ():
            kind, key = parse_scope(scope)
            if kind != "global":
                names.add(key.split("/", 1)[0])
        names |= {version.name for version in self.state.flow.store.list_workflows()}
        return [*sorted(names), SHARED]

    def scopes(self, workflow: str | None) -> list[tuple[str, int]]:
        store = self.store
        if store is None or not workflow:
            return []
        if workflow == SHARED:
            return [(name, count) for name, count in store.scopes() if name == "global"]
        return [(name, count) for name, count in store.scopes() if belongs(name, workflow)]

    def refresh(self) -> Updates:
        workflows = self.workflows()
        first = next((name for name in workflows if self.scopes(name)), workflows[0] if workflows else None)
        return {self.workflow: gr.Dropdown(choices=workflows, value=first), **self.pick_workflow(first)}

    def pick_workflow(self, workflow: str | None) -> Updates:
        scopes = self.scopes(workflow)
        choices = [EVERY, *(name for name, _ in scopes)]
        return {self.scope: gr.Dropdown(choices=choices, value=EVERY), **self.browse(workflow, EVERY, "")}

    def _scopes(self, workflow: str | None, scope: str | None) -> list[str]:
        every = [name for name, _ in self.scopes(workflow)]
        return every if scope in (None, "", EVERY) else [scope] if scope in every else []

    def browse(self, workflow: str | None, scope: str | None, query: str) -> Updates:
        store = self.store
        if store is None:
            return {self.table: _frame([]), self.status: NO_MEMORY, self.chosen: "", self.detail: ""}
        scopes = self._scopes(workflow, scope)
        if query.strip():
            items = [hit.item for hit in store.search(scopes, query, k=50)] if scopes else []
            status = f"{_count(len(items))} match{'es' if len(items) == 1 else ''} “{query.strip()}”."
        else:
            items = []
            for item in items_of(store, scopes):
                items.append(item)
                if len(items) >= SHOWN:
                    break
            total = sum(count for name, count in self.scopes(workflow) if name in scopes)
            status = f"{_count(total)} in {len(scopes)} scope{'s' if len(scopes) != 1 else ''}."
            if total > len(items):
                status += f" The newest {len(items)} are shown; search to find older ones."
        if not scopes:
            status = f"Nothing remembered for {workflow}." if workflow else "No workflow yet."
        return {self.table: _frame(items), self.status: status, self.chosen: "", self.detail: ""}

    def select(self, event: gr.SelectData, table: pd.DataFrame) -> Updates:
        row = event.index[0] if isinstance(event.index, list | tuple) else event.index
        if not isinstance(row, int) or not 0 <= row < len(table):
            return {}
        return self.show(str(table.iloc[row]["id"]))

    def show(self, item_id: str) -> Updates:
        store = self.store
        item = store.get(item_id) if store is not None and item_id else None
        if item is None:
            return {self.chosen: "", self.detail: "Pick a memory to see it whole."}
        return {self.chosen: item.id, self.detail: detail_text(item)}

    def delete(self, item_id: str, workflow: str | None, scope: str | None, query: str) -> Updates:
        store = self.store
        if store is None or not item_id:
            return {self.status: "Pick a memory first."}
        gone = store.delete(item_id)
        updates = self.browse(workflow, scope, query)
        updates[self.status] = f"Deleted {item_id}." if gone else f"{item_id} was already gone."
        return updates

    def forget(self, workflow: str | None, scope: str | None, sure: bool) -> Updates:
        store = self.store
        if store is None:
            return {self.status: NO_MEMORY}
        scopes = self._scopes(workflow, scope)
        if not sure:
            return {self.status: "Tick **I am sure** to forget every memory listed."}
        total = sum(store.forget(name) for name in scopes)
        updates = self.pick_workflow(workflow)
        updates[self.status] = f"Forgot {_count(total)} of {scope if scope not in (None, EVERY) else workflow}."
        updates[self.sure] = False  # the next forget asks again
        return updates


def _count(number: int) -> str:
    return f"{number} memor{'y' if number == 1 else 'ies'}"


def _frame(items: list[MemoryItem]) -> pd.DataFrame:
    rows = [
        [item.id, item.scope, _when(item.updated_at), ", ".join(item.tags), " ".join(item.text.split())[:300]]
        for item in items
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else ""


def detail_text(item: MemoryItem) -> str:
    facts = [
        f"**Scope:** `{item.scope}`",
        f"**Importance:** {item.importance:g}",
        f"**Tags:** {', '.join(item.tags) or '—'}",
        f"**From run:** `{item.source_run}`" if item.source_run else "**From:** outside a run",
        f"**Created:** {_when(item.created_at)} · **updated:** {_when(item.updated_at)}",
        f"**Expires:** {_when(item.expires_at)}" if item.expires_at else "**Expires:** never",
    ]
    body = [f"### Memory `{item.id}`", "  \n".join(facts), "", item.text]
    if item.data is not None:
        body.append(f"```json\n{json.dumps(item.data, ensure_ascii=False, indent=2)}\n```")
    return "\n\n".join(body)


def build(state: AppState) -> MemoryTab:
    gr.Markdown(
        "What workflows remember across runs: `llm` and `agent` nodes with `memory:` recall from and save to "
        "these scopes. Deleting here is final; `agentflow memory export` keeps a copy first."
    )
    with gr.Row():
        workflow = gr.Dropdown(label="Workflow", choices=[], interactive=True, elem_id="memory-workflow")
        scope = gr.Dropdown(label="Scope", choices=[EVERY], value=EVERY, interactive=True, elem_id="memory-scope")
        query = gr.Textbox(label="Search", placeholder="words to look for", elem_id="memory-query")
    status = gr.Markdown(elem_id="memory-status")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="memory-table")
    with gr.Row():
        chosen = gr.Textbox(label="Selected memory", interactive=False, elem_id="memory-chosen")
        delete = gr.Button("Delete this memory", variant="stop", elem_id="memory-delete")
        sure = gr.Checkbox(label="I am sure", value=False, elem_id="memory-sure")
        forget = gr.Button("Forget every memory listed", variant="stop", elem_id="memory-forget")
    detail = gr.Markdown(elem_id="memory-detail")
    tab = MemoryTab(state, workflow, scope, query, table, chosen, detail, status, sure)
    private: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
    workflow.input(tab.pick_workflow, inputs=workflow, outputs=[scope, table, status, chosen, detail], **private)
    scope.input(tab.browse, inputs=[workflow, scope, query], outputs=[table, status, chosen, detail], **private)
    query.submit(tab.browse, inputs=[workflow, scope, query], outputs=[table, status, chosen, detail], **private)
    table.select(tab.select, inputs=table, outputs=[chosen, detail], **private)
    delete.click(
        tab.delete, inputs=[chosen, workflow, scope, query], outputs=[table, status, chosen, detail], **private
    )
    forget.click(tab.forget, inputs=[workflow, scope, sure], outputs=[*tab.outputs, sure], **private)
    return tab
