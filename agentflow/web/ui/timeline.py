"""A run's timeline as a Gantt chart: one bar per node execution, parallel branches side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentflow.store.base import NodeRunRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"succeeded": "#3b82f6", "failed": "#ef4444", "waiting": "#f59e0b"}
BOTTLENECK = "#a855f7"


def rows(node_runs: list[NodeRunRecord]) -> list[tuple[str, float, float, str]]:
    """(label, start, end, status) per execution, in start order; skipped nodes and map summaries left out."""
    found = []
    for record in node_runs:
        if record.status == "skipped" or not record.started_at:
            continue
        if record.node_type == "map" and record.item_index is None:
            continue
        label = record.node_id if record.item_index is None else f"{record.node_id}[{record.item_index}]"
        if record.attempt > 1:
            label += f" (try {record.attempt})"
        if record.iteration:
            label += f" (loop {record.iteration + 1})"
        end = max(record.finished_at or record.started_at, record.started_at)
        found.append((label, record.started_at, end, record.status))
    return sorted(found, key=lambda row: (row[1], row[0]))


def gantt(node_runs: list[NodeRunRecord], *, bottleneck: str | None = None) -> Figure | None:
    """The chart, or None when the run has no node executions yet."""
    bars = rows(node_runs)
    if not bars:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    origin = min(start for _, start, _, _ in bars)
    figure = Figure(figsize=(9, max(1.6, 0.38 * len(bars) + 0.9)), layout="constrained")
    axes = figure.add_subplot()
    for position, (label, start, end, status) in enumerate(bars):
        node_id = label.split("[")[0].split(" ")[0]
        is_bottleneck = node_id == bottleneck
        axes.barh(
            position,
            max((end - start) * 1000, 0.5),
            left=(start - origin) * 1000,
            color=BOTTLENECK if is_bottleneck else COLORS.get(status, "#9ca3af"),
            edgecolor="black" if is_bottleneck else "none",
        )
    axes.set_yticks(
        range(len(bars)),
        [label + ("  ◀ bottleneck" if label.split("[")[0] == bottleneck else "") for label, *_ in bars],
    )
    axes.invert_yaxis()
    axes.set_xlabel("milliseconds since the run started")
    axes.grid(axis="x", alpha=0.3)
    return figure
