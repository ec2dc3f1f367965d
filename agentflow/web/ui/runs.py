"""The Runs tab: a live list of runs and the run console — timeline, each node's calls (prompt sent,
reply), tool calls, outputs, errors and retries, the approval it waits for — with approve, reject,
cancel and re-run as a person's actions.

Live without timers: while the tab is open, `follow` (an async generator Gradio streams from) reads
the live feed (agentflow/engine/feed.py) and redraws what changed — the list on any event, the open
run when one of its events arrives — at most once per FRAME_SECONDS, so a slow browser gets the
latest state instead of every intermediate one and never holds a run back. Decisions and cancels
only change the store: the executor picks the run up again by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any, get_args

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow import versions
from agentflow.engine.events import TERMINAL_STATUSES, RunStatus
from agentflow.engine.feed import Subscription
from agentflow.observability.profile import profile
from agentflow.store.base import RunRecord, TraceState
from agentflow.web.mlflow_mount import PREFIX as MLFLOW_PREFIX
from agentflow.web.ui import analyse, console, queries
from agentflow.web.ui import replay as time_travel
from agentflow.web.ui.chat import Updates, engine_of, person_of
from agentflow.web.ui.timeline import bars, svg
from agentflow.web.ui.workflow_views import address, run_address

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.web.server import AppState

FRAME_SECONDS = 0.1
BOTTLENECK_SECONDS = 15.0
ALL = "all"
CANCELLABLE = ("queued", "running", "waiting_approval")
LIST_LIMIT = 200
PICK = "Click a run in the list to open its console."


def trace_url(trace_id: str) -> str:
    """Opens the trace in the MLflow UI: /mlflow/-/traces/ redirects to the UI's page of its experiment."""
    return f"{MLFLOW_PREFIX}/-/traces/{trace_id}"


