"""`agentflow eval`: a workflow (or one node) over a dataset, scored by MLflow scorers and judges, logged to MLflow.

The fake LLM plays both parts: the workflow's model (model `test-model`) and the judge (`judge-model`),
which MLflow asks for JSON `{"result": "yes"|"no", "rationale": ...}` (its JudgeEvaluation schema).
MLflow is slow to start: three tests touch it (the logged evaluation, a node alone, the variants).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.evals.dataset import parse_jsonl
from agentflow.evals.evaluate import EvalOptions, evaluate, evaluate_variants
from agentflow.runtime import AgentFlow
from tests.fakes.openai_server import FakeLLM, Json, Reply, Text
from tests.integration.helpers import PERSON, run_source, workflow

CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Chile": "Santiago",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Norway": "Oslo",
}
WRONG = {"Canada": "Toronto", "Norway": "Bergen"}  # what the model gets wrong
CAPITAL = workflow(
    "capitals",
    """
    inputs: {country: {type: string}}
    nodes:
      answer: {type: llm, prompt: "Capital of {{ inputs.country }}? One word."}
    outputs: {capital: "{{ answer }}"}
    """,
)
ASKED = re.compile(r"Capital of (\w+)\?")
DOCUMENT = re.compile(r"<document>(.*?)</document>", re.S)  # Correctness's prompt: the output is the document


def is_judge(body: dict[str, Any]) -> bool:
    schema = (body.get("response_format") or {}).get("json_schema") or {}
    return schema.get("name") == "JudgeEvaluation"


def model_and_judge(body: dict[str, Any]) -> Reply | None:
    """The workflow's model answers capitals (two wrong); the judge says yes unless the answer is a wrong one."""
    text = json.dumps(body["messages"])
    if is_judge(body):
        wrong = any(city in text for city in WRONG.values())
        return Json({"result": "no" if wrong else "yes", "rationale": "compared with the expected response"})
    asked = ASKED.search(text)
    if asked:
        country = asked.group(1)
        return Text(WRONG.get(country, CAPITALS.get(country, "unknown")))
    return None


@pytest.fixture
def scripted(fake_llm: FakeLLM) -> FakeLLM:
    fake_llm.responder = model_and_judge
    return fake_llm


