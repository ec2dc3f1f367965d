"""Which variant of a node a run uses: the one `overrides["variants"]` names, else one drawn by weight.

The draw is a hash of the run id and the node id mapped onto [0, 1) and read against the cumulative
weights, so it needs no state: a resumed or retried run, the LLMCalled event and the NodeFinished event
all see the same variant, and a run's choice can be recomputed from its id alone.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agentflow.spec.models import AgentNode, AgentVariant, LLMNode, LLMVariant, MapNode, Workflow

_OVERRIDDEN = ("prompt", "system", "instructions", "input", "model", "temperature")


def unit_draw(run_id: str, node_id: str) -> float:
    """A number in [0, 1), uniform over run ids, fixed for a (run, node)."""
    digest = hashlib.sha256(f"{run_id}\0{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def draw(variants: list[Any], run_id: str, node_id: str) -> Any:
    """The variant whose share of the cumulative weights holds this run's draw."""
    point = unit_draw(run_id, node_id) * sum(variant.weight for variant in variants)
    for variant in variants:
        point -= variant.weight
        if point < 0:
            return variant
    return variants[-1]  # rounding at the very top of the range


def variant_node(workflow: Workflow, node_id: str) -> LLMNode | AgentNode | None:
    """The llm/agent node under `node_id` (a map's inner node for a map) when it declares variants."""
    node: Any = workflow.spec.nodes.get(node_id)
    if isinstance(node, MapNode):
        node = node.node
    return node if isinstance(node, LLMNode | AgentNode) and node.variants else None


def chosen(workflow: Workflow, run_id: str, node_id: str, forced: dict[str, str]) -> LLMVariant | AgentVariant | None:
    """The variant this run uses for the node; None for a node without variants."""
    node = variant_node(workflow, node_id)
    if node is None or not node.variants:
        return None
    name = forced.get(node_id)
    if name is not None:
        for variant in node.variants:
            if variant.name == name:
                return variant
    return draw(node.variants, run_id, node_id)


def apply(node: Any, variant: LLMVariant | AgentVariant | None) -> Any:
    """The node with what the variant sets in place of its own settings."""
    if variant is None:
        return node
    changes = {key: getattr(variant, key) for key in _OVERRIDDEN if getattr(variant, key, None) is not None}
    return node.model_copy(update=changes)


def check_forced(workflow: Workflow, forced: dict[str, Any]) -> None:
    """Every forced variant names a node with variants and one of its variants' names."""
    from agentflow.engine.nodes.base import NodeConfigError

    for node_id, name in forced.items():
        node = variant_node(workflow, node_id)
        if node is None or not node.variants:
            with_variants = [key for key in workflow.spec.nodes if variant_node(workflow, key) is not None]
            raise NodeConfigError(
                f"the run chooses variant {name!r} for node '{node_id}', which has no `variants:` in workflow "
                f"'{workflow.name}'; nodes with variants: {', '.join(with_variants) or 'none'}"
            )
        names = [variant.name for variant in node.variants]
        if name not in names:
            raise NodeConfigError(f"node '{node_id}' has no variant {name!r}; its variants are: {', '.join(names)}")
