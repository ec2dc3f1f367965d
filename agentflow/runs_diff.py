"""What changed between two runs: version and source, inputs, each node, totals, the final result.

`diff_runs` reads both runs through the store and returns a `RunDiff`; it prints nothing. The CLI
(`agentflow diff`, cli_diff.py) renders it as a table, and `--json` and `GET /api/runs/{a}/diff/{b}`
emit `RunDiff.to_dict()`. Side "a" is the first run named, "b" the second; a change is b - a.

A node's output is the result its last successful execution reported (`node_finished` events,
texts there truncated by the engine); a map's is its branches' results in item order. A node
"ran" in a run when it has an execution that was not skipped, so the branch a switch did not take
counts as absent from that run, as does a node the run's version does not have.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from agentflow.chat.history import unified_diff
from agentflow.progress import node_table
from agentflow.store.base import RunRecord, RunStore, WorkflowStore, WorkflowVersion

_ABSENT: Any = object()
TEXT_CONTEXT_LINES = 1


class DiffStore(RunStore, WorkflowStore, Protocol):
    """What a diff reads: runs, their node runs and events, and the versions they ran."""


@dataclass(frozen=True, slots=True)
class Change:
    """One difference inside a value: `path` is `key.sub[2]` ('' for the value itself)."""

    path: str
    kind: str  # added | removed | changed
    a: Any = None
    b: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "a": self.a, "b": self.b}

    def line(self, max_chars: int) -> str:
        """`+ path: b`, `- path: a` or `~ path: a → b`, each value as JSON cut at `max_chars`."""
        path = self.path or "(the value)"
        if self.kind == "added":
            return f"+ {path}: {short_json(self.b, max_chars)}"
        if self.kind == "removed":
            return f"- {path}: {short_json(self.a, max_chars)}"
        return f"~ {path}: {short_json(self.a, max_chars)} → {short_json(self.b, max_chars)}"


def short_json(value: Any, max_chars: int) -> str:
    """A value as one line of JSON, cut at `max_chars` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


@dataclass(frozen=True, slots=True)
class ValueDiff:
    """A value on each side: equal, changed (with its changes, or a line diff of two texts), on one side only,
    or on neither ('none': a node that produced no output in either run)."""

    state: str  # equal | changed | only_a | only_b | none
    a: Any = None
    b: Any = None
    changes: tuple[Change, ...] = ()
    text_diff: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "a": self.a,
            "b": self.b,
            "changes": [change.to_dict() for change in self.changes],
            "text_diff": list(self.text_diff),
        }


@dataclass(frozen=True, slots=True)
class Pair:
    a: Any
    b: Any

    @property
    def same(self) -> bool:
        return bool(self.a == self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "same": self.same}


@dataclass(frozen=True, slots=True)
class Measure:
    """A number on each side (None where a side has none) and its change, b - a."""

    a: float | None
    b: float | None
    digits: int = 3

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else round(self.b - self.a, self.digits)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "change": self.change}


@dataclass(frozen=True, slots=True)
class NodeDiff:
    id: str
    presence: str  # both | only_a | only_b | neither (skipped in both, or not in either version)
    type: Pair
    status: Pair  # None on a side with no execution of the node at all
    attempts: Measure
    latency_ms: Measure
    tokens: Measure
    cost_usd: Measure
    error: Pair
    output: ValueDiff

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "presence": self.presence,
            **{name: getattr(self, name).to_dict() for name in _NODE_FIELDS},
        }


_NODE_FIELDS = ("type", "status", "attempts", "latency_ms", "tokens", "cost_usd", "error", "output")


@dataclass(frozen=True, slots=True)
class RunSide:
    """One of the two runs, as the diff names it."""

    run_id: str
    workflow: str
    version: str
    number: int  # the version's number (v2); 0 when the version is no longer stored
    status: str
    trigger: str
    created_at: float

    @property
    def label(self) -> str:
        return f"{self.workflow} v{self.number}" if self.number else f"{self.workflow} {self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "version": self.version,
            "number": self.number,
            "status": self.status,
            "trigger": self.trigger,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class RunDiff:
    a: RunSide
    b: RunSide
    same_workflow: bool
    same_version: bool
    source_diff: str | None  # a unified diff of the two versions' YAML; None when they are the same version
    inputs: tuple[Change, ...]  # per top-level key: added, removed or changed (equal keys are left out)
    nodes: tuple[NodeDiff, ...]
    status: Pair
    error: Pair
    outputs: ValueDiff
    totals: dict[str, Measure] = field(default_factory=dict)  # tokens, cost_usd, latency_ms, steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "same_workflow": self.same_workflow,
            "same_version": self.same_version,
            "source_diff": self.source_diff,
            "inputs": [change.to_dict() for change in self.inputs],
            "nodes": [node.to_dict() for node in self.nodes],
            "status": self.status.to_dict(),
            "error": self.error.to_dict(),
            "outputs": self.outputs.to_dict(),
            "totals": {name: measure.to_dict() for name, measure in self.totals.items()},
        }


