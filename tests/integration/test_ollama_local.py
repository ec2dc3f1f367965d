"""Fully local, proven: AgentFlow on Ollama's own protocol, through LiteLLM for real, with no cloud key set.

Every model call here goes to `tests/fakes/ollama_server.py` (OLLAMA_API_BASE points at it), as it would to
`ollama serve` on a laptop: `ollama/…` models speak `/api/generate`, `ollama_chat/…` models `/api/chat`.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.chat.engine import ConversationEngine
from agentflow.memory.embeddings import Embedder
from agentflow.observability.costs import spend
from agentflow.providers import default_model, detect
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.fakes.ollama_server import FakeOllama, Json, Text, ToolCalls, word_vector
from tests.integration.helpers import run_source, workflow

pytestmark = pytest.mark.store_agnostic

CLOUD_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "AGENTFLOW_API_KEY", "AGENTFLOW_API_BASE")
CHAT = "ollama_chat/llama3.2"
GENERATE = "ollama/llama3.2"
ENDPOINT = {CHAT: "/api/chat", GENERATE: "/api/generate"}


@pytest.fixture(scope="module")
def ollama_server() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def ollama(ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    """The fake as this machine's Ollama, and no cloud provider configured at all."""
    for name in (*CLOUD_KEYS, "AGENTFLOW_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OLLAMA_API_BASE", ollama_server.url)
    ollama_server.reset()
    yield ollama_server
    ollama_server.reset()


def local_settings(home: Path, model: str | None, **more: Any) -> Settings:
    """What a laptop sets: a model (or none: detected), no key, no API base, no prices."""
    return Settings(
        home=home, model=model, llm_timeout=10.0, llm_retries=0, egress_allow_internal=("127.0.0.1",), **more
    )


@pytest.fixture
def local(home: Path, ollama: FakeOllama) -> Iterator[AgentFlow]:
    """An AgentFlow whose AGENTFLOW_MODEL is an ollama_chat/ model."""
    instance = AgentFlow.open(local_settings(home, CHAT))
    yield instance
    instance.close()


def completions(ollama: FakeOllama) -> list[dict[str, Any]]:
    """The model calls proper (not LiteLLM's /api/show look-ups)."""
    return [entry for entry in ollama.requests if entry["endpoint"] in ("/api/chat", "/api/generate")]


def assert_no_cloud_key() -> None:
    assert not [name for name in CLOUD_KEYS if os.environ.get(name)]


GREET = """
    inputs: {name: string}
    nodes:
      say: {type: llm, model: MODEL, system: Be brief., prompt: "Greet {{ inputs.name }} in French"}
    outputs: {reply: "{{ say }}"}
"""


@pytest.mark.parametrize("model", [GENERATE, CHAT])
async def test_an_llm_node_runs_on_ollama_for_free_with_its_tokens_counted(
    home: Path, ollama: FakeOllama, model: str
) -> None:
    ollama.enqueue(Text("Bonjour Ada", usage=(10, 5)))
    flow = AgentFlow.open(local_settings(home, None))
    try:
        run = await run_source(flow, workflow("greet", GREET.replace("MODEL", model)), {"name": "Ada"})
        assert run.status == "succeeded", run.error
        assert run.outputs == {"reply": "Bonjour Ada"}
        assert (run.tokens, run.cost_usd) == (15, 0.0)
        [node] = flow.store.node_runs(run.id)
        assert (node.model, node.tokens) == (model, 15)
        [by_model] = spend(flow.store, by="model")
        assert (by_model.key, by_model.calls, by_model.input_tokens, by_model.output_tokens, by_model.cost_usd) == (
            model,
            1,
            10,
            5,
            0.0,
        )
        assert [row.key for row in spend(flow.store, by="provider")] == [model.split("/")[0]]
    finally:
        flow.close()
    [call] = completions(ollama)
    assert (call["endpoint"], call["model"], call["stream"]) == (ENDPOINT[model], "llama3.2", False)
    if model == CHAT:
        sent = [(message["role"], message["content"]) for message in call["messages"]]
        assert sent == [("system", "Be brief."), ("user", "Greet Ada in French")]
    else:  # /api/generate takes one prompt: LiteLLM renders the conversation into it
        assert "Be brief." in call["prompt"] and "Greet Ada in French" in call["prompt"]
    assert_no_cloud_key()


AGENT = workflow(
    "local-agent",
    """
    nodes:
      solve:
        type: agent
        instructions: Use the calculator for arithmetic.
        input: What is 6*7?
        tools: [calculator]
        max_turns: 3
    """,
)


