"""What every node executor returns, and the helpers they share."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow.engine.events import LLMCalled
from agentflow.spec.models import AgentNode, LLMNode

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext
    from agentflow.llm.client import CallRecord


MAX_SHOWN_CHARS = 4000
"""Each text in a recorded prompt, reply or tool call is cut here: events stay small, the console readable."""
MAX_SHOWN_MESSAGES = 24
MAX_SHOWN_ITEMS = 50


def clipped(value: Any) -> Any:
    """`value` with every string longer than MAX_SHOWN_CHARS truncated and every list cut at MAX_SHOWN_ITEMS,
    nested ones too."""
    if isinstance(value, str):
        return value if len(value) <= MAX_SHOWN_CHARS else f"{value[:MAX_SHOWN_CHARS]}… [{len(value)} chars]"
    if isinstance(value, dict):
        return {key: clipped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        kept = [clipped(item) for item in value[:MAX_SHOWN_ITEMS]]
        return [*kept, f"… {len(value) - MAX_SHOWN_ITEMS} more items"] if len(value) > MAX_SHOWN_ITEMS else kept
    return value


def node_inputs(node: Any, scope: dict[str, Any], item_index: int | None) -> Any:
    """What a node reads, as its console shows it: its `needs`' results, else the run's inputs; a map item."""
    seen = {name: scope[name] for name in getattr(node, "needs", None) or () if name in scope}
    if item_index is not None:
        seen["item"] = scope.get("item")
    return clipped(seen or {"inputs": scope.get("inputs")})


def transcript(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages of a call as recorded: an agent's long history keeps its start and its latest turns."""
    if len(messages) > MAX_SHOWN_MESSAGES:
        left_out = len(messages) - MAX_SHOWN_MESSAGES + 2
        marker = {"role": "note", "content": f"… {left_out} earlier messages not recorded …"}
        messages = [*messages[:2], marker, *messages[-(MAX_SHOWN_MESSAGES - 2) :]]
    return list(clipped(messages))


class NodeConfigError(Exception):
    """The workflow asks for something this installation cannot do; the message says what to set."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """Which execution of a node an executor is in: a sub-workflow's run is keyed by it."""

    number: int = 1
    iteration: int = 0
    item_index: int | None = None


ATTEMPT: ContextVar[Attempt | None] = ContextVar("agentflow_attempt", default=None)
"""Set by `compiler.execute_node` around each executor call (task-local, so parallel nodes each see theirs)."""


async def attempting(attempt: Attempt, work: Awaitable[Outcome]) -> Outcome:
    """Await an executor's work with `ATTEMPT` saying which execution it is."""
    marker = ATTEMPT.set(attempt)
    try:
        return await work
    finally:
        ATTEMPT.reset(marker)


@dataclass(slots=True)
class Outcome:
    value: Any
    tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None
    steps: int = 0
    """Steps taken beyond the node's own (a sub-workflow's)."""


def models_for(node: LLMNode | AgentNode, ctx: RunContext) -> list[str]:
    """The node's model or fallback chain, else the workflow default, else AGENTFLOW_MODEL."""
    chosen = node.model or ctx.workflow.spec.defaults.model or ctx.services.default_model()
    if not chosen:
        raise NodeConfigError(
            "no model configured: set `model:` on the node or in spec.defaults, "
            "or the AGENTFLOW_MODEL environment variable (e.g. ollama_chat/llama3.2 or openai/gpt-4o-mini)"
        )
    return [chosen] if isinstance(chosen, str) else list(chosen)


def llm_hooks(ctx: RunContext, node_id: str, *, prompt_ref: str | None = None) -> dict[str, Any]:
    """`before_call`/`on_call` callbacks: budget checks and an event for every provider call (with the
    registry prompt it used and the node's variant)."""
    from agentflow.engine.variant_draw import chosen

    variant = chosen(ctx.workflow, ctx.run_id, node_id, ctx.variants)

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
                prompt=ctx.redact(transcript(record.messages)),
                reply=ctx.redact(clipped(record.reply)) if record.reply is not None else None,
                at=time.time(),
                prompt_ref=prompt_ref,
                variant=variant.name if variant is not None else None,
            )
        )

    return {"before_call": ctx.meter.check_spend, "on_call": on_call}


def sampling(node: LLMNode | AgentNode, ctx: RunContext) -> dict[str, Any]:
    defaults = ctx.workflow.spec.defaults
    return {
        "temperature": node.temperature if node.temperature is not None else defaults.temperature,
        "max_tokens": node.max_tokens or defaults.max_tokens,
    }
