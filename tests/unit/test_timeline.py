"""The Gantt rows of a run: one per execution, branches side by side, skipped nodes left out."""

from __future__ import annotations

from agentflow.store.base import NodeRunRecord
from agentflow.web.ui.timeline import bars, rows, svg


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


def test_the_chart_marks_the_bottleneck_and_grows_running_nodes() -> None:
    events = [
        {"type": "run_started", "at": 100.0},
        {"type": "node_started", "node_id": "slow", "node_type": "llm", "at": 100.0},
        {"type": "node_started", "node_id": "fast", "node_type": "llm", "at": 100.0},
        {"type": "node_finished", "node_id": "fast", "node_type": "llm", "status": "succeeded", "at": 100.1,
         "started_at": 100.0},
    ]  # fmt: skip
    found = bars(events, now=102.0)
    assert [(bar.label, bar.status, bar.end) for bar in found] == [
        ("fast", "succeeded", 100.1),
        ("slow", "running", 102.0),
    ]
    chart = svg(found, bottleneck="slow")
    assert chart.startswith("<svg") and "slow  ◀ bottleneck" in chart and "fast" in chart
    assert "running" in chart
    # Once the run stopped, a start without a finish was interrupted: it no longer grows.
    stopped = bars([*events, {"type": "run_finished", "at": 100.2}], now=500.0)
    assert [(bar.label, bar.status, bar.end) for bar in stopped][1] == ("slow", "interrupted", 100.0)
    assert "No node has started yet" in svg([])


def test_node_names_are_escaped_in_the_chart() -> None:
    chart = svg(bars([{"type": "node_started", "node_id": "<script>", "node_type": "llm", "at": 1.0}], now=2.0))
    assert "<script>" not in chart and "&lt;script&gt;" in chart