def diff_runs(store: DiffStore, run_a: RunRecord, run_b: RunRecord) -> RunDiff:
    """Compare two runs (read from `store`): the first is side a, the second side b."""
    version_a = store.get_workflow(run_a.workflow, run_a.version)
    version_b = store.get_workflow(run_b.workflow, run_b.version)
    side_a, side_b = _side(run_a, version_a), _side(run_b, version_b)
    same_version = run_a.workflow == run_b.workflow and run_a.version == run_b.version
    source_diff = None
    if not same_version:
        source_diff = unified_diff(
            version_a.source if version_a else "",
            version_b.source if version_b else "",
            before_label=f"a: {side_a.label} ({run_a.version})",
            after_label=f"b: {side_b.label} ({run_b.version})",
        )
    return RunDiff(
        a=side_a,
        b=side_b,
        same_workflow=run_a.workflow == run_b.workflow,
        same_version=same_version,
        source_diff=source_diff,
        inputs=tuple(_key_changes(run_a.inputs, run_b.inputs)),
        nodes=_node_diffs(store, run_a, run_b, version_a, version_b),
        status=Pair(run_a.status, run_b.status),
        error=Pair(run_a.error, run_b.error),
        outputs=compare(_present(run_a.outputs), _present(run_b.outputs)),
        totals={
            "tokens": Measure(run_a.tokens, run_b.tokens, 0),
            "cost_usd": Measure(round(run_a.cost_usd, 8), round(run_b.cost_usd, 8), 8),
            "latency_ms": Measure(_wall_ms(run_a), _wall_ms(run_b)),
            "steps": Measure(run_a.steps, run_b.steps, 0),
        },
    )


def compare(a: Any, b: Any) -> ValueDiff:
    """Two JSON values (or `_ABSENT`); texts with several lines are compared line by line."""
    if a is _ABSENT or b is _ABSENT:
        state = "none" if a is b else "only_b" if a is _ABSENT else "only_a"
        return ValueDiff(state, None if a is _ABSENT else a, None if b is _ABSENT else b)
    if _same(a, b):
        return ValueDiff("equal", a, b)
    if isinstance(a, str) and isinstance(b, str) and ("\n" in a or "\n" in b):
        lines = difflib.unified_diff(a.splitlines(), b.splitlines(), n=TEXT_CONTEXT_LINES, lineterm="")
        hunks = tuple(line for line in lines if not line.startswith(("---", "+++")))  # the sides are a and b
        return ValueDiff("changed", a, b, text_diff=hunks)
    return ValueDiff("changed", a, b, changes=tuple(changes(a, b)))


def changes(a: Any, b: Any, path: str = "") -> list[Change]:
    """The differences between two JSON values, down to the leaves that differ (lists by position)."""
    if _same(a, b):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in [*a, *(key for key in b if key not in a)]:
            where = f"{path}.{key}" if path else str(key)
            if key not in b:
                found.append(Change(where, "removed", a=a[key]))
            elif key not in a:
                found.append(Change(where, "added", b=b[key]))
            else:
                found.extend(changes(a[key], b[key], where))
        return found
    if isinstance(a, list) and isinstance(b, list):
        found = []
        for index in range(max(len(a), len(b))):
            where = f"{path}[{index}]"
            if index >= len(b):
                found.append(Change(where, "removed", a=a[index]))
            elif index >= len(a):
                found.append(Change(where, "added", b=b[index]))
            else:
                found.extend(changes(a[index], b[index], where))
        return found
    return [Change(path, "changed", a, b)]


def _present(value: Any) -> Any:
    return _ABSENT if value is None else value


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; in JSON a boolean and a number are different values.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else bool(a == b)


def _key_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    found = []
    for key in [*a, *(key for key in b if key not in a)]:
        if key not in b:
            found.append(Change(key, "removed", a=a[key]))
        elif key not in a:
            found.append(Change(key, "added", b=b[key]))
        elif not _same(a[key], b[key]):
            found.append(Change(key, "changed", a[key], b[key]))
    return found


