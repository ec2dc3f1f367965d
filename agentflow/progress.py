"""Terminal rendering of runs: live per-node progress and summaries."""

from __future__ import annotations

import json
from datetime import datetime
from typing import IO, Any

from agentflow.engine import events as ev
from agentflow.store.base import ApprovalRecord, NodeRunRecord, RunRecord

_MARKS = {"succeeded": "✓", "failed": "✗", "skipped": "–", "waiting": "…"}


class ProgressPrinter:
    """An event observer printing one line per finished node."""

    def __init__(self, stream: IO[str], *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled

    def __call__(self, event: ev.RunEvent) -> None:
        if not self.enabled:
            return
        line = self._line(event)
        if line:
            print(line, file=self.stream, flush=True)

    def _line(self, event: ev.RunEvent) -> str | None:
        if isinstance(event, ev.RunStarted):
            verb = "resuming" if event.resumed else "running"
            return f"{verb} {event.workflow} ({event.version}) as run {event.run_id}"
        if (
            isinstance(event, ev.NodeStarted)
            and event.item_index is None
            and event.node_type in ("llm", "agent", "tool")
        ):
            return f"  … {event.node_id}" + (f" (attempt {event.attempt})" if event.attempt > 1 else "")
        if isinstance(event, ev.NodeFinished):
            where = event.node_id + (f"[{event.item_index}]" if event.item_index is not None else "")
            if event.iteration:
                where += f" (loop {event.iteration + 1})"
            detail = ""
            if event.status == "succeeded":
                detail = f" {event.latency_ms:.0f} ms"
                if event.tokens:
                    detail += f", {event.tokens} tokens, ${event.cost_usd:.6f}"
            elif event.status == "failed":
                detail = f" attempt {event.attempt}: {event.error}"
            return f"  {_MARKS.get(event.status, '?')} {where}{detail}"
        if isinstance(event, ev.ApprovalRequested):
            return f"  ⏸ {event.node_id} waits for approval"
        if isinstance(event, ev.BudgetExceeded):
            return f"  ✗ budget: {event.limit} limit {event.allowed:g} reached"
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


def render_run(summary: dict[str, Any], approval: ApprovalRecord | None) -> str:
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


def render_run_list(runs: list[RunRecord]) -> str:
    if not runs:
        return "no runs yet; start one with: agentflow run examples/hello.yaml"
    header = f"{'run':<14}{'workflow':<24}{'status':<18}{'started':<21}{'tokens':>8}{'cost':>12}"
    lines = [header]
    for run in runs:
        lines.append(
            f"{run.id[:12]:<14}{run.workflow[:22]:<24}{run.status:<18}{_when(run.started_at or run.created_at):<21}"
            f"{run.tokens:>8}{'$' + format(run.cost_usd, '.6f'):>12}"
        )
    return "\n".join(lines)
