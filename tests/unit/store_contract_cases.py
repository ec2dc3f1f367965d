"""What the store contract suite feeds every store: records, events, a ledger, a tiny graph."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeVar

from langgraph.graph import END, START, StateGraph

from agentflow.engine import events as ev
from agentflow.store.base import AssistantCall, RunRecord, Store

T = TypeVar("T")
T0 = 1_790_000_000.0

# Local days are the machine's: the suite runs 14 hours east of UTC (no daylight saving there), so a
# report grouped by UTC days instead would put the ledger's calls on other days.
ZONE = "Pacific/Kiritimati"


def utc(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC).timestamp()


def new_run(store: Store, run_id: str, *, workflow: str = "wf", created_at: float = T0, **fields: Any) -> RunRecord:
    run = RunRecord(id=run_id, workflow=workflow, version="v1", created_at=created_at, **fields)
    store.create_run(run)
    return run


def record(store: Store, *events: ev.RunEvent) -> None:
    """Apply events as the engine does, then wait for them to be committed."""
    for event in events:
        store.record(event)
    store.flush_sync()


def race(*calls: Callable[[], T]) -> list[T]:
    """Start the calls together, each in a thread of its own; their results, in order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


# -- the ledger ---------------------------------------------------------------------------
# Three runs on three local days; r1 and r2 were created on the same UTC day (1 March), but in the
# zone above r2 is already on 2 March. Every cost is a sum of powers of two, exact in any order.

R1_AT, R2_AT, R3_AT = utc(1, 9), utc(1, 12), utc(2, 12)  # local: 1 Mar 23:00, 2 Mar 02:00, 3 Mar 02:00


def call(
    run_id: str, node_id: str, model: str, provider: str | None, tokens: tuple[int, int], cost: float, at: float
) -> ev.LLMCalled:
    return ev.LLMCalled(
        run_id=run_id,
        node_id=node_id,
        model=model,
        provider=provider,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=cost,
        latency_ms=10.0,
        at=at,
    )


def assistant_call(
    session_id: str, tokens: tuple[int, int], cost: float, at: float, *, error: str | None = None
) -> AssistantCall:
    """A model call of the chat assistant: no run, no workflow, no node."""
    return AssistantCall(
        session_id=session_id,
        model="openai/gpt",
        provider="openai",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cost_usd=cost,
        latency_ms=10.0,
        error=error,
        at=at,
    )


def node(run_id: str, node_id: str, model: str | None, tokens: int, cost: float, at: float) -> ev.NodeFinished:
    return ev.NodeFinished(
        run_id=run_id,
        node_id=node_id,
        node_type="llm",
        status="succeeded",
        started_at=at,
        model=model,
        tokens=tokens,
        cost_usd=cost,
        at=at + 1,
    )


def fill_ledger(store: Store) -> None:
    new_run(store, "r1", workflow="alpha", created_at=R1_AT)
    new_run(store, "r2", workflow="beta", created_at=R2_AT)
    new_run(store, "r3", workflow="alpha", created_at=R3_AT)
    record(
        store,
        call("r1", "plan", "openai/gpt", "openai", (100, 10), 0.5, R1_AT),
        call("r1", "write", "anthropic/claude", "anthropic", (200, 20), 0.25, R1_AT + 60),
        call("r2", "plan", "openai/gpt", "openai", (50, 5), 0.125, R2_AT),
        call("r3", "plan", "local/llama", None, (10, 1), 0.0, R3_AT),
        call("r3", "write", "anthropic/claude", "anthropic", (300, 30), 0.25, R3_AT + 60),
        node("r1", "plan", "openai/gpt", 110, 0.5, R1_AT),
        node("r1", "write", "anthropic/claude", 220, 0.25, R1_AT + 60),
        node("r1", "shape", None, 0, 0.0, R1_AT + 120),  # no model: not in the model totals
        node("r2", "plan", "openai/gpt", 55, 0.125, R2_AT),
        node("r2", "shape", "", 0, 0.0, R2_AT + 120),  # an empty model neither
        node("r3", "plan", "local/llama", 11, 0.0, R3_AT),
        node("r3", "write", "anthropic/claude", 330, 0.25, R3_AT + 60),
    )


# -- a tiny graph, checkpointed by the store ----------------------------------------------


class Tally(TypedDict):
    count: int
    trail: list[str]


def tally_graph(checkpointer: Any) -> Any:
    """double, then increment: {count: 3} ends as {count: 7}."""
    builder: StateGraph[Tally, Any, Tally, Tally] = StateGraph(Tally)
    builder.add_node("double", lambda state: {"count": state["count"] * 2, "trail": [*state["trail"], "double"]})
    builder.add_node("increment", lambda state: {"count": state["count"] + 1, "trail": [*state["trail"], "increment"]})
    builder.add_edge(START, "double")
    builder.add_edge("double", "increment")
    builder.add_edge("increment", END)
    return builder.compile(checkpointer=checkpointer)