def _side(run: RunRecord, version: WorkflowVersion | None) -> RunSide:
    number = version.number if version else 0
    return RunSide(run.id, run.workflow, run.version, number, run.status, run.trigger, run.created_at)


def _wall_ms(run: RunRecord) -> float | None:
    if run.started_at is None or run.finished_at is None:
        return None
    return round((run.finished_at - run.started_at) * 1000, 3)


def _node_diffs(
    store: DiffStore,
    run_a: RunRecord,
    run_b: RunRecord,
    version_a: WorkflowVersion | None,
    version_b: WorkflowVersion | None,
) -> tuple[NodeDiff, ...]:
    events_a, events_b = store.events(run_a.id), store.events(run_b.id)
    rows_a = {**_reused_rows(events_a), **{row["id"]: row for row in node_table(store.node_runs(run_a.id))}}
    rows_b = {**_reused_rows(events_b), **{row["id"]: row for row in node_table(store.node_runs(run_b.id))}}
    outputs_a, outputs_b = _outputs(events_a), _outputs(events_b)
    order = dict.fromkeys([*_spec_order(version_a), *_spec_order(version_b), *rows_a, *rows_b])
    diffs = []
    for node_id in order:
        row_a, row_b = rows_a.get(node_id), rows_b.get(node_id)
        if row_a is None and row_b is None:
            continue  # in a version's spec, never reached in either run (it stopped before)
        ran_a, ran_b = _ran(row_a), _ran(row_b)
        presence = "both" if ran_a and ran_b else "only_a" if ran_a else "only_b" if ran_b else "neither"
        diffs.append(
            NodeDiff(
                id=node_id,
                presence=presence,
                type=Pair(_field(row_a, "type"), _field(row_b, "type")),
                status=Pair(_field(row_a, "status"), _field(row_b, "status")),
                attempts=Measure(_field(row_a, "attempts"), _field(row_b, "attempts"), 0),
                latency_ms=Measure(_field(row_a, "latency_ms"), _field(row_b, "latency_ms")),
                tokens=Measure(_field(row_a, "tokens"), _field(row_b, "tokens"), 0),
                cost_usd=Measure(_field(row_a, "cost_usd"), _field(row_b, "cost_usd"), 8),
                error=Pair(_field(row_a, "error"), _field(row_b, "error")),
                output=compare(outputs_a.get(node_id, _ABSENT), outputs_b.get(node_id, _ABSENT)),
            )
        )
    return tuple(diffs)


def _reused_rows(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A replay's reused results as rows of status `reused`: present, but nothing ran, spent or took time."""
    return {
        event["node_id"]: {
            "id": event["node_id"],
            "type": event.get("node_type"),
            "status": "reused" if event.get("status") == "succeeded" else event.get("status"),
            "attempts": 0,
            "latency_ms": 0.0,
            "tokens": 0,
            "cost_usd": 0.0,
            "error": None,
        }
        for event in events
        if event.get("type") == "node_finished" and event.get("reused_from")
    }


def _ran(row: dict[str, Any] | None) -> bool:
    return row is not None and row["status"] != "skipped"


def _field(row: dict[str, Any] | None, name: str) -> Any:
    return None if row is None else row[name]


def node_outputs(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Each node's output in a run's events, as a diff compares them (`agentflow test` too)."""
    return _outputs(events)


def _outputs(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Each node's output from its last successful execution; a map's, its last iteration's branch results."""
    outputs: dict[str, Any] = {}
    branches: dict[str, dict[int, dict[int, Any]]] = {}  # map id -> iteration -> item index -> result
    for event in events:
        if event.get("type") != "node_finished" or event.get("status") != "succeeded":
            continue
        node_id = event["node_id"]
        if event.get("item_index") is not None:
            by_item = branches.setdefault(node_id, {}).setdefault(int(event.get("iteration") or 0), {})
            by_item[int(event["item_index"])] = event.get("output")
        elif event.get("node_type") != "map":
            outputs[node_id] = event.get("output")
        else:
            outputs.setdefault(node_id, [])
    for node_id, iterations in branches.items():
        last = iterations[max(iterations)]
        outputs[node_id] = [last[index] for index in sorted(last)]
    return outputs


def _spec_order(version: WorkflowVersion | None) -> list[str]:
    """The node ids in the order the YAML writes them (empty when the source cannot be read)."""
    if version is None:
        return []
    try:
        document = yaml.safe_load(version.source)
        return [str(node_id) for node_id in document["spec"]["nodes"]]
    except (yaml.YAMLError, TypeError, KeyError):
        return []
