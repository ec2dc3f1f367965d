"""The agent loop: the model calls tools until it gives a final answer or runs out of turns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentflow.llm.client import CallRecord, LLMClient, LLMError, LLMResult, ToolCall
from agentflow.llm.structured import parse_json_output
from agentflow.tools.registry import Tool

MAX_TOOL_RESULT_CHARS = 100_000

FINAL_JSON_PROMPT = "Now give your final answer as a JSON object matching the required schema, and nothing else."


class AgentTurnsExceeded(LLMError):
    """The model was still calling tools when `max_turns` ran out."""


async def run_agent(
    client: LLMClient,
    *,
    models: Sequence[str],
    instructions: str,
    task: str,
    tools: Sequence[Tool],
    call_tool: Callable[[str, dict[str, Any]], Awaitable[Any]],
    max_turns: int,
    output_schema: dict[str, Any] | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float | None = None,
    before_call: Callable[[], None] | None = None,
    on_call: Callable[[CallRecord], None] | None = None,
) -> LLMResult:
    """Run the tool-calling loop; tool errors and unknown tools are fed back to the model, not raised."""
    if max_turns < 1:
        raise ValueError("max_turns must be at least 1")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": instructions},
        {"role": "user", "content": task},
    ]
    specs = [tool.openai_spec() for tool in tools] or None
    available = {tool.function_name: tool.name for tool in tools}  # a model calls `mcp/x/y` as `mcp__x__y`
    results: list[LLMResult] = []

    async def ask(then: Sequence[dict[str, Any]] = (), **extra: Any) -> LLMResult:
        result = await client.complete(
            models=models,
            messages=[*messages, *then],
            temperature=temperature,
            max_tokens=max_tokens,
            tools=specs,
            timeout=timeout,
            before_call=before_call,
            on_call=on_call,
            **extra,
        )
        results.append(result)
        return result

    for turn in range(1, max_turns + 1):
        reply = await ask()
        messages.append(reply.message)
        if not reply.tool_calls:
            if output_schema is None:
                return _combine(reply, results)
            return _combine(await _final_structured(reply, ask, output_schema), results)
        if turn == max_turns:
            asked = ", ".join(call.name for call in reply.tool_calls)
            raise AgentTurnsExceeded(
                f"the agent gave no final answer within max_turns={max_turns} (its last turn still asked for: "
                f"{asked}); raise `max_turns` on the node or make the task smaller",
                calls=[call for result in results for call in result.calls],
            )
        outputs = await asyncio.gather(*(_run_tool(call, available, call_tool) for call in reply.tool_calls))
        messages.extend(
            {"role": "tool", "tool_call_id": call.id, "content": output}
            for call, output in zip(reply.tool_calls, outputs, strict=True)
        )
    raise AssertionError("unreachable")  # pragma: no cover


async def _final_structured(
    reply: LLMResult, ask: Callable[..., Awaitable[LLMResult]], output_schema: dict[str, Any]
) -> LLMResult:
    try:
        reply.data = parse_json_output(reply.text, output_schema)
        return reply  # the final text already is the structured answer: no extra call
    except ValueError:
        pass
    then = [{"role": "user", "content": FINAL_JSON_PROMPT}]
    # tool_choice="none" keeps the tools visible (some providers require them once the history holds
    # tool calls) while asking for an answer rather than another call.
    return await ask(then=then, output_schema=output_schema, tool_choice="none")


async def _run_tool(
    call: ToolCall, available: dict[str, str], call_tool: Callable[[str, dict[str, Any]], Awaitable[Any]]
) -> str:
    name = available.get(call.name) or (call.name if call.name in available.values() else None)
    if name is None:
        return f"error: unknown tool {call.name}; available: {', '.join(sorted(available)) or 'none'}"
    if call.error is not None:
        return f"error: {call.error}"
    try:
        output = await call_tool(name, call.arguments)
    except Exception as exc:  # the model can often recover: tell it what went wrong
        return f"error: {exc}" if str(exc) else f"error: {type(exc).__name__}"
    return _as_content(output)


def _as_content(output: Any) -> str:
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
    if len(text) > MAX_TOOL_RESULT_CHARS:
        return text[:MAX_TOOL_RESULT_CHARS] + f"\n[truncated: {len(text) - MAX_TOOL_RESULT_CHARS} more characters]"
    return text


def _combine(final: LLMResult, results: list[LLMResult]) -> LLMResult:
    calls = [call for result in results for call in result.calls]
    return LLMResult(
        text=final.text,
        data=final.data,
        model=final.model,
        message=final.message,
        tool_calls=final.tool_calls,
        input_tokens=sum(call.input_tokens for call in calls),
        output_tokens=sum(call.output_tokens for call in calls),
        cost_usd=sum(call.cost_usd for call in calls),
        calls=calls,
    )
