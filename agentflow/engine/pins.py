"""Pinned node outputs: a run may answer some nodes with given outputs instead of running them.

A run's `overrides["pinned"]` maps node ids to outputs (`agentflow test --pin`, docs/test-mode.md).
A pinned node makes no model, tool or code call and costs nothing: the engine records a normal
`node_finished` with the output and `pinned: true`, and the run goes on as if the node had answered.
Pins are checked against the workflow before a run is queued (`check_pins`), so a bad pin refuses
the run with nothing recorded.

What can be pinned: any node but an `approval` (a person decides those; a run stops there as
`waiting_approval`). A `map` is pinned as a whole (the list of its branches' results; no branch
runs). A node inside a loop answers with its pin on every iteration.
"""

from __future__ import annotations

import json
import time
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

import jsonschema

from agentflow.engine.events import NodeFinished, NodeStarted
from agentflow.engine.inputs import InputError
from agentflow.spec.models import ApprovalNode, MapNode, SwitchNode, Workflow, WorkflowNode, object_schema

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


class PinError(InputError):
    """Pinned outputs the workflow cannot take; the message names each node and what it expects."""


def pinned_outputs(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The pins a run was submitted with (none when it has no overrides)."""
    pins = (overrides or {}).get("pinned")
    return dict(pins) if isinstance(pins, dict) else {}


def check_pins(workflow: Workflow, overrides: dict[str, Any] | None) -> None:
    """Raise PinError listing every pin that names no node, or that its node could not have answered."""
    pins = (overrides or {}).get("pinned")
    if pins is None:
        return
    if not isinstance(pins, dict):
        raise PinError(f"pinned outputs must map node ids to outputs, got {type(pins).__name__}")
    nodes = workflow.spec.nodes
    problems = []
    for node_id, value in pins.items():
        if node_id not in nodes:
            close = get_close_matches(str(node_id), list(nodes), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"its nodes: {', '.join(nodes)}"
            problems.append(f"cannot pin '{node_id}': workflow '{workflow.name}' has no such node; {hint}")
        elif problem := _mismatch(node_id, nodes[node_id], value):
            problems.append(problem)
    if problems:
        raise PinError("; ".join(problems))


def _mismatch(node_id: str, node: Any, value: Any) -> str | None:
    """Why `value` is not an output `node` could give, if it is not."""
    if isinstance(node, ApprovalNode):
        return (
            f"cannot pin '{node_id}': it is an approval, which only a person decides; "
            "leave it unpinned (the run then waits there for a decision)"
        )
    if isinstance(node, MapNode) and not isinstance(value, list):
        return f"the pin of map '{node_id}' must be a list (its branches' results), got {_kind(value)}"
    if isinstance(node, SwitchNode):
        targets = [case.goto for case in node.cases] + [node.default]
        if value not in targets:
            shown = ", ".join(json.dumps(target) for target in targets)
            return f"the pin of switch '{node_id}' must be the node it selects: one of {shown}; got {_kind(value)}"
        return None
    output = getattr(node, "output", None)
    if isinstance(output, dict):
        try:
            jsonschema.validate(value, object_schema(output))
        except jsonschema.ValidationError as exc:
            where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in exc.absolute_path)
            return f"the pin of '{node_id}' does not match its `output` schema at ${where}: {exc.message}"
    elif node.type in ("llm", "agent") and not isinstance(value, str):
        return f"the pin of '{node_id}' must be text (it has no `output` schema); got {_kind(value)}"
    elif isinstance(node, WorkflowNode) and not isinstance(value, dict):
        return f"the pin of '{node_id}' must be an object (a sub-workflow's outputs by name); got {_kind(value)}"
    return None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return json.dumps(value, default=str)


def answer(ctx: RunContext, node_id: str, node_type: str, *, iteration: int = 0) -> Any:
    """Record a pinned node as started and finished with its pin, and return the pin."""
    value = ctx.pinned[node_id]
    now = time.time()
    ctx.emit(NodeStarted(run_id=ctx.run_id, node_id=node_id, node_type=node_type, iteration=iteration, at=now))
    ctx.emit(
        NodeFinished(
            run_id=ctx.run_id,
            node_id=node_id,
            node_type=node_type,
            status="succeeded",
            iteration=iteration,
            started_at=now,
            output=value,
            pinned=True,
        )
    )
    return value
