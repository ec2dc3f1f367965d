"""`agentflow optimize`: one round against the fake proposes a version; nothing is saved until a person accepts it.

The fake plays the node's model (the current prompt gets two capitals wrong; a prompt asking for the
OFFICIAL capital gets them right) and MetaPromptOptimizer's reflection model, which MLflow asks for a
JSON object {prompt name: improved template}.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.evals.dataset import parse_jsonl
from agentflow.evals.proposals import listing
from agentflow.optimize import OptimizeError, OptimizeOptions, Template, optimize
from agentflow.runtime import AgentFlow
from tests.fakes.openai_server import FakeLLM, Json, Reply, Text
from tests.integration.helpers import PERSON, workflow

CAPITALS = {"France": "Paris", "Canada": "Ottawa", "Peru": "Lima", "Norway": "Oslo", "Japan": "Tokyo"}
WRONG = {"Canada": "Toronto", "Norway": "Bergen"}
SOURCE = workflow(
    "capitals",
    """
    inputs: {country: {type: string}}
    nodes:
      answer:
        type: llm
        prompt: "Capital of {{ inputs.country }}? One word."  # the prompt to improve
    outputs: {capital: "{{ answer }}"}
    """,
)
IMPROVED = "Give the OFFICIAL capital city of {{inputs_country}}. Answer with one word."


def scripted(body: dict[str, Any]) -> Reply | None:
    text = body["messages"][-1]["content"]
    if "expert prompt engineer" in text:  # the reflection model, asked to improve `capitals.answer`
        return Json({"capitals.answer": IMPROVED})
    for country, city in CAPITALS.items():
        if country in text:
            return Text(city if "OFFICIAL" in text else WRONG.get(country, city))
    return None


def test_expressions_become_mlflow_variables_and_come_back() -> None:
    template = Template.of("Hi {{ inputs.name }}, about {{ classify.topics[0] }} and {{inputs.name}}; {{ x }}")

    assert template.text == "Hi {{inputs_name}}, about {{classify_topics_0}} and {{inputs_name_2}}; {{x}}"
    assert (
        template.ours(template.text)
        == "Hi {{ inputs.name }}, about {{ classify.topics[0] }} and {{inputs.name}}; {{ x }}"
    )
    assert template.ours("Now: {{x}} {{unknown}}") == "Now: {{ x }} {{unknown}}"


async def test_a_round_proposes_a_version_that_only_a_person_saves(
    flow: AgentFlow, fake_llm: FakeLLM, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_llm.responder = scripted
    base = flow.save_workflow(SOURCE)
    flow.grant_version(base, by=PERSON)
    cases = parse_jsonl(
        "".join(json.dumps({"inputs": {"country": c}, "expected": city}) + "\n" for c, city in CAPITALS.items()),
        "cases.jsonl",
    )

    with pytest.raises(OptimizeError, match="needs a model: pass --judge MODEL"):
        await optimize(flow, OptimizeOptions("capitals", "answer", cases, by=PERSON))
    with pytest.raises(OptimizeError, match="pip install gepa"):
        await optimize(
            flow, OptimizeOptions("capitals", "answer", cases, optimizer="gepa", model="openai/o", by=PERSON)
        )
    proposal = await optimize(flow, OptimizeOptions("capitals", "answer", cases, model="openai/optimizer", by=PERSON))

    proposed = "Give the OFFICIAL capital city of {{ inputs.country }}. Answer with one word."
    assert (proposal.current_prompt, proposal.proposed_prompt) == (
        "Capital of {{ inputs.country }}? One word.",
        proposed,
    )
    assert proposal.scores()["current"]["pass_rate"] == 0.6 and proposal.scores()["proposed"]["pass_rate"] == 1.0
    assert '-      prompt: "Capital of {{ inputs.country }}? One word."  # the prompt to improve' in proposal.diff
    assert f'+      prompt: "{proposed}"  # the prompt to improve' in proposal.diff
    assert flow.load(proposal.proposed_source).spec.nodes["answer"].prompt == proposed  # type: ignore[union-attr]
    # Proposed, not applied: the workflow still has one version, and the proposal is kept for a person.
    assert [stored.version for stored in flow.store.list_versions("capitals")] == [base.version]
    assert [kept.id for kept in listing(home)] == [proposal.id]
    reflections = [r for r in fake_llm.requests if "expert prompt engineer" in r["messages"][-1]["content"]]
    assert len(reflections) == 1 and reflections[0]["model"] == "optimizer"
    assert "{{inputs_country}}" in reflections[0]["messages"][-1]["content"]

    import mlflow

    from agentflow.evals.mlflow_log import tracking
    from agentflow.observability.tracer import TraceSettings

    with tracking(mlflow, TraceSettings.from_env(home).tracking_uri):  # put back: later tests have their own
        first, second = (mlflow.genai.load_prompt(f"prompts:/capitals.answer/{number}") for number in (1, 2))
        assert first.template == "Capital of {{inputs_country}}? One word."
        assert second.template == IMPROVED

    monkeypatch.setenv("AGENTFLOW_HOME", str(home))

    async def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, err = await cli("optimize", "show", proposal.id)
    assert code == 0, err
    assert "pass rate  60% → 100%" in out and f"agentflow optimize accept {proposal.id}" in out

    code, out, err = await cli("optimize", "accept", proposal.id)

    assert code == 0, err
    current = flow.store.get_workflow("capitals")
    assert current is not None and current.number == 2 and current.version != base.version
    assert f"saved proposal {proposal.id} as capitals v2 ({current.version})" in out
    assert flow.load(current.source).spec.nodes["answer"].prompt == proposed  # type: ignore[union-attr]
    code, _, err = await cli("optimize", "accept", proposal.id)
    assert code == 2 and f"proposal {proposal.id} was already accepted by cli:" in err
    code, _, err = await cli("optimize", "accept", "nope")
    assert code == 2 and "no proposal 'nope'" in err
