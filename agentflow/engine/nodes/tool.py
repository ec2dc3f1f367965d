"""`tool`: call one registered tool with rendered arguments; secrets resolve here, at run time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agentflow.engine.events import ToolCalled
from agentflow.engine.nodes.base import Outcome, clipped
from agentflow.spec.expressions import render_with_env
from agentflow.spec.models import ToolNode

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


async def execute(node: ToolNode, scope: dict[str, Any], ctx: RunContext, node_id: str) -> Outcome:
    tool = ctx.services.tools.get(node.tool)
    ctx.check_tool(node.tool)
    # Only the workflow's own text may name secrets: a model's output that says ${env:X} stays inert.
    arguments = render_with_env(node.args, scope, ctx.secret)
    started = time.perf_counter()
    error = None
    result = None
    try:
        result = ctx.redact(await tool.call(arguments, ctx.tool_context(node_id)))
        return Outcome(result)
    except Exception as exc:
        error = ctx.redact(str(exc))
        raise
    finally:
        latency = (time.perf_counter() - started) * 1000
        ctx.emit(
            ToolCalled(
                run_id=ctx.run_id,
                node_id=node_id,
                tool=node.tool,
                latency_ms=latency,
                error=error,
                arguments=ctx.redact(clipped(arguments)),  # the resolved secrets it was given show as ***
                result=clipped(result),
            )
        )
