"""The run diff as the Runs tab shows it: `diff_runs` (agentflow/runs_diff.py) rendered as one HTML table —
inputs, each node's status, latency, tokens, cost and output, the totals — changed rows marked."""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

from agentflow.runs_diff import Measure, NodeDiff, Pair, RunDiff, ValueDiff, compare
from agentflow.store.base import RunRecord, RunStore
from agentflow.web.ui.queries import SHORT_ID, when

MAX_CELL_CHARS = 160
RECENT = 30
EMPTY = "Pick another run to compare this one with: a recent run of the same workflow, or paste a run id."


def recent_choices(store: RunStore, run: RunRecord) -> list[tuple[str, str]]:
    """(label, run id) of the latest other runs of the same workflow, for the "Compare with…" dropdown."""
    runs = store.list_runs(limit=RECENT + 1, workflow=run.workflow)
    return [
        (f"{other.id[:SHORT_ID]} · {other.status} · {other.trigger} · {when(other.created_at)}", other.id)
        for other in runs
        if other.id != run.id
    ][:RECENT]


def reused_results(run: RunRecord) -> dict[str, Any]:
    """The results a replay took from its source instead of running those nodes (edits included): node -> value."""
    replay = (run.overrides or {}).get("replay") or {}
    results = (replay.get("state") or {}).get("results") or {}
    return {node: results.get(node) for node in (replay.get("reused") or {}).get("nodes") or ()}


def render(
    diff: RunDiff, *, reused_a: Mapping[str, Any] | None = None, reused_b: Mapping[str, Any] | None = None
) -> str:
    """The comparison as HTML: a header, then a table whose changed rows carry the class `diff-changed`.

    `reused_a`/`reused_b`: a replay's reused results (`reused_results`); such a node did not run in that
    run, so the value it used is compared in place of an output."""
    head = (
        f"<p id='diff-sides'><b>a</b> <code>{escape(diff.a.run_id[:SHORT_ID])}</code> {escape(diff.a.label)} "
        f"{escape(diff.a.status)} → <b>b</b> <code>{escape(diff.b.run_id[:SHORT_ID])}</code> "
        f"{escape(diff.b.label)} {escape(diff.b.status)}"
        + ("" if diff.same_version else " <em>(different versions: see the Workflows tab for their diff)</em>")
        + "</p>"
    )
    rows = [_row("inputs", "", _inputs(diff), changed=bool(diff.inputs))]
    rows += [_node_row(node, reused_a or {}, reused_b or {}) for node in diff.nodes]
    totals = diff.totals
    rows.append(
        _row(
            "totals",
            _pair(diff.status),
            "",
            changed=not diff.status.same or any(measure.a != measure.b for measure in totals.values()),
            latency=_measure(totals["latency_ms"], "{:.0f}"),
            tokens=_measure(totals["tokens"], "{:.0f}"),
            cost=_measure(totals["cost_usd"], "${:.6f}"),
        )
    )
    rows.append(_row("result", "", _value(diff.outputs), changed=diff.outputs.state != "equal"))
    header = "".join(
        f"<th>{name}</th>" for name in ("", "status", "latency (ms)", "tokens", "cost (USD)", "output / change")
    )
    return f"{head}<table id='run-diff-table' class='run-diff'><tr>{header}</tr>{''.join(rows)}</table>"


def _node_row(node: NodeDiff, reused_a: Mapping[str, Any], reused_b: Mapping[str, Any]) -> str:
    label = node.id + {"only_a": " (a only)", "only_b": " (b only)"}.get(node.presence, "")
    notes = [f"reused in {side}" for side, reused in (("a", reused_a), ("b", reused_b)) if node.id in reused]
    output = node.output
    if notes:
        label += f" ({', '.join(notes)}: not run there)"
        value_a = reused_a.get(node.id, output.a)
        value_b = reused_b.get(node.id, output.b)
        output = compare(value_a, value_b)
    changed = output.state not in ("equal", "none") or (not notes and not node.status.same)
    return _row(
        label,
        _pair(node.status),
        _value(output),
        changed=changed,
        latency=_measure(node.latency_ms, "{:.0f}"),
        tokens=_measure(node.tokens, "{:.0f}"),
        cost=_measure(node.cost_usd, "${:.6f}"),
    )


def _row(
    label: str, status: str, output: str, *, changed: bool, latency: str = "", tokens: str = "", cost: str = ""
) -> str:
    # Inline: Gradio 6 ignores a Blocks' own css, and the mark must show wherever the table is shown.
    mark = " class='diff-changed' style='background: rgba(255, 196, 0, 0.18)'" if changed else ""
    cells = "".join(f"<td>{cell}</td>" for cell in (escape(label), status, latency, tokens, cost, output))
    return f"<tr{mark}>{cells}</tr>"


def _inputs(diff: RunDiff) -> str:
    if not diff.inputs:
        return "the same"
    return "<br>".join(_change(change.path, change.kind, change.a, change.b) for change in diff.inputs)


def _value(value: ValueDiff) -> str:
    if value.state == "equal":
        return f"= {_short(value.a)}"
    if value.state == "none":
        return "-"
    if value.state in ("only_a", "only_b"):
        side, shown = ("a", value.a) if value.state == "only_a" else ("b", value.b)
        return f"only in {side}: {_short(shown)}"
    if value.text_diff:
        return "<pre>" + escape("\n".join(value.text_diff)) + "</pre>"
    return "<br>".join(_change(change.path, change.kind, change.a, change.b) for change in value.changes)


def _change(path: str, kind: str, a: Any, b: Any) -> str:
    where = f"<code>{escape(path or '(the value)')}</code>"
    if kind == "added":
        return f"+ {where}: {_short(b)}"
    if kind == "removed":
        return f"- {where}: {_short(a)}"
    return f"~ {where}: {_short(a)} → {_short(b)}"


def _pair(pair: Pair) -> str:
    a, b = ("-" if value is None else escape(str(value)) for value in (pair.a, pair.b))
    return a if pair.same else f"{a} → {b}"


def _measure(measure: Measure, shape: str) -> str:
    a, b = ("-" if value is None else shape.format(value) for value in (measure.a, measure.b))
    return a if a == b else f"{a} → {b}"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return escape(text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…")
