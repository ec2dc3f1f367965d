"""`switch`: pick the first case whose `when` is truthy, else the default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentflow.engine.nodes.base import Outcome
from agentflow.engine.state import truthy
from agentflow.spec.expressions import evaluate
from agentflow.spec.models import SwitchNode

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


async def execute(node: SwitchNode, scope: dict[str, Any], ctx: RunContext, node_id: str) -> Outcome:
    for case in node.cases:
        if truthy(evaluate(case.when, scope)):
            return Outcome(case.goto)
    return Outcome(node.default)
