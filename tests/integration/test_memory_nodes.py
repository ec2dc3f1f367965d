"""`memory:` on llm and agent nodes, through real runs on a real store: recall reaches the prompt (the fake
LLM's request log shows it), saves survive a restart, scopes stay apart, secrets never land, `save: auto`
reconciles a contradicting fact, and every read and write is an event."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.runtime import AgentFlow
from agentflow.spec.errors import SpecErrors
from agentflow.spec.validate import load_workflow
from agentflow.trust.capabilities import derive
from tests.conftest import fake_settings
from tests.fakes.openai_server import FakeLLM, Json, Text, ToolCalls
from tests.integration.helpers import run_source, workflow


@pytest.fixture
def flow(home: Path, fake_llm: FakeLLM) -> Iterator[AgentFlow]:
    instance = AgentFlow.open(fake_settings(home, fake_llm))
    yield instance
    instance.close()


def events(flow: AgentFlow, run_id: str, kind: str) -> list[dict[str, object]]:
    return [event for event in flow.store.events(run_id) if event["type"] == kind]


def prompt_text(request: dict[str, object]) -> str:
    messages = request["messages"]
    assert isinstance(messages, list)
    return "\n".join(str(message.get("content")) for message in messages)


NOTES = workflow(
    "notes",
    """
    inputs: {question: string}
    nodes:
      answer:
        type: llm
        prompt: "{{ inputs.question }}"
        memory:
          recall: {scope: workflow, top_k: 3}
          save: {text: "{{ output }}", tags: [answer]}
    outputs: {answer: "{{ answer }}"}
    """,
)


async def test_what_a_run_saves_is_recalled_by_the_next_run_after_a_restart(home: Path, fake_llm: FakeLLM) -> None:
    first = AgentFlow.open(fake_settings(home, fake_llm))
    fake_llm.enqueue(Text("The office door code is 4711."))
    run = await run_source(first, NOTES, {"question": "What is the office door code?"})
    assert run.status == "succeeded", run.error
    (written,) = events(first, run.id, "memory_write")
    assert written["scope"] == "workflow:notes" and written["operation"] == "add"
    assert written["text"] == "The office door code is 4711."
    first.close()

    second = AgentFlow.open(fake_settings(home, fake_llm))  # a new process on the same data directory
    try:
        fake_llm.enqueue(Text("It is 4711."))
        run = await run_source(second, NOTES, {"question": "Remind me: the office door code?"})
        assert run.status == "succeeded", run.error
        assert "The office door code is 4711." in prompt_text(fake_llm.requests[-1])
        (recalled,) = events(second, run.id, "memory_recall")
        assert recalled["scopes"] == ["workflow:notes"]
        assert recalled["items"][0]["text"] == "The office door code is 4711."  # type: ignore[index]
    finally:
        second.close()


async def test_a_workflow_never_recalls_another_workflows_memory(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("The launch is on Friday."))
    assert (await run_source(flow, NOTES, {"question": "When is the launch?"})).status == "succeeded"
    other = NOTES.replace("name: notes", "name: other-notes")
    fake_llm.enqueue(Text("I don't know."))
    run = await run_source(flow, other, {"question": "When is the launch?"})
    assert run.status == "succeeded", run.error
    assert "Friday" not in prompt_text(fake_llm.requests[-1])
    (recalled,) = events(flow, run.id, "memory_recall")
    assert recalled["scopes"] == ["workflow:other-notes"] and recalled["items"] == []


async def test_a_secret_in_a_nodes_output_is_redacted_before_it_is_saved(
    flow: AgentFlow, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_SECRET_DEPLOY_TOKEN", "tok-9f8e7d6c5b4a")
    fake_llm.enqueue(Text("Use the token tok-9f8e7d6c5b4a to deploy."))
    run = await run_source(flow, NOTES, {"question": "How do I deploy?"})
    assert run.status == "succeeded", run.error
    memory = flow.engine.services.memory
    assert memory is not None
    (item,) = memory.list("workflow:notes")
    assert "tok-9f8e7d6c5b4a" not in item.text and "***" in item.text
    (written,) = events(flow, run.id, "memory_write")
    assert written["text"] == item.text  # the event shows what was kept: redacted too


async def test_auto_save_updates_a_fact_the_new_content_contradicts(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    source = workflow(
        "profile",
        """
        inputs: {message: string}
        nodes:
          reply:
            type: llm
            prompt: "{{ inputs.message }}"
            memory: {save: auto}
        """,
    )
    fake_llm.enqueue(Text("Nice, Paris is lovely."))
    fake_llm.enqueue(Json({"operations": [{"op": "add", "text": "The user lives in Paris."}]}))
    assert (await run_source(flow, source, {"message": "I live in Paris."})).status == "succeeded"

    fake_llm.enqueue(Text("Berlin, great choice."))
    fake_llm.enqueue(Json({"operations": [{"op": "update", "id": "m1", "text": "The user lives in Berlin."}]}))
    run = await run_source(flow, source, {"message": "I moved to Berlin last month."})
    assert run.status == "succeeded", run.error
    extraction = prompt_text(fake_llm.requests[-1])
    assert "The user lives in Paris." in extraction and "m1" in extraction  # it was shown what it knew
    memory = flow.engine.services.memory
    assert memory is not None
    assert [item.text for item in memory.list("workflow:profile")] == ["The user lives in Berlin."]
    (written,) = events(flow, run.id, "memory_write")
    assert written["operation"] == "update"


async def test_auto_save_ignores_an_id_it_was_not_shown(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    source = workflow("guarded", "nodes:\n  reply: {type: llm, prompt: hi, memory: {save: auto}}")
    fake_llm.enqueue(Text("hello"))
    fake_llm.enqueue(Json({"operations": [{"op": "delete", "id": "m7"}, {"op": "add"}, {"op": "update", "id": "x"}]}))
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    assert events(flow, run.id, "memory_write") == []


async def test_concurrent_runs_writing_one_scope_both_land(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    source = workflow(
        "facts",
        """
        inputs: {fact: string}
        nodes:
          ack:
            type: llm
            prompt: "Note: {{ inputs.fact }}"
            memory: {save: {text: "{{ inputs.fact }}"}}
        """,
    )
    fake_llm.enqueue_all([Text("noted"), Text("noted")])
    runs = await asyncio.gather(
        run_source(flow, source, {"fact": "Alpha ships in May."}),
        run_source(flow, source, {"fact": "Beta ships in June."}),
    )
    assert [run.status for run in runs] == ["succeeded", "succeeded"]
    memory = flow.engine.services.memory
    assert memory is not None
    assert sorted(item.text for item in memory.list("workflow:facts")) == ["Alpha ships in May.", "Beta ships in June."]


async def test_an_agent_saves_and_searches_with_its_memory_tools(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    source = workflow(
        "assistant",
        """
        inputs: {message: string}
        nodes:
          helper:
            type: agent
            instructions: Remember what matters.
            input: "{{ inputs.message }}"
            tools: [memory_save, memory_search]
        """,
    )
    fake_llm.enqueue(ToolCalls([("memory_save", {"text": "The user's favourite colour is teal."})]))
    fake_llm.enqueue(Text("Saved."))
    assert (await run_source(flow, source, {"message": "My favourite colour is teal."})).status == "succeeded"
    fake_llm.enqueue(ToolCalls([("memory_search", {"query": "favourite colour"})]))
    fake_llm.enqueue(Text("Teal."))
    run = await run_source(flow, source, {"message": "What is my favourite colour?"})
    assert run.status == "succeeded", run.error
    tool_message = next(m for m in fake_llm.requests[-1]["messages"] if m["role"] == "tool")
    assert "teal" in tool_message["content"]
    assert events(flow, run.id, "memory_recall")


async def test_an_agent_cannot_reach_the_shared_scope_without_a_grant(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    source = workflow(
        "sneaky",
        """
        nodes:
          helper: {type: agent, instructions: Look., tools: [memory_search]}
        """,
    )
    fake_llm.enqueue(ToolCalls([("memory_search", {"query": "anything", "scope": "global"})]))
    fake_llm.enqueue(Text("Nothing."))
    run = await run_source(flow, source)
    assert run.status == "succeeded", run.error
    (call,) = events(flow, run.id, "tool_call")
    assert "not granted the shared memory 'global'" in str(call["error"])


def test_shared_memory_is_a_capability_to_grant() -> None:
    source = workflow(
        "team",
        """
        nodes:
          answer: {type: llm, prompt: hi, memory: {recall: [workflow, global]}}
        """,
    )
    capabilities = derive(load_workflow(source, "team.yaml"))
    assert capabilities.memory == {"global"}
    assert "shared memory global" in capabilities.lines()
    own = derive(load_workflow(NOTES, "notes.yaml"))
    assert own.memory == frozenset() and not own  # a workflow's own memory needs no grant


@pytest.mark.parametrize(
    ("memory", "message"),
    [
        ("{recall: {scope: team}}", "should be 'workflow', 'agent', 'user', 'session' or 'global' (got 'team')"),
        ("{recall: {top_k: 0}}", "top_k"),
        ("{save: {scope: user}}", "say what to keep"),
        ('{save: {text: "{{ outptu }}"}}', "did you mean 'output'?"),
        ('{recall: {query: "{{ inputs.qestion }}"}}', "did you mean 'question'?"),
        ("{save: {text: hi, ttl: forever}}", "'forever' is not a duration"),
        ("{remember: true}", "remember"),
    ],
)
def test_bad_memory_settings_are_refused_with_the_line_and_the_fix(memory: str, message: str) -> None:
    source = workflow(
        "bad-memory",
        f"""
        inputs: {{question: string}}
        nodes:
          answer: {{type: llm, prompt: hi, memory: {memory}}}
        """,
    )
    with pytest.raises(SpecErrors) as caught:
        load_workflow(source, "bad.yaml")
    text = str(caught.value)
    assert message in text and "bad.yaml:7:" in text


async def test_the_cli_lists_searches_shows_exports_and_forgets(
    flow: AgentFlow, fake_llm: FakeLLM, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_llm.enqueue(Text("The staging database is db-stage-2."))
    assert (await run_source(flow, NOTES, {"question": "Which staging database?"})).status == "succeeded"
    monkeypatch.setenv("AGENTFLOW_HOME", str(home))
    assert main(["memory", "list"]) == 0
    assert "workflow:notes" in capsys.readouterr().out
    assert main(["memory", "search", "staging database", "--workflow", "notes", "--json"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert hit["text"] == "The staging database is db-stage-2." and hit["scope"] == "workflow:notes"
    assert main(["memory", "show", hit["id"]]) == 0
    assert "db-stage-2" in capsys.readouterr().out
    exported = home / "notes.jsonl"
    assert main(["memory", "export", "--workflow", "notes", "-o", str(exported)]) == 0
    assert json.loads(exported.read_text().splitlines()[0])["id"] == hit["id"]
    capsys.readouterr()
    assert main(["memory", "forget", "--workflow", "notes"]) == 0
    assert "forgot 1 memory" in capsys.readouterr().out
    assert main(["memory", "show", hit["id"]]) == 2
    assert f"no memory {hit['id']}" in capsys.readouterr().err
    assert main(["memory", "forget"]) == 2
    assert "say what to forget" in capsys.readouterr().err
