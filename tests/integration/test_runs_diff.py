"""`agentflow diff` and `GET /api/runs/{a}/diff/{b}`: two runs executed for real, compared through the store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentflow.cli import main
from agentflow.runs_diff import Change, Measure, NodeDiff, Pair, RunDiff, diff_runs
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.store.base import RunRecord
from agentflow.web.auth import derive_api_token
from agentflow.web.server import create_app
from tests.fakes.openai_server import Error, FakeLLM, Text
from tests.integration.helpers import run_source, workflow

ROUTE = workflow(
    "route",
    """
    inputs: {amount: {type: number}}
    nodes:
      route:
        type: switch
        cases: [{when: "inputs.amount > `100`", goto: review}]
        default: accept
      review: {type: transform, expr: "{by: 'manager'}"}
      accept: {type: transform, expr: "{by: 'nobody'}"}
      decision: {type: transform, needs: [review, accept], expr: "review || accept"}
    outputs: {by: "{{ decision.by }}", branch: "{{ route }}"}
    """,
)
DRAFT = workflow(
    "draft",
    """
    inputs: {topic: {type: string, default: refunds}}
    nodes:
      ask: {type: transform, expr: "join(' ', ['about', inputs.topic])"}
      draft: {type: llm, needs: [ask], prompt: "Write {{ ask }}", retry: {attempts: 2, delay: 1ms}}
    outputs: {draft: "{{ draft }}"}
    """,
)


def nodes(diff: RunDiff) -> dict[str, NodeDiff]:
    return {node.id: node for node in diff.nodes}


def as_json(diff: RunDiff) -> Any:
    """The diff as a JSON client reads it."""
    return json.loads(json.dumps(diff.to_dict()))


async def test_the_same_version_with_other_inputs_takes_another_branch(flow: AgentFlow) -> None:
    big = await run_source(flow, ROUTE, {"amount": 500})
    small = await run_source(flow, ROUTE, {"amount": 50})

    diff = diff_runs(flow.store, big, small)

    assert (diff.same_workflow, diff.same_version, diff.source_diff) == (True, True, None)
    assert (diff.a.run_id, diff.b.run_id, diff.a.number, diff.b.number) == (big.id, small.id, 1, 1)
    assert diff.inputs == (Change("amount", "changed", 500, 50),)
    by_id = nodes(diff)
    assert list(by_id) == ["route", "review", "accept", "decision"]  # the order the YAML writes them
    # The branch the switch did not take counts as absent from that run.
    assert (by_id["review"].presence, by_id["accept"].presence) == ("only_a", "only_b")
    assert by_id["review"].status == Pair("succeeded", "skipped")
    assert by_id["review"].attempts == Measure(1, 0, 0)
    assert (by_id["review"].output.state, by_id["review"].output.a) == ("only_a", {"by": "manager"})
    assert (by_id["accept"].output.state, by_id["accept"].output.b) == ("only_b", {"by": "nobody"})
    assert by_id["route"].output.changes == (Change("", "changed", "review", "accept"),)
    assert by_id["decision"].output.changes == (Change("by", "changed", "manager", "nobody"),)
    assert by_id["decision"].presence == "both"
    assert diff.status == Pair("succeeded", "succeeded")
    assert diff.outputs.changes == (
        Change("by", "changed", "manager", "nobody"),
        Change("branch", "changed", "review", "accept"),
    )
    assert diff.totals["steps"] == Measure(3, 3, 0)
    latency = by_id["decision"].latency_ms
    assert latency.a is not None and latency.b is not None
    assert latency.change == round(latency.b - latency.a, 3)


async def test_two_versions_show_the_source_diff(flow: AgentFlow) -> None:
    first = await run_source(flow, ROUTE, {"amount": 50})
    second = await run_source(flow, ROUTE.replace("{by: 'nobody'}", "{by: 'auto'}"), {"amount": 50})

    diff = diff_runs(flow.store, first, second)

    assert (diff.same_workflow, diff.same_version) == (True, False)
    assert (diff.a.number, diff.b.number, diff.a.label, diff.b.label) == (1, 2, "route v1", "route v2")
    assert diff.source_diff is not None
    lines = diff.source_diff.splitlines()
    assert lines[:2] == [f"--- a: route v1 ({first.version})", f"+++ b: route v2 ({second.version})"]
    assert [line for line in lines[2:] if line.startswith(("-", "+"))] == [
        "-    accept: {type: transform, expr: \"{by: 'nobody'}\"}",
        "+    accept: {type: transform, expr: \"{by: 'auto'}\"}",
    ]
    assert diff.inputs == ()
    by_id = nodes(diff)
    assert by_id["accept"].output.changes == (Change("by", "changed", "nobody", "auto"),)
    assert by_id["route"].output.state == "equal"
    assert [node.presence for node in diff.nodes] == ["both", "neither", "both", "both"]


async def test_a_node_that_failed_in_one_run_and_succeeded_in_the_other(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("Line one\nLine two", usage=(10, 5)))
    succeeded = await run_source(flow, DRAFT)
    fake_llm.enqueue_all([Error(500), Error(500)])
    failed = await run_source(flow, DRAFT)

    diff = diff_runs(flow.store, succeeded, failed)

    draft = nodes(diff)["draft"]
    assert draft.status == Pair("succeeded", "failed")
    assert draft.presence == "both"
    assert draft.attempts == Measure(1, 2, 0)
    assert (draft.tokens.a, draft.tokens.b, draft.tokens.change) == (15, 0, -15)
    assert draft.cost_usd.a == pytest.approx(10e-6 + 5 * 2e-6)
    assert draft.cost_usd.change == pytest.approx(-(10e-6 + 5 * 2e-6))
    assert draft.error.a is None and draft.error.b
    assert (draft.output.state, draft.output.a, draft.output.b) == ("only_a", "Line one\nLine two", None)
    assert nodes(diff)["ask"].output.state == "equal"
    assert diff.status == Pair("succeeded", "failed")
    assert diff.error.a is None and diff.error.b
    assert diff.outputs.state == "only_a"
    assert diff.totals["tokens"] == Measure(15, 0, 0)

    fake_llm.enqueue(Text("Line one\nLine 2", usage=(10, 4)))
    again = await run_source(flow, DRAFT, {"topic": "returns"})
    text = nodes(diff_runs(flow.store, succeeded, again))["draft"].output
    assert text.state == "changed"
    assert text.text_diff == ("@@ -1,2 +1,2 @@", " Line one", "-Line two", "+Line 2")


@pytest.fixture
def cli(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`await cli("diff", ...)` -> (exit code, stdout, stderr) through the real entry point, on the flow's data."""
    monkeypatch.setenv("AGENTFLOW_HOME", str(home))

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))  # main runs its own event loop
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


