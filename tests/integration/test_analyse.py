"""Analyse with a model: the redacted digest a failed run's trace becomes, the fake as the analyst, CLI and API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentflow.analyse import MAX_DIGEST_CHARS, NoModelError, analyse_run, digest
from agentflow.cli import main
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.store.base import RunRecord
from agentflow.web.auth import derive_api_token
from agentflow.web.server import create_app
from agentflow.web.ui.analyse import PICK_FIRST, analysis_markdown
from tests.fakes.openai_server import Error, FakeLLM, Json, Text
from tests.integration.helpers import run_source, workflow

CANARY = "canary-7f3a9c1e-do-not-leak"
FLAKY = workflow(
    "flaky",
    """
    inputs: {ticket: {type: string}}
    nodes:
      prepare: {type: transform, expr: "{text: inputs.ticket}"}
      draft: {type: llm, needs: [prepare], prompt: "Reply to {{ prepare.text }}"}
    """,
)
READING = {
    "summary": "The run failed at draft: the model provider answered with an error.",
    "root_cause": "draft's only model call failed (upstream exploded: quota), so the node failed.",
    "spans": [{"node_id": "draft", "event": "llm_call", "why": "the provider error that failed the run"}],
    "suggestions": ["add `retry: {attempts: 3}` to draft", "add a fallback model"],
}


@pytest.fixture
def failed(flow: AgentFlow, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A run that failed at `draft`, with an operator secret's value in its inputs (a person pasted it)."""
    monkeypatch.setenv("AGENTFLOW_SECRET_CANARY", CANARY)

    async def make() -> RunRecord:
        fake_llm.enqueue(Error(500, "upstream exploded: quota"))
        run = await run_source(flow, FLAKY, {"ticket": f"my key is {CANARY}, help"})
        assert run.status == "failed"
        fake_llm.reset()
        return run

    return make


def configure(flow: AgentFlow, **changes: Any) -> None:
    """The process's settings with `changes` (what AGENTFLOW_MODEL or AGENTFLOW_ANALYSE_MODEL would set)."""
    flow.settings = flow.engine.services.settings = replace(flow.settings, **changes)


def sent(fake_llm: FakeLLM) -> str:
    """Everything the analysis request carried, as one text."""
    assert len(fake_llm.requests) == 1
    return json.dumps(fake_llm.requests[0]["body"])


async def test_a_failed_run_is_analysed_from_its_redacted_trace(
    flow: AgentFlow, fake_llm: FakeLLM, failed: Any
) -> None:
    run = await failed()
    fake_llm.enqueue(Json(READING, usage=(300, 60)))

    analysis = await analyse_run(flow, run)

    assert (analysis.summary, analysis.root_cause) == (READING["summary"], READING["root_cause"])
    assert (analysis.spans, analysis.suggestions) == (READING["spans"], READING["suggestions"])
    assert (analysis.model, analysis.tokens) == ("openai/test-model", 360)
    request = fake_llm.requests[0]
    assert request["response_format"]["json_schema"]["schema"]["required"] == [
        "summary", "root_cause", "spans", "suggestions"
    ]  # fmt: skip
    assert CANARY not in sent(fake_llm)
    content = request["messages"][-1]["content"]
    assert "upstream exploded: quota" in content and "my key is ***, help" in content
    trace = json.loads(content)
    assert trace["run"]["id"] == run.id and trace["run"]["status"] == "failed"
    assert [row["id"] for row in trace["nodes"]] == ["prepare", "draft"]
    assert any(event["type"] == "llm_call" and event.get("error") for event in trace["events"])
    # Its cost is in the ledger as the analysis's, not as the run's or the assistant's.
    sources = {row.key: row for row in flow.store.spend(by="source", since=0)}
    assert sources["analyse"].calls == 1
    assert sources["analyse"].cost_usd == pytest.approx(analysis.cost_usd) and analysis.cost_usd > 0
    assert "(analyse)" in {row.key for row in flow.store.spend(by="workflow", since=0)}
    assert "**Root cause.** draft's only model call failed" in analysis.markdown()


async def test_the_model_comes_from_the_argument_then_the_setting(
    flow: AgentFlow, fake_llm: FakeLLM, failed: Any
) -> None:
    run = await failed()
    fake_llm.enqueue(Json(READING))
    await analyse_run(flow, run, model="openai/analyst-model")
    assert fake_llm.requests[-1]["model"] == "analyst-model"

    configure(flow, analyse_model="openai/configured-analyst")
    fake_llm.enqueue(Json(READING))
    await analyse_run(flow, run)
    assert fake_llm.requests[-1]["model"] == "configured-analyst"


