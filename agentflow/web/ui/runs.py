"""The Runs tab: a live list of runs; a run's per-node timeline, events, inputs, outputs and errors;
a link to its trace in the MLflow UI; approve, reject, cancel and re-run.

Decisions and cancels only change the store: the background executor picks
the run up again by itself (an approved run is queued; a cancel is noticed by
the process running it).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any, NamedTuple, get_args

import gradio as gr
import pandas as pd
from gradio.components import Component

from agentflow.engine.events import RunStatus
from agentflow.observability.profile import profile
from agentflow.store.base import RunRecord
from agentflow.web.mlflow_mount import PREFIX as MLFLOW_PREFIX
from agentflow.web.ui import queries
from agentflow.web.ui.chat import Updates, engine_of
from agentflow.web.ui.timeline import gantt

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.web.server import AppState

REFRESH_SECONDS = 2.0
ALL = "all"
CANCELLABLE = ("queued", "running", "waiting_approval")
PICK = "Click a run in the list to see its timeline, inputs and outputs."


class TraceRow(NamedTuple):
    """A run's row in `run_traces`, written by the trace exporter (agentflow/observability/exporter.py)."""

    trace_id: str | None
    state: str
    error: str | None


@dataclass
class RunsTab:
    state: AppState
    timer: gr.Timer
    status_filter: gr.Dropdown
    table: gr.Dataframe
    selected: gr.State
    shown: gr.State
    header: gr.Markdown
    trace: gr.HTML
    approval: gr.Markdown
    comment: gr.Textbox
    approve: gr.Button
    reject: gr.Button
    cancel: gr.Button
    rerun: gr.Button
    result: gr.Markdown
    nodes: gr.Dataframe
    events: gr.Dataframe
    inputs: gr.JSON
    outputs: gr.JSON
    gantt: gr.Plot
    bottleneck: gr.Markdown

    @property
    def detail(self) -> list[Component]:
        return [
            self.gantt,
            self.bottleneck,
            self.shown,
            self.header,
            self.trace,
            self.approval,
            self.approve,
            self.reject,
            self.cancel,
            self.rerun,
            self.nodes,
            self.events,
            self.inputs,
            self.outputs,
        ]

    @property
    def flow(self) -> AgentFlow:
        return engine_of(self.state).flow

    def listing(self, status: str) -> pd.DataFrame:
        statuses = () if status in ("", ALL) else (status,)
        return queries.runs_frame(self.flow.store.list_runs(limit=200, statuses=statuses))

    def show(self, run_id: str) -> Updates:
        """The detail panel for one run (or its empty state)."""
        store = self.flow.store
        run = store.get_run(run_id) if run_id else None
        if run is None:
            return {
                self.shown: "",
                self.header: PICK,
                self.trace: "",
                self.approval: gr.update(visible=False, value=""),
                **{
                    button: gr.update(interactive=False)
                    for button in (self.approve, self.reject, self.cancel, self.rerun)
                },
                self.nodes: queries.nodes_frame(store, ""),
                self.events: queries.events_frame(store, ""),
                self.inputs: None,
                self.outputs: None,
                self.gantt: None,
                self.bottleneck: "",
            }
        pending = store.pending_approval(run.id) if run.status == "waiting_approval" else None
        trace = self.trace_of(run.id)
        return {
            self.shown: _fingerprint(run, trace),
            self.header: _header(run),
            self.trace: _trace_line(run, trace),
            self.approval: gr.update(
                visible=pending is not None,
                value=f"**Waiting for approval at `{pending.node_id}`:**\n\n{pending.message}" if pending else "",
            ),
            self.approve: gr.update(interactive=pending is not None),
            self.reject: gr.update(interactive=pending is not None),
            self.cancel: gr.update(interactive=run.status in CANCELLABLE),
            self.rerun: gr.update(interactive=True),
            self.nodes: queries.nodes_frame(store, run.id),
            self.events: queries.events_frame(store, run.id),
            self.inputs: run.inputs,
            self.outputs: run.outputs,
            **self.timeline(run),
        }

    def timeline(self, run: RunRecord) -> Updates:
        """The run's Gantt chart, with the node that bottlenecks its workflow (over recent runs) marked."""
        store = self.flow.store
        found = profile(store, run.workflow, last=50)
        slowest = found.bottleneck
        note = (
            f"**Bottleneck of `{run.workflow}`** (last {found.runs} runs): `{slowest.node_id}` — "
            f"{slowest.critical_share:.0%} of the critical path, p95 {slowest.p95_ms:.0f} ms, "
            f"{slowest.cost_share:.0%} of the cost. `agentflow profile {run.workflow}` shows every node."
            if slowest
            else ""
        )
        return {
            self.gantt: gantt(store.node_runs(run.id), bottleneck=slowest.node_id if slowest else None),
            self.bottleneck: note,
        }

    def trace_of(self, run_id: str) -> TraceRow | None:
        """The run's trace export state; None while the exporter has not tried (or tracing is off)."""
        state = self.flow.store.trace_of(run_id)
        return TraceRow(state.trace_id, state.state, state.error) if state else None

    # -- event handlers ------------------------------------------------------------------------

    def refresh(self, status: str, run_id: str, shown: str) -> Updates:
        updates: Updates = {self.table: self.listing(status)}
        run = self.flow.store.get_run(run_id) if run_id else None
        # Redraw the panel only when the run (or its trace) moved on, so reading it is not disturbed every tick.
        if (_fingerprint(run, self.trace_of(run.id)) if run else "") != shown:
            updates.update(self.show(run_id))
        return updates

    def pick(self, event: gr.SelectData) -> Updates:
        row = event.row_value or []
        matches = self.flow.store.find_run(str(row[0])) if row else []
        run_id = matches[0].id if len(matches) == 1 else ""
        return {self.selected: run_id, self.result: "", **self.show(run_id)}

    def decide(self, run_id: str, comment: str, *, approved: bool) -> Updates:
        decided = self.flow.store.decide_approval(run_id, approved=approved, comment=comment.strip() or None)
        if decided is None:
            message = "This run has no pending approval any more (someone may have decided it already)."
        else:
            verb = "Approved" if approved else "Rejected"
            message = f"{verb} `{decided.node_id}`; the run continues in the background."
        return {self.result: message, self.comment: "", **self.show(run_id)}

    def do_approve(self, run_id: str, comment: str) -> Updates:
        return self.decide(run_id, comment, approved=True)

    def do_reject(self, run_id: str, comment: str) -> Updates:
        return self.decide(run_id, comment, approved=False)

    def do_cancel(self, run_id: str) -> Updates:
        if self.flow.store.request_cancel(run_id):
            message = "Cancel requested; a running run stops at its next step."
        else:
            message = "Only queued, waiting or running runs can be cancelled."
        return {self.result: message, **self.show(run_id)}

    async def do_rerun(self, run_id: str, status: str) -> Updates:
        """A new run of the same workflow version with the same inputs."""
        store = self.flow.store
        run = store.get_run(run_id)
        if run is None:
            return {self.result: "Pick a run first."}
        stored = store.get_workflow(run.workflow, run.version)
        if stored is None:
            return {self.result: f"Version {run.version} of '{run.workflow}' is no longer stored; it cannot run again."}
        new = await self.state.start_run(stored, run.inputs, trigger="rerun")  # on the loop: it wakes the executor
        return {
            self.selected: new.id,
            self.result: f"Started run `{new.id[:12]}` (re-run of `{run.id[:12]}`).",
            self.table: self.listing(status),
            **self.show(new.id),
        }


