"""`prompts:/NAME@ALIAS` prompts loaded from MLflow's prompt registry at run time, and `agentflow prompts`.

One SQLite MLflow store serves the module (creating one costs seconds); each test uses prompt names of
its own. Runs go through the real engine with the fake LLM, whose request log shows what was sent.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.observability.tracer import build_run_trace
from agentflow.prompts.refs import PromptRef
from agentflow.prompts.registry import PromptRegistry
from agentflow.runtime import AgentFlow
from agentflow.web.ui.console import render as console
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import node_statuses, prompts, run_source, workflow


class Clock:
    """The registry cache's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    PromptRegistry(uri).client()  # MLflow's migrations, once
    return uri


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(flow: AgentFlow, tracking_uri: str, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> PromptRegistry:
    """The registry the flow's runs load from (its cache on `clock`); MLFLOW_TRACKING_URI names it for the CLI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    registry = PromptRegistry(tracking_uri, clock=clock)
    flow.engine.services.prompt_registry = registry
    return registry


@pytest.fixture
def name() -> str:
    return f"triage-{uuid.uuid4().hex[:8]}"


def publish(registry: PromptRegistry, name: str, template: str, alias: str = "production") -> int:
    """What another process (a person's `prompts push`, MLflow's UI) does: a new version, the alias moved."""
    other = PromptRegistry(registry.tracking_uri)
    version = other.register(name, template, message="test", tags={"workflow": "test"}).version
    other.set_alias(name, alias, version)
    return version


def llm_calls(flow: AgentFlow, run_id: str) -> list[dict[str, Any]]:
    return [event for event in flow.store.events(run_id) if event["type"] == "llm_call"]


def referencing(name: str, selector: str = "@production") -> str:
    return workflow(
        "triage",
        f"""
        inputs: {{ticket: string, customer: {{type: string, default: acme}}}}
        nodes:
          classify: {{type: llm, prompt: "prompts:/{name}.classify{selector}"}}
          reply:
            type: agent
            needs: [classify]
            instructions: "prompts:/{name}.reply/1"
            input: "Reply about {{{{ classify }}}}"
        """,
    )


async def test_a_registry_prompt_is_rendered_and_every_call_records_its_name_and_version(
    flow: AgentFlow, registry: PromptRegistry, fake_llm: FakeLLM, name: str
) -> None:
    publish(registry, f"{name}.classify", "Classify {{ticket}} for {{ inputs.customer }}")
    publish(registry, f"{name}.reply", "You answer {{ customer }}'s tickets.", alias="unused")
    fake_llm.enqueue_all([Text("billing"), Text("Dear acme")])

    run = await run_source(flow, referencing(name), {"ticket": "refund please"})

    assert run.status == "succeeded", run.error
    first, second = fake_llm.requests
    # MLflow's bare {{ticket}} reads the input; our {{ inputs.customer }} too.
    assert prompts([first]) == ["Classify refund please for acme"]
    assert second["messages"][0] == {"role": "system", "content": "You answer acme's tickets."}
    assert prompts([second]) == ["Reply about billing"]
    calls = llm_calls(flow, run.id)
    assert [call["prompt_ref"] for call in calls] == [f"{name}.classify@1", f"{name}.reply@1"]
    assert f'prompt <span class="console-prompt-ref">{name}.classify@1</span>' in console(flow.store.events(run.id))

    trace = build_run_trace(run, flow.store.events(run.id))
    llm_spans = [span for span in trace.spans if span.span_type == "CHAT_MODEL"]
    assert [(span.attributes["prompt.name"], span.attributes["prompt.version"]) for span in llm_spans] == [
        (f"{name}.classify", "1"),
        (f"{name}.reply", "1"),
    ]
    linked = json.loads(trace.spans[0].attributes["agentflow.linked_prompts"])
    assert linked == [{"name": f"{name}.classify", "version": "1"}, {"name": f"{name}.reply", "version": "1"}]


async def test_moving_the_alias_reaches_the_runs_after_the_cache(
    flow: AgentFlow, registry: PromptRegistry, clock: Clock, fake_llm: FakeLLM, name: str
) -> None:
    publish(registry, f"{name}.classify", "Version one: {{ticket}}")
    publish(registry, f"{name}.reply", "Answer.")
    source = referencing(name)

    first = await run_source(flow, source, {"ticket": "a"})
    second_version = publish(registry, f"{name}.classify", "Version two: {{ticket}}")
    clock.now += 1  # within the cache's few seconds: the run still gets what the last one loaded
    cached = await run_source(flow, source, {"ticket": "b"})
    clock.now += registry.cache_seconds
    moved = await run_source(flow, source, {"ticket": "c"})

    assert second_version == 2
    sent = [text for text in prompts(fake_llm.requests) if text.startswith("Version")]
    assert sent == ["Version one: a", "Version one: b", "Version two: c"]
    refs = [llm_calls(flow, run.id)[0]["prompt_ref"] for run in (first, cached, moved)]
    assert refs == [f"{name}.classify@1", f"{name}.classify@1", f"{name}.classify@2"]


async def test_a_missing_prompt_or_alias_fails_the_node_once_and_says_how_to_push_it(
    flow: AgentFlow, registry: PromptRegistry, fake_llm: FakeLLM, name: str
) -> None:
    publish(registry, f"{name}.reply", "Answer.")
    retried = referencing(name).replace(
        "classify: {type: llm,", "classify: {type: llm, retry: {attempts: 3, delay: 1ms},"
    )

    run = await run_source(flow, retried, {"ticket": "a"})

    assert run.status == "failed"
    assert run.error is not None
    assert f"prompts:/{name}.classify@production: the prompt registry at {registry.tracking_uri}" in run.error
    assert f"no prompt '{name}.classify' with alias 'production'" in run.error
    assert "agentflow prompts push WORKFLOW_FILE --alias production" in run.error
    assert node_statuses(flow, run.id)["classify"] == ["failed"]  # not retried: retrying cannot help
    assert fake_llm.requests == []

    publish(registry, f"{name}.classify", "Exists now", alias="candidate")
    wrong_version = await run_source(flow, referencing(name, "/7"), {"ticket": "a"})
    assert wrong_version.error is not None and "with version 7" in wrong_version.error


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path) -> Any:
    """`await cli("prompts", ...)` -> (exit code, stdout, stderr) through the real entry point."""
    monkeypatch.setenv("AGENTFLOW_HOME", str(home))

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def workflow_file(tmp_path: Path, name: str) -> Iterator[Path]:
    path = tmp_path / "flow.yaml"
    path.write_text(
        workflow(
            name,
            """
            inputs: {ticket: string}
            nodes:
              classify:
                type: llm
                system: "You sort tickets."
                prompt: "Classify {{ inputs.ticket }}"
                variants:
                  - {name: terse, prompt: "One word: {{ inputs.ticket }}"}
                  - {name: same, model: openai/test-model}
              reply: {type: llm, needs: [classify], prompt: "prompts:/elsewhere@production"}
            """,
        )
    )
    yield path


async def test_prompts_push_registers_each_inline_prompt_and_prints_its_reference(
    flow: AgentFlow, registry: PromptRegistry, cli: Any, workflow_file: Path, name: str, fake_llm: FakeLLM
) -> None:
    code, out, err = await cli("prompts", "push", str(workflow_file), "--alias", "candidate")

    assert (code, err) == (0, "")
    assert f"registry: {registry.tracking_uri}" in out
    assert f'classify.prompt: "prompts:/{name}.classify@candidate"' in out
    assert f'classify.system: "prompts:/{name}.classify.system@candidate"' in out
    assert f'classify.variants[terse].prompt: "prompts:/{name}.classify.terse@candidate"' in out
    assert "reply.prompt" not in out  # already a reference
    pushed = registry.load(PromptRef(f"{name}.classify", alias="candidate"), fresh=True)
    assert (pushed.version, pushed.template) == (1, "Classify {{ inputs.ticket }}")
    assert pushed.tags == {"workflow": name, "node": "classify", "field": "prompt"}
    assert pushed.commit_message == f"pushed from flow.yaml (workflow {name})"

    code, out, _ = await cli("prompts", "push", str(workflow_file), "--node", "classify", "--json")
    again = json.loads(out)
    assert code == 0 and again["alias"] == "production"
    assert [(row["name"], row["version"], row["created"]) for row in again["prompts"]] == [
        (f"{name}.classify", 1, False),  # the same text: no new version
        (f"{name}.classify.system", 1, False),
        (f"{name}.classify.terse", 1, False),
    ]

    code, out, _ = await cli("prompts", "list", "--json")
    listed = {row["name"]: row for row in json.loads(out)}
    assert listed[f"{name}.classify"]["aliases"] == {"candidate": 1, "production": 1}
    code, out, _ = await cli("prompts", "show", f"{name}.classify.terse@production")
    assert code == 0 and out.splitlines()[0] == f"{name}.classify.terse@1 (aliases: candidate, production)"
    assert out.rstrip().endswith("One word: {{ inputs.ticket }}")

    # The printed references, put in the YAML, run the pushed texts.
    used = workflow(
        name,
        f"""
        inputs: {{ticket: string}}
        nodes:
          classify:
            type: llm
            system: "prompts:/{name}.classify.system@production"
            prompt: "prompts:/{name}.classify@production"
        """,
    )
    run = await run_source(flow, used, {"ticket": "broken login"})
    assert run.status == "succeeded", run.error
    assert fake_llm.requests[0]["messages"][0] == {"role": "system", "content": "You sort tickets."}
    assert prompts(fake_llm.requests)[0] == "Classify broken login"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--node", "nope"), "has no llm or agent node 'nope'; it has: classify, reply"),
        (("--name", "x"), "--name names one node's prompts; pick the node with --node (classify, reply)"),
        (("--name", "bad name!", "--node", "classify"), "'bad name!' is not a prompt name"),
        (("--alias", "no good"), "an alias is letters, digits, '_' and '-'"),
        (("--node", "reply"), "has no inline prompt to push"),
    ],
)
async def test_prompts_push_refuses_what_it_cannot_do(
    registry: PromptRegistry, cli: Any, workflow_file: Path, args: tuple[str, ...], message: str
) -> None:
    code, out, err = await cli("prompts", "push", str(workflow_file), *args)
    assert (code, out) == (2, "")
    assert message in err


async def test_prompts_show_says_what_is_missing(registry: PromptRegistry, cli: Any, name: str) -> None:
    code, _, err = await cli("prompts", "show", f"{name}.nothing@production")
    assert code == 2
    assert f"no prompt '{name}.nothing' with alias 'production'" in err
    code, _, err = await cli("prompts", "show", "bad name")
    assert code == 2 and "is not a prompt reference" in err
