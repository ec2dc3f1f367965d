"""`agentflow replay`, `POST /api/runs/{id}/replay` and the SDK: a new run forked from the checkpoint before a node,
reusing every result upstream of it (no model call upstream is made again: the fake's request log says so)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.client import AgentFlowClient, ConflictError, InvalidRequestError, NotFoundError
from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.replay import ReplayConflict, ReplayError, Reused, parse_sets, replay
from agentflow.runs_diff import diff_runs
from agentflow.runtime import AgentFlow
from agentflow.store.base import RunRecord
from tests.fakes.openai_server import Error, FakeLLM, Json, Reply, Text
from tests.integration.helpers import prompts, run_source, workflow
from tests.integration.server_process import ServerProcess, server_process

CALL = (10, 5)  # tokens in, out of every scripted reply
CALL_USD = 10 * 1e-6 + 5 * 2e-6  # at the suite's test price
CHAIN = workflow(
    "chain",
    """
    inputs:
      topic: {type: string}
      words: {type: integer, default: 3}
    nodes:
      a: {type: llm, prompt: "A about {{ inputs.topic }} in {{ inputs.words }} words"}
      b:
        type: llm
        needs: [a]
        prompt: "B from {{ a }}"
        output: {title: {type: string}, tone: {type: string}}
      c: {type: llm, needs: [b], prompt: "C titled {{ b.title }}, {{ b.tone }}"}
      d: {type: llm, needs: [c], prompt: "D from {{ c }}"}
    outputs: {final: "{{ d }}"}
    """,
)


def answer(body: dict[str, Any]) -> Reply:
    """Each node's reply, told apart by its prompt's first word; b answers with its structured output."""
    prompt = prompts([body])[0]
    if prompt.startswith("B "):
        return Json({"title": "Refund rules", "tone": "calm"}, usage=CALL)
    return Text(f"{prompt.split()[0]}-out", usage=CALL)


@pytest.fixture
def scripted(fake_llm: FakeLLM) -> FakeLLM:
    fake_llm.responder = answer
    return fake_llm


async def finish(flow: AgentFlow, run_id: str) -> RunRecord:
    if await flow.executor.run(run_id) is None:
        await flow.executor.wait_for(run_id, statuses=TERMINAL_STATUSES)
    await flow.store.flush()
    record = flow.store.get_run(run_id)
    assert record is not None
    return record


async def test_a_replay_from_the_third_node_makes_only_the_calls_of_the_third_and_fourth(
    flow: AgentFlow, scripted: FakeLLM
) -> None:
    source = await run_source(flow, CHAIN, {"topic": "refunds"})
    assert source.status == "succeeded" and len(scripted.requests) == 4
    before = len(scripted.requests)

    new, fork = await replay(flow, source, "c", parse_sets(["b.title=Edited title"]))
    done = await finish(flow, new.id)

    assert done.status == "succeeded", done.error
    assert (done.workflow, done.version, done.trigger) == (source.workflow, source.version, "replay")
    # Exactly the calls of c and d, and the edited upstream value reached c's prompt.
    assert prompts(scripted.requests[before:]) == ["C titled Edited title, calm", "D from C-out"]
    assert done.outputs == {"final": "D-out"}
    # The new run pays only for what it ran; what it reused is reported.
    assert done.tokens == 2 * sum(CALL)
    assert done.cost_usd == pytest.approx(2 * CALL_USD)
    assert source.cost_usd == pytest.approx(4 * CALL_USD)
    assert fork.reused == Reused(
        ("a", "b"), calls=2, tool_calls=0, tokens=2 * sum(CALL), cost_usd=pytest.approx(2 * CALL_USD)
    )
    assert (
        fork.reused.line("c")
        == "replayed from c: reused 2 node results (2 model calls, 30 tokens, $0.00004 not spent again)"
    )
    assert [node.node_id for node in flow.store.node_runs(done.id)] == ["c", "d"]  # what ran here
    reused = [event for event in flow.store.events(done.id) if event.get("reused_from")]
    assert [(event["node_id"], event["status"], event["reused_from"]) for event in reused] == [
        ("a", "succeeded", source.id),
        ("b", "succeeded", source.id),
    ]
    assert reused[1]["output"]["title"] == "Edited title"  # the console and the diff see what the replay used
    diff = {node.id: node for node in diff_runs(flow.store, source, done).nodes}
    assert [(diff[node].presence, diff[node].status.b) for node in "abcd"] == [
        ("both", "reused"),
        ("both", "reused"),
        ("both", "succeeded"),
        ("both", "succeeded"),
    ]
    assert (diff["a"].output.state, diff["b"].output.state) == ("equal", "changed")
    started = [event for event in flow.store.events(done.id) if event["type"] == "run_started"]
    assert started[0]["replay_of"] == {"run_id": source.id, "node_id": "c", "reused": fork.reused.to_dict()}
    assert done.overrides is not None and done.overrides["replay"]["state"]["results"]["b"]["title"] == "Edited title"
    # The source is untouched.
    assert flow.store.get_run(source.id) == source


async def test_a_replay_with_edited_inputs_runs_again_from_the_first_node(flow: AgentFlow, scripted: FakeLLM) -> None:
    source = await run_source(flow, CHAIN, {"topic": "refunds"})
    before = len(scripted.requests)

    new, fork = await replay(flow, source, "a", parse_sets(["inputs.topic=returns", "inputs.words=5"]))
    done = await finish(flow, new.id)

    assert done.status == "succeeded", done.error
    assert done.inputs == {"topic": "returns", "words": 5}
    assert prompts(scripted.requests[before:])[0] == "A about returns in 5 words"
    assert len(scripted.requests) - before == 4
    assert fork.reused == Reused((), 0, 0, 0, 0.0)


async def test_a_failed_run_replayed_from_its_failing_node_does_not_pay_again_for_what_came_before(
    flow: AgentFlow, fake_llm: FakeLLM
) -> None:
    fake_llm.enqueue_all([Text("A-out", usage=CALL), Error(400, "the prompt is too long")])
    source = await run_source(flow, CHAIN, {"topic": "refunds"})
    assert source.status == "failed"
    fake_llm.responder = answer
    before = len(fake_llm.requests)

    new, fork = await replay(flow, source, "b", parse_sets(["a=short summary"]))
    done = await finish(flow, new.id)

    assert done.status == "succeeded", done.error
    assert prompts(fake_llm.requests[before:]) == [
        "B from short summary",
        "C titled Refund rules, calm",
        "D from C-out",
    ]
    assert (fork.reused.nodes, fork.reused.calls) == (("a",), 1)  # b failed after the fork point: it runs again
    with pytest.raises(ReplayError) as never:
        await replay(flow, source, "d")
    assert str(never.value) == (
        f"node 'd' was never reached in run {source.id} (it ended failed before it); "
        "nodes it reached, which it can be replayed from: a, b"
    )


async def test_a_replay_of_a_replay_counts_everything_reused(flow: AgentFlow, scripted: FakeLLM) -> None:
    source = await run_source(flow, CHAIN, {"topic": "refunds"})
    first, _ = await replay(flow, source, "c")
    first = await finish(flow, first.id)
    before = len(scripted.requests)

    second, fork = await replay(flow, first, "d", {"c": "C, edited"})
    done = await finish(flow, second.id)

    assert done.status == "succeeded", done.error
    assert prompts(scripted.requests[before:]) == ["D from C, edited"]
    assert fork.reused.nodes == ("a", "b", "c")
    assert (fork.reused.calls, fork.reused.tokens) == (3, 3 * sum(CALL))  # a and b in the source, c in the first
    assert done.tokens == sum(CALL)
    with pytest.raises(ReplayError, match="this replay reused its result from run") as reused:
        await replay(flow, first, "b")
    assert f"agentflow replay {source.id[:12]} --from b" in str(reused.value)


async def test_bad_replays_are_refused_with_what_to_do(flow: AgentFlow, scripted: FakeLLM) -> None:
    source = await run_source(flow, CHAIN, {"topic": "refunds"})
    before = len(scripted.requests)
    runs_before = len(flow.store.list_runs(limit=100))
    refusals = {
        ("cc", ()): "--from cc: 'cc' is not a node of workflow 'chain'; did you mean 'c'?",
        ("c", ("d=x",)): "--set d: 'd' is downstream of 'c': it runs again in the replay; "
        "what can be edited: inputs.NAME and a, b",
        ("c", ("c=x",)): "--set c: 'c' is the node the replay starts at: it runs again and makes its own result; "
        "what can be edited: inputs.NAME and a, b",
        ("c", ("bb.title=x",)): "--set bb.title: 'bb' is not a node of workflow 'chain'; did you mean 'b'?",
        ("c", ("a.text=x",)): "--set a.text: the result of 'a' is str, not an object with fields; "
        "set the whole result with --set a=VALUE",
        (
            "c",
            ("b.title.first=x",),
        ): "--set b.title.first: b.title is not an object; set it whole with --set b.title=VALUE",
        ("c", ("inputs=x",)): "--set inputs: name the input, e.g. --set inputs.NAME=VALUE",
        (
            "c",
            ("inputs.words=many",),
        ): "--set: the edited inputs are invalid: input 'words' must be integer; got 'many'",
        (
            "c",
            ("inputs.topik=x",),
        ): "--set: the edited inputs are invalid: unknown input 'topik'; did you mean 'topic'?",
    }
    for (node_id, edits), message in refusals.items():
        with pytest.raises(ReplayError) as refused:
            await replay(flow, source, node_id, parse_sets(list(edits)))
        assert str(refused.value) == message
    with pytest.raises(ReplayError, match=r"^--set 'b.title' is not KEY=VALUE"):
        parse_sets(["b.title"])
    # Nothing was queued and no model was called.
    assert len(flow.store.list_runs(limit=100)) == runs_before
    assert len(scripted.requests) == before


PICK = workflow(
    "pick",
    """
    inputs: {n: {type: number}}
    nodes:
      route: {type: switch, cases: [{when: "inputs.n > `1`", goto: big}], default: small}
      big: {type: transform, expr: "'big'"}
      small: {type: transform, expr: "'small'"}
    """,
)


async def test_a_skipped_node_cannot_be_replayed_from_and_a_taken_branch_can(flow: AgentFlow) -> None:
    source = await run_source(flow, PICK, {"n": 0})

    with pytest.raises(ReplayError) as skipped:
        await replay(flow, source, "big")
    assert str(skipped.value) == (
        f"node 'big' was skipped in run {source.id} (its branch was not taken), so it never ran"
    )

    new, fork = await replay(flow, source, "small")
    done = await finish(flow, new.id)
    assert (done.status, done.outputs, fork.reused.nodes) == ("succeeded", {"small": "small"}, ("route",))


async def test_a_run_still_running_cannot_be_replayed(flow: AgentFlow) -> None:
    version = flow.save_workflow(CHAIN)
    running = RunRecord("f" * 32, "chain", version.version, status="running", created_at=time.time())
    flow.store.create_run(running)

    with pytest.raises(ReplayConflict) as refused:
        await replay(flow, running, "c")

    assert str(refused.value) == (
        f"run {running.id} is still running; replay it once it has ended "
        f"(follow it with: agentflow logs -f {running.id[:12]}, or stop it with: agentflow cancel {running.id[:12]})"
    )


# -- the command line ---------------------------------------------------------------


@pytest.fixture
def cli_env(home: Path, scripted: FakeLLM, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """The CLI on the flow's data, its models the scripted fake."""
    for name, value in {
        "AGENTFLOW_HOME": str(home),
        "AGENTFLOW_MODEL": "openai/test-model",
        "AGENTFLOW_API_BASE": scripted.base_url,
        "AGENTFLOW_API_KEY": "test-key",
        "AGENTFLOW_LLM_RETRIES": "0",
        "AGENTFLOW_TRACING": "0",
    }.items():
        monkeypatch.setenv(name, value)

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