@dataclass
class RunsTab:
    state: AppState
    status_filter: gr.Dropdown
    table: gr.Dataframe
    selected: gr.State
    header: gr.Markdown
    trace: gr.HTML
    approval: gr.Markdown
    comment: gr.Textbox
    approve: gr.Button
    reject: gr.Button
    cancel: gr.Button
    rerun: gr.Button
    result: gr.Markdown
    console: gr.HTML
    gantt: gr.HTML
    bottleneck: gr.Markdown
    nodes: gr.Dataframe
    events: gr.Dataframe
    inputs: gr.JSON
    outputs: gr.JSON
    # What each open browser tab shows, by Gradio session: the live loop reads it on every redraw.
    focus: dict[str, str] = field(default_factory=dict)
    filters: dict[str, str] = field(default_factory=dict)
    _live: dict[str, Subscription] = field(default_factory=dict)
    _bottlenecks: OrderedDict[str, tuple[float, tuple[str, str] | None]] = field(default_factory=OrderedDict)

    @property
    def detail(self) -> list[Component]:
        return [
            self.header,
            self.trace,
            self.approval,
            self.approve,
            self.reject,
            self.cancel,
            self.rerun,
            self.console,
            self.gantt,
            self.bottleneck,
            self.nodes,
            self.events,
            self.inputs,
            self.outputs,
        ]

    @property
    def outputs_all(self) -> list[Component]:
        return [self.table, self.selected, self.result, *self.detail]

    @property
    def flow(self) -> AgentFlow:
        return engine_of(self.state).flow

    # -- rendering ----------------------------------------------------------------------------

    def listing(self, status: str) -> pd.DataFrame:
        statuses = () if status in ("", ALL) else (status,)
        return queries.runs_frame(self.flow.store.list_runs(limit=LIST_LIMIT, statuses=statuses))

    def find(self, run_id: str) -> RunRecord | None:
        """A run by id or by the short id the list shows."""
        store = self.flow.store
        if not run_id:
            return None
        run = store.get_run(run_id)
        if run is None and len(run_id) >= 4:
            matches = store.find_run(run_id)
            run = matches[0] if len(matches) == 1 else None
        return run

    def show(self, run_id: str) -> Updates:
        """The run console for one run (or its empty state)."""
        store = self.flow.store
        run = self.find(run_id)
        if run is None:
            return {
                self.header: PICK if not run_id else f"No run `{escape(run_id)}` here: pick one from the list.",
                self.trace: "",
                self.approval: gr.update(visible=False, value=""),
                **{
                    button: gr.update(interactive=False)
                    for button in (self.approve, self.reject, self.cancel, self.rerun)
                },
                self.console: "",
                self.gantt: "",
                self.bottleneck: "",
                self.nodes: queries.nodes_frame(store, ""),
                self.events: queries.events_frame([]),
                self.inputs: None,
                self.outputs: None,
            }
        pending = store.pending_approval(run.id) if run.status == "waiting_approval" else None
        events = store.events(run.id)
        bottleneck = self.bottleneck_of(run)
        return {
            self.header: self.heading(run),
            self.trace: _trace_line(run, store.trace_of(run.id)),
            self.approval: gr.update(
                visible=pending is not None,
                value=f"**Waiting for approval at `{pending.node_id}`:**\n\n{pending.message}" if pending else "",
            ),
            self.approve: gr.update(interactive=pending is not None),
            self.reject: gr.update(interactive=pending is not None),
            self.cancel: gr.update(interactive=run.status in CANCELLABLE),
            self.rerun: gr.update(interactive=True),
            self.console: console.render(events, pending=pending.message if pending else None),
            self.gantt: svg(bars(events, now=time.time()), bottleneck=bottleneck[0] if bottleneck else None),
            self.bottleneck: bottleneck[1] if bottleneck else "",
            self.nodes: queries.nodes_frame(store, run.id),
            self.events: queries.events_frame(events),
            self.inputs: run.inputs,
            self.outputs: run.outputs,
        }

    def heading(self, run: RunRecord) -> str:
        store = self.flow.store
        stored = store.list_versions(run.workflow)  # newest first
        by_id = {version.version: version for version in stored}
        this = by_id.get(run.version)
        label = versions.label(this) if this else run.version
        parts = [
            f"workflow [**{run.workflow}** {label}]({address(run.workflow, label)})",
            f"trigger {run.trigger}",
            f"created {queries.when(run.created_at)}",
            f"duration {queries.duration(run)}",
            f"{run.steps} steps",
            f"{run.tokens} tokens",
            queries.money(run.cost_usd),
        ]
        position = stored.index(this) if this else -1
        if 0 <= position < len(stored) - 1:
            previous = versions.label(stored[position + 1])
            parts.append(f"[diff with {previous}]({address(run.workflow, label, previous)})")
        if run.executed_by:
            parts.append(f"executed by `{run.executed_by}`")
        share = run_address(run.id)
        lines = [f"### Run `{run.id}` — {run.status}", " · ".join(parts), f"Link to this run: [{share}]({share})"]
        if run.cancel_requested and run.status == "running":
            lines.append("_Cancel requested; stopping at the next step._")
        replayed = (run.overrides or {}).get("replay")
        if replayed:
            lines.append(_replay_line(replayed))
        if run.error:
            lines.append(f"**Error:** {run.error}")
        return "\n\n".join(lines)

    def bottleneck_of(self, run: RunRecord) -> tuple[str, str] | None:
        """The workflow's bottleneck over its recent runs, as (node id, note); recomputed at most every
        BOTTLENECK_SECONDS per workflow, and when a run finished since (a live run redraws often)."""
        cached = self._bottlenecks.get(run.workflow)
        if cached is None or time.time() - cached[0] > BOTTLENECK_SECONDS or (run.finished_at or 0) > cached[0]:
            found = profile(self.flow.store, run.workflow, last=50)
            slowest = found.bottleneck
            note = None
            if slowest is not None:
                note = (
                    slowest.node_id,
                    f"**Bottleneck of `{run.workflow}`** (last {found.runs} runs): `{slowest.node_id}` — "
                    f"{slowest.critical_share:.0%} of the critical path, p95 {slowest.p95_ms:.0f} ms, "
                    f"{slowest.cost_share:.0%} of the cost. `agentflow profile {run.workflow}` shows every node.",
                )
            cached = self._bottlenecks[run.workflow] = (time.time(), note)
            while len(self._bottlenecks) > 64:
                self._bottlenecks.popitem(last=False)
        return cached[1]

    # -- live --------------------------------------------------------------------------------

    async def follow(
        self, status: str, run_id: str, event: gr.SelectData, request: gr.Request
    ) -> AsyncIterator[Updates]:
        """Stream the list and the open run while the tab is open: until `stop`, or until Gradio
        cancels it when the browser goes away."""
        if not event.selected:  # the tab's select event also fires when it is left
            return
        session = request.session_hash or ""
        self.stop(request)  # at most one stream per browser tab
        self.filters[session] = status
        self.focus.setdefault(session, run_id)
        subscription = self._live[session] = await self.flow.feed.subscribe(limit=1000, changes=True)
        try:
            yield await asyncio.to_thread(self._frame, session, True)
            while True:
                batch = await subscription.next()
                await asyncio.sleep(FRAME_SECONDS)  # let a burst of events make one redraw, not many
                batch += await subscription.next(0)
                if subscription.closed:
                    return
                focused = self.focus.get(session, "")
                redraw_run = subscription.take_lag() or any(
                    event.get("run_id", "").startswith(focused) for event in batch if focused
                )
                yield await asyncio.to_thread(self._frame, session, redraw_run)
        finally:
            subscription.close()
            if self._live.get(session) is subscription:
                del self._live[session]

    def stop(self, request: gr.Request) -> None:
        """End this browser tab's live stream (another tab was opened)."""
        subscription = self._live.get(request.session_hash or "")
        if subscription is not None:
            subscription.close()

    def _frame(self, session: str, with_run: bool) -> Updates:
        updates: Updates = {self.table: self.listing(self.filters.get(session, ALL))}
        if with_run:
            updates.update(self.show(self.focus.get(session, "")))
        return updates

    # -- a person's actions -------------------------------------------------------------------

    def open(self, run_id: str, request: gr.Request) -> Updates:
        """Open a run directly (from its address)."""
        run = self.find(run_id)
        chosen = run.id if run else run_id
        self.focus[request.session_hash or ""] = chosen
        return {self.selected: chosen, self.result: "", **self.show(chosen)}

    def pick(self, event: gr.SelectData, request: gr.Request) -> Updates:
        row = event.row_value or []
        return self.open(str(row[0]) if row else "", request)

    def filter(self, status: str, request: gr.Request) -> Updates:
        self.filters[request.session_hash or ""] = status
        return {self.table: self.listing(status)}

    def decide(self, run_id: str, comment: str, *, approved: bool, person: str | None = None) -> Updates:
        flow = self.flow
        decided = flow.store.decide_approval(
            run_id, approved=approved, comment=comment.strip() or None, decided_by=person
        )
        if decided is None:
            message = "This run has no pending approval any more (someone may have decided it already)."
        else:
            flow.executor.wake()
            verb = "Approved" if approved else "Rejected"
            message = f"{verb} `{decided.node_id}`; the run continues in the background."
        return {self.result: message, self.comment: "", **self.show(run_id)}

    def do_approve(self, run_id: str, comment: str, request: gr.Request) -> Updates:
        return self.decide(run_id, comment, approved=True, person=person_of(request))

    def do_reject(self, run_id: str, comment: str, request: gr.Request) -> Updates:
        return self.decide(run_id, comment, approved=False, person=person_of(request))

    def do_cancel(self, run_id: str) -> Updates:
        if self.flow.store.request_cancel(run_id):
            self.flow.bus.changed(run_id)  # a queued or waiting run ended here: wake whoever follows it
            message = "Cancel requested; a running run stops at its next step."
        else:
            message = "Only queued, waiting or running runs can be cancelled."
        return {self.result: message, **self.show(run_id)}

    async def do_rerun(self, run_id: str, status: str, request: gr.Request) -> Updates:
        """A new run of the same workflow version with the same inputs."""
        store = self.flow.store
        run = store.get_run(run_id)
        if run is None:
            return {self.result: "Pick a run first."}
        stored = store.get_workflow(run.workflow, run.version)
        if stored is None:
            return {self.result: f"Version {run.version} of '{run.workflow}' is no longer stored; it cannot run again."}
        new = await self.state.start_run(stored, run.inputs, trigger="rerun")  # on the loop: it wakes the executor
        self.focus[request.session_hash or ""] = new.id
        return {
            self.selected: new.id,
            self.result: f"Started run `{new.id[:12]}` (re-run of `{run.id[:12]}`).",
            self.table: self.listing(status),
            **self.show(new.id),
        }


