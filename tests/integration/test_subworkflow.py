"""`workflow` nodes: a stored workflow runs as a child run, with its parent's link, budget and its own grant."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.engine.nodes.base import Attempt
from agentflow.engine.nodes.workflow import child_run_id
from agentflow.runtime import AgentFlow
from agentflow.spec.errors import SpecErrors
from agentflow.store.base import RunRecord
from tests.fakes.openai_server import Error, FakeLLM, Text
from tests.integration.helpers import PERSON, node_statuses, prompts, run_source, workflow

SUMMARISE = workflow(
    "summarise",
    """
    inputs: {text: string, style: {type: string, default: short}}
    nodes:
      gist: {type: llm, prompt: "summarise ({{ inputs.style }}): {{ inputs.text }}"}
    outputs: {summary: "{{ gist }}"}
    """,
)

REPORT = workflow(
    "report",
    """
    inputs: {topic: string}
    nodes:
      draft: {type: llm, prompt: "draft about {{ inputs.topic }}"}
      short:
        type: workflow
        workflow: summarise
        needs: [draft]
        inputs: {text: "{{ draft }}"}
    outputs: {summary: "{{ short.summary }}"}
    """,
)


def save_granted(flow: AgentFlow, source: str) -> Any:
    version = flow.save_workflow(source)
    flow.grant_version(version, by=PERSON)
    return version


def children(flow: AgentFlow, parent: RunRecord) -> list[RunRecord]:
    return [run for run in flow.store.list_runs(limit=100) if run.parent and run.parent["run_id"] == parent.id]


async def test_a_workflow_node_runs_the_child_as_a_run_of_its_own(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda body: Text("said: " + body["messages"][-1]["content"], usage=(10, 5))
    save_granted(flow, SUMMARISE)
    run = await run_source(flow, REPORT, {"topic": "otters"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"summary": "said: summarise (short): said: draft about otters"}
    [child] = children(flow, run)
    assert child.workflow == "summarise" and child.status == "succeeded"
    assert child.parent == {"run_id": run.id, "node_id": "short"}
    assert child.trigger == "workflow:report"
    assert child.inputs == {"text": "said: draft about otters", "style": "short"}
    assert child.outputs == {"summary": "said: summarise (short): said: draft about otters"}
    assert child.id == child_run_id(run.id, "short", Attempt())
    # The child's usage is the node's: its tokens and cost, on the parent's node run.
    [node_run] = [node for node in flow.store.node_runs(run.id) if node.node_id == "short"]
    assert node_run.tokens == child.tokens == 15
    assert node_statuses(flow, run.id) == {"draft": ["succeeded"], "short": ["succeeded"]}


async def test_a_pinned_version_runs_that_version(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda body: Text(body["messages"][-1]["content"])
    save_granted(flow, workflow("echo", "nodes:\n  say: {type: transform, expr: \"'first'\"}"))
    save_granted(flow, workflow("echo", "nodes:\n  say: {type: transform, expr: \"'second'\"}"))
    pinned = workflow("caller", "nodes:\n  call: {type: workflow, workflow: echo, version: 1}")
    current = workflow("caller-now", "nodes:\n  call: {type: workflow, workflow: echo}")
    assert (await run_source(flow, pinned)).outputs == {"call": {"say": "first"}}
    assert (await run_source(flow, current)).outputs == {"call": {"say": "second"}}


async def test_the_child_uses_what_is_left_of_the_parents_budget(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("x", usage=(60, 40))
    save_granted(
        flow,
        workflow(
            "spender",
            """
            nodes:
              a: {type: llm, prompt: a}
              b: {type: llm, prompt: b, needs: [a]}
              c: {type: llm, prompt: c, needs: [b]}
            """,
        ),
    )
    parent = workflow(
        "frugal",
        """
        budget: {tokens: 250}
        nodes:
          first: {type: llm, prompt: first}
          child: {type: workflow, workflow: spender, needs: [first]}
        """,
    )
    run = await run_source(flow, parent)
    [child] = children(flow, run)
    assert child.limits is not None and child.limits["tokens"] == 150
    assert child.status == "budget_exceeded"
    assert "tokens limit of 150" in (child.error or "")
    assert run.status == "budget_exceeded"
    assert "sub-workflow 'spender'" in (run.error or "")
    assert fake_llm.count() == 3  # first, then a and b in the child; c never started


async def test_a_child_that_needs_review_fails_the_node(flow: AgentFlow) -> None:
    flow.save_workflow(  # saved, never granted: its egress waits for a person
        workflow(
            "fetcher",
            """
            nodes:
              get: {type: tool, tool: http_request, args: {url: "https://api.example.com/x"}}
            """,
        )
    )
    run = await run_source(flow, workflow("uses-fetcher", "nodes:\n  call: {type: workflow, workflow: fetcher}"))
    assert run.status == "failed"
    assert "sub-workflow 'fetcher' v1 needs a person's review" in (run.error or "")
    assert "agentflow grant fetcher" in (run.error or "")
    assert children(flow, run) == []  # nothing was started beyond the grant


async def test_a_failed_child_fails_the_node_and_a_retry_starts_a_new_child(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    failures = []

    def respond(body: dict[str, Any]) -> Text | Error:
        if not failures:
            failures.append(1)
            return Error(400, "the provider refused")
        return Text("fine")

    fake_llm.responder = respond
    save_granted(flow, workflow("flaky", "nodes:\n  ask: {type: llm, prompt: hello}"))
    parent = workflow(
        "patient",
        """
        nodes:
          call: {type: workflow, workflow: flaky, retry: {attempts: 2, delay: 10ms}}
        """,
    )
    run = await run_source(flow, parent)
    assert run.status == "succeeded", run.error
    assert run.outputs == {"call": {"ask": "fine"}}
    runs = sorted(children(flow, run), key=lambda child: child.created_at)
    assert [child.status for child in runs] == ["failed", "succeeded"]
    assert "the provider refused" in (runs[0].error or "")
    assert [child.id for child in runs] == [child_run_id(run.id, "call", Attempt(number)) for number in (1, 2)]
    assert node_statuses(flow, run.id) == {"call": ["failed", "succeeded"]}
    assert len(prompts(fake_llm.requests)) == 2


def test_saving_checks_the_callee_its_inputs_and_cycles(flow: AgentFlow) -> None:
    save_granted(flow, SUMMARISE)
    bad = workflow(
        "bad-caller",
        """
        nodes:
          one: {type: workflow, workflow: sumarise, inputs: {text: hi}}
          two: {type: workflow, workflow: summarise, inputs: {txt: hi}}
          three: {type: workflow, workflow: summarise, version: 7, inputs: {text: hi}}
        """,
    )
    with pytest.raises(SpecErrors) as raised:
        flow.save_workflow(bad, path="bad.yaml")
    text = str(raised.value)
    assert "bad.yaml:6:" in text and "workflow 'sumarise' is not stored; did you mean 'summarise'?" in text
    assert "workflow 'summarise' (v1) has no input 'txt'; did you mean 'text'?" in text
    assert "required input 'text' (string)" in text
    assert "workflow 'summarise' has no version 7; its versions are v1" in text
    assert flow.store.get_workflow("bad-caller") is None


def test_cycles_between_stored_workflows_are_refused_at_save(flow: AgentFlow) -> None:
    save_granted(flow, workflow("alpha", "nodes:\n  work: {type: transform, expr: \"'a'\"}"))
    save_granted(flow, workflow("beta", "nodes:\n  call: {type: workflow, workflow: alpha}"))
    save_granted(flow, workflow("gamma", "nodes:\n  call: {type: workflow, workflow: beta}"))
    with pytest.raises(SpecErrors) as raised:
        flow.save_workflow(workflow("alpha", "nodes:\n  call: {type: workflow, workflow: gamma}"))
    assert "workflows call each other in a cycle: alpha -> gamma -> beta -> alpha; break it" in str(raised.value)
    with pytest.raises(SpecErrors) as raised:
        flow.save_workflow(workflow("alpha", "nodes:\n  call: {type: workflow, workflow: alpha}"))
    assert "workflow 'alpha' calls itself in node 'call'" in str(raised.value)
    assert len(flow.store.list_versions("alpha")) == 1