async def test_the_cli_replays_and_waits(flow: AgentFlow, scripted: FakeLLM, cli_env: Any) -> None:
    source = await run_source(flow, CHAIN, {"topic": "refunds"})
    before = len(scripted.requests)

    code, out, err = await cli_env("replay", source.id[:12], "--from", "c", "--set", "b.tone=stern", "--wait")

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "replayed from c: reused 2 node results (2 model calls, 30 tokens, $0.00004 not spent again)"
    assert any(line.startswith("running chain (") for line in lines)
    assert prompts(scripted.requests[before:]) == ["C titled Refund rules, stern", "D from C-out"]

    code, out, err = await cli_env("replay", source.id, "--from", "d", "--json")
    assert code == 0, err
    queued = json.loads(out)
    assert (queued["status"], queued["replay_of"]) == ("queued", {"run_id": source.id, "node_id": "d"})
    assert queued["reused"]["nodes"] == ["a", "b", "c"]
    assert len(scripted.requests) == before + 2  # queued only: nothing ran

    code, out, err = await cli_env("replay", source.id, "--from", "d", "--wait", "--json")
    assert code == 0, err
    finished = json.loads(out)
    assert (finished["status"], finished["reused"]["calls"]) == ("succeeded", 3)

    code, out, err = await cli_env("replay", source.id, "--from", "x")
    assert (code, out) == (2, "")
    assert err == "error: --from x: 'x' is not a node of workflow 'chain'; its nodes: a, b, c, d\n"
    code, _, err = await cli_env("replay", "nothing", "--from", "c")
    assert (code, err) == (2, "error: no run 'nothing'; list them with: agentflow runs list\n")


