"""`agentflow diff RUN_A RUN_B [--json]`: what changed between two runs, as a table (runs_diff.py builds it)."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentflow.runs_diff import Measure, Pair, RunDiff, RunSide, ValueDiff

COMMANDS = frozenset({"diff"})
MAX_DIFF_LINES = 12  # per value; --json has them all
MAX_VALUE_CHARS = 80
_OUTPUT_STATES = {"equal": "=", "changed": "changed", "only_a": "only a", "only_b": "only b", "none": "-"}
_RESULT_STATES = {
    "equal": "the same",
    "changed": "changed",
    "only_a": "only a has outputs",
    "only_b": "only b has outputs",
}
_RESULT_STATES["none"] = "neither has outputs"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    diff = commands.add_parser(
        "diff", help="compare two runs: version, inputs, each node's output, status, latency and cost"
    )
    diff.add_argument("run_a", metavar="RUN_A", help="a run id, or a unique prefix of one (side a)")
    diff.add_argument("run_b", metavar="RUN_B", help="the run to compare it with (side b)")
    diff.add_argument("--json", action="store_true", help="print the diff as one JSON object")


def print_diff(diff: RunDiff, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(diff.to_dict(), ensure_ascii=False, default=str))
    else:
        print(render(diff))
    return 0


def render(diff: RunDiff) -> str:
    """The diff for people: the two runs, the source diff, inputs, a node table, totals and the result."""
    lines = [_run_line("a", diff.a), _run_line("b", diff.b)]
    if diff.same_version:
        lines.append(f"version: the same ({diff.a.label}, {diff.a.version})")
    else:
        what = "workflow" if not diff.same_workflow else "version"
        lines.append(f"version: {diff.a.label} → {diff.b.label} (the {what} differs)")
        lines.extend("  " + line for line in (diff.source_diff or "").splitlines())
    lines.append("inputs:" + ("" if diff.inputs else " the same"))
    lines.extend("  " + change.line(MAX_VALUE_CHARS) for change in diff.inputs)
    lines.append("nodes:")
    lines.extend("  " + row for row in _node_table(diff))
    changed = [node for node in diff.nodes if node.output.state == "changed"]
    if changed:
        lines.append("node outputs that changed:")
    for node in changed:
        lines.append(f"  {node.id}:")
        lines.extend("    " + line for line in _value_lines(node.output))
    lines.append("totals:")
    totals = diff.totals
    lines.append(f"  tokens   {_measure(totals['tokens'], _count)}")
    lines.append(f"  cost     {_measure(totals['cost_usd'], _usd)}")
    lines.append(f"  latency  {_measure(totals['latency_ms'], _ms)}")
    lines.append(f"  steps    {_measure(totals['steps'], _count)}")
    lines.append("result:")
    lines.append(f"  status   {_pair(diff.status)}")
    if diff.error.a or diff.error.b:
        lines.append(f"  error    {_pair(diff.error, _text)}")
    lines.append(f"  outputs  {_RESULT_STATES[diff.outputs.state]}")
    if diff.outputs.state != "equal":
        lines.extend("    " + line for line in _value_lines(diff.outputs))
    return "\n".join(lines)


def _run_line(name: str, side: RunSide) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(side.created_at)) if side.created_at else "-"
    return f"{name}: {side.run_id}  {side.label}  {side.status}  ({side.trigger}, {when})"


def _node_table(diff: RunDiff) -> list[str]:
    header = ["node", "type", "status", "attempts", "latency ms", "tokens", "cost $", "output"]
    rows = [
        [
            node.id + {"only_a": " (a only)", "only_b": " (b only)"}.get(node.presence, ""),
            _pair(node.type),
            _pair(node.status),
            _measure(node.attempts, _count),
            _measure(node.latency_ms, _ms),
            _measure(node.tokens, _count),
            _measure(node.cost_usd, _usd),
            _OUTPUT_STATES[node.output.state],
        ]
        for node in diff.nodes
    ]
    if not rows:
        return ["(no node ran in either run)"]
    table = [header, *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]


def _value_lines(value: ValueDiff) -> list[str]:
    if value.state in ("only_a", "only_b"):
        side, shown = ("a", value.a) if value.state == "only_a" else ("b", value.b)
        lines = [f"only in {side}: {_json(shown)}"]
    elif value.text_diff:
        lines = list(value.text_diff)
    else:
        lines = [change.line(MAX_VALUE_CHARS) for change in value.changes]
    if len(lines) > MAX_DIFF_LINES:
        more = len(lines) - MAX_DIFF_LINES
        lines = [*lines[:MAX_DIFF_LINES], f"… {more} more line{'s' if more > 1 else ''} (--json shows all)"]
    return lines


def _json(value: Any) -> str:
    from agentflow.runs_diff import short_json  # imported when printing: building the CLI's parser stays light

    return short_json(value, MAX_VALUE_CHARS)


def _text(value: Any) -> str:
    return "-" if value is None else _json(" ".join(str(value).split()))


def _pair(pair: Pair, show: Any = None) -> str:
    shown = show or (lambda value: "-" if value is None else str(value))
    return shown(pair.a) if pair.same else f"{shown(pair.a)} → {shown(pair.b)}"


def _measure(measure: Measure, show: Any) -> str:
    a, b = ("-" if value is None else show(value) for value in (measure.a, measure.b))
    if measure.a == measure.b:
        return a
    change = measure.change
    if change is None:
        return f"{a} → {b}"
    return f"{a} → {b} ({'+' if change >= 0 else '-'}{show(abs(change))})"


def _count(value: float) -> str:
    return str(int(value))


def _ms(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 1 else f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"


def _usd(value: float) -> str:
    return f"{value:.6f}"
