"""What every node executor returns, and the helpers they share."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow.engine.events import LLMCalled
from agentflow.spec.models import AgentNode, LLMNode

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext
    from agentflow.llm.client import CallRecord


class NodeConfigError(Exception):
    """The workflow asks for something this installation cannot do; the message says what to set."""


@dataclass(slots=True)
class Outcome:
    value: Any
    tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None


def models_for(node: LLMNode | AgentNode, ctx: RunContext) -> list[str]:
    """The node's model or fallback chain, else the workflow default, else AGENTFLOW_MODEL."""
    chosen = node.model or ctx.workflow.spec.defaults.model or ctx.services.default_model()
    if not chosen:
        raise NodeConfigError(
            "no model configured: set `model:` on the node or in spec.defaults, "
            "or the AGENTFLOW_MODEL environment variable (e.g. ollama/llama3.2 or openai/gpt-4o-mini)"
        )
    return [chosen] if isinstance(chosen, str) else list(chosen)


def llm_hooks(ctx: RunContext, node_id: str) -> dict[str, Any]:
    """`before_call`/`on_call` callbacks: budget checks and an event for every provider call."""

    def on_call(record: CallRecord) -> None:
        ctx.meter.spend(record.input_tokens + record.output_tokens, record.cost_usd)
        ctx.emit(
            LLMCalled(
                run_id=ctx.run_id,
                node_id=node_id,
                model=record.model,
                provider=record.provider,
                input_tokens=record.input_tokens,
                output_tokens=record.output_tokens,
                cost_usd=record.cost_usd,
                latency_ms=record.latency_ms,
                error=record.error,
                at=time.time(),
            )
        )

    return {"before_call": ctx.meter.check_spend, "on_call": on_call}


def sampling(node: LLMNode | AgentNode, ctx: RunContext) -> dict[str, Any]:
    defaults = ctx.workflow.spec.defaults
    return {
        "temperature": node.temperature if node.temperature is not None else defaults.temperature,
        "max_tokens": node.max_tokens or defaults.max_tokens,
    }