@pytest.fixture
def cli_env(home: Path, scripted: FakeLLM, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`await cli_env("eval", ...)` -> (exit code, stdout, stderr), on the flow's data with the fake as models."""
    for name, value in {
        "AGENTFLOW_HOME": str(home),
        "AGENTFLOW_MODEL": "openai/test-model",
        "AGENTFLOW_API_BASE": scripted.base_url,
        "AGENTFLOW_API_KEY": "test-key",
        "AGENTFLOW_LLM_RETRIES": "0",
        "AGENTFLOW_TRACING": "0",
        "AGENTFLOW_PRICES": json.dumps({"openai/test-model": {"input": 1, "output": 2}}),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AGENTFLOW_JUDGE_MODEL", raising=False)

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def dataset(tmp_path: Path, lines: list[Any], name: str = "cases.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def capital_cases() -> list[dict[str, Any]]:
    return [{"inputs": {"country": country}, "expected": city} for country, city in CAPITALS.items()]


def saved(flow: AgentFlow, source: str) -> None:
    version = flow.save_workflow(source)
    flow.grant_version(version, by=PERSON)


async def test_ten_cases_scored_by_a_rule_and_a_judge_are_logged_to_mlflow(
    flow: AgentFlow, scripted: FakeLLM, cli_env: Any, tmp_path: Path
) -> None:
    saved(flow, CAPITAL)
    data = dataset(tmp_path, capital_cases())

    code, out, err = await cli_env(
        "eval", "capitals", "--data", str(data), "--scorers", "exact_match,correctness",
        "--judge", "openai/judge-model", "--json",
    )  # fmt: skip

    assert code == 1, err  # two cases fail
    report = json.loads(out)
    assert [case["output"] for case in report["cases"]] == [WRONG.get(c, CAPITALS[c]) for c in CAPITALS]
    failed = {case["inputs"]["country"] for case in report["cases"] if not case["passed"]}
    assert failed == set(WRONG)
    for case in report["cases"]:
        wrong = case["inputs"]["country"] in WRONG
        assert case["scores"]["exact_match"]["value"] == (0.0 if wrong else 1.0)
        assert case["scores"]["correctness"]["value"] == (0.0 if wrong else 1.0)
        assert case["scores"]["correctness"]["rationale"] == "compared with the expected response"
        assert case["status"] == "succeeded" and case["cost_usd"] > 0 and case["latency_ms"] > 0
        assert flow.store.get_run(case["run_id"]).inputs == case["inputs"]  # type: ignore[union-attr]
    aggregate = report["aggregate"]
    assert (aggregate["cases"], aggregate["passed"], aggregate["pass_rate"]) == (10, 8, 0.8)
    assert aggregate["mean_scores"] == {"exact_match": 0.8, "correctness": 0.8}
    assert aggregate["cost_usd_total"] == pytest.approx(sum(case["cost_usd"] for case in report["cases"]))
    assert aggregate["latency_ms_p50"] <= aggregate["latency_ms_p95"]

    judged = [request for request in scripted.requests if is_judge(request["body"])]
    assert len(judged) == 10 and {request["model"] for request in judged} == {"judge-model"}
    documents = [DOCUMENT.search(request["messages"][0]["content"]) for request in judged]
    assert sum("Toronto" in found.group(1) for found in documents if found) == 1

    # MLflow has the evaluation: a run in the workflow's experiment, its metrics, one trace per case linked to its run.
    import mlflow

    from agentflow.evals.mlflow_log import load_report, past_evaluations
    from agentflow.observability.tracer import TraceSettings, trace_id_for

    client = mlflow.MlflowClient(TraceSettings.from_env(flow.settings.home).tracking_uri)
    run = client.get_run(report["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "capitals"
    assert run.data.metrics["agentflow/pass_rate"] == 0.8
    assert run.data.metrics["agentflow/cases"] == 10
    assert run.data.metrics["correctness/mean"] == pytest.approx(0.8)
    assert run.data.tags["agentflow.eval"] == "1"
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id)
    linked = {
        trace.info.tags.get("agentflow.run_id"): trace.info.tags.get("agentflow.run_trace_id") for trace in traces
    }
    assert linked == {case["run_id"]: trace_id_for(case["run_id"]) for case in report["cases"]}
    past = past_evaluations(flow.settings, "capitals")
    assert [item["mlflow_run_id"] for item in past] == [report["mlflow_run_id"]]
    assert load_report(flow.settings, report["mlflow_run_id"])["aggregate"] == aggregate


async def test_a_dataset_from_past_runs_has_their_outputs_as_expectations(
    flow: AgentFlow, cli_env: Any, tmp_path: Path
) -> None:
    runs = [await run_source(flow, CAPITAL, {"country": country}) for country in ("France", "Canada", "Peru")]
    other = await run_source(flow, workflow("other", "nodes: {a: {type: transform, expr: \"'x'\"}}"))
    out_file = tmp_path / "from-runs.jsonl"

    code, _, err = await cli_env(
        "eval", "dataset", "capitals", "--last", "20", "--status", "succeeded", "-o", str(out_file)
    )

    assert code == 0, err
    cases = parse_jsonl(out_file.read_text(), "from-runs.jsonl")
    assert [case.to_dict() for case in cases] == [
        {"inputs": {"country": "France"}, "expectations": {"expected_response": "Paris"}},
        {"inputs": {"country": "Canada"}, "expectations": {"expected_response": "Toronto"}},
        {"inputs": {"country": "Peru"}, "expectations": {"expected_response": "Lima"}},
    ]
    code, out, err = await cli_env("eval", "dataset", "capitals", "--runs", f"{runs[2].id[:10]},{runs[0].id}")
    assert code == 0, err
    assert [json.loads(line)["inputs"]["country"] for line in out.splitlines()] == ["Peru", "France"]

    code, _, err = await cli_env("eval", "dataset", "capitals", "--runs", other.id)
    assert code == 2 and f"run {other.id} is a run of 'other', not of 'capitals'" in err


async def test_bad_inputs_are_refused_before_anything_runs(
    flow: AgentFlow, scripted: FakeLLM, cli_env: Any, tmp_path: Path
) -> None:
    saved(flow, CAPITAL)
    good = {"inputs": {"country": "Peru"}, "expected": "Lima"}
    broken = dataset(tmp_path, [good, "// a comment", '{"inputs": {"country": "Chile"', good], "broken.jsonl")
    missing = dataset(tmp_path, [good, {"inputs": {"land": "Chile"}, "expected": "Santiago"}], "missing.jsonl")
    cases = dataset(tmp_path, [good], "good.jsonl")
    no_expectation = dataset(tmp_path, [good, {"inputs": {"country": "Peru"}}], "bare.jsonl")

    refusals = {
        ("--data", str(broken)): f"{broken}:3:31: not valid JSON",
        ("--data", str(missing)): f"{missing}:2: unknown input 'land'",
        ("--data", str(cases), "--scorers", "exact_match,corectness"): "unknown scorer 'corectness'; did you mean "
        "'correctness'?",
        ("--data", str(cases), "--scorers", "correctness"): "an LLM judge needs a model: pass --judge MODEL",
        ("--data", str(cases), "--judge", "gpt-4o", "--scorers", "safety"): "'gpt-4o' has no provider",
        (
            "--data",
            str(no_expectation),
        ): f"{no_expectation}:2: the exact_match scorer compares with expectations.expected_response",
        ("--data", str(cases), "--node", "anwser"): "'capitals' has no node 'anwser'; did you mean 'answer'?",
        ("--data", str(tmp_path / "absent.jsonl")): "cannot read",
    }
    for options, message in refusals.items():
        code, _, err = await cli_env("eval", "capitals", *options)
        assert code == 2, (options, err)
        assert message in err, (options, err)
    code, _, err = await cli_env("eval", "nothing", "--data", str(cases))
    assert code == 2 and "there is no saved workflow 'nothing'" in err
    assert flow.store.list_runs(workflow="capitals") == [] and scripted.requests == []


TRIAGE = workflow(
    "triage",
    """
    inputs: {ticket: {type: string}}
    nodes:
      lang: {type: llm, prompt: "Which language is {{ inputs.ticket }}?"}
      classify:
        type: llm
        needs: [lang]
        prompt: "Classify ({{ lang }}): {{ inputs.ticket }}"
        variants:
          - {name: short, prompt: "Label ({{ lang }}): {{ inputs.ticket }}"}
          - {name: careful, prompt: "Carefully classify ({{ lang }}): {{ inputs.ticket }}"}
    outputs: {category: "{{ classify }}"}
    """,
)


TICKETS = {"app crash": "bug", "refund please": "billing", "crash again": "bug"}


def triage_model(body: dict[str, Any]) -> Reply | None:
    """`Label` answers billing; `Carefully` and the node's own prompt answer from the ticket."""
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("Which language"):
        return Text("LANG-CALLED")  # must never be asked: the node runs alone
    if prompt.startswith("Label"):
        return Text("billing")
    return Text("bug" if "crash" in prompt else "billing")


async def test_one_node_alone_and_its_variants_side_by_side(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    saved(flow, TRIAGE)
    fake_llm.responder = triage_model
    cases = parse_jsonl(
        "".join(
            json.dumps({"inputs": {"ticket": ticket, "lang": "en"}, "expected": category}) + "\n"
            for ticket, category in TICKETS.items()
        ),
        "cases.jsonl",
    )
    options = EvalOptions("triage", cases, scorers=["exact_match"], node="classify", by=PERSON)

    report = await evaluate(flow, options)

    prompts = [request["messages"][-1]["content"] for request in fake_llm.requests]
    by_ticket = {prompt.split("(en): ")[1]: prompt for prompt in prompts}  # `lang` is the case's value
    assert len(prompts) == 3 and sorted(by_ticket) == sorted(TICKETS)  # the node's calls only: `lang` never asked
    answers = [triage_model({"messages": [{"content": by_ticket[ticket]}]}) for ticket in TICKETS]
    assert [result.run.output for result in report.cases] == [answer.text for answer in answers]  # type: ignore[union-attr]
    derived = flow.store.get_run(report.cases[0].run.run_id)
    assert derived is not None and derived.workflow == "triage--classify"

    fake_llm.reset()
    fake_llm.responder = triage_model
    result = await evaluate_variants(flow, options)

    assert result.node == "classify" and list(result.reports) == ["short", "careful"]
    assert result.reports["short"].aggregate["passed"] == 1  # `Label` always says billing
    assert result.reports["careful"].aggregate["passed"] == 3
    assert {stats.variant: stats.n for stats in result.comparison.variants} == {"careful": 3, "short": 3}
    assert {stats.variant: stats.score_mean for stats in result.comparison.variants} == {
        "careful": 1.0,
        "short": pytest.approx(1 / 3),
    }
    prompts = [request["messages"][-1]["content"] for request in fake_llm.requests]
    assert sum(prompt.startswith("Label (en)") for prompt in prompts) == 3
    assert sum(prompt.startswith("Carefully classify (en)") for prompt in prompts) == 3
    for name, variant_report in result.reports.items():
        for case in variant_report.cases:
            events = flow.store.events(case.run.run_id)
            chosen = {event.get("variant") for event in events if event.get("type") == "node_finished"}
            assert name in chosen