def test_a_long_trace_is_bounded_and_keeps_the_errors() -> None:
    start = time.time()
    run = RunRecord("r1", "big", "v", status="failed", error="node 'n399' failed", started_at=start, finished_at=start)
    events: list[dict[str, Any]] = []
    for index in range(400):
        at = start + index / 1000
        events.append({"type": "node_started", "node_id": f"n{index}", "node_type": "llm", "at": at})
        finished = {"type": "node_finished", "node_id": f"n{index}", "node_type": "llm", "status": "succeeded",
                    "output": "x" * 5000, "latency_ms": float(index), "at": at}  # fmt: skip
        events.append(finished)
    events[-1] = {**events[-1], "status": "failed", "error": f"boom with {CANARY}", "output": None}

    trace = digest(run, events, [], [CANARY])

    text = json.dumps(trace)
    assert len(text) <= MAX_DIGEST_CHARS + 2000  # the run's own fields come on top of the events' budget
    assert trace["events_left_out"] > 0
    assert trace["events"][-1]["error"] == "boom with ***" and CANARY not in text
    assert all(len(json.dumps(event)) < 1000 for event in trace["events"])  # every value cut


async def test_no_model_is_refused_with_what_to_set(flow: AgentFlow, failed: Any) -> None:
    run = await failed()
    configure(flow, model=None)

    with pytest.raises(NoModelError, match=r"pass --model .* or set AGENTFLOW_ANALYSE_MODEL or AGENTFLOW_MODEL"):
        await analyse_run(flow, run)


async def test_the_console_button_shows_the_analysis(flow: AgentFlow, fake_llm: FakeLLM, failed: Any) -> None:
    from agentflow.web.server import AppState

    run = await failed()
    state = AppState(settings=flow.settings, _flow=flow)
    fake_llm.enqueue(Json(READING))

    assert "**Where to look:**\n- `draft` (llm_call): the provider error" in await analysis_markdown(state, run.id)
    assert await analysis_markdown(state, "") == PICK_FIRST
    fake_llm.enqueue_all([Text("not json"), Text("still not"), Text("nope")])
    shown = await analysis_markdown(state, run.id)
    assert shown.startswith("**Could not analyse this run:** the model could not analyse run")


# -- the command line and the API ---------------------------------------------------------------------------


@pytest.fixture
def cli(home: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`await cli("analyse", ...)` -> (exit code, stdout, stderr) on the flow's data; models are the fake."""
    monkeypatch.setenv("AGENTFLOW_HOME", str(home))
    monkeypatch.setenv("AGENTFLOW_MODEL", "openai/test-model")
    monkeypatch.setenv("AGENTFLOW_API_BASE", fake_llm.base_url)
    monkeypatch.setenv("AGENTFLOW_LLM_RETRIES", "0")

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))  # main runs its own event loop
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


async def test_the_cli_prints_the_analysis(
    fake_llm: FakeLLM, failed: Any, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await failed()
    fake_llm.enqueue(Json(READING))

    code, out, err = await cli("analyse", run.id[:12])

    assert code == 0, err
    assert out.splitlines()[0] == f"run {run.id}  flaky  failed"
    assert f"**Summary.** {READING['summary']}" in out and "- add a fallback model" in out
    assert CANARY not in sent(fake_llm)

    fake_llm.enqueue(Json(READING))
    code, out, _ = await cli("analyse", run.id, "--json", "--model", "openai/other-analyst")
    assert code == 0
    shown = json.loads(out)
    assert (shown["run_id"], shown["model"], shown["spans"]) == (run.id, "openai/other-analyst", READING["spans"])

    code, out, err = await cli("analyse", "nothing")
    assert (code, out) == (2, "") and "no run 'nothing'; list them with: agentflow runs list" in err

    monkeypatch.delenv("AGENTFLOW_MODEL")
    code, _, err = await cli("analyse", run.id)
    assert code == 2 and "no model to analyse with: pass --model" in err


@pytest.fixture
def client(flow: AgentFlow, home: Path) -> Iterator[TestClient]:
    """The web app serving the test's flow, bound beyond loopback: /api needs the bearer token."""
    settings = Settings(home=home, host="0.0.0.0", password="correct horse battery staple")
    with TestClient(create_app(settings, flow=flow)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {derive_api_token(settings.password or '', settings.user)}"
        yield test_client


async def test_the_api_analyses_a_run(flow: AgentFlow, fake_llm: FakeLLM, failed: Any, client: TestClient) -> None:
    run = await failed()
    fake_llm.enqueue(Json(READING))

    response = client.post(f"/api/runs/{run.id[:12]}/analyse")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["run_id"], body["root_cause"], body["spans"]) == (run.id, READING["root_cause"], READING["spans"])
    assert body["cost_usd"] > 0
    assert CANARY not in sent(fake_llm)

    fake_llm.enqueue(Json(READING))
    assert client.post(f"/api/runs/{run.id}/analyse", json={"model": "openai/api-analyst"}).json()["model"] == (
        "openai/api-analyst"
    )
    assert client.post(f"/api/runs/{run.id}/analyse", json={"modle": "x"}).status_code == 422
    assert client.post("/api/runs/nothing/analyse").status_code == 404
    assert client.post(f"/api/runs/{run.id}/analyse", headers={"Authorization": ""}).status_code == 401

    fake_llm.enqueue_all([Text("not json"), Text("still not"), Text("nope")])
    broken = client.post(f"/api/runs/{run.id}/analyse")
    assert broken.status_code == 502 and "did not match the output schema" in broken.json()["detail"]

    configure(flow, model=None)
    refused = client.post(f"/api/runs/{run.id}/analyse")
    assert refused.status_code == 409 and "AGENTFLOW_ANALYSE_MODEL" in refused.json()["detail"]
