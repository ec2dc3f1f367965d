"""`workflow`: run a stored workflow as a run of its own (a sub-workflow); its outputs are the node's output.

The child is durable like any run: stored with a link to its parent, and
keyed by (parent run, node, attempt, iteration, item), so a parent resumed
after a crash finds the child it started instead of starting another. It runs
under its own workflow's grant (a sub-workflow never widens its parent's
power), within what is left of the parent's budget, and its usage counts
toward the parent's.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.nodes.base import ATTEMPT, Attempt, NodeConfigError, Outcome
from agentflow.spec.expressions import render
from agentflow.spec.loader import load_yaml
from agentflow.spec.models import InputSpec, WorkflowNode
from agentflow.spec.subworkflows import Callee, calls_of
from agentflow.store.base import RunRecord, WorkflowStore, WorkflowVersion

if TYPE_CHECKING:
    from agentflow.engine.context import ChildRuns, RunContext

_CHILD_IDS = uuid.UUID("6f1d2f4e-8a57-4c1b-9a51-3f0c6a7e2b90")


class SubWorkflowError(Exception):
    """The child run ended without success; the node fails (and may be retried: a retry starts a new child)."""


def child_run_id(parent_id: str, node_id: str, attempt: Attempt) -> str:
    """The id of the child a node's execution starts: the same after a restart, so it is found, not repeated."""
    key = f"{parent_id}/{node_id}/{attempt.number}/{attempt.iteration}/{attempt.item_index}"
    return uuid.uuid5(_CHILD_IDS, key).hex


def version_of(store: WorkflowStore, name: str, number: int | None) -> WorkflowVersion | None:
    """Version `number` (v1, v2...) of a stored workflow, or its current one."""
    if number is None:
        return store.get_workflow(name)
    return next((stored for stored in store.list_versions(name) if stored.number == number), None)


async def execute(node: WorkflowNode, scope: dict[str, Any], ctx: RunContext, node_id: str) -> Outcome:
    runs = ctx.services.runs
    if runs is None:
        raise NodeConfigError(
            "sub-workflows need the run executor; run this workflow through AgentFlow (agentflow run, the app "
            "or a worker)"
        )
    child_id = child_run_id(ctx.run_id, node_id, ATTEMPT.get() or Attempt())
    child = await asyncio.to_thread(runs.store.get_run, child_id)
    if child is None:
        inputs = render(node.inputs, scope)
        child = await asyncio.to_thread(_record_child, runs, node, inputs, ctx, node_id, child_id)
    final = await runs.run_child(child.id, parent_id=ctx.run_id)
    ctx.meter.absorb(final.steps, final.tokens, final.cost_usd)
    label = f"sub-workflow '{node.workflow}' (run {final.id[:8]})"
    if final.status == "budget_exceeded":
        raise BudgetExceededError("sub-workflow", 0, 0, message=f"{label}: {final.error}")
    if final.status != "succeeded":
        why = f": {final.error}" if final.error else ""
        raise SubWorkflowError(f"{label} ended {final.status}{why}; see agentflow runs show {final.id[:8]}")
    ctx.meter.check_spend()
    return Outcome(final.outputs or {}, tokens=final.tokens, cost_usd=final.cost_usd, steps=final.steps)


def _record_child(
    runs: ChildRuns, node: WorkflowNode, inputs: Any, ctx: RunContext, node_id: str, child_id: str
) -> RunRecord:
    from agentflow.engine.inputs import InputError
    from agentflow.trust.grants import NeedsGrantError

    stored = version_of(runs.store, node.workflow, node.version)
    if stored is None:
        which = f"version {node.version} of workflow" if node.version else "workflow"
        raise NodeConfigError(
            f"{which} '{node.workflow}' is not stored; store it first: run it once with agentflow run FILE, "
            "or save it in the app"
        )
    label = f"sub-workflow '{node.workflow}' v{stored.number}"
    try:
        record = runs.prepare(node.workflow, stored.version, inputs, trigger=f"workflow:{ctx.workflow.name}")
    except NeedsGrantError as exc:
        raise NodeConfigError(f"{label} needs a person's review before it can run: {exc}") from None
    except InputError as exc:
        raise NodeConfigError(f"{label} refused the inputs of node '{node_id}': {exc}") from None
    record.id = child_id
    record.parent = {"run_id": ctx.run_id, "node_id": node_id}
    record.limits = ctx.meter.remaining() or None
    try:
        runs.store.create_run(record)
    except Exception:
        # Another process resuming the same parent recorded it first: that one is the child.
        found = runs.store.get_run(child_id)
        if found is None:
            raise
        return found
    return record


class StoredWorkflows:
    """The stored workflows as `workflow` nodes see them, for validation (`agentflow.spec.subworkflows`)."""

    def __init__(self, store: WorkflowStore) -> None:
        self.store = store
        self._seen: dict[tuple[str, str], Callee] = {}

    def names(self) -> list[str]:
        return sorted(stored.name for stored in self.store.list_workflows())

    def numbers(self, name: str) -> list[int]:
        return sorted(stored.number for stored in self.store.list_versions(name))

    def find(self, name: str, number: int | None = None) -> Callee | None:
        stored = version_of(self.store, name, number)
        if stored is None:
            return None
        key = (name, stored.version)
        if key not in self._seen:
            self._seen[key] = _callee(stored)
        return self._seen[key]


def _callee(stored: WorkflowVersion) -> Callee:
    """A stored version's inputs and calls, read from its YAML (stored versions were valid when saved)."""
    data = load_yaml(stored.source, f"{stored.name}@v{stored.number}").data
    spec = data.get("spec") if isinstance(data, dict) else None
    raw = spec.get("inputs") if isinstance(spec, dict) else None
    inputs: dict[str, InputSpec] = {}
    for key, value in (raw or {}).items() if isinstance(raw, dict) else ():
        try:
            inputs[str(key)] = InputSpec.model_validate({"type": value} if isinstance(value, str) else value)
        except ValueError:
            continue
    return Callee(stored.name, stored.number, inputs, calls_of(data))
