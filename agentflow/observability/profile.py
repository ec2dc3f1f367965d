"""Where a workflow's time and money go: per-node latency, retries, critical path and cost.

Computed from the store (node runs and the cost ledger) over a workflow's
recent finished runs. The critical path of a run is the chain of nodes that
gated its end: start from the node that finished last and walk back, each
time to the prerequisite that finished last. The bottleneck is the node with
the largest share of critical-path time.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from agentflow.spec.graph import Graph, analyze
from agentflow.spec.validate import load_workflow
from agentflow.store.base import LedgerStore, NodeRunRecord, RunStore, WorkflowStore

FINISHED = ("succeeded", "failed", "budget_exceeded", "rejected", "cancelled")


@dataclass(slots=True)
class NodeProfile:
    node_id: str
    node_type: str
    executions: int = 0
    attempts: int = 0
    retries: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    critical_share: float = 0.0
    cost_usd: float = 0.0
    cost_share: float = 0.0
    bottleneck: bool = False

    @property
    def retry_rate(self) -> float:
        return self.retries / self.attempts if self.attempts else 0.0


@dataclass(slots=True)
class WorkflowProfile:
    workflow: str
    runs: int
    nodes: list[NodeProfile] = field(default_factory=list)

    @property
    def bottleneck(self) -> NodeProfile | None:
        return next((node for node in self.nodes if node.bottleneck), None)


@dataclass(frozen=True, slots=True)
class Span:
    """One node's time in one run: from its first start to its last end (loops and map branches included)."""

    node_id: str
    start: float
    end: float
    busy: float  # summed execution time; less than end - start when it waited between iterations


def spans(node_runs: list[NodeRunRecord]) -> dict[str, Span]:
    bounds: dict[str, list[float]] = {}
    for record in node_runs:
        if record.status == "skipped" or not record.started_at:
            continue
        start, end = record.started_at, record.finished_at or record.started_at
        if record.node_type == "map" and record.item_index is None:
            continue  # the map's own record spans its branches; they are counted below
        current = bounds.setdefault(record.node_id, [start, end, 0.0])
        current[0], current[1] = min(current[0], start), max(current[1], end)
        current[2] += (record.latency_ms or 0.0) / 1000
    return {node_id: Span(node_id, *values) for node_id, values in bounds.items()}


def critical_path(graph: Graph, run_spans: dict[str, Span]) -> list[str]:
    """The chain of nodes that gated the run's end, last node first."""
    if not run_spans:
        return []
    current = max(run_spans.values(), key=lambda span: span.end)
    path = [current.node_id]
    while True:
        gating = [run_spans[pred] for pred in graph.preds.get(current.node_id, ()) if pred in run_spans]
        if not gating:
            return path
        current = max(gating, key=lambda span: span.end)
        if current.node_id in path:
            return path
        path.append(current.node_id)


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1]


class _ProfileStore(RunStore, WorkflowStore, LedgerStore, Protocol):
    """What a profile reads."""


def profile(store: _ProfileStore, workflow: str, *, last: int = 200) -> WorkflowProfile:
    """Profile the workflow's last `last` finished runs (of whichever versions they ran)."""
    runs = store.list_runs(limit=last, statuses=FINISHED, workflow=workflow)
    result = WorkflowProfile(workflow, len(runs))
    if not runs:
        return result
    graphs: dict[str, Graph] = {}
    latencies: dict[str, list[float]] = defaultdict(list)
    profiles: dict[str, NodeProfile] = {}
    critical_time: dict[str, float] = defaultdict(float)
    critical_total = 0.0
    for run in runs:
        if run.version not in graphs:
            stored = store.get_workflow(workflow, run.version)
            if stored is None:
                continue
            graphs[run.version] = analyze(load_workflow(stored.source, f"{workflow}@{run.version}", network_tools=()))
        records = store.node_runs(run.id)
        for record in records:
            node = profiles.setdefault(record.node_id, NodeProfile(record.node_id, record.node_type))
            if record.status == "skipped" or (record.node_type == "map" and record.item_index is None):
                continue
            node.attempts += 1
            if record.attempt > 1:
                node.retries += 1
            if record.status == "succeeded":
                node.executions += 1
            latencies[record.node_id].append(record.latency_ms or 0.0)
        run_spans = spans(records)
        for node_id in critical_path(graphs[run.version], run_spans):
            critical_time[node_id] += run_spans[node_id].busy
            critical_total += run_spans[node_id].busy
    costs = store.node_costs([run.id for run in runs])
    total_cost = sum(costs.values())
    for node_id, node in profiles.items():
        node.p50_ms = _percentile(latencies[node_id], 0.50)
        node.p95_ms = _percentile(latencies[node_id], 0.95)
        node.critical_share = critical_time[node_id] / critical_total if critical_total else 0.0
        node.cost_usd = costs.get(node_id, 0.0)
        node.cost_share = node.cost_usd / total_cost if total_cost else 0.0
    result.nodes = sorted(profiles.values(), key=lambda node: (-node.critical_share, -node.p95_ms, node.node_id))
    if result.nodes and result.nodes[0].critical_share > 0:
        result.nodes[0].bottleneck = True
    return result


def render(result: WorkflowProfile) -> str:
    """The profile as a terminal table (what `agentflow profile` prints)."""
    if not result.runs:
        return f"no finished runs of '{result.workflow}' yet; run it first (agentflow run FILE)"
    header = (
        f"{'node':<22}{'type':<10}{'runs':>6}{'p50 ms':>10}{'p95 ms':>10}{'retry':>8}"
        f"{'critical':>10}{'cost $':>12}{'cost %':>8}"
    )
    lines = [f"{result.workflow}: last {result.runs} finished runs", header]
    for node in result.nodes:
        lines.append(
            f"{node.node_id[:21]:<22}{node.node_type:<10}{node.executions:>6}{node.p50_ms:>10.1f}{node.p95_ms:>10.1f}"
            f"{node.retry_rate:>8.0%}{node.critical_share:>10.0%}{node.cost_usd:>12.6f}{node.cost_share:>8.0%}"
            + ("  ← bottleneck" if node.bottleneck else "")
        )
    return "\n".join(lines)
