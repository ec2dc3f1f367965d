"""The conversation engine, with the fake LLM scripting the assistant."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentflow.chat.engine import ConversationEngine, Progress, Reply
from agentflow.chat.history import ChatHistory
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.fakes.openai_server import FakeLLM, Text, ToolCalls
from tests.integration.helpers import workflow

GOOD = workflow(
    "shout",
    """
    inputs: {text: string}
    nodes:
      shout: {type: transform, expr: "join('', [inputs.text, '!'])"}
    outputs: {result: "{{ shout }}"}
    """,
)
BAD_KEY = GOOD.replace("expr:", "exrp:")
BAD_REF = GOOD.replace("inputs.text", "inputs.txet")


@pytest.fixture
async def chat(flow: AgentFlow) -> AsyncIterator[ConversationEngine]:
    await flow.executor.start()
    yield ConversationEngine(flow, run_wait=20)
    await flow.executor.stop()


async def test_a_request_yields_a_valid_workflow(chat: ConversationEngine, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": GOOD, "summary": "shout the text"})]))
    fake_llm.enqueue(Text("I wrote a workflow that shouts your text."))
    reply = await chat.handle("s1", "I want a workflow that shouts my text")
    assert reply.valid is True and reply.version == 1
    assert reply.yaml == GOOD + "\n" or reply.yaml == GOOD
    assert reply.text.startswith("I wrote a workflow")
    assert reply.diff and "+  nodes:" in reply.diff
    assert "/run" in reply.actions
    system = fake_llm.requests[0]["messages"][0]["content"]
    assert "agentflow/v1" in system and "JMESPath" in system  # the language's rules are in the prompt


async def test_two_invalid_drafts_are_repaired(chat: ConversationEngine, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": BAD_KEY})]))
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": BAD_REF})]))
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": GOOD})]))
    fake_llm.enqueue(Text("Here it is."))
    reply = await chat.handle("s2", "shout please")
    assert reply.valid is True and reply.repaired == 2 and reply.version == 1
    assert "2 problems in my draft fixed" in reply.text
    feedback = [m["content"] for m in fake_llm.requests[1]["messages"] if m["role"] == "tool"]
    assert "exrp" in feedback[-1] and "did you mean 'expr'" in feedback[-1]
    assert "txet" in [m["content"] for m in fake_llm.requests[2]["messages"] if m["role"] == "tool"][-1]


async def test_a_draft_that_never_validates_is_never_saved(chat: ConversationEngine, fake_llm: FakeLLM) -> None:
    await chat.handle("s3", "/new hello")
    fake_llm.default = ToolCalls([("write_workflow", {"yaml": BAD_KEY})])
    reply = await chat.handle("s3", "break it")
    assert reply.valid is False
    assert "could not produce a valid workflow" in reply.text and "exrp" in reply.text
    assert "line" in reply.errors[0]
    assert reply.version == 1 and "name: hello" in (reply.yaml or "")  # the last valid version stays
    assert [v.number for v in chat.history.versions("s3")] == [1]
    assert fake_llm.count() == 4  # the first draft and three repairs


async def test_edit_undo_redo(chat: ConversationEngine, fake_llm: FakeLLM) -> None:
    await chat.handle("s4", "/new hello")
    fake_llm.enqueue(
        ToolCalls(
            [("patch_workflow", {"operations": [{"op": "set", "path": "spec.inputs.name.default", "value": "Zed"}]})]
        )
    )
    fake_llm.enqueue(Text("Default name is now Zed."))
    edited = await chat.handle("s4", "make the default name Zed")
    assert edited.version == 2 and "default: Zed" in (edited.yaml or "")
    assert edited.diff and "+" in edited.diff and "Zed" in edited.diff
    undone = await chat.handle("s4", "/undo")
    assert undone.version == 1 and "Zed" not in (undone.yaml or "")
    redone = await chat.handle("s4", "/redo")
    assert redone.version == 2 and "Zed" in (redone.yaml or "")
    hand = chat.apply_edit("s4", (redone.yaml or "").replace("Zed", "Grace"))
    assert hand.version == 3 and hand.valid
    rejected = chat.apply_edit(
        "s4", "apiVersion: agentflow/v1\nkind: Workflow\nmetadata: {name: x}\nspec: {nodes: {a: {type: nope}}}\n"
    )
    assert rejected.valid is False and rejected.version == 3 and rejected.errors[0].startswith("line 4")


async def test_run_from_the_chat_returns_the_outputs(chat: ConversationEngine) -> None:
    await chat.handle("s5", "/new hello")
    reply = await chat.handle("s5", "/run name=Ada")
    assert reply.run_ids and "succeeded" in reply.text and "Hello, Ada!" in reply.text


async def test_assistant_runs_the_workflow(chat: ConversationEngine, fake_llm: FakeLLM) -> None:
    await chat.handle("s6", "/new hello")
    fake_llm.enqueue(ToolCalls([("run_workflow", {"inputs": {"name": "Bob"}})]))
    fake_llm.enqueue(Text("It said Hello, Bob!"))
    reply = await chat.handle("s6", "run it for Bob")
    assert len(reply.run_ids) == 1
    run = chat.flow.store.get_run(reply.run_ids[0])
    assert run is not None and run.status == "succeeded" and run.outputs == {"greeting": "Hello, Bob!"}
    assert "Hello, Bob!" in fake_llm.requests[1]["messages"][-1]["content"]


async def test_approval_from_the_chat(chat: ConversationEngine) -> None:
    source = workflow(
        "gated",
        """
        nodes:
          gate: {type: approval, message: "Go?"}
          after: {type: transform, expr: "gate.comment", needs: [gate]}
        """,
    )
    assert chat.apply_edit("s7", source).valid
    waiting = await chat.handle("s7", "/run")
    assert "waiting_approval" in waiting.text and "/approve" in waiting.text
    run_id = waiting.run_ids[0]
    approved = await chat.handle("s7", f"/approve {run_id[:10]} looks good")
    assert "succeeded" in approved.text and "looks good" in approved.text


async def test_slash_commands_and_persistence_without_a_model(flow: AgentFlow, home) -> None:  # type: ignore[no-untyped-def]
    chat = ConversationEngine(flow, model="")
    chat.default_model = None
    reply = await chat.handle("s8", "hello there")
    assert "AGENTFLOW_MODEL" in reply.text
    assert "/undo" in (await chat.handle("s8", "/help")).text
    assert "hello" in (await chat.handle("s8", "/examples")).text
    await chat.handle("s8", "/new hello")
    assert "Saved as 'greeter'" in (await chat.handle("s8", "/save greeter")).text
    assert "draft 2" in (await chat.handle("s8", "/history")).text
    assert "Unknown command /frobnicate" in (await chat.handle("s8", "/frobnicate")).text
    flow.close()

    # A new process on the same data directory restores the conversation and the workflow.
    reopened = AgentFlow.open(Settings(home=home))
    try:
        history = ChatHistory(reopened.store)
        assert [m.content for m in history.messages("s8")][:2] == ["hello there", reply.text]
        current = history.current("s8")
        assert current is not None and "name: greeter" in current.source
        again = ConversationEngine(reopened, model="")
        assert "Opened 'greeter'" in (await again.handle("s9", "/open greeter")).text
    finally:
        reopened.close()


async def test_stream_yields_progress_then_the_reply(chat: ConversationEngine, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": GOOD})]))
    fake_llm.enqueue(Text("Done."))
    items = [item async for item in chat.stream("s10", "shout")]
    assert isinstance(items[-1], Reply) and items[-1].valid
    assert Progress("write_workflow…") in items