async def test_the_cli_prints_a_table_and_json(flow: AgentFlow, cli: Any) -> None:
    big = await run_source(flow, ROUTE, {"amount": 500})
    small = await run_source(flow, ROUTE, {"amount": 50})

    code, out, _ = await cli("diff", big.id[:12], small.id[:12])

    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"a: {big.id}  route v1  succeeded  (manual, ")
    assert lines[1].startswith(f"b: {small.id}  route v1  succeeded  (manual, ")
    assert lines[2] == f"version: the same (route v1, {big.version})"
    assert lines[3:5] == ["inputs:", "  ~ amount: 500 → 50"]
    table = {line.split()[0]: line for line in lines[lines.index("nodes:") + 1 :][:5]}
    assert table["node"].split() == [
        "node",
        "type",
        "status",
        "attempts",
        "latency",
        "ms",
        "tokens",
        "cost",
        "$",
        "output",
    ]
    assert table["review"].split()[:8] == ["review", "(a", "only)", "transform", "succeeded", "→", "skipped", "1"]
    assert table["accept"].split()[-2:] == ["only", "b"]
    assert table["decision"].split()[-1] == "changed"
    changed = lines[lines.index("node outputs that changed:") + 1 :]
    assert changed[:4] == [
        "  route:",
        '    ~ (the value): "review" → "accept"',
        "  decision:",
        '    ~ by: "manager" → "nobody"',
    ]
    assert "  status   succeeded" in lines
    assert "  outputs  changed" in lines

    code, out, _ = await cli("diff", big.id[:12], small.id[:12], "--json")

    assert code == 0
    assert json.loads(out) == as_json(diff_runs(flow.store, big, small))


