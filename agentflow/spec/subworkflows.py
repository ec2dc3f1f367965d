"""Checks of `workflow` nodes against the stored workflows: the callee exists, its inputs match, no cycles.

The spec layer knows the stored workflows only through `WorkflowCatalog`; the
engine provides one over the store (`agentflow.engine.nodes.workflow.StoredWorkflows`).
Without a catalog (a lone file) only a workflow calling itself is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from agentflow.spec.loader import DataPath
from agentflow.spec.model_errors import suggest
from agentflow.spec.models import InputSpec, Workflow, WorkflowNode

MAX_DEPTH = 32
"""The longest chain of sub-workflows followed when looking for a cycle."""


@dataclass(frozen=True, slots=True)
class Callee:
    """A stored workflow as a `workflow` node sees it: its version number, inputs and the workflows it calls."""

    name: str
    number: int
    inputs: dict[str, InputSpec]
    calls: tuple[tuple[str, int | None], ...]
    """(workflow, pinned version or None) of each of its `workflow` nodes."""


class WorkflowCatalog(Protocol):
    def names(self) -> list[str]: ...
    def find(self, name: str, number: int | None = None) -> Callee | None:
        """Version `number` of workflow `name` (None: its current one); None when there is no such version."""
        ...

    def numbers(self, name: str) -> list[int]: ...


def calls_of(data: Any) -> tuple[tuple[str, int | None], ...]:
    """The (workflow, version) of each `workflow` node in a workflow's raw data; malformed ones are left out."""
    spec = data.get("spec") if isinstance(data, dict) else None
    nodes = spec.get("nodes") if isinstance(spec, dict) else None
    found: list[tuple[str, int | None]] = []
    for node in nodes.values() if isinstance(nodes, dict) else ():
        if isinstance(node, dict) and node.get("type") == "workflow" and isinstance(node.get("workflow"), str):
            version = node.get("version")
            found.append((node["workflow"], version if isinstance(version, int) else None))
    return tuple(found)


def check_subworkflows(
    workflow: Workflow, catalog: WorkflowCatalog | None, add: Callable[[DataPath, str], None]
) -> None:
    for node_id, node in workflow.spec.nodes.items():
        if not isinstance(node, WorkflowNode):
            continue
        path: DataPath = ("spec", "nodes", node_id)
        if node.workflow == workflow.name:
            add((*path, "workflow"), f"workflow '{workflow.name}' calls itself in node '{node_id}'; a cycle never ends")
            continue
        if catalog is None:
            continue
        callee = catalog.find(node.workflow, node.version)
        if callee is None:
            _unknown(node, catalog, (*path, "workflow" if node.version is None else "version"), add)
            continue
        cycle = _cycle(workflow.name, callee, catalog)
        if cycle:
            add((*path, "workflow"), f"workflows call each other in a cycle: {' -> '.join(cycle)}; break it")
        _check_inputs(node_id, node, callee, path, add)


def _unknown(
    node: WorkflowNode, catalog: WorkflowCatalog, path: DataPath, add: Callable[[DataPath, str], None]
) -> None:
    names = catalog.names()
    if node.workflow not in names:
        hint = suggest(node.workflow, names, "stored workflows are") or "no workflow is stored yet"
        add(
            path,
            f"workflow '{node.workflow}' is not stored; {hint} "
            "(store it first: run it once with agentflow run FILE, or save it in the app)",
        )
        return
    numbers = ", ".join(f"v{number}" for number in catalog.numbers(node.workflow))
    add(path, f"workflow '{node.workflow}' has no version {node.version}; its versions are {numbers}")


def _cycle(origin: str, callee: Callee, catalog: WorkflowCatalog) -> list[str]:
    """The chain origin -> ... -> origin through the stored workflows' `workflow` nodes, or []."""
    stack: list[tuple[Callee, list[str]]] = [(callee, [origin, callee.name])]
    seen: set[tuple[str, int]] = set()
    while stack:
        current, chain = stack.pop()
        if (current.name, current.number) in seen or len(chain) > MAX_DEPTH:
            continue
        seen.add((current.name, current.number))
        for name, number in current.calls:
            if name == origin:
                return [*chain, origin]
            found = catalog.find(name, number)
            if found is not None:
                stack.append((found, [*chain, name]))
    return []


def _check_inputs(
    node_id: str, node: WorkflowNode, callee: Callee, path: DataPath, add: Callable[[DataPath, str], None]
) -> None:
    declared = list(callee.inputs)
    for key in node.inputs:
        if key not in callee.inputs:
            hint = suggest(key, declared, "its inputs are") or "it declares no inputs"
            add((*path, "inputs", key), f"workflow '{callee.name}' (v{callee.number}) has no input '{key}'; {hint}")
    for name, spec in callee.inputs.items():
        if spec.is_required and name not in node.inputs:
            add(
                (*path, "inputs") if node.inputs else path,
                f"node '{node_id}' must give workflow '{callee.name}' its required input '{name}' ({spec.type}): "
                f"add `inputs: {{{name}: ...}}`",
            )