# -- the API and the SDK, against a real server process -------------------------------


@pytest.fixture
def server(tmp_path: Path, scripted: FakeLLM) -> Iterator[ServerProcess]:
    with server_process(tmp_path / "server", scripted) as running:
        yield running


def follow(client: AgentFlowClient, run_id: str) -> str:
    for event in client.runs.stream(run_id):
        if event.type == "run_finished":
            return str(event.model_extra.get("status") if event.model_extra else "")
    return client.runs.get(run_id).status


def test_the_api_and_the_sdk_replay_a_run(server: ServerProcess, scripted: FakeLLM) -> None:
    with AgentFlowClient(server.url, server.token) as client:
        client.workflows.save(CHAIN)
        source = client.runs.create("chain", {"topic": "refunds"})
        assert follow(client, source.run_id) == "succeeded"
        before = len(scripted.requests)

        replayed = client.runs.replay(source.run_id[:12], "c", {"b.title": "From the API"})

        assert replayed.replay_of == {"run_id": source.run_id, "node_id": "c"}
        assert (replayed.trigger, replayed.reused.nodes, replayed.reused.calls) == ("replay", ["a", "b"], 2)
        assert replayed.message.startswith("replayed from c: reused 2 node results (2 model calls, 30 tokens")
        assert follow(client, replayed.run_id) == "succeeded"
        assert prompts(scripted.requests[before:]) == ["C titled From the API, calm", "D from C-out"]
        assert client.runs.get(replayed.run_id).tokens == 2 * sum(CALL)  # its own calls only (no price set here)

        with pytest.raises(InvalidRequestError, match="did you mean 'c'"):
            client.runs.replay(source.run_id, "cc")
        with pytest.raises(InvalidRequestError, match="--set d: 'd' is downstream of 'c'"):
            client.runs.replay(source.run_id, "c", {"d": "x"})
        with pytest.raises(NotFoundError):
            client.runs.replay("0123456789ab", "c")
        held = threading.Event()

        def hold(body: dict[str, Any]) -> Reply:
            held.wait(60)  # the model "thinks" until the refusal was seen: the run stays running
            return answer(body)

        scripted.responder = hold
        busy = client.runs.create("chain", {"topic": "slow"})
        try:
            with pytest.raises(ConflictError, match=r"is still (queued|running)"):
                client.runs.replay(busy.run_id, "c")
        finally:
            held.set()
        assert follow(client, busy.run_id) == "succeeded"
