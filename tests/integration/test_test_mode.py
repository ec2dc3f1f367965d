"""Test mode: pinned node outputs (no calls), refused pins, and `agentflow test` against a baseline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.engine.pins import PinError
from agentflow.runtime import AgentFlow
from agentflow.testmode import BASELINE_FORMAT
from tests.fakes.openai_server import FakeLLM, Json, Reply, Text
from tests.integration.helpers import PERSON, prompts, workflow

TRIAGE = workflow(
    "triage",
    """
    inputs:
      ticket: {type: string}
      priority: {type: string, enum: [low, high]}
    nodes:
      classify:
        type: llm
        prompt: "Classify: {{ inputs.ticket }}"
        output: {category: {type: string, enum: [billing, bug, other]}}
      draft: {type: llm, needs: [classify], prompt: "Draft a {{ classify.category }} reply ({{ inputs.priority }})"}
    outputs: {reply: "{{ draft }}", category: "{{ classify.category }}"}
    """,
)
FANOUT = workflow(
    "fanout",
    """
    nodes:
      topics: {type: transform, expr: "['a', 'b', 'c']"}
      research:
        type: map
        needs: [topics]
        over: topics
        node: {type: llm, prompt: "Research {{ item }}"}
      route:
        type: switch
        needs: [research]
        cases: [{when: "length(research) > `2`", goto: long}]
        default: short
      long: {type: transform, expr: "'long'"}
      short: {type: transform, expr: "'short'"}
      sign_off: {type: approval, needs: [long, short], message: "ok?"}
    """,
)


def analyst(draft: str = "Thanks, we are on it") -> Callable[[dict[str, Any]], Reply]:
    """The fake model: a category for structured requests, `draft` for the reply."""

    def reply(body: dict[str, Any]) -> Reply:
        return Json({"category": "bug"}) if body.get("response_format") else Text(draft)

    return reply


async def test_a_pinned_node_makes_no_call_and_is_recorded_as_pinned(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.responder = analyst()
    version = flow.save_workflow(TRIAGE)
    flow.grant_version(version, by=PERSON)
    run = flow.submit(version, {"ticket": "my card was charged twice", "priority": "high"},
                      overrides={"pinned": {"classify": {"category": "billing"}}})  # fmt: skip
    assert await flow.executor.run(run.id) == "succeeded"
    await flow.store.flush()

    assert prompts(fake_llm.requests) == ["Draft a billing reply (high)"]  # classify made no call
    finished = {event["node_id"]: event for event in flow.store.events(run.id) if event["type"] == "node_finished"}
    assert (finished["classify"]["pinned"], finished["classify"]["output"]) == (True, {"category": "billing"})
    assert (finished["classify"]["tokens"], finished["classify"]["cost_usd"]) == (0, 0.0)
    assert finished["draft"]["pinned"] is False
    calls = [event["node_id"] for event in flow.store.events(run.id) if event["type"] == "llm_call"]
    assert calls == ["draft"]
    record = flow.store.get_run(run.id)
    assert record is not None and record.outputs == {"reply": "Thanks, we are on it", "category": "billing"}
    assert record.overrides == {"pinned": {"classify": {"category": "billing"}}}


async def test_a_pinned_map_runs_no_branch_and_a_pinned_switch_picks_the_branch(
    flow: AgentFlow, fake_llm: FakeLLM
) -> None:
    version = flow.save_workflow(FANOUT)
    flow.grant_version(version, by=PERSON)
    run = flow.submit(version, {}, overrides={"pinned": {"research": ["x", "y", "z"], "route": "short"}})
    assert await flow.executor.run(run.id) == "waiting_approval"
    await flow.store.flush()

    assert fake_llm.requests == []
    finished = {event["node_id"]: event for event in flow.store.events(run.id) if event["type"] == "node_finished"}
    assert finished["research"]["output"] == ["x", "y", "z"] and finished["research"]["pinned"] is True
    # The pinned switch chose `short` although the rule would have chosen `long`.
    assert (finished["short"]["status"], finished["long"]["status"]) == ("succeeded", "skipped")


@pytest.mark.parametrize(
    ("pins", "message"),
    [
        ({"clasify": {"category": "bug"}}, "cannot pin 'clasify': workflow 'triage' has no such node; did you mean"
         " 'classify'?"),
        ({"nothing_like": 1}, "has no such node; its nodes: classify, draft"),
        ({"classify": {"category": "spam"}}, "the pin of 'classify' does not match its `output` schema at $.category:"
         " 'spam' is not one of ['billing', 'bug', 'other']"),
        ({"classify": {}}, "does not match its `output` schema at $: 'category' is a required property"),
        ({"draft": {"text": "hi"}}, "the pin of 'draft' must be text (it has no `output` schema); got an object"),
    ],
)  # fmt: skip
async def test_bad_pins_are_refused_before_anything_is_recorded(
    flow: AgentFlow, fake_llm: FakeLLM, pins: dict[str, Any], message: str
) -> None:
    version = flow.save_workflow(TRIAGE)
    flow.grant_version(version, by=PERSON)

    with pytest.raises(PinError) as refused:
        flow.submit(version, {"ticket": "t", "priority": "low"}, overrides={"pinned": pins})

    assert message in str(refused.value)
    assert flow.store.list_runs(limit=5) == [] and fake_llm.requests == []


async def test_pins_on_maps_switches_and_approvals_are_checked(flow: AgentFlow) -> None:
    version = flow.save_workflow(FANOUT)
    flow.grant_version(version, by=PERSON)

    def refusal(pins: dict[str, Any]) -> str:
        with pytest.raises(PinError) as refused:
            flow.submit(version, {}, overrides={"pinned": pins})
        return str(refused.value)

    assert "cannot pin 'sign_off': it is an approval, which only a person decides" in refusal({"sign_off": True})
    assert "the pin of map 'research' must be a list (its branches' results), got an object" in refusal(
        {"research": {"a": 1}}
    )
    assert """must be the node it selects: one of "long", "short"; got "medium\"""" in refusal({"route": "medium"})
    both = refusal({"sign_off": True, "route": "medium"})
    assert "sign_off" in both and "route" in both  # every problem at once
    assert flow.store.list_runs(limit=5) == []


