"""A run's timeline as an SVG Gantt chart: one bar per node execution, parallel branches side by side.

Built from the run's events, so nodes still running show as bars growing to "now"; the bottleneck
of the workflow (over its recent runs) is marked. SVG is cheap to redraw on every live update and
scales with the page.
"""

from __future__ import annotations

from html import escape
from typing import Any, NamedTuple

from agentflow.store.base import NodeRunRecord

COLORS = {"succeeded": "#3b82f6", "failed": "#ef4444", "waiting": "#f59e0b", "running": "#22c55e"}
BOTTLENECK = "#a855f7"
ROW_PX = 22
LABEL_PX = 210
WIDTH_PX = 900


class Bar(NamedTuple):
    label: str
    node_id: str
    start: float
    end: float
    status: str


def _label(node_id: str, item_index: int | None, attempt: int, iteration: int) -> str:
    label = node_id if item_index is None else f"{node_id}[{item_index}]"
    if attempt > 1:
        label += f" (try {attempt})"
    if iteration:
        label += f" (loop {iteration + 1})"
    return label


def rows(node_runs: list[NodeRunRecord]) -> list[tuple[str, float, float, str]]:
    """(label, start, end, status) per finished execution, in start order; skipped nodes and map summaries left out."""
    found = []
    for record in node_runs:
        if record.status == "skipped" or not record.started_at:
            continue
        if record.node_type == "map" and record.item_index is None:
            continue
        label = _label(record.node_id, record.item_index, record.attempt, record.iteration)
        end = max(record.finished_at or record.started_at, record.started_at)
        found.append((label, record.started_at, end, record.status))
    return sorted(found, key=lambda row: (row[1], row[0]))


def bars(events: list[dict[str, Any]], *, now: float) -> list[Bar]:
    """Bars from a run's events: finished executions, and those still running (ending at `now`)."""
    open_: dict[tuple[Any, ...], dict[str, Any]] = {}
    found: list[Bar] = []
    for event in events:
        kind = event.get("type")
        if kind not in ("node_started", "node_finished") or (
            event.get("node_type") == "map" and event.get("item_index") is None
        ):
            continue
        key = (event["node_id"], event.get("item_index"), event.get("attempt", 1), event.get("iteration", 0))
        label = _label(*key)
        if kind == "node_started":
            open_[key] = event
        elif event.get("status") != "skipped":
            started = open_.pop(key, None)
            start = event.get("started_at") or (started or event)["at"]
            found.append(Bar(label, event["node_id"], start, max(event["at"], start), event["status"]))
        else:
            open_.pop(key, None)
    # A run that stopped (finished, cancelled, waiting) has nothing running: its open starts were interrupted.
    stopped = any(event.get("type") in ("run_finished", "approval_requested") for event in events[-3:])
    for key, started in open_.items():
        end = started["at"] if stopped else max(now, started["at"])
        found.append(Bar(_label(*key), key[0], started["at"], end, "interrupted" if stopped else "running"))
    return sorted(found, key=lambda bar: (bar.start, bar.label))


def svg(found: list[Bar], *, bottleneck: str | None = None) -> str:
    """The chart, or an empty-state line when nothing ran yet."""
    if not found:
        return '<p class="timeline-empty">No node has started yet.</p>'
    origin = min(bar.start for bar in found)
    span = max(max(bar.end for bar in found) - origin, 0.001)
    plot = WIDTH_PX - LABEL_PX - 60
    height = ROW_PX * len(found) + 28
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH_PX} {height}" width="100%" '
        f'role="img" aria-label="node timeline" font-family="sans-serif" font-size="12">'
    ]
    for position, bar in enumerate(found):
        y = position * ROW_PX + 4
        x = LABEL_PX + (bar.start - origin) / span * plot
        width = max((bar.end - bar.start) / span * plot, 2.0)
        marked = bar.node_id == bottleneck
        color = BOTTLENECK if marked else COLORS.get(bar.status, "#9ca3af")
        label = escape(bar.label + ("  ◀ bottleneck" if marked else ""))
        milliseconds = (bar.end - bar.start) * 1000
        parts.append(
            f'<g class="bar bar-{escape(bar.status)}"><title>{escape(bar.label)}: {escape(bar.status)}, '
            f"{milliseconds:.0f} ms</title>"
            f'<text x="{LABEL_PX - 6}" y="{y + 13}" text-anchor="end" fill="currentColor">{label}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW_PX - 6}" rx="3" fill="{color}"'
            + (' stroke="black"' if marked else "")
            + "/>"
            f'<text x="{x + width + 4:.1f}" y="{y + 13}" fill="currentColor">{_duration(milliseconds)}</text></g>'
        )
    axis_y = ROW_PX * len(found) + 18
    parts.append(
        f'<text x="{LABEL_PX}" y="{axis_y}" fill="currentColor">0</text>'
        f'<text x="{LABEL_PX + plot}" y="{axis_y}" text-anchor="end" fill="currentColor">'
        f"{_duration(span * 1000)} since the first node started</text></svg>"
    )
    return "".join(parts)


def _duration(milliseconds: float) -> str:
    return f"{milliseconds:.0f} ms" if milliseconds < 2000 else f"{milliseconds / 1000:.1f} s"
