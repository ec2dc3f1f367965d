"""One way to call a model: LiteLLM with a fallback chain, retries, structured output and pricing.

LiteLLM is imported on first use only: it takes seconds to import and must never slow down
`agentflow validate` or `--help`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentflow.llm.errors import LLMError, describe_error, hint_for, is_transient
from agentflow.llm.structured import (
    OutputMismatch,
    check_schema,
    parse_json_output,
    repair_message,
    response_format,
    with_schema_in_prompt,
)
from agentflow.settings import Settings

MAX_REPAIRS = 2
"""Extra calls asking the model to fix a reply that does not match the output schema."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One provider call, successful or not; failed calls have `error` set and cost nothing."""

    model: str
    provider: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    error: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    """What was sent: the conversation, as given to the provider."""
    reply: dict[str, Any] | None = None
    """What came back: the assistant message (content and tool calls); None when the call failed."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    error: str | None = None
    """Set when the model sent arguments that are not a JSON object; `arguments` is then empty."""


@dataclass(slots=True)
class LLMResult:
    text: str
    data: Any
    """The validated object when an output schema was given, else the reply text."""
    model: str
    message: dict[str, Any]
    tool_calls: list[ToolCall] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: list[CallRecord] = field(default_factory=list)


class _ModelFailed(Exception):
    def __init__(self, reason: str, hint: str | None = None, cause: BaseException | None = None):
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.cause = cause


@functools.cache
def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    # Otherwise every exception prints a "Give Feedback / Get Help" banner on stdout.
    litellm.suppress_debug_info = True
    return litellm


class LLMClient:
    def __init__(self, settings: Settings, *, retry_backoff: float = 0.5) -> None:
        self._settings = settings
        self._retry_backoff = retry_backoff

    async def complete(
        self,
        *,
        models: Sequence[str],
        messages: list[dict[str, Any]],
        temperature: float | None = None,
        max_tokens: int | None = None,
        output_schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        timeout: float | None = None,
        before_call: Callable[[], None] | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
    ) -> LLMResult:
        """Ask each model in turn (AGENTFLOW_MODEL if none) until one answers; raise LLMError naming every failure."""
        if isinstance(models, str):
            models = [models]
        if not models and self._settings.model:
            models = [self._settings.model]
        if not models:
            raise LLMError("no model to call: set `model` on the node, `spec.defaults.model`, or AGENTFLOW_MODEL")
        if output_schema is not None and (problem := check_schema(output_schema)):
            raise LLMError(f"the output schema is not a valid JSON Schema: {problem}")
        calls: list[CallRecord] = []

        def record(call: CallRecord) -> None:
            calls.append(call)
            if on_call is not None:
                on_call(call)

        request = _Request(
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            output_schema=output_schema,
            tools=tools or None,
            tool_choice=tool_choice,
            timeout=timeout if timeout is not None else self._settings.llm_timeout,
            before_call=before_call,
            record=record,
        )
        failures: list[tuple[str, _ModelFailed]] = []
        for model in models:
            try:
                result = await self._complete_with(model, request)
            except _ModelFailed as failure:
                failures.append((model, failure))
                continue
            result.calls = calls
            result.input_tokens = sum(call.input_tokens for call in calls)
            result.output_tokens = sum(call.output_tokens for call in calls)
            result.cost_usd = sum(call.cost_usd for call in calls)
            return result
        raise LLMError(_summary(failures), attempts=[(m, f.reason) for m, f in failures], calls=calls)

    async def _complete_with(self, model: str, request: _Request) -> LLMResult:
        messages = list(request.messages)
        schema = request.output_schema
        schema_in_prompt = False
        repairs = 0
        while True:
            try:
                response = await self._call(model, messages, request, use_response_format=not schema_in_prompt)
            except _ModelFailed as failure:
                if schema is None or schema_in_prompt or not _rejects_response_format(failure.cause):
                    raise
                # Some OpenAI-compatible servers refuse `response_format`: ask in the prompt instead.
                schema_in_prompt = True
                messages = with_schema_in_prompt(messages, schema)
                continue
            text, message, tool_calls = _parse_message(response)
            offered_tools = request.tools is not None and request.tool_choice != "none"
            if schema is None or (tool_calls and offered_tools):
                return LLMResult(text=text, data=text, model=model, message=message, tool_calls=tool_calls)
            try:
                data = parse_json_output(text, schema)
            except OutputMismatch as mismatch:
                if repairs >= MAX_REPAIRS:
                    raise _ModelFailed(
                        f"reply did not match the output schema after {repairs + 1} tries: {mismatch}",
                        "simplify the `output` schema or use a stronger model",
                    ) from None
                repairs += 1
                messages = [*messages, {"role": "assistant", "content": text}, repair_message(mismatch)]
                continue
            return LLMResult(text=text, data=data, model=model, message=message, tool_calls=[])

    async def _call(
        self, model: str, messages: list[dict[str, Any]], request: _Request, use_response_format: bool
    ) -> Any:
        """One provider call, retried on transient errors; `before_call` runs before every attempt."""
        litellm = _litellm()
        kwargs = self._kwargs(model, messages, request, use_response_format)
        provider = provider_of(model)
        # LiteLLM's own retries (num_retries, and the OpenAI SDK's max_retries=2 underneath) would hide
        # attempts from the budget and the call records, so it is told not to retry and we do it here.
        for attempt in range(self._settings.llm_retries + 1):
            if request.before_call is not None:
                request.before_call()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(request.timeout):
                    response = await litellm.acompletion(**kwargs)
            except Exception as exc:
                elapsed = (time.perf_counter() - started) * 1000
                reason = describe_error(exc, request.timeout)
                request.record(CallRecord(model, provider, 0, 0, 0.0, elapsed, reason, messages))
                if attempt < self._settings.llm_retries and is_transient(exc):
                    await asyncio.sleep(self._retry_backoff * 2**attempt)
                    continue
                raise _ModelFailed(
                    reason,
                    hint_for(model, provider, exc, self._settings.api_base),
                    exc,
                ) from exc
            elapsed = (time.perf_counter() - started) * 1000
            input_tokens, output_tokens = _usage(response)
            cost = self._cost(model, response, input_tokens, output_tokens)
            reply = _parse_message(response)[1]
            request.record(
                CallRecord(model, provider, input_tokens, output_tokens, cost, elapsed, None, messages, reply)
            )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _kwargs(
        self, model: str, messages: list[dict[str, Any]], request: _Request, use_response_format: bool
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "timeout": request.timeout, "num_retries": 0}
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.tools is not None:
            kwargs["tools"] = request.tools
            if request.tool_choice is not None:
                kwargs["tool_choice"] = request.tool_choice
        if request.output_schema is not None and use_response_format:
            kwargs["response_format"] = response_format(request.output_schema)
        if self._settings.api_base and model.startswith("openai/"):
            # The endpoint comes from the environment only, never from workflow YAML.
            kwargs["api_base"] = self._settings.api_base
            kwargs["api_key"] = self._settings.api_key or "unused"
        return kwargs

    def _cost(self, model: str, response: Any, input_tokens: int, output_tokens: int) -> float:
        price = self._settings.prices.get(model)
        if price is not None:
            return input_tokens * price.input_per_token + output_tokens * price.output_per_token
        if model.startswith(("ollama/", "ollama_chat/")):
            return 0.0
        # LiteLLM prices the response itself; None means an unmapped model: cost unknown, not an error.
        hidden = getattr(response, "_hidden_params", None) or {}
        if "response_cost" in hidden:
            return float(hidden["response_cost"] or 0.0)
        try:
            return float(_litellm().completion_cost(completion_response=response) or 0.0)
        except Exception:
            return 0.0


@dataclass(slots=True)
class _Request:
    messages: list[dict[str, Any]]
    temperature: float | None
    max_tokens: int | None
    output_schema: dict[str, Any] | None
    tools: list[dict[str, Any]] | None
    tool_choice: str | None
    timeout: float
    before_call: Callable[[], None] | None
    record: Callable[[CallRecord], None]


@functools.lru_cache(maxsize=512)
def provider_of(model: str) -> str | None:
    """LiteLLM's provider for a model name (`openai`, `ollama`...), or its prefix if LiteLLM does not know."""
    try:
        return str(_litellm().get_llm_provider(model)[1])
    except Exception:
        return model.split("/", 1)[0] if "/" in model else None