async def test_an_agent_calls_a_tool_through_ollamas_native_tool_calls(local: AgentFlow, ollama: FakeOllama) -> None:
    ollama.enqueue(ToolCalls([("calculator", {"expression": "6*7"})], usage=(40, 8)))
    ollama.enqueue(Text("The answer is 42.", usage=(60, 5)))
    run = await run_source(local, AGENT)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"solve": "The answer is 42."}
    assert (run.tokens, run.cost_usd) == (113, 0.0)
    first, second = completions(ollama)
    assert first["endpoint"] == second["endpoint"] == "/api/chat"
    assert [tool["function"]["name"] for tool in first["tools"]] == ["calculator"]
    # The tool call goes back in Ollama's shape (arguments an object), the result as a `tool` message.
    assistant, result = second["messages"][-2:]
    assert assistant["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "6*7"}}
    assert result["role"] == "tool" and "42" in result["content"]
    tool_calls = [event for event in local.store.events(run.id) if event["type"] == "tool_call"]
    assert [event["tool"] for event in tool_calls] == ["calculator"]


CLASSIFY = """
    nodes:
      classify:
        type: llm
        model: MODEL
        prompt: "Classify: the invoice is wrong"
        output: {category: {type: string, enum: [bug, billing]}}
    outputs: {category: "{{ classify.category }}"}
"""


@pytest.mark.parametrize("model", [CHAT, GENERATE])
async def test_structured_output_asks_ollama_for_the_schema_and_repairs_a_wrong_reply(
    local: AgentFlow, ollama: FakeOllama, model: str
) -> None:
    ollama.enqueue(Json({"category": "invoice"}))  # JSON, as `format` guarantees, but outside the enum
    ollama.enqueue(Json({"category": "billing"}))
    run = await run_source(local, workflow("classify", CLASSIFY.replace("MODEL", model)))
    assert run.status == "succeeded", run.error
    assert run.outputs == {"category": "billing"}
    first, second = completions(ollama)
    assert first["endpoint"] == second["endpoint"] == ENDPOINT[model]
    for call in (first, second):  # the schema travels as Ollama's `format`, for constrained decoding
        assert call["format"]["properties"]["category"]["enum"] == ["bug", "billing"]
    repair = second["messages"][-1]["content"] if model == CHAT else second["prompt"]
    assert "does not match the required JSON schema" in repair and "invoice" in repair


async def test_plain_text_under_a_json_format_is_a_script_no_ollama_could_follow(
    local: AgentFlow, ollama: FakeOllama
) -> None:
    ollama.enqueue(Text("billing, I think"))
    run = await run_source(local, workflow("classify", CLASSIFY.replace("MODEL", CHAT)))
    assert run.status == "failed"
    assert run.error is not None and "Ollama then always answers JSON" in run.error


@pytest.mark.parametrize("model", [GENERATE, CHAT])
async def test_litellm_reads_ollamas_ndjson_stream_with_its_usage(ollama: FakeOllama, model: str) -> None:
    # AgentFlow's own calls do not stream; this pins that LiteLLM reads the fake's NDJSON as it does Ollama's.
    import litellm

    ollama.enqueue(Text("one two three", usage=(7, 3)))
    stream = await litellm.acompletion(
        model=model,
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
        timeout=10,
        num_retries=0,
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = getattr(chunk, "usage", None) or usage
    assert text == "one two three"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (7, 3)
    [call] = completions(ollama)
    assert (call["endpoint"], call["stream"]) == (ENDPOINT[model], True)


async def test_a_streamed_tool_call_arrives_whole(ollama: FakeOllama) -> None:
    import litellm

    ollama.enqueue(ToolCalls([("calculator", {"expression": "2+2"})]))
    tools = [{"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}]
    stream = await litellm.acompletion(
        model=CHAT, messages=[{"role": "user", "content": "2+2?"}], tools=tools, stream=True, timeout=10
    )
    calls: list[Any] = []
    finish = None
    async for chunk in stream:
        if chunk.choices:
            calls.extend(chunk.choices[0].delta.tool_calls or [])
            finish = chunk.choices[0].finish_reason or finish
    assert [(call.function.name, call.function.arguments) for call in calls] == [
        ("calculator", '{"expression": "2+2"}')
    ]
    assert finish == "tool_calls"


async def test_embeddings_come_from_ollama_for_memory(ollama: FakeOllama, home: Path) -> None:
    import litellm

    texts = ["the invoice total is wrong", "billing disputes go to finance"]
    response = await litellm.aembedding(model="ollama/nomic-embed-text", input=texts, api_base=ollama.url)
    assert [entry["embedding"] for entry in response.data] == [word_vector(text) for text in texts]
    assert response.usage.prompt_tokens == 10
    # Memory's embedder finds Ollama the same way the models do: OLLAMA_API_BASE.
    settings = Settings(home=home, embedding_model="ollama/nomic-embed-text")
    embedder = Embedder.from_settings(settings)
    assert embedder is not None and embedder.api_base == ollama.url
    assert await embedder.embed_query(texts[0]) == word_vector(texts[0])
    assert [entry["input"] for entry in ollama.calls("/api/embed")] == [texts, [texts[0]]]


async def test_an_embedding_model_that_is_not_pulled_says_so(ollama: FakeOllama, home: Path) -> None:
    embedder = Embedder.from_settings(Settings(home=home, embedding_model="ollama/mxbai-embed-large"))
    assert embedder is not None
    with pytest.raises(Exception, match="mxbai-embed-large"):
        await embedder.embed(["anything"])


def test_ollama_answering_at_its_url_is_detected_first(ollama: FakeOllama) -> None:
    environ = {"OLLAMA_API_BASE": ollama.url, "OPENAI_API_KEY": "sk-test"}
    [found] = [provider for provider in detect(environ) if provider.name == "ollama"]
    assert found.available and found.detail == f"2 models at {ollama.url}"
    assert default_model(environ) == "ollama_chat/llama3.2:latest"  # before the OpenAI key: local first
    assert ollama.calls("/api/tags")


def test_an_ollama_with_no_model_pulled_is_not_a_provider(ollama: FakeOllama) -> None:
    ollama.models = []
    environ = {"OLLAMA_API_BASE": ollama.url}
    [found] = [provider for provider in detect(environ) if provider.name == "ollama"]
    assert not found.available and default_model(environ) is None


async def test_with_no_model_set_a_workflow_runs_on_the_detected_ollama(home: Path, ollama: FakeOllama) -> None:
    ollama.enqueue(Text("Salut", usage=(4, 1)))
    flow = AgentFlow.open(local_settings(home, None))
    try:
        source = workflow("greet", "nodes:\n  say: {type: llm, prompt: Greet me}\noutputs: {reply: '{{ say }}'}")
        run = await run_source(flow, source)
        assert run.status == "succeeded", run.error
        assert run.outputs == {"reply": "Salut"} and (run.tokens, run.cost_usd) == (5, 0.0)
        [node] = flow.store.node_runs(run.id)
        assert node.model == "ollama_chat/llama3.2:latest"
    finally:
        flow.close()
    assert_no_cloud_key()


async def test_a_model_that_is_not_pulled_fails_the_run_with_the_pull_command(
    local: AgentFlow, ollama: FakeOllama
) -> None:
    run = await run_source(local, workflow("greet", GREET.replace("MODEL", "ollama_chat/llama9")), {"name": "Ada"})
    assert run.status == "failed"
    assert run.error is not None and "llama9" in run.error and "ollama pull llama9" in run.error


async def test_ollama_not_running_says_how_to_start_it(
    local: AgentFlow, ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.network_guard import closed_port

    monkeypatch.setenv("OLLAMA_API_BASE", f"http://127.0.0.1:{closed_port()}")
    run = await run_source(local, workflow("greet", GREET.replace("MODEL", CHAT)), {"name": "Ada"})
    assert run.status == "failed"
    assert run.error is not None and "ollama serve" in run.error


HELLO = workflow(
    "shout",
    """
    inputs: {text: string}
    nodes:
      shout: {type: transform, expr: "join('', [inputs.text, '!'])"}
    outputs: {result: "{{ shout }}"}
    """,
)


@pytest.fixture
async def assistant(local: AgentFlow) -> AsyncIterator[ConversationEngine]:
    await local.executor.start()
    yield ConversationEngine(local, run_wait=20)
    await local.executor.stop()


async def test_the_chat_assistant_writes_a_workflow_through_ollama(
    assistant: ConversationEngine, ollama: FakeOllama
) -> None:
    assert assistant.default_model == CHAT
    ollama.enqueue(ToolCalls([("write_workflow", {"yaml": HELLO, "summary": "shout the text"})], usage=(900, 60)))
    ollama.enqueue(Text("I wrote a workflow that shouts your text.", usage=(1000, 12)))
    reply = await assistant.handle("local-1", "a workflow that shouts my text")
    assert reply.valid is True and reply.version == 1
    assert reply.text.startswith("I wrote a workflow")
    first, _ = completions(ollama)
    assert first["endpoint"] == "/api/chat"
    assert "write_workflow" in [tool["function"]["name"] for tool in first["tools"]]
    await assistant.flow.store.flush()
    [by_source] = spend(assistant.flow.store, by="source")
    assert (by_source.key, by_source.calls, by_source.input_tokens, by_source.output_tokens) == (
        "assistant",
        2,
        1900,
        72,
    )
    assert by_source.cost_usd == 0.0
    ran = await assistant.handle("local-1", "/run text=hi")
    assert ran.run_ids and "hi!" in ran.text
    assert_no_cloud_key()


async def test_the_assistant_on_the_detected_ollama_model_answers_in_prose(home: Path, ollama: FakeOllama) -> None:
    flow = AgentFlow.open(local_settings(home, None))
    try:
        chat = ConversationEngine(flow, run_wait=20)
        ollama.enqueue(ToolCalls([("write_workflow", {"yaml": HELLO, "summary": "shout the text"})]))
        ollama.enqueue(Text("I wrote a workflow that shouts your text."))
        reply = await chat.handle("local-2", "a workflow that shouts my text")
    finally:
        flow.close()
    assert reply.valid is True
    # A call that offers tools must leave the model free to answer in prose.
    assert [call["format"] for call in completions(ollama) if call["endpoint"] == "/api/generate"] == []
    assert reply.text.startswith("I wrote a workflow"), reply.text


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "local-ollama.yaml"


async def test_the_local_example_runs_on_ollama(local: AgentFlow, ollama: FakeOllama) -> None:
    ollama.enqueue(Json({"question": "How much is each instalment?", "numbers": [1200, 12]}, usage=(50, 20)))
    ollama.enqueue(ToolCalls([("calculator", {"expression": "1200 / 12"})], usage=(80, 10)))
    ollama.enqueue(Text("Each instalment is 100.", usage=(100, 6)))
    run = await run_source(local, EXAMPLE.read_text(encoding="utf-8"), {"request": "1200 a year in 12 instalments?"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"question": "How much is each instalment?", "answer": "Each instalment is 100."}
    assert (run.tokens, run.cost_usd) == (266, 0.0)
    understand, ask, answer = completions(ollama)
    assert set(understand["format"]["properties"]) == {"question", "numbers"}  # the schema, as Ollama's `format`
    assert sorted(tool["function"]["name"] for tool in ask["tools"]) == ["calculator", "current_time"]
    assert "100" in answer["messages"][-1]["content"]


REMEMBER = workflow(
    "household",
    """
    inputs: {message: string}
    nodes:
      reply:
        type: llm
        prompt: "{{ inputs.message }}"
        memory: {recall: {scope: workflow, top_k: 1}, save: "{{ inputs.message }}"}
    outputs: {reply: "{{ reply }}"}
    """,
)
PLUMBING = ("plumber", "pipe", "pipes", "leak", "repairs")


def concept_vector(text: str) -> list[float]:
    """An embedding model that knows plumbing words mean one thing: a match no keyword search can make."""
    words = set(text.lower().replace("?", " ").replace(".", " ").split())
    return [1.0, 0.0, 0.0] if words & set(PLUMBING) else [0.0, 1.0, 0.0]


async def test_memory_recalls_by_meaning_through_ollama_embeddings(home: Path, ollama: FakeOllama) -> None:
    ollama.embedder = concept_vector
    settings = local_settings(home, CHAT, embedding_model="ollama/nomic-embed-text")
    flow = AgentFlow.open(settings)
    try:
        for message in ("The plumber comes on Thursday.", "The cat is called Tom."):
            assert (await run_source(flow, REMEMBER, {"message": message})).status == "succeeded"
        ollama.reset()
        ollama.embedder = concept_vector
        run = await run_source(flow, REMEMBER, {"message": "When are the pipe repairs?"})
        assert run.status == "succeeded", run.error
        [recalled] = [event for event in flow.store.events(run.id) if event["type"] == "memory_recall"]
    finally:
        flow.close()
    # No word in common with the query: only the vector search, on Ollama's embeddings, found it.
    assert [item["text"] for item in recalled["items"]] == ["The plumber comes on Thursday."]
    [answer] = completions(ollama)
    assert "The plumber comes on Thursday." in json.dumps(answer["messages"])
    assert "Tom" not in json.dumps(answer["messages"])
    embedded = [entry["input"] for entry in ollama.calls("/api/embed")]
    assert ["When are the pipe repairs?"] in embedded  # the query, then the new memory as it is saved
    assert_no_cloud_key()