def _fingerprint(run: RunRecord, trace: TraceRow | None) -> str:
    seen = f"{run.id}|{run.status}|{run.steps}|{run.tokens}|{run.finished_at}|{run.cancel_requested}"
    return f"{seen}|{trace.state if trace else ''}"


def trace_url(trace_id: str) -> str:
    """Opens the trace in the MLflow UI: /mlflow/-/traces/ redirects to the UI's page of its experiment."""
    return f"{MLFLOW_PREFIX}/-/traces/{trace_id}"


def _trace_line(run: RunRecord, trace: TraceRow | None) -> str:
    if run.finished_at is None:
        return "<p><b>Trace:</b> written to MLflow when the run finishes.</p>"
    if trace is not None and trace.state == "failed":
        return f"<p><b>Trace:</b> the export to MLflow failed: {escape(trace.error or 'no reason recorded')}</p>"
    if trace is None or trace.state != "exported" or not trace.trace_id:
        return "<p><b>Trace:</b> trace not exported yet.</p>"
    return (
        f'<p><b>Trace:</b> <a href="{escape(trace_url(trace.trace_id))}" target="_blank" rel="noopener" '
        f'id="run-trace-link">open it in MLflow</a> <code>{escape(trace.trace_id)}</code></p>'
    )


def _header(run: RunRecord) -> str:
    parts = [
        f"workflow **{run.workflow}** ({run.version})",
        f"trigger {run.trigger}",
        f"created {queries.when(run.created_at)}",
        f"duration {queries.duration(run)}",
        f"{run.steps} steps",
        f"{run.tokens} tokens",
        queries.money(run.cost_usd),
    ]
    lines = [f"### Run `{run.id}` — {run.status}", " · ".join(parts)]
    if run.cancel_requested and run.status == "running":
        lines.append("_Cancel requested; stopping at the next step._")
    if run.error:
        lines.append(f"**Error:** {run.error}")
    return "\n\n".join(lines)