async def test_the_cli_shows_a_source_diff_for_two_versions(flow: AgentFlow, cli: Any) -> None:
    first = await run_source(flow, ROUTE, {"amount": 50})
    second = await run_source(flow, ROUTE.replace("{by: 'nobody'}", "{by: 'auto'}"), {"amount": 50})

    code, out, _ = await cli("diff", first.id, second.id)

    assert code == 0
    assert "version: route v1 → route v2 (the version differs)" in out
    assert "  -    accept: {type: transform, expr: \"{by: 'nobody'}\"}" in out.splitlines()
    assert "  +    accept: {type: transform, expr: \"{by: 'auto'}\"}" in out.splitlines()
    assert "inputs: the same" in out


def record_twins(flow: AgentFlow, version: str) -> list[str]:
    """Two finished runs whose ids share a prefix (real ids are random, so these are recorded directly)."""
    ids = ["abcdef0000000000000000000000000a", "abcdef0000000000000000000000000b"]
    for run_id in ids:
        flow.store.create_run(RunRecord(run_id, "route", version, status="succeeded", created_at=time.time()))
    return ids


async def test_the_cli_says_how_to_find_a_run(flow: AgentFlow, cli: Any) -> None:
    run = await run_source(flow, ROUTE, {"amount": 50})
    record_twins(flow, run.version)

    code, out, err = await cli("diff", "nothing", run.id)
    assert (code, out) == (2, "")
    assert err == "error: no run 'nothing'; list them with: agentflow runs list\n"

    code, out, err = await cli("diff", run.id, "abcdef")
    assert (code, out) == (2, "")
    assert "'abcdef' matches several runs" in err
    assert "abcdef000000" in err and "give more of the id" in err


@pytest.fixture
def client(flow: AgentFlow, home: Path) -> Iterator[TestClient]:
    """The web app on the flow's data, bound beyond loopback: /api needs the bearer token."""
    settings = Settings(home=home, host="0.0.0.0", password="correct horse battery staple")
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {derive_api_token(settings.password or '', settings.user)}"
        yield test_client


async def test_the_api_returns_the_diff(flow: AgentFlow, client: TestClient) -> None:
    first = await run_source(flow, ROUTE, {"amount": 500})
    second = await run_source(flow, ROUTE.replace("{by: 'nobody'}", "{by: 'auto'}"), {"amount": 50})
    path = f"/api/runs/{first.id[:12]}/diff/{second.id[:12]}"

    response = client.get(path)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body == as_json(diff_runs(flow.store, first, second))
    assert (body["a"]["number"], body["b"]["number"], body["same_version"]) == (1, 2, False)
    assert body["inputs"] == [{"path": "amount", "kind": "changed", "a": 500, "b": 50}]
    assert client.get(path, headers={"Authorization": ""}).status_code == 401


async def test_the_api_refuses_unknown_and_ambiguous_runs(flow: AgentFlow, client: TestClient) -> None:
    run = await run_source(flow, ROUTE, {"amount": 50})
    twins = record_twins(flow, run.version)

    unknown = client.get(f"/api/runs/{run.id}/diff/nothing")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no run 'nothing'; list runs with GET /api/runs"
    ambiguous = client.get(f"/api/runs/abcdef/diff/{run.id}")
    assert ambiguous.status_code == 409
    assert all(twin in ambiguous.json()["detail"] for twin in twins)
    # Runs that never executed (no nodes, no outputs) still compare.
    queued = client.get(f"/api/runs/{twins[0]}/diff/{twins[1]}").json()
    assert (queued["nodes"], queued["outputs"]["state"], queued["same_version"]) == ([], "none", True)
