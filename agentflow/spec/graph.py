"""The dependency graph of a workflow: who waits for whom, loops, switch targets.

Pure analysis over the models; used by the validator (to report problems) and
by the engine (to schedule). Edges point from a prerequisite to its dependent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from agentflow.spec.models import MapNode, SwitchNode, Workflow


@dataclass(frozen=True, slots=True)
class GraphProblem:
    """A structural problem, located by the path of the offending key."""

    path: tuple[str | int, ...]
    message: str


@dataclass(slots=True)
class Graph:
    nodes: tuple[str, ...]
    preds: dict[str, frozenset[str]]
    succs: dict[str, frozenset[str]]
    # node -> switches that may select it (a goto target runs only when selected)
    selected_by: dict[str, frozenset[str]]
    # loop node -> nodes that run again when the loop continues (back_to..loop node)
    loop_bodies: dict[str, frozenset[str]]
    order: tuple[str, ...]
    problems: list[GraphProblem] = field(default_factory=list)
    _rank: dict[str, int] | None = None

    @property
    def rank(self) -> dict[str, int]:
        """Position of each node in `order` (cached: the scheduler asks at every step)."""
        if self._rank is None:
            self._rank = {node_id: index for index, node_id in enumerate(self.order)}
        return self._rank

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(node for node in self.order if not self.preds[node])


def _targets(node: SwitchNode) -> list[tuple[tuple[str | int, ...], str]]:
    found: list[tuple[tuple[str | int, ...], str]] = [
        (("cases", index, "goto"), case.goto) for index, case in enumerate(node.cases)
    ]
    if node.default is not None:
        found.append((("default",), node.default))
    return found


def analyze(workflow: Workflow) -> Graph:
    """Build the graph; structural problems are collected, never raised."""
    nodes = workflow.spec.nodes
    ids = tuple(nodes)
    problems: list[GraphProblem] = []
    preds: dict[str, set[str]] = {node_id: set() for node_id in ids}
    selected_by: dict[str, set[str]] = {}

    def known(node_id: str, path: tuple[str | int, ...], what: str) -> bool:
        if node_id in nodes:
            return True
        from difflib import get_close_matches

        close = get_close_matches(node_id, ids, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known nodes: {', '.join(ids)}"
        problems.append(GraphProblem(path, f"{what} '{node_id}' is not a node of this workflow; {hint}"))
        return False

    for node_id, node in nodes.items():
        base = ("spec", "nodes", node_id)
        for index, need in enumerate(node.needs):
            if need == node_id:
                problems.append(GraphProblem((*base, "needs", index), f"node '{node_id}' cannot need itself"))
            elif known(need, (*base, "needs", index), "needs"):
                preds[node_id].add(need)
        if isinstance(node, SwitchNode):
            for sub, target in _targets(node):
                if target == node_id:
                    problems.append(GraphProblem((*base, *sub), f"switch '{node_id}' cannot go to itself"))
                elif known(target, (*base, *sub), "goto target"):
                    preds[target].add(node_id)
                    selected_by.setdefault(target, set()).add(node_id)
        if isinstance(node, MapNode) and node.node.loop is not None:
            problems.append(
                GraphProblem((*base, "node", "loop"), "a map's inner node cannot loop; put `loop` on the map")
            )

    order, cyclic = _topological(ids, preds)
    for node_id in cyclic:
        problems.append(
            GraphProblem(
                ("spec", "nodes", node_id, "needs"),
                f"node '{node_id}' is on a cycle of needs/goto; cycles must be bounded: "
                "remove the edge and use `loop: {back_to: ..., until: ..., max: N}` instead",
            )
        )

    succs: dict[str, set[str]] = {node_id: set() for node_id in ids}
    for node_id, before in preds.items():
        for pred in before:
            succs[pred].add(node_id)

    loop_bodies: dict[str, frozenset[str]] = {}
    for node_id, node in nodes.items():
        if node.loop is None or cyclic:
            continue
        path = ("spec", "nodes", node_id, "loop", "back_to")
        target = node.loop.back_to
        if not known(target, path, "loop back_to"):
            continue
        body = _descendants(target, succs) & (_ancestors(node_id, preds) | {node_id})
        if node_id not in _descendants(target, succs):
            problems.append(
                GraphProblem(
                    path, f"loop back_to '{target}' must come before '{node_id}' (be one of its needs, directly or not)"
                )
            )
            continue
        loop_bodies[node_id] = frozenset(body)

    _check_nested_loops(loop_bodies, problems)
    # Nodes outside a loop that depend on a node inside it wait for the loop to end.
    for loop_node, members in loop_bodies.items():
        for member in members:
            for dependent in list(succs[member]):
                if dependent not in members and dependent != loop_node:
                    preds[dependent].add(loop_node)
                    succs[loop_node].add(dependent)

    return Graph(
        nodes=ids,
        preds={key: frozenset(value) for key, value in preds.items()},
        succs={key: frozenset(value) for key, value in succs.items()},
        selected_by={key: frozenset(value) for key, value in selected_by.items()},
        loop_bodies=loop_bodies,
        order=tuple(order),
        problems=problems,
    )


def _topological(ids: tuple[str, ...], preds: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    remaining = {node_id: len(preds[node_id]) for node_id in ids}
    succs: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for node_id in ids:
        for pred in preds[node_id]:
            succs[pred].append(node_id)
    queue = deque(node_id for node_id in ids if remaining[node_id] == 0)
    order: list[str] = []
    while queue:
        node_id = queue.popleft()
        order.append(node_id)
        for dependent in succs[node_id]:
            remaining[dependent] -= 1
            if remaining[dependent] == 0:
                queue.append(dependent)
    cyclic = [node_id for node_id in ids if remaining[node_id] > 0 and node_id not in order]
    return order, cyclic


def _descendants(start: str, succs: dict[str, set[str]]) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for nxt in succs[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _ancestors(start: str, preds: dict[str, set[str]]) -> set[str]:
    return _descendants(start, preds) - {start}


def _check_nested_loops(loop_bodies: dict[str, frozenset[str]], problems: list[GraphProblem]) -> None:
    loops = list(loop_bodies)
    for index, first in enumerate(loops):
        for second in loops[index + 1 :]:
            a, b = loop_bodies[first], loop_bodies[second]
            if a & b and not (a <= b or b <= a):
                problems.append(
                    GraphProblem(
                        ("spec", "nodes", second, "loop"),
                        f"loops of '{first}' and '{second}' overlap without one containing the other; "
                        "nest them or split them",
                    )
                )
