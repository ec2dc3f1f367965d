"""Node variants: drawn per run by weight (reproducibly from the run id), forced by a run's overrides,
recorded on the events, and compared by `agentflow variants` and GET /api/workflows/{name}/variants."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentflow.cli import main
from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.engine.variant_draw import draw, unit_draw
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.spec.models import LLMNode
from agentflow.store.base import RunRecord, WorkflowVersion
from agentflow.variant_runs import node_variants
from agentflow.web.auth import derive_api_token
from agentflow.web.server import create_app
from agentflow.web.ui.console import render as console
from agentflow.web.ui.variants import variants_html
from tests.fakes.openai_server import Error, FakeLLM, Text
from tests.integration.helpers import PERSON, prompts, workflow

TRIAGE = workflow(
    "triage",
    """
    inputs: {ticket: string}
    nodes:
      classify:
        type: llm
        prompt: "Classify: {{ inputs.ticket }}"
        variants:
          - {name: short, weight: 70, prompt: "Short: {{ inputs.ticket }}"}
          - {name: careful, weight: 30, prompt: "Carefully: {{ inputs.ticket }}", temperature: 0.1}
      tidy: {type: transform, needs: [classify], expr: classify}
    outputs: {label: "{{ tidy }}"}
    """,
)


def saved(flow: AgentFlow, source: str = TRIAGE) -> WorkflowVersion:
    version = flow.save_workflow(source)
    flow.grant_version(version, by=PERSON)
    return version


async def run(flow: AgentFlow, version: WorkflowVersion, ticket: str, **overrides: Any) -> RunRecord:
    queued = flow.submit(version, {"ticket": ticket}, overrides=overrides or None)
    await flow.executor.run(queued.id)
    await flow.store.flush()
    record = flow.store.get_run(queued.id)
    assert record is not None and record.status in TERMINAL_STATUSES
    return record


def variants_of(flow: AgentFlow, run_id: str) -> dict[str, list[str | None]]:
    """event type -> the variant each event of the classify node recorded."""
    found: dict[str, list[str | None]] = {}
    for event in flow.store.events(run_id):
        if event.get("node_id") == "classify" and event["type"] in ("node_started", "node_finished", "llm_call"):
            found.setdefault(event["type"], []).append(event.get("variant"))
    return found


def test_the_draw_is_uniform_and_fixed_by_the_run_and_the_node() -> None:
    assert unit_draw("run-1", "classify") == unit_draw("run-1", "classify")
    assert unit_draw("run-1", "classify") != unit_draw("run-1", "other")
    draws = [unit_draw(f"run-{index}", "classify") for index in range(4000)]
    assert all(0 <= value < 1 for value in draws)
    # Each tenth of [0, 1) gets about 400 of 4000: the binomial's sd is 19, so 5 sd is 95.
    assert all(abs(count - 400) < 95 for count in Counter(int(value * 10) for value in draws).values())


async def test_runs_split_by_weight_and_each_records_the_variant_it_drew(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("billing")
    version = saved(flow)
    node = flow.engine.compiled("triage", version.version).workflow.spec.nodes["classify"]
    assert isinstance(node, LLMNode) and node.variants

    runs = [await run(flow, version, f"ticket {index}") for index in range(200)]

    drawn = {record.id: draw(node.variants, record.id, "classify").name for record in runs}
    recorded = {record.id: variants_of(flow, record.id) for record in runs}
    for record in runs:  # reproducible: the draw from the run id alone says which variant the run used
        assert recorded[record.id] == {
            kind: [drawn[record.id]] for kind in ("node_started", "node_finished", "llm_call")
        }
        assert record.status == "succeeded"
    short = sum(name == "short" for name in drawn.values())
    # 70% of 200 is 140, the binomial's sd sqrt(200 * 0.7 * 0.3) = 6.5: 5 sd either side never fails by chance.
    assert abs(short - 140) < 5 * math.sqrt(200 * 0.7 * 0.3)
    sent = Counter(text.split(":")[0] for text in prompts(fake_llm.requests))
    assert sent == {"Short": short, "Carefully": 200 - short}  # each run sent its variant's prompt
    careful = [request for request in fake_llm.requests if request["messages"][-1]["content"].startswith("Carefully")]
    assert {request["body"].get("temperature") for request in careful} == {0.1}

    (compared,) = node_variants(flow.store, "triage")
    assert compared.weights == {"short": 70, "careful": 30} and compared.runs == 200
    assert {stats.variant: stats.n for stats in compared.report.variants} == {"short": short, "careful": 200 - short}
    assert all(stats.failures == 0 for stats in compared.report.variants)


async def test_a_run_can_choose_its_variant_and_an_unknown_one_fails_before_the_node(
    flow: AgentFlow, fake_llm: FakeLLM
) -> None:
    fake_llm.default = Text("bug")
    version = saved(flow)

    forced = [await run(flow, version, f"t{index}", variants={"classify": "careful"}) for index in range(5)]
    assert all(variants_of(flow, record.id)["node_finished"] == ["careful"] for record in forced)
    assert prompts(fake_llm.requests) == [f"Carefully: t{index}" for index in range(5)]
    assert "variant careful" in console(flow.store.events(forced[0].id))

    unknown = await run(flow, version, "x", variants={"classify": "bold"})
    elsewhere = await run(flow, version, "x", variants={"tidy": "short"})

    assert unknown.status == "failed"
    assert unknown.error == "node 'classify' has no variant 'bold'; its variants are: short, careful"
    assert elsewhere.status == "failed"
    assert elsewhere.error is not None and "node 'tidy', which has no `variants:`" in elsewhere.error
    assert "nodes with variants: classify" in elsewhere.error
    assert len(fake_llm.requests) == 5  # neither failed run called a model
    assert "classify" not in {node_run.node_id for node_run in flow.store.node_runs(unknown.id)}


async def test_failures_are_counted_per_variant(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    version = saved(flow)
    fake_llm.default = Error(500, "down")
    for index in range(3):
        await run(flow, version, f"f{index}", variants={"classify": "careful"})
    fake_llm.default = Text("ok")
    for index in range(4):
        await run(flow, version, f"s{index}", variants={"classify": "short"})

    (compared,) = node_variants(flow.store, "triage")

    careful, short = compared.report.stats("careful"), compared.report.stats("short")
    assert (careful.n, careful.failures, short.n, short.failures) == (3, 3, 4, 0)
    (failures,) = compared.report.comparisons_for("failure_rate")
    assert (failures.best, failures.other) == ("short", "careful")
    assert failures.verdict.startswith("short has lower failure rate than careful: 0.0% vs 100.0% (n=4 vs 3, p=")


@pytest.fixture
def cli(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.setenv("AGENTFLOW_HOME", str(home))

    async def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def client(flow: AgentFlow, home: Path) -> Iterator[TestClient]:
    settings = Settings(home=home, host="0.0.0.0", password="correct horse battery staple")
    with TestClient(create_app(settings)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {derive_api_token(settings.password or '', settings.user)}"
        yield test_client


async def test_the_cli_and_the_api_show_the_comparison(
    flow: AgentFlow, fake_llm: FakeLLM, cli: Any, client: TestClient
) -> None:
    fake_llm.default = Text("ok")
    version = saved(flow)
    for index in range(3):
        await run(flow, version, f"a{index}", variants={"classify": "short"})
        await run(flow, version, f"b{index}", variants={"classify": "careful"})

    code, out, err = await cli("variants", "triage")
    assert (code, err) == (0, "")
    assert out.startswith("node classify — 6 finished runs read; weights: short 70, careful 30")
    assert "  careful              3  0.0% [0.0–56.1%]" in out
    assert "failure rate, careful vs short: not yet significant (n=3 vs 3, p=1.00)" in out

    code, out, _ = await cli("variants", "triage", "--json", "--last", "4")
    (node,) = json.loads(out)["nodes"]
    assert node["runs"] == 4 and sum(row["n"] for row in node["variants"]) == 4

    code, _, err = await cli("variants", "triage", "--node", "tidy")
    assert code == 2 and "node 'tidy' of workflow 'triage' has no `variants:`; nodes with them: classify" in err
    code, _, err = await cli("variants", "nothing")
    assert code == 2 and "no workflow named 'nothing'; saved workflows: triage" in err

    response = client.get("/api/workflows/triage/variants", params={"node": "classify"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workflow"] == "triage" and [node["node"] for node in body["nodes"]] == ["classify"]
    assert {row["variant"]: row["n"] for row in body["nodes"][0]["variants"]} == {"careful": 3, "short": 3}
    assert client.get("/api/workflows/triage/variants", params={"node": "tidy"}).status_code == 404
    assert client.get("/api/workflows/nothing/variants").status_code == 404


async def test_the_workflows_tab_shows_a_variants_section(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("ok")
    version = saved(flow)
    assert "Variants" in variants_html(flow, "triage")  # declared, before any run
    for index in range(2):
        await run(flow, version, f"a{index}", variants={"classify": "short"})
    await run(flow, version, "b", variants={"classify": "careful"})

    html = variants_html(flow, "triage")

    assert '<section id="workflow-variants"' in html
    assert "<tr><td>short</td><td>70</td><td>2</td><td>0.0% <small>[0.0% – 65.8%]</small></td>" in html
    assert "<tr><td>careful</td><td>30</td><td>1</td>" in html
    # Equal failure rates: the best is the first by name; latency's best depends on timing, so is not asserted.
    assert "<li><b>Failure rate</b>: not yet significant (n=1 vs 2, p=1.00)</li>" in html
    assert "need at least 2 each" in html
    plain = workflow("plain", "nodes: {a: {type: transform, expr: \"'x'\"}}")
    saved(flow, plain)
    assert variants_html(flow, "plain") == "" and variants_html(flow, "nothing") == ""
