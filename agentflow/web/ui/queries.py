"""What the tabs read from the store, as pandas DataFrames ready for tables and plots.

Spend (Costs and Overview) comes from one source, the cost ledger — every
provider call, a run's or the chat assistant's — which the budgets read too.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from agentflow.progress import node_table
from agentflow.store.base import CostRow, DailyCost, LedgerStore, RunRecord, RunStore

RUN_COLUMNS = ["run", "workflow", "status", "trigger", "started", "duration", "tokens", "cost (USD)"]
NODE_COLUMNS = ["node", "type", "status", "attempts", "latency (ms)", "tokens", "cost (USD)", "error"]
EVENT_COLUMNS = ["time", "event", "node", "detail"]
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


def events_frame(events: list[dict[str, Any]], *, limit: int = 500) -> pd.DataFrame:
    rows = [
        [
            datetime.fromtimestamp(event.get("at", 0)).strftime("%H:%M:%S.%f")[:-3],
            event.get("type", ""),
            event.get("node_id") or "",
            _event_detail(event),
        ]
        for event in events[-limit:]
    ]
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


# -- spend ----------------------------------------------------------------------------------

SOURCES = {"run": "runs", "assistant": "assistant", "analyse": "analyses"}  # the ledger's sources, as charts name them
LEDGER_COLUMNS = ["calls", "tokens in", "tokens out", "cost_usd"]


def since(days: int | None) -> float:
    """The start of the window: local midnight `days - 1` days ago, or 0 for all time."""
    if not days:
        return 0.0
    start = date.today() - timedelta(days=days - 1)
    return datetime.combine(start, datetime.min.time()).timestamp()


def window_days(days: int) -> list[str]:
    """The local dates of the last `days` days, oldest first."""
    first = date.today() - timedelta(days=days - 1)
    return [(first + timedelta(days=offset)).isoformat() for offset in range(days)]


def tokens(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.1f}k" if count >= 1e4 else f"{count:,}"


def totals(store: LedgerStore, start: float) -> dict[str, CostRow]:
    """The ledger since `start` by source ("run", "assistant"), and "all" of it."""
    found = {row.key: row for row in store.spend(by="source", since=start)}
    rows = list(found.values())
    found["all"] = CostRow(
        "all",
        sum(row.calls for row in rows),
        sum(row.input_tokens for row in rows),
        sum(row.output_tokens for row in rows),
        sum(row.cost_usd for row in rows),
    )
    return found


def spend_by_day(store: LedgerStore, days: int | None) -> pd.DataFrame:
    """Calls, tokens and spend per day and source (runs, assistant), oldest first; a window's days
    without calls are zero. No rows at all when the window has no call (the tab says so instead)."""
    cells = store.daily_spend(by="source", since=since(days))
    found = {(cell.day, cell.key): cell for cell in cells}
    present = [source for source in SOURCES if any(cell.key == source for cell in cells)]
    every_day = window_days(days) if days and cells else sorted({cell.day for cell in cells})
    data = []
    for day in every_day:
        for source in present:
            cell = found.get((day, source)) or DailyCost(day, source, 0, 0, 0, 0.0)
            data.append([day, SOURCES[source], cell.calls, cell.input_tokens + cell.output_tokens, cell.cost_usd])
    return pd.DataFrame(data, columns=["day", "source", "calls", "tokens", "cost_usd"])


def ledger_frame(store: LedgerStore, by: str, days: int | None) -> pd.DataFrame:
    """The ledger grouped by model, provider, workflow, node or source: calls, tokens in and out, cost."""
    rows = store.spend(by=by, since=since(days))
    data = [[row.key, row.calls, row.input_tokens, row.output_tokens, row.cost_usd] for row in rows]
    frame = pd.DataFrame(data, columns=[by, *LEDGER_COLUMNS])
    if by == "source":
        frame[by] = frame[by].map(lambda source: SOURCES.get(source, source))
    if by == "model":
        frame.insert(1, "provider", frame["model"].map(_provider))
    return frame


def _provider(model: str) -> str:
    prefix, slash, _ = model.partition("/")
    return prefix if slash else "openai"  # LiteLLM's default when a model has no prefix


def tokens_by_workflow_and_day(store: LedgerStore, days: int) -> pd.DataFrame:
    """Tokens per workflow (the assistant's as ASSISTANT) per day of the window: one row per workflow,
    a column per day oldest first, the workflows that used most first. Empty without calls."""
    cells = store.daily_spend(by="workflow", since=since(days))
    if not cells:
        return pd.DataFrame()
    long = pd.DataFrame(
        [[cell.key, cell.day, cell.input_tokens + cell.output_tokens] for cell in cells],
        columns=["workflow", "day", "tokens"],
    )
    grid = long.pivot_table(index="workflow", columns="day", values="tokens", aggfunc="sum", fill_value=0)
    grid = grid.reindex(columns=window_days(days), fill_value=0)
    order = grid.sum(axis=1).sort_values(ascending=False, kind="stable").index
    return grid.loc[order].astype(int)
