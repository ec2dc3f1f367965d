"""The Gantt rows of a run: one per execution, branches side by side, skipped nodes left out."""

from __future__ import annotations

from agentflow.store.base import NodeRunRecord
from agentflow.web.ui.timeline import gantt, rows


def record(node_id: str, start: float, end: float, **extra: object) -> NodeRunRecord:
    values: dict = {
        "run_id": "r",
        "node_id": node_id,
        "node_type": "llm",
        "status": "succeeded",
        "attempt": 1,
        "iteration": 0,
        "item_index": None,
        "started_at": start,
        "finished_at": end,
        "latency_ms": (end - start) * 1000,
        "model": None,
        "tokens": 0,
        "cost_usd": 0.0,
        "error": None,
    }
    values.update(extra)
    return NodeRunRecord(**values)  # type: ignore[arg-type]


def test_rows_put_parallel_branches_side_by_side() -> None:
    records = [
        record("fetch", 10.0, 10.5),
        record("each", 10.5, 11.0, item_index=1, node_type="tool"),
        record("each", 10.5, 10.9, item_index=0, node_type="tool"),
        record("each", 10.5, 11.0, node_type="map"),  # the map's own summary
        record("skipped_one", 0, 0, status="skipped"),
        record("fix", 11.0, 11.2, attempt=2, status="failed"),
    ]
    assert [row[0] for row in rows(records)] == ["fetch", "each[0]", "each[1]", "fix (try 2)"]


def test_gantt_marks_the_bottleneck() -> None:
    figure = gantt([record("slow", 100.0, 102.0), record("fast", 100.0, 100.1)], bottleneck="slow")
    assert figure is not None
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert "slow  ◀ bottleneck" in labels and "fast" in labels
    assert gantt([]) is None