def _replay_line(replayed: dict[str, Any]) -> str:
    """A replay's heading line: the run and node it forked from, and what it took from there."""
    from agentflow.replay import Reused

    source = str(replayed.get("run_id", ""))
    reuse = Reused.from_dict(replayed.get("reused")).line(str(replayed.get("node_id", "")))
    return f"**Replay** of run [`{source[:12]}`]({run_address(source)}): {reuse}."


def _trace_line(run: RunRecord, trace: TraceState | None) -> str:
    if run.status not in TERMINAL_STATUSES:
        return "<p><b>Trace:</b> written to MLflow when the run finishes.</p>"
    if trace is not None and trace.state == "failed":
        return f"<p><b>Trace:</b> the export to MLflow failed: {escape(trace.error or 'no reason recorded')}</p>"
    if trace is None or trace.state != "exported" or not trace.trace_id:
        return "<p><b>Trace:</b> trace not exported yet.</p>"
    return (
        f'<p><b>Trace:</b> <a href="{escape(trace_url(trace.trace_id))}" target="_blank" rel="noopener" '
        f'id="run-trace-link">open it in MLflow</a> <code>{escape(trace.trace_id)}</code></p>'
    )


# URL bar: the address of what is open, so a reload or a shared link opens it again.
SHOW_RUN_JS = """() => {
  if (!window.agentflowRouted) return;  // the first select comes before the address was read
  const link = document.querySelector('#run-detail a[href^="/?tab=runs&run="]');
  window.history.replaceState(null, "", link ? link.getAttribute("href") : "/?tab=runs");
}"""