def build(state: AppState) -> RunsTab:
    timer = gr.Timer(REFRESH_SECONDS, active=False)
    with gr.Row():
        status_filter = gr.Dropdown([ALL, *get_args(RunStatus)], value=ALL, label="Status", scale=1)
        gr.Markdown(f"Refreshes every {REFRESH_SECONDS:g} s while this tab is open.")
    table = gr.Dataframe(
        headers=queries.RUN_COLUMNS, interactive=False, label="Runs (click one)", max_height=360, elem_id="runs-table"
    )
    selected = gr.State("")
    shown = gr.State("")
    header = gr.Markdown(PICK, elem_id="run-detail")
    trace = gr.HTML("", elem_id="run-trace")
    approval = gr.Markdown(visible=False, elem_id="run-approval")
    with gr.Row():
        comment = gr.Textbox(label="Comment (for approve / reject)", scale=4)
        approve = gr.Button("Approve", variant="primary", interactive=False, scale=1)
        reject = gr.Button("Reject", variant="stop", interactive=False, scale=1)
        cancel = gr.Button("Cancel run", interactive=False, scale=1)
        rerun = gr.Button("Re-run", interactive=False, scale=1)
    result = gr.Markdown(elem_id="run-action")
    with gr.Tabs():
        with gr.Tab("Timeline"):
            bottleneck = gr.Markdown(elem_id="run-bottleneck")
            gantt_plot = gr.Plot(label="Node timeline", elem_id="run-gantt")
            nodes = gr.Dataframe(headers=queries.NODE_COLUMNS, interactive=False, wrap=True, elem_id="run-nodes")
        with gr.Tab("Events"):
            events = gr.Dataframe(headers=queries.EVENT_COLUMNS, interactive=False, wrap=True, max_height=400)
        with gr.Tab("Inputs"):
            inputs = gr.JSON(label="Inputs")
        with gr.Tab("Outputs"):
            outputs = gr.JSON(label="Outputs", elem_id="run-outputs")
    tab = RunsTab(
        state, timer, status_filter, table, selected, shown, header, trace, approval, comment, approve, reject, cancel,
        rerun, result, nodes, events, inputs, outputs, gantt_plot, bottleneck,
    )  # fmt: skip
    private: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    listing = [table, *tab.detail]
    watched = [status_filter, selected, shown]
    timer.tick(tab.refresh, inputs=watched, outputs=listing, show_progress="hidden", **private)
    status_filter.change(tab.refresh, inputs=watched, outputs=listing, **private)
    table.select(tab.pick, outputs=[selected, result, *tab.detail], **private)
    decided = [result, comment, *tab.detail]
    approve.click(tab.do_approve, inputs=[selected, comment], outputs=decided, **private)
    reject.click(tab.do_reject, inputs=[selected, comment], outputs=decided, **private)
    cancel.click(tab.do_cancel, inputs=selected, outputs=[result, *tab.detail], **private)
    rerun.click(
        tab.do_rerun, inputs=[selected, status_filter], outputs=[selected, result, table, *tab.detail], **private
    )
    return tab