# -- agentflow test -------------------------------------------------------------------------------------------


CLI = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(tmp_path: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CLI:
    """`cli("test", ...)` -> (exit code, stdout, stderr) through the real entry point; models are the fake."""
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("AGENTFLOW_MODEL", "openai/test-model")
    monkeypatch.setenv("AGENTFLOW_API_BASE", fake_llm.base_url)
    monkeypatch.setenv("AGENTFLOW_API_KEY", "x")
    monkeypatch.setenv("AGENTFLOW_LLM_RETRIES", "0")
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def triage_file(tmp_path: Path) -> Path:
    path = tmp_path / "flows" / "triage.yaml"
    path.parent.mkdir()
    path.write_text(TRIAGE)
    return path


def test_the_first_run_writes_the_baseline_and_the_next_ones_compare(
    cli: CLI, fake_llm: FakeLLM, triage_file: Path
) -> None:
    fake_llm.responder = analyst()
    baseline = triage_file.parent / "tests" / "baselines" / "triage.json"

    code, out, err = cli("test", str(triage_file), "--cases", "3", "--seed", "11")

    assert code == 0, err
    assert f"wrote the baseline {baseline} (3 cases, seed 11)" in out
    saved = json.loads(baseline.read_text())
    assert (saved["format"], saved["workflow"], saved["seed"]) == (BASELINE_FORMAT, "triage", 11)
    assert len(saved["cases"]) == 3
    first = saved["cases"][0]
    assert first["status"] == "succeeded"
    assert first["outputs"] == {"reply": "Thanks, we are on it", "category": "bug"}
    assert first["nodes"]["classify"] == {"status": "succeeded", "output": {"category": "bug"}}
    assert first["inputs"]["priority"] in ("low", "high") and isinstance(first["inputs"]["ticket"], str)
    assert len(fake_llm.requests) == 6

    # Unchanged: every case matches; --cases and --seed default to the baseline's.
    code, out, err = cli("test", str(triage_file))
    assert code == 0, out + err
    assert out.count("✓ matches") == 3
    assert f"3 of 3 cases match the baseline {baseline}" in out

    # The model answers differently: exit 1 and a readable diff per case.
    fake_llm.responder = analyst("Sorry, it is fixed now")
    code, out, _ = cli("test", str(triage_file))
    assert code == 1
    assert out.count("✗ differs") == 3
    lines = out.splitlines()
    assert "    node draft: output changed" in lines
    assert '      ~ (the value): "Thanks, we are on it" → "Sorry, it is fixed now"' in lines
    assert "    outputs changed:" in lines
    assert '      ~ reply: "Thanks, we are on it" → "Sorry, it is fixed now"' in lines
    assert "0 of 3 cases match the baseline" in out
    assert json.loads(baseline.read_text()) == saved  # a failing comparison leaves the baseline alone

    code, out, _ = cli("test", str(triage_file), "--json")
    report = json.loads(out)
    assert (code, report["passed"], report["written"], report["workflow"]) == (1, False, False, "triage")
    assert [case["matches"] for case in report["cases"]] == [False, False, False]
    assert "node draft: output changed" in report["cases"][0]["differences"]

    # Accepting the change: the baseline is rewritten, and the next run passes.
    code, out, _ = cli("test", str(triage_file), "--update-baseline")
    assert code == 0 and "wrote the baseline" in out
    assert cli("test", str(triage_file))[0] == 0


def test_pinned_nodes_make_no_calls_in_a_test(cli: CLI, fake_llm: FakeLLM, triage_file: Path, tmp_path: Path) -> None:
    fake_llm.responder = analyst()
    baseline = tmp_path / "pinned.json"
    pins = tmp_path / "pins.yaml"
    pins.write_text("classify: {category: other}\ndraft: never used\n")

    code, _, err = cli(
        "test", str(triage_file), "--cases", "2", "--pins", str(pins), "--pin", "draft=Pinned reply",
        "--baseline", str(baseline),
    )  # fmt: skip

    assert code == 0, err
    assert fake_llm.requests == []  # both nodes pinned: not one model call
    cases = json.loads(baseline.read_text())["cases"]
    assert cases[0]["nodes"]["classify"] == {"status": "succeeded", "output": {"category": "other"}, "pinned": True}
    assert cases[0]["outputs"] == {"reply": "Pinned reply", "category": "other"}

    # A stored workflow by name, the same pins: still no call, and the runs match.
    code, out, err = cli(
        "test", "triage", "--pins", str(pins), "--pin", "draft=Pinned reply", "--baseline", str(baseline)
    )
    assert (code, fake_llm.requests) == (0, []), out + err
    assert "2 of 2 cases match" in out

    # Only classify pinned: draft is called once per case, and its new output is the diff.
    code, out, _ = cli("test", "triage", "--pin", 'classify={"category": "other"}', "--baseline", str(baseline))
    assert code == 1
    priorities = [case["inputs"]["priority"] for case in cases]
    assert prompts(fake_llm.requests) == [f"Draft a other reply ({priority})" for priority in priorities]
    assert '      ~ (the value): "Pinned reply" → "Thanks, we are on it"' in out.splitlines()


def test_a_case_added_beyond_the_baseline_differs(cli: CLI, fake_llm: FakeLLM, triage_file: Path) -> None:
    fake_llm.responder = analyst()
    assert cli("test", str(triage_file), "--cases", "1")[0] == 0

    code, out, _ = cli("test", str(triage_file), "--cases", "2")

    assert code == 1
    assert "case 0  ✓ matches" in out
    assert "    not in the baseline (it has 1 cases); add it with --update-baseline" in out
    # Another seed gives other inputs: said before the rest of the diff.
    code, out, _ = cli("test", str(triage_file), "--seed", "99")
    assert code == 1
    assert "    inputs differ from the baseline's (the input schema, --seed or --cases changed?):" in out


def test_usage_errors_exit_2_with_what_to_do(cli: CLI, fake_llm: FakeLLM, triage_file: Path, tmp_path: Path) -> None:
    code, out, err = cli("test", str(triage_file), "--pin", "clasify={}")
    assert (code, out) == (2, "")
    assert "error: cannot pin 'clasify': workflow 'triage' has no such node; did you mean 'classify'?" in err

    code, _, err = cli("test", str(triage_file), "--pin", "classify")
    assert code == 2 and "--pin 'classify' is not NODE=JSON; e.g. --pin classify=" in err

    code, _, err = cli("test", str(triage_file), "--pins", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read the pins file" in err and "missing.yaml" in err

    (tmp_path / "list.yaml").write_text("- classify\n")
    code, _, err = cli("test", str(triage_file), "--pins", str(tmp_path / "list.yaml"))
    assert code == 2 and "pins must be a mapping of node id to output" in err

    broken = tmp_path / "broken.json"
    broken.write_text('{"format": \n')
    code, _, err = cli("test", str(triage_file), "--baseline", str(broken))
    assert code == 2 and f"{broken}:2:1: not valid JSON" in err and "--update-baseline" in err

    other = tmp_path / "other.json"
    other.write_text('{"cases": []}')
    code, _, err = cli("test", str(triage_file), "--baseline", str(other))
    assert code == 2 and "is not an agentflow test baseline" in err

    code, _, err = cli("test", "no-such-flow")
    assert code == 2 and "no-such-flow" in err and "or give the workflow's file" in err

    code, _, err = cli("test", str(triage_file), "--cases", "0")
    assert code == 2 and "--cases must be at least 1, got 0" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text(TRIAGE.replace("type: llm", "type: lm", 1))
    code, _, err = cli("test", str(bad))
    assert code == 2 and "bad.yaml:" in err
    assert fake_llm.requests == []  # nothing ran


async def test_a_run_waiting_for_approval_is_recorded_as_waiting(flow: AgentFlow) -> None:
    from agentflow.testmode import run_suite

    version = flow.save_workflow(FANOUT)
    flow.grant_version(version, by=PERSON)

    suite = await run_suite(flow, version, [{}], seed=0, pins={"research": ["x"]})

    case = suite.cases[0]
    assert case.result["status"] == "waiting_approval"
    assert case.result["nodes"]["short"]["status"] == "succeeded"
    record = flow.store.get_run(case.run_id)
    assert record is not None and record.status == "cancelled"  # not left waiting for a person
