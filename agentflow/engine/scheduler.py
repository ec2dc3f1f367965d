"""Which nodes start next: the dataflow rules of the language, as a pure function.

A node is ready when every prerequisite is done or skipped. A goto target runs
only if a switch selected it; any other node runs if it has no prerequisites
or at least one of them is done, and is skipped otherwise (so skipping flows
down a branch the switch did not take).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    graph: Graph, status: Mapping[str, str], selected: Mapping[str, str | None], changed: frozenset[str] = frozenset()
) -> Plan:
    """`changed`: nodes this step finished; their dependents that also wait on running nodes are undecided."""
    current = dict(status)
    changed = set(changed)
    result = Plan()
    progress = True
    while progress:
        progress = False
        for node_id in graph.order:
            if current.get(node_id, "pending") != "pending":
                continue
            preds = graph.preds[node_id]
            states = [current.get(pred, "pending") for pred in preds]
            if any(state not in FINISHED for state in states):
                if preds & changed and all(state in FINISHED or state == "running" for state in states):
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
            else:
                current[node_id] = "skipped"
                result.skip.append(node_id)
                changed.add(node_id)
                progress = True
    return result