def build(state: AppState) -> RunsTab:
    with gr.Row():
        status_filter = gr.Dropdown([ALL, *get_args(RunStatus)], value=ALL, label="Status", scale=1)
        gr.Markdown("Live: the list and the open run update as their events arrive.", elem_id="runs-live")
    table = gr.Dataframe(
        headers=queries.RUN_COLUMNS, interactive=False, label="Runs (click one)", max_height=360, elem_id="runs-table"
    )
    selected = gr.State("")
    header = gr.Markdown(PICK, elem_id="run-detail")
    trace = gr.HTML("", elem_id="run-trace")
    approval = gr.Markdown(visible=False, elem_id="run-approval")
    with gr.Row():
        comment = gr.Textbox(label="Comment (for approve / reject)", scale=4, elem_id="run-comment")
        approve = gr.Button("Approve", variant="primary", interactive=False, scale=1, elem_id="run-approve")
        reject = gr.Button("Reject", variant="stop", interactive=False, scale=1, elem_id="run-reject")
        cancel = gr.Button("Cancel run", interactive=False, scale=1, elem_id="run-cancel")
        rerun = gr.Button("Re-run", interactive=False, scale=1, elem_id="run-rerun")
    result = gr.Markdown(elem_id="run-action")
    analyse.build(state, selected)  # the Analyse button and its answer (agentflow/web/ui/analyse.py)
    panel = time_travel.build()
    with gr.Tabs():
        with gr.Tab("Console"):
            console_html = gr.HTML("", elem_id="run-console")
        with gr.Tab("Timeline"):
            bottleneck = gr.Markdown(elem_id="run-bottleneck")
            gantt = gr.HTML("", elem_id="run-gantt")
            nodes = gr.Dataframe(headers=queries.NODE_COLUMNS, interactive=False, wrap=True, elem_id="run-nodes")
        with gr.Tab("Events"):
            events = gr.Dataframe(headers=queries.EVENT_COLUMNS, interactive=False, wrap=True, max_height=400)
        with gr.Tab("Inputs"):
            inputs = gr.JSON(label="Inputs")
        with gr.Tab("Outputs"):
            outputs = gr.JSON(label="Outputs", elem_id="run-outputs")
    tab = RunsTab(
        state, status_filter, table, selected, header, trace, approval, comment, approve, reject, cancel, rerun,
        result, console_html, gantt, bottleneck, nodes, events, inputs, outputs,
    )  # fmt: skip
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    status_filter.change(tab.filter, inputs=status_filter, outputs=table, **private)
    picked = [selected, result, *tab.detail]
    table.select(tab.pick, outputs=picked, **private).then(None, js=SHOW_RUN_JS, **private)
    decided = [result, comment, *tab.detail]
    approve.click(tab.do_approve, inputs=[selected, comment], outputs=decided, **private)
    reject.click(tab.do_reject, inputs=[selected, comment], outputs=decided, **private)
    cancel.click(tab.do_cancel, inputs=selected, outputs=[result, *tab.detail], **private)
    rerun.click(
        tab.do_rerun, inputs=[selected, status_filter], outputs=[selected, result, table, *tab.detail], **private
    ).then(None, js=SHOW_RUN_JS, **private)
    panel.wire(tab)
    return tab
