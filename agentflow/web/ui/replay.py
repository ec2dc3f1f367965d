"""Time travel on the run console: "Replay from here" (a node the open run reached, optional edits) and
"Compare with…" another run, whose diff renders as a table (diff.py).

The panel builds its components where `build` is called inside the Runs tab, and is wired to the tab once
the tab exists (`wire`): a replay opens the new run in the console like a re-run does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

import gradio as gr

from agentflow.engine.budget import BudgetExceededError
from agentflow.replay import ReplayError, parse_sets, replay
from agentflow.runs_diff import diff_runs
from agentflow.trust.grants import NeedsGrantError
from agentflow.web.ui import diff
from agentflow.web.ui.chat import Updates  # at run time: Gradio reads the handlers' annotations

if TYPE_CHECKING:
    from agentflow.web.ui.runs import RunsTab

EDITS_HELP = (
    "Optional edits, one PATH=VALUE a line (inputs.NAME=VALUE, NODE=VALUE or NODE.field=VALUE for a node before the "
    'one picked), or a JSON object such as {"inputs.ticket": "...", "classify.category": "bug"}'
)


def parse_edits(text: str) -> dict[str, Any]:
    """The edits box: a JSON object of {PATH: value}, or PATH=VALUE lines (as `agentflow replay --set`)."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            edits = json.loads(text)
        except ValueError as exc:
            raise ReplayError(f"the edits are not a JSON object: {exc}") from None
        if not isinstance(edits, dict):
            raise ReplayError('the edits must be a JSON object such as {"inputs.NAME": "value"}')
        return edits
    return parse_sets([line.strip() for line in text.splitlines() if line.strip()])


@dataclass
class ReplayPanel:
    node: gr.Dropdown
    edits: gr.Textbox
    start: gr.Button
    other: gr.Dropdown
    compare: gr.Button
    table: gr.HTML
    tab: RunsTab | None = None

    @property
    def runs(self) -> RunsTab:
        assert self.tab is not None, "wire the panel to its tab first"
        return self.tab

    def choices(self, run_id: str) -> Updates:
        """The nodes the open run reached (a replay can start at each) and the runs it can be compared with."""
        store = self.runs.flow.store
        run = self.runs.find(run_id)
        if run is None:
            return {
                self.node: gr.update(choices=[], value=None),
                self.other: gr.update(choices=[], value=None),
                self.start: gr.update(interactive=False),
                self.table: "",
            }
        reached = list(dict.fromkeys(row.node_id for row in store.node_runs(run.id) if row.status != "skipped"))
        return {
            self.node: gr.update(choices=reached, value=reached[-1] if reached else None),
            self.other: gr.update(choices=diff.recent_choices(store, run), value=None),
            self.start: gr.update(interactive=bool(reached) and run.status not in ("queued", "running")),
            self.table: "",
        }

    async def do_replay(self, run_id: str, node_id: str, edits: str, status: str, request: gr.Request) -> Updates:
        """Start the replay, then open the new run in the console with what it reused."""
        tab = self.runs
        source = tab.find(run_id)
        if source is None or not node_id:
            return {tab.result: "Pick a run, then the node to replay it from."}
        try:
            new, fork = await replay(tab.flow, source, node_id, parse_edits(edits))
        except (ReplayError, NeedsGrantError, BudgetExceededError) as exc:  # a revoked grant, a spent budget
            return {tab.result: f"**Replay refused:** {escape(str(exc))}"}
        opened = tab.open(new.id, request)
        opened[tab.result] = (
            f"Started run `{new.id[:12]}`, a replay of `{source.id[:12]}`: {fork.reused.line(fork.node_id)}."
        )
        opened[tab.table] = tab.listing(status)
        opened[self.edits] = ""
        return opened

    def do_compare(self, run_id: str, other_id: str) -> str:
        tab = self.runs
        run, other = tab.find(run_id), tab.find((other_id or "").strip())
        if run is None:
            return "<p>Pick a run in the list first.</p>"
        if other is None:
            shown = escape(other_id or "")
            return f"<p>{diff.EMPTY}</p>" if not shown else f"<p>No run <code>{shown}</code> here. {diff.EMPTY}</p>"
        compared = diff_runs(tab.flow.store, run, other)
        return diff.render(compared, reused_a=diff.reused_results(run), reused_b=diff.reused_results(other))

    def wire(self, tab: RunsTab) -> None:
        self.tab = tab
        private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
        tab.selected.change(
            self.choices, inputs=tab.selected, outputs=[self.node, self.other, self.start, self.table], **private
        )
        from agentflow.web.ui.runs import SHOW_RUN_JS

        self.start.click(
            self.do_replay,
            inputs=[tab.selected, self.node, self.edits, tab.status_filter],
            outputs=[tab.selected, tab.result, tab.table, self.edits, *tab.detail],
            **private,
        ).then(None, js=SHOW_RUN_JS, **private)
        self.compare.click(self.do_compare, inputs=[tab.selected, self.other], outputs=self.table, **private)


def build() -> ReplayPanel:
    """The panel's components, laid out where this is called."""
    with gr.Accordion("Time travel: replay from a node, compare with another run", open=False, elem_id="run-time"):
        with gr.Row():
            node = gr.Dropdown([], label="Replay from node", scale=1, elem_id="replay-node")
            edits = gr.Textbox(label="Edits", placeholder=EDITS_HELP, lines=2, scale=3, elem_id="replay-edits")
            start = gr.Button("Replay from here", interactive=False, scale=1, elem_id="replay-start")
        with gr.Row():
            other = gr.Dropdown(
                [], label="Compare with… (a recent run, or paste an id)", allow_custom_value=True, scale=4,
                elem_id="diff-other",
            )  # fmt: skip
            compare = gr.Button("Compare", scale=1, elem_id="diff-compare")
        table = gr.HTML("", elem_id="run-diff")
    return ReplayPanel(node, edits, start, other, compare, table)
