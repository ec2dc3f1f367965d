"""What a case runs: a stored workflow version, or one of its nodes alone, and how its output is read.

A node alone runs as a derived workflow named `WORKFLOW--NODE` (stored like any workflow, so it
runs through the executor, is traced and priced): the node as written, without its `loop`,
needing every node upstream of it, each of which is a `transform` answering the value the case
gives for it. The case's `inputs` are then the node's scope: the workflow's inputs by name (or
under `inputs`), and upstream nodes' outputs by node id. The derived workflow may do nothing its
workflow was not granted: the person evaluating extends that grant to it, and only that.
See docs/evaluate.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

import yaml

from agentflow.engine.inputs import InputError, prepare_inputs
from agentflow.evals.dataset import Case, output_of
from agentflow.spec.graph import analyze
from agentflow.spec.loader import load_yaml
from agentflow.store.base import RunRecord, WorkflowVersion

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.spec.models import Workflow

UPSTREAM = "upstream"
"""The derived workflow's input holding the upstream nodes' outputs, by node id."""
OUTPUT = "output"
ALONE_TYPES = frozenset({"llm", "agent", "tool", "transform", "code", "map", "remote", "workflow"})


class TargetError(ValueError):
    """A workflow, node or case that cannot be evaluated; the message says what to change."""


@dataclass(slots=True)
class Target:
    """The version each case runs, and how a case's inputs and a run's output map onto it."""

    flow: AgentFlow
    source: WorkflowVersion
    """The stored version being evaluated."""
    workflow: Workflow
    node: str | None = None
    run_version: WorkflowVersion | None = None
    """What runs: `source` itself, or the derived single-node workflow."""
    ancestors: tuple[str, ...] = ()

    @property
    def version(self) -> WorkflowVersion:
        return self.run_version or self.source

    def run_inputs(self, case: Case) -> dict[str, Any]:
        """The run's inputs for a case, checked against what the workflow (or node) takes."""
        given = case.inputs if self.node is None else self._scope_inputs(case)
        try:
            prepare_inputs(self.flow.engine.compiled(self.version.name, self.version.version).workflow, given)
        except InputError as exc:
            raise TargetError(f"{case.where}: {exc}") from None
        return given

    def output(self, run: RunRecord) -> Any:
        if self.node is None:
            return output_of(run.outputs)
        return (run.outputs or {}).get(OUTPUT)

    def _scope_inputs(self, case: Case) -> dict[str, Any]:
        declared = self.workflow.spec.inputs
        inputs: dict[str, Any] = {}
        upstream: dict[str, Any] = {}
        for key, value in case.inputs.items():
            if key == "inputs" and isinstance(value, dict) and "inputs" not in declared:
                inputs.update(value)
            elif key in self.ancestors:
                upstream[key] = value
            elif key in declared:
                inputs[key] = value
            else:
                known = [*declared, *self.ancestors]
                close = get_close_matches(key, known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise TargetError(
                    f"{case.where}: '{key}' is neither an input of '{self.workflow.name}' nor a node upstream of "
                    f"'{self.node}'; {hint}the node's scope: {', '.join(known) or 'nothing'}"
                )
        return {**inputs, UPSTREAM: upstream}


def resolve(flow: AgentFlow, name: str, version: str | None = None) -> WorkflowVersion:
    from agentflow.versions import UnknownVersionError
    from agentflow.versions import resolve as resolve_version

    try:
        return resolve_version(flow.store, name, version)
    except UnknownVersionError as exc:
        raise TargetError(str(exc)) from None


def target(flow: AgentFlow, stored: WorkflowVersion, node: str | None = None, *, by: str) -> Target:
    """The target for a stored version (or one node of it); `by` is the person extending the grant to a node."""
    workflow = flow.engine.compiled(stored.name, stored.version).workflow
    if node is None:
        review = flow.review(stored)
        if review.needs_review:
            raise TargetError(review.message())
        return Target(flow, stored, workflow)
    source, ancestors = node_alone(stored, workflow, node)
    derived = save_derived(flow, stored, workflow, source, by=by)
    return Target(flow, stored, workflow, node, derived, ancestors)


def node_alone(
    stored: WorkflowVersion, workflow: Workflow, node: str, *, prompt: str | None = None
) -> tuple[str, tuple[str, ...]]:
    """The YAML of `node` alone (optionally with another `prompt`), and the upstream nodes it stands in for."""
    nodes = workflow.spec.nodes
    if node not in nodes:
        close = get_close_matches(node, list(nodes), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise TargetError(f"'{workflow.name}' has no node '{node}'; {hint}its nodes: {', '.join(nodes)}")
    if nodes[node].type not in ALONE_TYPES:
        raise TargetError(
            f"node '{node}' is a {nodes[node].type} node, which cannot run alone (it only routes or pauses); "
            "evaluate the whole workflow instead (drop --node)"
        )
    if UPSTREAM in workflow.spec.inputs:
        raise TargetError(f"'{workflow.name}' has an input named '{UPSTREAM}', which --node needs for itself")
    graph = analyze(workflow)
    ancestors = _ancestors(node, graph.preds)
    data = load_yaml(stored.source, stored.path or stored.name).data
    spec = data["spec"]
    own = {key: value for key, value in spec["nodes"][node].items() if key != "loop"}
    own["needs"] = list(ancestors)
    if prompt is not None:
        own[prompt_field(workflow, node)] = prompt
    inputs = {key: _optional(value) for key, value in (spec.get("inputs") or {}).items()}
    inputs[UPSTREAM] = {"type": "object", "required": False, "description": f"outputs of the nodes before {node}"}
    derived_spec: dict[str, Any] = {"inputs": inputs}
    for key in ("defaults", "budget", "permissions", "memory"):
        if key in spec:
            derived_spec[key] = spec[key]
    derived_spec["nodes"] = {
        **{ancestor: {"type": "transform", "expr": f"{UPSTREAM_EXPR}.{ancestor}"} for ancestor in ancestors},
        node: own,
    }
    derived_spec["outputs"] = {OUTPUT: "{{ " + node + " }}"}
    document = {
        "apiVersion": "agentflow/v1",
        "kind": "Workflow",
        "metadata": {
            "name": derived_name(workflow.name, node),
            "description": f"node {node} of {workflow.name} ({stored.version[:12]}) alone, for evaluations",
        },
        "spec": derived_spec,
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120), ancestors


UPSTREAM_EXPR = f"inputs.{UPSTREAM}"


def prompt_field(workflow: Workflow, node: str) -> str:
    """The field holding a node's prompt: `prompt` on llm nodes, `instructions` on agent nodes."""
    kind = workflow.spec.nodes[node].type
    if kind == "llm":
        return "prompt"
    if kind == "agent":
        return "instructions"
    raise TargetError(f"node '{node}' is a {kind} node; only llm and agent nodes have a prompt to optimise")


def derived_name(workflow: str, node: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", node.lower()).strip("-") or "node"
    return f"{workflow}--{slug}"[:63].rstrip("-")


def save_derived(
    flow: AgentFlow, stored: WorkflowVersion, workflow: Workflow, source: str, *, by: str
) -> WorkflowVersion:
    """Store a derived workflow and extend to it the grant of `workflow`, never more."""
    from agentflow.spec.errors import SpecErrors

    try:
        derived = flow.save_workflow(source)
    except SpecErrors as exc:
        raise TargetError(f"the node cannot run alone: {exc}") from None
    wanted = flow.grants.capabilities(flow.engine.compiled(derived.name, derived.version).workflow)
    beyond = wanted.beyond(flow.grants.granted(workflow.name))
    if beyond:
        raise TargetError(
            f"the node needs {beyond.describe()}, which '{workflow.name}' was not granted; "
            f"a person grants the workflow first: agentflow grant {workflow.name}"
        )
    flow.grants.extend(
        derived.name, derived.version, wanted, by=by, note=f"what '{workflow.name}' is granted, for evaluating a node"
    )
    return derived


def _optional(spec: Any) -> Any:
    spec = {"type": spec} if isinstance(spec, str) else dict(spec or {})
    spec["required"] = False
    return spec


def _ancestors(node: str, preds: dict[str, frozenset[str]]) -> tuple[str, ...]:
    seen: list[str] = []
    stack = list(preds[node])
    while stack:
        current = stack.pop()
        if current not in seen and current != node:
            seen.append(current)
            stack.extend(preds[current])
    return tuple(sorted(seen))
