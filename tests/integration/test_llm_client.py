"""LLMClient and the agent loop through real LiteLLM, against the local fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import os
import site
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow.llm.agent import AgentTurnsExceeded, run_agent
from agentflow.llm.client import CallRecord, LLMClient, LLMError
from agentflow.settings import Price, Settings
from agentflow.tools.registry import builtin_registry
from tests.fakes.openai_server import Error, FakeLLM, Json, Text, ToolCalls

pytestmark = pytest.mark.store_agnostic

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HI = [{"role": "user", "content": "say hi"}]
TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "other"]},
        "topics": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["category", "topics"],
    "additionalProperties": False,
}


async def test_text_reply_records_tokens_and_call(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.enqueue(Text("hello there", usage=(12, 3)))
    seen: list[CallRecord] = []

    result = await llm_client.complete(models=["openai/fake-model"], messages=HI, on_call=seen.append)

    assert (result.text, result.data, result.model) == ("hello there", "hello there", "openai/fake-model")
    assert result.message == {"role": "assistant", "content": "hello there"}
    assert (result.input_tokens, result.output_tokens) == (12, 3)
    assert seen == result.calls
    [call] = result.calls
    assert (call.model, call.provider, call.input_tokens, call.output_tokens, call.error) == (
        "openai/fake-model",
        "openai",
        12,
        3,
        None,
    )
    assert call.latency_ms > 0
    [request] = fake_llm.requests
    assert request["model"] == "fake-model"
    assert request["messages"] == HI
    assert request["authorization"] == "Bearer test-key"


async def test_falls_back_to_the_next_model_on_a_server_error(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.enqueue(Error(500, "primary is down"), model="primary")
    fake_llm.enqueue(Text("from backup"), model="backup")

    result = await llm_client.complete(models=["openai/primary", "openai/backup"], messages=HI)

    assert (result.text, result.model) == ("from backup", "openai/backup")
    assert [r["model"] for r in fake_llm.requests] == ["primary", "backup"]  # no hidden SDK retries
    failed, succeeded = result.calls
    assert failed.error is not None and "HTTP 500" in failed.error and "primary is down" in failed.error
    assert (failed.input_tokens, failed.cost_usd) == (0, 0.0)
    assert succeeded.error is None


async def test_all_models_failing_raises_an_error_naming_each(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.enqueue(Error(500, "first broke"), model="first")
    fake_llm.enqueue(Error(401, "bad key"), model="second")

    with pytest.raises(LLMError) as caught:
        await llm_client.complete(models=["openai/first", "openai/second"], messages=HI)

    message = str(caught.value)
    assert "openai/first: InternalServerError (HTTP 500): first broke" in message
    assert "openai/second: AuthenticationError (HTTP 401): bad key" in message
    assert "AGENTFLOW_API_KEY" in message  # says what to fix
    assert [model for model, _ in caught.value.attempts] == ["openai/first", "openai/second"]
    assert len(caught.value.calls) == 2


async def test_unreachable_server_says_which_setting_to_check() -> None:
    client = LLMClient(Settings(api_base="http://127.0.0.1:9/v1", llm_retries=0, llm_timeout=5))
    with pytest.raises(LLMError, match=r"AGENTFLOW_API_BASE=http://127.0.0.1:9/v1 running\?"):
        await client.complete(models=["openai/x"], messages=HI)


async def test_a_missing_provider_key_is_reported_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a key the OpenAI SDK refuses before any network access; LiteLLM calls that "HTTP 500".
    for name in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    records: list[CallRecord] = []
    client = LLMClient(Settings(llm_retries=2), retry_backoff=0.0)
    with pytest.raises(LLMError, match="set OPENAI_API_KEY or AGENTFLOW_API_BASE") as caught:
        await client.complete(models=["openai/gpt-4o-mini"], messages=HI, on_call=records.append)
    assert "openai/gpt-4o-mini: AuthenticationError: Missing credentials" in str(caught.value)
    assert len(records) == 1


async def test_settings_model_is_the_default(fake_llm: FakeLLM) -> None:
    client = LLMClient(Settings(api_base=fake_llm.base_url, model="openai/default-model"))
    assert (await client.complete(models=[], messages=HI)).model == "openai/default-model"
    with pytest.raises(LLMError, match="AGENTFLOW_MODEL"):
        await LLMClient(Settings()).complete(models=[], messages=HI)


async def test_transient_errors_are_retried_and_each_attempt_is_budgeted(fake_llm: FakeLLM) -> None:
    client = LLMClient(Settings(api_base=fake_llm.base_url, llm_retries=2), retry_backoff=0.0)
    fake_llm.enqueue_all([Error(503, "busy"), Error(429, "slow down")])
    fake_llm.enqueue(Text("finally"))
    checks: list[int] = []
    records: list[CallRecord] = []

    result = await client.complete(
        models=["openai/m"], messages=HI, before_call=lambda: checks.append(1), on_call=records.append
    )

    assert result.text == "finally"
    assert fake_llm.count() == 3 and len(checks) == 3
    assert [r.error is None for r in records] == [False, False, True]
    assert fake_llm.requests[0]["authorization"] == "Bearer unused"  # no AGENTFLOW_API_KEY


async def test_client_errors_are_not_retried(fake_llm: FakeLLM) -> None:
    client = LLMClient(Settings(api_base=fake_llm.base_url, llm_retries=3), retry_backoff=0.0)
    fake_llm.enqueue(Error(401, "no"))
    with pytest.raises(LLMError):
        await client.complete(models=["openai/m"], messages=HI)
    assert fake_llm.count() == 1


async def test_before_call_can_stop_the_call(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    class BudgetExceeded(Exception):
        pass

    def over_budget() -> None:
        raise BudgetExceeded("usd budget spent")

    with pytest.raises(BudgetExceeded):
        await llm_client.complete(models=["openai/a", "openai/b"], messages=HI, before_call=over_budget)
    assert fake_llm.count() == 0


async def test_a_slow_model_times_out_and_the_next_one_answers(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.enqueue(Text("too late", latency=1.0), model="slow")

    result = await llm_client.complete(models=["openai/slow", "openai/fast"], messages=HI, timeout=0.2)

    assert result.model == "openai/fast"
    assert result.calls[0].error is not None and "Timeout" in result.calls[0].error


async def test_structured_output_is_requested_and_validated(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.enqueue(Json({"category": "bug", "topics": ["login"]}))

    result = await llm_client.complete(models=["openai/m"], messages=HI, output_schema=TICKET_SCHEMA)

    assert result.data == {"category": "bug", "topics": ["login"]}
    assert fake_llm.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": TICKET_SCHEMA, "strict": True},
    }


async def test_structured_output_tolerates_code_fences(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.enqueue(Text('Here it is:\n```json\n{"category": "other", "topics": []}\n```'))
    result = await llm_client.complete(models=["openai/m"], messages=HI, output_schema=TICKET_SCHEMA)
    assert result.data == {"category": "other", "topics": []}


async def test_invalid_structured_output_is_repaired(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.enqueue(Text("I think it is a bug"))
    fake_llm.enqueue(Json({"category": "outage", "topics": []}))
    fake_llm.enqueue(Json({"category": "bug", "topics": []}))

    result = await llm_client.complete(models=["openai/m"], messages=HI, output_schema=TICKET_SCHEMA)

    assert result.data == {"category": "bug", "topics": []}
    first, second, third = fake_llm.requests
    assert first["messages"] == HI
    assert second["messages"][-2] == {"role": "assistant", "content": "I think it is a bug"}
    assert "not valid JSON" in second["messages"][-1]["content"]
    assert "at $.category: 'outage' is not one of ['billing', 'bug', 'other']" in third["messages"][-1]["content"]
    assert len(result.calls) == 3 and result.input_tokens == sum(c.input_tokens for c in result.calls)


async def test_structured_output_gives_up_after_two_repairs(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.default = Json({"category": "outage"})
    with pytest.raises(LLMError, match="did not match the output schema after 3 tries"):
        await llm_client.complete(models=["openai/m"], messages=HI, output_schema=TICKET_SCHEMA)
    assert fake_llm.count() == 3


async def test_schema_goes_into_the_prompt_when_response_format_is_refused(
    fake_llm: FakeLLM, llm_client: LLMClient
) -> None:
    fake_llm.enqueue(Error(400, "response_format json_schema is not supported"))
    fake_llm.enqueue(Json({"category": "bug", "topics": []}))

    messages = [{"role": "system", "content": "You triage."}, *HI]
    result = await llm_client.complete(models=["openai/m"], messages=messages, output_schema=TICKET_SCHEMA)

    assert result.data == {"category": "bug", "topics": []}
    retry = fake_llm.requests[1]
    assert retry["response_format"] is None
    assert retry["messages"][0]["content"].startswith("You triage.\n\nReply with only a JSON object")


async def test_tool_calls_are_parsed(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.enqueue(ToolCalls([("calculator", {"expression": "2+2"})]))
    tools = [builtin_registry().get("calculator").openai_spec()]

    result = await llm_client.complete(models=["openai/m"], messages=HI, tools=tools)

    [call] = result.tool_calls
    assert (call.name, call.arguments, call.error) == ("calculator", {"expression": "2+2"}, None)
    assert result.message["tool_calls"][0]["id"] == call.id
    assert fake_llm.requests[0]["tools"] == tools


async def test_configured_price_is_used_for_cost(fake_llm: FakeLLM) -> None:
    prices = {"openai/local-model": Price(input_per_token=0.001, output_per_token=0.002)}
    client = LLMClient(Settings(api_base=fake_llm.base_url, llm_retries=0, prices=prices))
    fake_llm.enqueue(Text("x", usage=(100, 10)))

    result = await client.complete(models=["openai/local-model"], messages=HI)

    assert result.cost_usd == pytest.approx(0.12)


async def test_litellm_price_map_and_unpriced_models(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.default = Text("x", usage=(1000, 1000))
    known = await llm_client.complete(models=["openai/gpt-4o-mini"], messages=HI)
    unknown = await llm_client.complete(models=["openai/no-such-model"], messages=HI)
    assert known.cost_usd > 0  # from LiteLLM's bundled price map, offline
    assert unknown.cost_usd == 0.0


async def test_concurrent_calls_overlap(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    fake_llm.default = Text("ok", latency=0.2)
    await asyncio.gather(*(llm_client.complete(models=["openai/m"], messages=HI) for _ in range(3)))
    assert fake_llm.max_concurrency() == 3


async def test_fake_streams_through_litellm(fake_llm: FakeLLM) -> None:
    import litellm

    fake_llm.enqueue(Text("one two three", usage=(5, 3)))
    fake_llm.enqueue(ToolCalls([("calculator", {"expression": "1+1"})]))
    options: dict[str, Any] = {"api_base": fake_llm.base_url, "api_key": "k", "stream": True, "num_retries": 0}

    text_stream = await litellm.acompletion(
        model="openai/m", messages=HI, stream_options={"include_usage": True}, **options
    )
    chunks = [chunk async for chunk in text_stream]
    built: Any = litellm.stream_chunk_builder(chunks)
    assert built.choices[0].message.content == "one two three"
    assert (built.usage.prompt_tokens, built.usage.completion_tokens) == (5, 3)

    tool_stream = await litellm.acompletion(model="openai/m", messages=HI, **options)
    built = litellm.stream_chunk_builder([chunk async for chunk in tool_stream])
    [call] = built.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("calculator", {"expression": "1+1"})
    assert all(r["stream"] and r["finished"] is not None for r in fake_llm.requests)


# --- the agent loop -------------------------------------------------------------------------------


def _tools() -> tuple[list[Any], Any]:
    registry = builtin_registry()

    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        return await registry.get(name).call(arguments)

    return [registry.get("calculator")], call_tool


async def test_agent_calls_a_tool_then_answers(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    tools, call_tool = _tools()
    fake_llm.enqueue(ToolCalls([("calculator", {"expression": "2+2"})], usage=(10, 5)))
    fake_llm.enqueue(Text("The answer is 4.", usage=(20, 4)))

    result = await run_agent(
        llm_client,
        models=["openai/m"],
        instructions="Use tools.",
        task="What is 2+2?",
        tools=tools,
        call_tool=call_tool,
        max_turns=4,
    )

    assert result.text == result.data == "The answer is 4."
    assert (result.input_tokens, result.output_tokens, len(result.calls)) == (30, 9, 2)
    first, second = fake_llm.requests
    assert first["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert first["tools"][0]["function"]["name"] == "calculator"
    call_id = second["messages"][2]["tool_calls"][0]["id"]
    assert second["messages"][3] == {"role": "tool", "tool_call_id": call_id, "content": "4"}


async def test_agent_runs_tool_calls_concurrently_and_feeds_back_errors(
    fake_llm: FakeLLM, llm_client: LLMClient
) -> None:
    tools, _ = _tools()
    both_started = asyncio.Barrier(2)

    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        async with asyncio.timeout(5):  # sequential execution would never pass the barrier
            await both_started.wait()
        if arguments["expression"] == "boom":
            raise ValueError("cannot do that")
        return 1

    fake_llm.enqueue(ToolCalls([("calculator", {"expression": "1"}), ("calculator", {"expression": "boom"})]))
    fake_llm.enqueue(ToolCalls([("shell", {"cmd": "rm -rf /"})]))
    fake_llm.enqueue(Text("done"))

    result = await run_agent(
        llm_client,
        models=["openai/m"],
        instructions="",
        task="t",
        tools=tools,
        call_tool=call_tool,
        max_turns=3,
    )

    assert result.text == "done"
    second, third = fake_llm.requests[1:]
    assert [m["content"] for m in second["messages"] if m["role"] == "tool"] == ["1", "error: cannot do that"]
    assert third["messages"][-1]["content"] == "error: unknown tool shell; available: calculator"


async def test_agent_exceeding_max_turns(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    tools, call_tool = _tools()
    fake_llm.default = ToolCalls([("calculator", {"expression": "1+1"})])

    with pytest.raises(AgentTurnsExceeded, match=r"max_turns=2.*raise `max_turns`") as caught:
        await run_agent(
            llm_client,
            models=["openai/m"],
            instructions="",
            task="loop forever",
            tools=tools,
            call_tool=call_tool,
            max_turns=2,
        )
    assert fake_llm.count() == 2
    assert len(caught.value.calls) == 2


async def test_agent_structured_final_answer(fake_llm: FakeLLM, llm_client: LLMClient) -> None:
    tools, call_tool = _tools()
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    fake_llm.enqueue(ToolCalls([("calculator", {"expression": "6*7"})]))
    fake_llm.enqueue(Text("It is 42."))
    fake_llm.enqueue(Json({"answer": 42}))

    result = await run_agent(
        llm_client,
        models=["openai/m"],
        instructions="",
        task="6*7?",
        tools=tools,
        call_tool=call_tool,
        max_turns=3,
        output_schema=schema,
    )

    assert result.data == {"answer": 42}
    final = fake_llm.requests[-1]
    assert final["response_format"]["json_schema"]["schema"] == schema
    assert final["tool_choice"] == "none"
    assert len(result.calls) == 3


async def test_agent_final_text_that_already_matches_needs_no_extra_call(
    fake_llm: FakeLLM, llm_client: LLMClient
) -> None:
    tools, call_tool = _tools()
    fake_llm.enqueue(Json({"answer": 1}))
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    result = await run_agent(
        llm_client,
        models=["openai/m"],
        instructions="",
        task="t",
        tools=tools,
        call_tool=call_tool,
        max_turns=2,
        output_schema=schema,
    )
    assert result.data == {"answer": 1} and fake_llm.count() == 1


# --- the fake as a separate process, and the supply-chain floor ----------------------------------


@pytest.mark.slow
def test_fake_runs_as_a_separate_process(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"kind": "text", "text": "scripted"}]))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--script", str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[0] == "READY"
        base = f"http://127.0.0.1:{ready[1]}"
        httpx.post(f"{base}/_enqueue", json={"kind": "error", "status": 500, "model": "x"}).raise_for_status()
        chat = {"model": "m", "messages": HI}
        assert httpx.post(f"{base}/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"] == (
            "scripted"
        )
        assert httpx.post(f"{base}/v1/chat/completions", json={**chat, "model": "x"}).status_code == 500
        assert [r["model"] for r in httpx.get(f"{base}/_requests").json()] == ["m", "x"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert list(tmp_path.iterdir()) == [script]  # writes nothing


def test_litellm_is_not_a_compromised_release() -> None:
    installed = tuple(int(part) for part in version("litellm").split(".")[:2])
    assert installed >= (1, 83)
    assert version("litellm") not in ("1.82.7", "1.82.8")
    directories = {*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for directory in directories:
        assert not (Path(directory) / "litellm_init.pth").exists(), directory
