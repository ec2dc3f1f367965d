"""`agentflow prompts push`: a workflow's inline prompts registered in MLflow, each under a stable name.

Names: `WORKFLOW.NODE` for a node's main prompt (an llm's `prompt`, an agent's `instructions`),
`WORKFLOW.NODE.FIELD` for its other one (`system`, `input`), and `WORKFLOW.NODE.VARIANT[.FIELD]` for a
variant's; `--name` replaces `WORKFLOW.NODE`. A text equal to the name's newest version is not registered
again: the alias moves to that version. The YAML is left as it is: the printed references go in by hand,
so the file changes only when a person decides it should.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentflow.prompts.refs import FIELDS, PromptRef, check_name, is_ref
from agentflow.prompts.registry import LoadedPrompt, PromptNotFound, PromptRegistry
from agentflow.spec.models import AgentNode, LLMNode, MapNode, Workflow


class PushError(ValueError):
    """Nothing to push as asked; the message says what the workflow has."""


@dataclass(frozen=True, slots=True)
class InlinePrompt:
    """A prompt written in the YAML, and the registry name it is pushed under."""

    node_id: str
    field: str
    variant: str | None
    template: str
    name: str

    @property
    def where(self) -> str:
        """`classify.prompt`, or `classify.variants[short].prompt`."""
        middle = f".variants[{self.variant}]" if self.variant else ""
        return f"{self.node_id}{middle}.{self.field}"


@dataclass(frozen=True, slots=True)
class Pushed:
    prompt: InlinePrompt
    version: int
    created: bool
    """False: the text equalled the newest version, which was reused."""
    ref: str


def inline_prompts(workflow: Workflow, *, node: str | None = None, name: str | None = None) -> list[InlinePrompt]:
    """The workflow's inline prompts (registry references left out), in YAML order; `node` keeps one node."""
    nodes = _prompt_nodes(workflow)
    if node is not None:
        if node not in nodes:
            raise PushError(f"workflow '{workflow.name}' has no llm or agent node '{node}'; it has: {_names(nodes)}")
        nodes = {node: nodes[node]}
    if name is not None:
        check_name(name)
        if len(nodes) != 1:
            raise PushError(f"--name names one node's prompts; pick the node with --node ({_names(nodes)})")
    found = []
    for node_id, spec in nodes.items():
        base = name or f"{workflow.name}.{node_id}"
        main, *others = FIELDS[spec.type]
        places = [(None, spec, base), *((v.name, v, f"{base}.{v.name}") for v in spec.variants or ())]
        for variant, holder, prefix in places:
            for field in (main, *others):
                text = getattr(holder, field, None)
                if isinstance(text, str) and text.strip() and not is_ref(text):
                    registry_name = prefix if field == main else f"{prefix}.{field}"
                    found.append(InlinePrompt(node_id, field, variant, text, check_name(registry_name)))
    if not found:
        raise PushError(f"workflow '{workflow.name}' has no inline prompt to push (references are already pushed)")
    return found


def push(
    registry: PromptRegistry, workflow: Workflow, prompts: list[InlinePrompt], *, alias: str, message: str
) -> list[Pushed]:
    """Register each prompt (unless unchanged), point `alias` at it, and say which reference to write."""
    results = []
    for prompt in prompts:
        newest = _newest(registry, prompt.name)
        if newest is not None and newest.template == prompt.template:
            version, created = newest.version, False
        else:
            tags = {"workflow": workflow.name, "node": prompt.node_id, "field": prompt.field}
            if prompt.variant:
                tags["variant"] = prompt.variant
            version, created = registry.register(prompt.name, prompt.template, message=message, tags=tags).version, True
        registry.set_alias(prompt.name, alias, version)
        results.append(Pushed(prompt, version, created, PromptRef(prompt.name, alias=alias).uri))
    return results


def _newest(registry: PromptRegistry, name: str) -> LoadedPrompt | None:
    try:
        return registry.load(PromptRef(name, alias="latest"), fresh=True)
    except PromptNotFound:
        return None


def _prompt_nodes(workflow: Workflow) -> dict[str, LLMNode | AgentNode]:
    nodes = {}
    for node_id, node in workflow.spec.nodes.items():
        inner = node.node if isinstance(node, MapNode) else node
        if isinstance(inner, LLMNode | AgentNode):
            nodes[node_id] = inner
    return nodes


def _names(nodes: dict[str, LLMNode | AgentNode]) -> str:
    return ", ".join(nodes) or "no llm or agent node"
