"""What the tabs read from the store, as pandas DataFrames ready for tables and plots.

Spend comes from the same rows the budgets use: a run's `tokens`/`cost_usd`
(summed from its LLM calls) for days and workflows, and `node_runs` (which
record the model that answered) for models.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd
import yaml

from agentflow.progress import node_table
from agentflow.store.base import LedgerStore, RunRecord, RunStore, WorkflowStore

RUN_COLUMNS = ["run", "workflow", "status", "trigger", "started", "duration", "tokens", "cost (USD)"]
NODE_COLUMNS = ["node", "type", "status", "attempts", "latency (ms)", "tokens", "cost (USD)", "error"]
EVENT_COLUMNS = ["time", "event", "node", "detail"]
WORKFLOW_COLUMNS = ["name", "latest version", "versions", "updated", "description"]
SHORT_ID = 12


def when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S") if timestamp else "—"


def duration(run: RunRecord, *, now: float | None = None) -> str:
    """Wall time so far (running) or in total (finished); a dash for runs not started."""
    if run.started_at is None:
        return "—"
    seconds = (run.finished_at or now or time.time()) - run.started_at
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def money(value: float) -> str:
    return f"${value:.6f}" if value < 0.01 else f"${value:.2f}"


# -- runs ---------------------------------------------------------------------------------


def runs_frame(runs: list[RunRecord]) -> pd.DataFrame:
    now = time.time()
    rows = [
        [
            run.id[:SHORT_ID],
            run.workflow,
            run.status,
            run.trigger,
            when(run.started_at or run.created_at),
            duration(run, now=now),
            run.tokens,
            money(run.cost_usd),
        ]
        for run in runs
    ]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def nodes_frame(store: RunStore, run_id: str) -> pd.DataFrame:
    rows = [
        [
            row["id"],
            row["type"],
            row["status"],
            row["attempts"],
            round(row["latency_ms"]),
            row["tokens"],
            money(row["cost_usd"]),
            row["error"] or "",
        ]
        for row in node_table(store.node_runs(run_id))
    ]
    return pd.DataFrame(rows, columns=NODE_COLUMNS)


def _event_detail(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "node_finished":
        detail = f"{event.get('status')} in {event.get('latency_ms', 0):.0f} ms"
        if event.get("item_index") is not None:
            detail += f" (item {event['item_index']})"
        return detail + (f": {event['error']}" if event.get("error") else "")
    if kind == "llm_call":
        tokens = (event.get("input_tokens") or 0) + (event.get("output_tokens") or 0)
        return f"{event.get('model')}: {tokens} tokens, {money(event.get('cost_usd') or 0.0)}" + (
            f", error: {event['error']}" if event.get("error") else ""
        )
    if kind == "tool_call":
        return f"{event.get('tool')} in {event.get('latency_ms', 0):.0f} ms" + (
            f", error: {event['error']}" if event.get("error") else ""
        )
    if kind in ("approval_requested", "approval_decided"):
        verdict = "" if kind == "approval_requested" else ("approved" if event.get("approved") else "rejected")
        return " ".join(part for part in (verdict, event.get("message") or event.get("comment") or "") if part)
    if kind == "budget_exceeded":
        return f"{event.get('limit')}: used {event.get('used')} of {event.get('allowed')}"
    if kind == "run_finished":
        return str(event.get("status")) + (f": {event['error']}" if event.get("error") else "")
    return ""


def events_frame(store: RunStore, run_id: str, *, limit: int = 500) -> pd.DataFrame:
    events = store.events(run_id)[-limit:]
    rows = [
        [
            datetime.fromtimestamp(event.get("at", 0)).strftime("%H:%M:%S.%f")[:-3],
            event.get("type", ""),
            event.get("node_id") or "",
            _event_detail(event),
        ]
        for event in events
    ]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


# -- workflows ------------------------------------------------------------------------------


def _description(source: str) -> str:
    try:
        data = yaml.safe_load(source)
        return str(data["metadata"].get("description") or "")
    except (yaml.YAMLError, TypeError, KeyError, AttributeError):
        return ""


def workflows_frame(store: WorkflowStore) -> pd.DataFrame:
    counts = store.version_counts()
    rows = [
        [stored.name, stored.version, counts.get(stored.name, 1), when(stored.created_at), _description(stored.source)]
        for stored in store.list_workflows()
    ]
    return pd.DataFrame(rows, columns=WORKFLOW_COLUMNS)


# -- spend ----------------------------------------------------------------------------------


def since(days: int | None) -> float:
    """The start of the window: local midnight `days - 1` days ago, or 0 for all time."""
    if not days:
        return 0.0
    start = date.today() - timedelta(days=days - 1)
    return datetime.combine(start, datetime.min.time()).timestamp()


def spend_by_day(store: LedgerStore, days: int | None) -> pd.DataFrame:
    """One row per day in the window (days without runs show as zero), oldest first."""
    found = {row.key: (row.runs, row.tokens, row.cost_usd) for row in store.run_totals(by="day", since=since(days))}
    if days:
        first = date.today() - timedelta(days=days - 1)
        every_day = [(first + timedelta(days=offset)).isoformat() for offset in range(days)]
    else:
        every_day = sorted(found)
    data = [[day, *found.get(day, (0, 0, 0.0))] for day in every_day]
    return pd.DataFrame(data, columns=["day", "runs", "tokens", "cost_usd"])


def spend_by_workflow(store: LedgerStore, days: int | None) -> pd.DataFrame:
    rows = store.run_totals(by="workflow", since=since(days))
    data = [[row.key, row.runs, row.tokens, row.cost_usd] for row in rows]
    return pd.DataFrame(data, columns=["workflow", "runs", "tokens", "cost_usd"])


def spend_by_model(store: LedgerStore, days: int | None) -> pd.DataFrame:
    """Spend per model and its provider (the LiteLLM prefix); retries and map branches included."""
    rows = store.model_totals(since=since(days))
    data = [[row.key, _provider(row.key), row.runs, row.tokens, row.cost_usd] for row in rows]
    return pd.DataFrame(data, columns=["model", "provider", "node runs", "tokens", "cost_usd"])


def _provider(model: str) -> str:
    prefix, slash, _ = model.partition("/")
    return prefix if slash else "openai"  # LiteLLM's default when a model has no prefix


def totals(store: LedgerStore, days: int | None) -> dict[str, Any]:
    rows = store.run_totals(by=None, since=since(days))
    total = rows[0] if rows else None
    return {
        "runs": total.runs if total else 0,
        "tokens": total.tokens if total else 0,
        "cost_usd": total.cost_usd if total else 0.0,
    }
