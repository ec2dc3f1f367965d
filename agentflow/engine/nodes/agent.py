"""`agent`: a model with tools, looping until it answers or runs out of turns."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agentflow.engine.events import ToolCalled
from agentflow.engine.nodes.base import Outcome, clipped, llm_hooks, models_for, sampling
from agentflow.prompts.resolve import resolve
from agentflow.spec.models import AgentNode, object_schema

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


async def execute(node: AgentNode, scope: dict[str, Any], ctx: RunContext, node_id: str) -> Outcome:
    from agentflow.engine.memory import memory_of, recall_block, save_after
    from agentflow.llm.agent import run_agent

    await ctx.services.tools.prepare(node.tools)  # an MCP server's tools are listed now, not at load
    tools = [ctx.services.tools.get(name) for name in node.tools]

    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        started = time.perf_counter()
        error = None
        result = None
        try:
            ctx.check_tool(name)
            result = ctx.redact(await ctx.services.tools.get(name).call(arguments, ctx.tool_context(node_id)))
            return result
        except Exception as exc:
            error = ctx.redact(str(exc))
            raise
        finally:
            latency = (time.perf_counter() - started) * 1000
            ctx.emit(
                ToolCalled(
                    run_id=ctx.run_id,
                    node_id=node_id,
                    tool=name,
                    latency_ms=latency,
                    error=error,
                    arguments=ctx.redact(clipped(arguments)),
                    result=clipped(result),
                )
            )

    # `prompts:/` fields come from MLflow's prompt registry (agentflow/prompts/resolve.py).
    resolved = await resolve(ctx, {"instructions": node.instructions, "input": node.input or None}, scope)
    instructions = resolved.texts["instructions"]
    task = resolved.texts.get("input", "Carry out the instructions.")
    memory = memory_of(node, ctx)
    if memory is not None and memory.recall is not None:
        recalled = await recall_block(ctx, node_id, memory.recall, scope, default_query=task)
        if recalled:
            instructions = f"{instructions}\n\n{recalled}"
    models = models_for(node, ctx)
    result = await run_agent(
        ctx.services.llm,
        models=models,
        instructions=instructions,
        task=task,
        tools=tools,
        call_tool=call_tool,
        max_turns=node.max_turns,
        output_schema=object_schema(node.output) if node.output else None,
        timeout=None,
        **sampling(node, ctx),
        **llm_hooks(ctx, node_id, prompt_ref=resolved.prompt_ref),
    )
    value = result.data if node.output else result.text
    if memory is not None and memory.save is not None:
        await save_after(ctx, node_id, memory, scope, value, models, given=task)
    return Outcome(value, result.input_tokens + result.output_tokens, result.cost_usd, result.model)
