"""Which nodes start next: the dataflow rules of the language, as a pure function.

A node is ready when every prerequisite is done or skipped. A goto target runs
only if a switch selected it; any other node runs if it has no prerequisites
or at least one of them is done, and is skipped otherwise (so skipping flows
down a branch the switch did not take).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentflow.spec.graph import Graph

FINISHED = frozenset({"done", "skipped"})


@dataclass(slots=True)
class Plan:
    start: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    # Some node may become ready once nodes running alongside finish: look again after this step.
    undecided: bool = False


def plan(
    graph: Graph,
    status: Mapping[str, str],
    selected: Mapping[str, str | None],
    changed: frozenset[str] = frozenset(),
    *,
    candidates: Iterable[str] | None = None,
) -> Plan:
    """Decide pending nodes, in graph order; `changed` are the nodes this step finished.

    Without `candidates` every node is considered; with them, only those and the dependents of
    nodes skipped on the way (a node's readiness changes only when a prerequisite finishes).
    Dependents of `changed` that also wait on running nodes are reported as undecided.
    """
    current = dict(status)
    changed_now = set(changed)
    result = Plan()
    rank = graph.rank
    queue = [(rank[node_id], node_id) for node_id in (graph.order if candidates is None else set(candidates))]
    heapq.heapify(queue)
    queued = {node_id for _, node_id in queue}
    while queue:
        _, node_id = heapq.heappop(queue)
        queued.discard(node_id)
        if current.get(node_id, "pending") != "pending":
            continue
        preds = graph.preds[node_id]
        states = [current.get(pred, "pending") for pred in preds]
        if any(state not in FINISHED for state in states):
            if preds & changed_now and all(state in FINISHED or state == "running" for state in states):
                result.undecided = True
            continue
        if node_id in graph.selected_by:
            runs = any(
                current.get(switch) == "done" and selected.get(switch) == node_id
                for switch in graph.selected_by[node_id]
            )
        else:
            runs = not preds or "done" in states
        if runs:
            current[node_id] = "running"
            result.start.append(node_id)
            continue
        current[node_id] = "skipped"
        result.skip.append(node_id)
        changed_now.add(node_id)
        for dependent in graph.succs[node_id]:
            if dependent not in queued:
                queued.add(dependent)
                heapq.heappush(queue, (rank[dependent], dependent))
    return result
