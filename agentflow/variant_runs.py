"""A workflow's recent runs as variant samples: what `agentflow variants` and the Workflows tab compare.

One sample per execution of a node that has variants (a loop's iterations and a map's items each count):
it succeeded when its last attempt did; its latency and cost add up its attempts (a failed attempt
reports no cost, so what a failing call spent before it failed is not counted). Only finished runs are
read, newest first, through the store's event API; `compare` (agentflow/variants.py) does the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.spec.models import AgentNode, LLMNode, MapNode, Workflow
from agentflow.spec.validate import load_workflow
from agentflow.store.base import RunStore, WorkflowStore
from agentflow.variants import VariantReport, VariantSample, compare

DEFAULT_LAST = 500


class VariantsStore(RunStore, WorkflowStore, Protocol):
    """What the comparison reads: the workflow's latest version, its runs and their events."""


class VariantsError(LookupError):
    """No such workflow or node, or a node without variants; the message says what exists."""


@dataclass(frozen=True, slots=True)
class NodeVariants:
    """One node's declared variants (name -> weight, from the latest version) and the comparison of its runs."""

    node_id: str
    weights: dict[str, float]
    runs: int
    """How many finished runs were read (the sample is at most this many per execution)."""
    report: VariantReport

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node_id, "weights": self.weights, "runs": self.runs, **self.report.to_dict()}


def declared_variants(workflow: Workflow) -> dict[str, dict[str, float]]:
    """node id -> {variant name: weight} for every llm/agent node (a map's inner one too) with variants."""
    found = {}
    for node_id, node in workflow.spec.nodes.items():
        inner = node.node if isinstance(node, MapNode) else node
        if isinstance(inner, LLMNode | AgentNode) and inner.variants:
            found[node_id] = {variant.name: variant.weight for variant in inner.variants}
    return found


def node_variants(
    store: VariantsStore, workflow: str, *, node: str | None = None, last: int = DEFAULT_LAST
) -> list[NodeVariants]:
    """The comparison of each node with variants (or of `node` alone) over the workflow's last `last` runs."""
    if last < 1:
        raise VariantsError(f"--last must be at least 1 (got {last})")
    declared = _declared(store, workflow)
    if node is not None:
        if node not in declared:
            known = ", ".join(declared) or "none"
            raise VariantsError(f"node '{node}' of workflow '{workflow}' has no `variants:`; nodes with them: {known}")
        declared = {node: declared[node]}
    runs = [run for run in store.list_runs(workflow=workflow, limit=last) if run.status in TERMINAL_STATUSES]
    samples: dict[str, list[VariantSample]] = {node_id: [] for node_id in declared}
    for run in runs:
        for node_id, sample in run_samples(store.events(run.id)):
            if node_id in samples:
                samples[node_id].append(sample)
    return [NodeVariants(node_id, declared[node_id], len(runs), compare(samples[node_id])) for node_id in declared]


def _declared(store: VariantsStore, workflow: str) -> dict[str, dict[str, float]]:
    stored = store.get_workflow(workflow)
    if stored is None:
        names = ", ".join(sorted({version.name for version in store.list_workflows()})) or "none saved yet"
        raise VariantsError(f"no workflow named '{workflow}'; saved workflows: {names}")
    source_name = stored.path or f"{workflow}@{stored.version}"
    return declared_variants(load_workflow(stored.source, source_name, network_tools=()))


def run_samples(events: list[dict[str, Any]]) -> list[tuple[str, VariantSample]]:
    """(node id, sample) for each execution in one run's events that recorded a variant."""
    executions: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for event in events:
        if event.get("type") == "node_finished" and event.get("variant") and event.get("status") != "skipped":
            key = (event["node_id"], event.get("iteration", 0), event.get("item_index"))
            executions.setdefault(key, []).append(event)
    found = []
    for (node_id, _, _), attempts in executions.items():
        last = attempts[-1]
        sample = VariantSample(
            variant=last["variant"],
            ok=last.get("status") == "succeeded",
            latency_ms=sum(float(attempt.get("latency_ms") or 0.0) for attempt in attempts),
            cost_usd=sum(float(attempt.get("cost_usd") or 0.0) for attempt in attempts),
        )
        found.append((node_id, sample))
    return found
