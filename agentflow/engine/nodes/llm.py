"""`llm`: one prompt, one reply (text, or a validated object when `output` is set)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentflow.engine.nodes.base import Outcome, llm_hooks, models_for, sampling
from agentflow.prompts.resolve import resolve
from agentflow.spec.models import LLMNode, object_schema

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext


async def execute(node: LLMNode, scope: dict[str, Any], ctx: RunContext, node_id: str) -> Outcome:
    from agentflow.engine.memory import memory_of, recall_block, save_after

    # `prompts:/` fields come from MLflow's prompt registry (agentflow/prompts/resolve.py).
    resolved = await resolve(ctx, {"prompt": node.prompt, "system": node.system or None}, scope)
    messages = []
    if "system" in resolved.texts:
        messages.append({"role": "system", "content": resolved.texts["system"]})
    prompt = resolved.texts["prompt"]
    memory = memory_of(node, ctx)
    if memory is not None and memory.recall is not None:
        recalled = await recall_block(ctx, node_id, memory.recall, scope, default_query=prompt)
        if recalled:
            messages.append({"role": "system", "content": recalled})
    messages.append({"role": "user", "content": prompt})
    models = models_for(node, ctx)
    result = await ctx.services.llm.complete(
        models=models,
        messages=messages,
        output_schema=object_schema(node.output) if node.output else None,
        **sampling(node, ctx),
        **llm_hooks(ctx, node_id, prompt_ref=resolved.prompt_ref),
    )
    value = result.data if node.output else result.text
    if memory is not None and memory.save is not None:
        await save_after(ctx, node_id, memory, scope, value, models, given=prompt)
    return Outcome(value, result.input_tokens + result.output_tokens, result.cost_usd, result.model)