def _rejects_response_format(exc: BaseException | None) -> bool:
    import openai

    text = str(exc).lower()
    return isinstance(exc, openai.BadRequestError) and ("response_format" in text or "json_schema" in text)


def _parse_message(response: Any) -> tuple[str, dict[str, Any], list[ToolCall]]:
    raw = response.choices[0].message
    text = raw.content or ""
    message: dict[str, Any] = {"role": "assistant", "content": raw.content}
    tool_calls: list[ToolCall] = []
    raw_calls = getattr(raw, "tool_calls", None) or []
    for index, call in enumerate(raw_calls):
        call_id = call.id or f"call_{index}"
        name = call.function.name or ""
        arguments, error = _arguments(call.function.arguments)
        tool_calls.append(ToolCall(call_id, name, arguments, error))
    if raw_calls:
        message["tool_calls"] = [
            {
                "id": parsed.id,
                "type": "function",
                "function": {"name": parsed.name, "arguments": call.function.arguments or "{}"},
            }
            for parsed, call in zip(tool_calls, raw_calls, strict=True)
        ]
    return text, message, tool_calls


def _arguments(raw: str | dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    if isinstance(raw, dict):
        return raw, None
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        return {}, f"the arguments are not valid JSON ({exc.msg}): {raw!r}"
    if not isinstance(value, dict):
        return {}, f"the arguments must be a JSON object, got {raw!r}"
    return value, None


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


def _summary(failures: list[tuple[str, _ModelFailed]]) -> str:
    lines = [f"no model gave a usable reply (tried {len(failures)}):"]
    hints: list[str] = []
    for model, failure in failures:
        lines.append(f"  - {model}: {failure.reason}")
        if failure.hint and failure.hint not in hints:
            hints.append(failure.hint)
    lines.extend(f"  → {hint}" for hint in hints)
    return "\n".join(lines)
