"""`transform`: reshape the run state with one JMESPath expression; no code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentflow.engine.nodes.base import Outcome
from agentflow.spec.expressions import evaluate
from agentflow.spec.models import TransformNode

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


async def execute(node: TransformNode, scope: dict[str, Any], ctx: RunContext, node_id: str) -> Outcome:
    return Outcome(evaluate(node.expr, scope))
