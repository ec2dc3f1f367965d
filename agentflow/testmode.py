"""Test mode: run a workflow over synthetic inputs, with pinned node outputs, and compare with a baseline.

`run_suite` runs each case to its end in this process and returns a `Suite`; `compare_case` says
how a case differs from its baseline entry, in lines people read. The CLI (`agentflow test`,
cli_test.py) reads and writes the baseline file and picks the exit code. docs/test-mode.md has
the baseline's format; what is compared: each case's inputs, status and outputs, and each node's
status and output (never latency, tokens or cost, which vary from run to run).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.progress import node_table
from agentflow.runs_diff import ValueDiff, compare, node_outputs, short_json
from agentflow.store.base import RunRecord, WorkflowVersion

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow

BASELINE_FORMAT = "agentflow-test-baseline/1"
MAX_LINES_PER_VALUE = 12
MAX_VALUE_CHARS = 100


class BaselineError(ValueError):
    """A baseline file that cannot be read as one; the message names the file and what to do."""


@dataclass(slots=True)
class Case:
    index: int
    inputs: dict[str, Any]
    run_id: str
    result: dict[str, Any]
    """What the baseline keeps of the run: status, error, outputs, and each node's status and output."""
    differences: list[str] = field(default_factory=list)
    """How it differs from its baseline entry; empty when it matches or there is no baseline."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.index,
            "run_id": self.run_id,
            "inputs": self.inputs,
            "status": self.result["status"],
            "matches": not self.differences,
            "differences": self.differences,
        }


@dataclass(slots=True)
class Suite:
    workflow: str
    version: str
    seed: int
    pins: dict[str, Any]
    cases: list[Case]

    @property
    def passed(self) -> bool:
        return all(not case.differences for case in self.cases)

    def baseline(self) -> dict[str, Any]:
        """The baseline file's content for these runs."""
        return {
            "format": BASELINE_FORMAT,
            "workflow": self.workflow,
            "seed": self.seed,
            "pinned": self.pins,
            "cases": [{"inputs": case.inputs, **case.result} for case in self.cases],
        }


def read_baseline(path: Path) -> dict[str, Any] | None:
    """The baseline at `path`; None when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BaselineError(f"cannot read the baseline {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise BaselineError(f"the baseline {path} is not UTF-8 text ({exc.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); "
            "fix it, or write it again with --update-baseline"
        ) from None
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or not isinstance(data.get("cases"), list):
        raise BaselineError(
            f"{path} is not an agentflow test baseline (format {BASELINE_FORMAT!r}); "
            "point --baseline at another file, or write this one again with --update-baseline"
        )
    return data


def write_baseline(path: Path, suite: Suite) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(suite.baseline(), indent=2, ensure_ascii=False, default=str)
    path.write_text(text + "\n", encoding="utf-8")


async def run_suite(
    flow: AgentFlow,
    version: WorkflowVersion,
    cases: list[dict[str, Any]],
    *,
    seed: int,
    pins: dict[str, Any],
    on_case: Callable[[Case], None] | None = None,
) -> Suite:
    """Run every case (one after the other, here) and record what the baseline compares."""
    overrides = {"pinned": pins} if pins else None
    suite = Suite(version.name, version.version, seed, pins, [])
    for index, inputs in enumerate(cases):
        run = flow.submit(version, inputs, trigger="test", overrides=overrides)
        status = await _to_the_end(flow, run.id)
        record = flow.store.get_run(run.id)
        assert record is not None
        case = Case(index, _json(inputs), run.id, result_of(flow, record, status))
        if status == "waiting_approval":
            # A test cannot decide an approval (a person does): it records the wait, then ends the run.
            flow.store.request_cancel(run.id)
            await flow.store.flush()
        suite.cases.append(case)
        if on_case is not None:
            on_case(case)
    return suite


async def _to_the_end(flow: AgentFlow, run_id: str) -> str:
    """Run it here until it ends or waits for a person; its status then."""
    status: str | None = await flow.executor.run(run_id)
    if status is None:  # this process's own queue loop took it first
        status = (await flow.executor.wait_for(run_id, statuses=TERMINAL_STATUSES | {"waiting_approval"})).status
    await flow.store.flush()
    return str(status)


def result_of(flow: AgentFlow, run: RunRecord, status: str | None = None) -> dict[str, Any]:
    """A run as the baseline keeps it (as JSON gives it back); `status` overrides the recorded one."""
    events = flow.store.events(run.id)
    outputs = node_outputs(events)
    pinned = {event["node_id"] for event in events if event.get("type") == "node_finished" and event.get("pinned")}
    nodes: dict[str, Any] = {}
    for row in node_table(flow.store.node_runs(run.id)):
        node_id = row["id"]
        nodes[node_id] = {"status": row["status"], "output": outputs.get(node_id)}
        if node_id in pinned:
            nodes[node_id]["pinned"] = True
    return _json({"status": status or run.status, "error": run.error, "outputs": run.outputs, "nodes": nodes})


def _json(value: Any) -> Any:
    result: Any = json.loads(json.dumps(value, default=str))
    return result


def compare_case(expected: dict[str, Any], case: Case) -> list[str]:
    """How `case` differs from its baseline entry (status, outputs, each node's status and output)."""
    actual = case.result
    lines: list[str] = []
    inputs = compare(expected.get("inputs"), case.inputs)
    if inputs.state != "equal":
        lines.append("inputs differ from the baseline's (the input schema, --seed or --cases changed?):")
        lines.extend("  " + line for line in value_lines(inputs))
    if expected.get("status") != actual["status"]:
        lines.append(f"status: {expected.get('status')} → {actual['status']}")
        if actual.get("error"):
            lines.append(f"  error now: {short_json(actual['error'], MAX_VALUE_CHARS)}")
    before, after = expected.get("nodes") or {}, actual["nodes"]
    for node_id in dict.fromkeys([*before, *after]):
        lines.extend(_node_lines(node_id, before.get(node_id), after.get(node_id)))
    outputs = compare(expected.get("outputs"), actual["outputs"])
    if outputs.state != "equal":
        lines.append("outputs changed:")
        lines.extend("  " + line for line in value_lines(outputs))
    return lines


def _node_lines(node_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[str]:
    if before is None or after is None:
        where = "now, not in the baseline" if before is None else "in the baseline, not now"
        return [f"node {node_id}: reached {where}"]
    lines = []
    if before.get("status") != after.get("status"):
        lines.append(f"node {node_id}: status {before.get('status')} → {after.get('status')}")
    output = compare(before.get("output"), after.get("output"))
    if output.state != "equal":
        lines.append(f"node {node_id}: output changed" + (" (pinned)" if after.get("pinned") else ""))
        lines.extend("  " + line for line in value_lines(output))
    return lines


def value_lines(diff: ValueDiff) -> list[str]:
    """A changed value as lines: a line diff of two texts, else each change (`~ path: before → after`)."""
    lines = list(diff.text_diff) or [change.line(MAX_VALUE_CHARS) for change in diff.changes]
    if len(lines) > MAX_LINES_PER_VALUE:
        more = len(lines) - MAX_LINES_PER_VALUE
        lines = [*lines[:MAX_LINES_PER_VALUE], f"… {more} more (--json shows the whole result)"]
    return lines
