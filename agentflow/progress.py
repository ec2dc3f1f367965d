"""Terminal rendering of runs: live per-node progress and summaries."""

from __future__ import annotations

import json
from datetime import datetime
from typing import IO, Any, Protocol

from agentflow.engine import events as ev
from agentflow.store.base import ApprovalRecord, NodeRunRecord, RunRecord

_MARKS = {"succeeded": "✓", "failed": "✗", "skipped": "–", "waiting": "…"}


class ProgressPrinter:
    """An event observer printing one line per finished node."""

    def __init__(self, stream: IO[str], *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled

    def __call__(self, event: ev.RunEvent) -> None:
        if self.enabled:
            self.show(event.to_dict())

    def show(self, event: dict[str, Any]) -> None:
        """Print the progress line of an event as stored or streamed (a dict), if it has one."""
        line = progress_line(event)
        if line:
            print(line, file=self.stream, flush=True)


def progress_line(event: dict[str, Any]) -> str | None:
    """The live progress of `agentflow run`: runs starting, slow nodes starting, every node finishing."""
    kind = event.get("type")
    if kind == "run_started":
        verb = "resuming" if event.get("resumed") else "running"
        return f"{verb} {event.get('workflow')} ({event.get('version')}) as run {event.get('run_id')}"
    attempt = event.get("attempt") or 1
    slow = event.get("node_type") in ("llm", "agent", "tool")
    if kind == "node_started" and event.get("item_index") is None and slow:
        return f"  … {event.get('node_id')}" + (f" (attempt {attempt})" if attempt > 1 else "")
    if kind == "node_finished":
        where = str(event.get("node_id"))
        if event.get("item_index") is not None:
            where += f"[{event['item_index']}]"
        if event.get("iteration"):
            where += f" (loop {event['iteration'] + 1})"
        status = event.get("status")
        detail = ""
        if status == "succeeded":
            detail = f" {event.get('latency_ms') or 0.0:.0f} ms"
            if event.get("tokens"):
                detail += f", {event['tokens']} tokens, ${event.get('cost_usd') or 0.0:.6f}"
        elif status == "failed":
            detail = f" attempt {attempt}: {event.get('error')}"
        return f"  {_MARKS.get(str(status), '?')} {where}{detail}"
    if kind == "approval_requested":
        return f"  ⏸ {event.get('node_id')} waits for approval"
    if kind == "budget_exceeded":
        return f"  ✗ budget: {event.get('limit')} limit {event.get('allowed') or 0:g} reached"
    return None


def run_summary(run: RunRecord, node_runs: list[NodeRunRecord] | None) -> dict[str, Any]:
    """The machine-readable view of a run (the `--json` contract)."""
    summary: dict[str, Any] = {
        "run_id": run.id,
        "workflow": run.workflow,
        "version": run.version,
        "status": run.status,
        "trigger": run.trigger,
        "inputs": run.inputs,
        "outputs": run.outputs,
        "error": run.error,
        "tokens": run.tokens,
        "cost_usd": round(run.cost_usd, 8),
        "steps": run.steps,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "executed_by": run.executed_by,
    }
    if node_runs is not None:
        summary["nodes"] = node_table(node_runs)
    return summary


def node_table(node_runs: list[NodeRunRecord]) -> list[dict[str, Any]]:
    """One row per node: its last status, attempts (retries and iterations included) and totals."""
    rows: dict[str, dict[str, Any]] = {}
    for record in node_runs:
        row = rows.setdefault(
            record.node_id,
            {
                "id": record.node_id,
                "type": record.node_type,
                "status": record.status,
                "attempts": 0,
                "latency_ms": 0.0,
                "tokens": 0,
                "cost_usd": 0.0,
                "error": None,
            },
        )
        if record.item_index is not None:
            continue  # map branches are counted in the map's own row
        row["status"] = record.status
        if record.status != "skipped":
            row["attempts"] += 1
        row["latency_ms"] = round(row["latency_ms"] + (record.latency_ms or 0.0), 3)
        row["tokens"] += record.tokens or 0
        row["cost_usd"] = round(row["cost_usd"] + (record.cost_usd or 0.0), 8)
        row["error"] = record.error
    for record in node_runs:
        if record.item_index is not None:
            row = rows[record.node_id]
            row["tokens"] += record.tokens or 0
            row["cost_usd"] = round(row["cost_usd"] + (record.cost_usd or 0.0), 8)
    return list(rows.values())


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "-"


class Approval(Protocol):
    """A pending approval as the store (ApprovalRecord) or the API (PendingApproval) gives it."""

    @property
    def node_id(self) -> str: ...
    @property
    def message(self) -> str: ...


def render_run(summary: dict[str, Any], approval: Approval | None) -> str:
    lines = [
        f"run {summary['run_id']}  {summary['workflow']} ({summary['version']})",
        f"status: {summary['status']}",
    ]
    if summary.get("error"):
        lines.append(f"error: {summary['error']}")
    for node in summary.get("nodes", []):
        mark = _MARKS.get(node["status"], "?")
        extra = f", {node['tokens']} tokens, ${node['cost_usd']:.6f}" if node["tokens"] else ""
        tries = f", {node['attempts']} attempts" if node["attempts"] > 1 else ""
        lines.append(f"  {mark} {node['id']} ({node['type']}) {node['latency_ms']:.0f} ms{tries}{extra}")
    if summary.get("outputs") is not None:
        lines.append("outputs:")
        lines.append(json.dumps(summary["outputs"], indent=2, ensure_ascii=False, default=str))
    lines.append(f"tokens: {summary['tokens']}   cost: ${summary['cost_usd']:.6f}")
    if approval is not None:
        lines.append(f"waiting for approval at '{approval.node_id}':")
        lines.append("  " + approval.message.replace("\n", "\n  "))
        run_id = summary["run_id"]
        lines.append(
            f"continue with: agentflow approve {run_id} [--comment TEXT]   or: agentflow approve {run_id} --reject"
        )
    return "\n".join(lines)


def approval_summary(approval: ApprovalRecord) -> dict[str, Any]:
    """The pending approval in a run's `--json` view: what the person is asked, and since when."""
    return {"node_id": approval.node_id, "message": approval.message, "requested_at": approval.requested_at}


# Fields shown in the time, type and node columns, shown by `_event_details`, or too big for one line (outputs).
_EVENT_NOT_EXTRA = frozenset(
    {"id", "type", "run_id", "at", "node_id", "node_type", "attempt", "iteration", "item_index", "started_at"}
    | {"workflow", "version", "resumed", "status", "approved", "limit", "allowed", "used", "error", "input_tokens"}
    | {"output_tokens", "tokens", "cost_usd", "tool", "model", "latency_ms", "message", "comment", "output", "outputs"}
    | {"prompt", "reply", "arguments", "result"}  # the run console shows these in full
    | {"pinned", "reused_from"}  # said in words when set
)


def _one_line(text: object, limit: int | None = 120) -> str:
    flat = " ".join(str(text).split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def _event_where(event: dict[str, Any]) -> str:
    node = event.get("node_id")
    if not node:
        return ""
    where = str(node)
    if event.get("item_index") is not None:
        where += f"[{event['item_index']}]"
    if event.get("node_type"):
        where += f" ({event['node_type']})"
    if event.get("iteration"):
        where += f" loop {event['iteration'] + 1}"
    if (event.get("attempt") or 1) > 1:
        where += f" attempt {event['attempt']}"
    return where


def _event_details(event: dict[str, Any]) -> list[str]:
    """What happened, most telling first: status, error, tokens, cost, tool or model, latency."""
    parts: list[str] = []
    if event.get("workflow"):
        parts.append(f"{event['workflow']} ({event.get('version')})" + (", resumed" if event.get("resumed") else ""))
    if event.get("status"):
        parts.append(str(event["status"]))
    if event.get("pinned"):
        parts.append("pinned (given with the run, not executed)")
    if event.get("reused_from"):
        parts.append(f"reused from run {str(event['reused_from'])[:12]} (not executed again)")
    if "approved" in event:
        parts.append("approved" if event["approved"] else "rejected")
    if event.get("limit"):
        parts.append(f"{event['limit']} limit {event.get('allowed', 0):g} reached (used {event.get('used', 0):g})")
    if event.get("error"):
        parts.append(f"error: {_one_line(event['error'], limit=None)}")  # the cause is often at the end: keep it
    if "input_tokens" in event:
        parts.append(f"{event['input_tokens']} in + {event.get('output_tokens', 0)} out tokens")
    elif event.get("tokens"):
        parts.append(f"{event['tokens']} tokens")
    if event.get("cost_usd"):
        parts.append(f"${event['cost_usd']:.6f}")
    if event.get("tool"):
        parts.append(f"tool {event['tool']}")
    if event.get("model"):
        parts.append(f"model {event['model']}")
    if event.get("latency_ms") is not None:
        parts.append(f"{event['latency_ms']:.0f} ms")
    if event.get("message"):
        parts.append(f"message: {_one_line(event['message'])}")
    if event.get("comment"):
        parts.append(f"comment: {_one_line(event['comment'])}")
    # Event types added later still show their scalar fields, rather than nothing.
    for key, value in event.items():
        if key not in _EVENT_NOT_EXTRA and isinstance(value, str | int | float) and value != "":
            parts.append(f"{key}={_one_line(value, 60)}")
    return parts


def event_line(event: dict[str, Any]) -> str:
    """One event as a line: time, type, node, and what happened (`runs show --events`, `agentflow logs`)."""
    at = event.get("at")
    when = datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if at else "-"
    where = _event_where(event)
    details = ", ".join(_event_details(event))
    return f"{when}  {event.get('type', '?'):<18}  {where:<24}  {details}".rstrip()


def render_events(events: list[dict[str, Any]]) -> str:
    """A run's event log, one line per event: time, type, node, and what happened."""
    if not events:
        return "events: none recorded"
    return "\n".join(["events:", *(f"  {event_line(event)}" for event in events)])


def render_run_list(runs: list[dict[str, Any]]) -> str:
    """Runs as a table, from their `run_summary` (or the API's RunSummary) dicts."""
    if not runs:
        return "no runs yet; start one with: agentflow run examples/hello.yaml"
    header = f"{'run':<14}{'workflow':<24}{'status':<18}{'started':<21}{'tokens':>8}{'cost':>12}"
    lines = [header]
    for run in runs:
        started = _when(run.get("started_at") or run.get("created_at"))
        lines.append(
            f"{run['run_id'][:12]:<14}{run['workflow'][:22]:<24}{run['status']:<18}{started:<21}"
            f"{run['tokens']:>8}{'$' + format(run['cost_usd'], '.6f'):>12}"
        )
    return "\n".join(lines)
