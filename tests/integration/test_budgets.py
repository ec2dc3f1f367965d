"""Each budget limit stops a run with status budget_exceeded, naming the limit."""

from __future__ import annotations

import pytest

from agentflow.runtime import AgentFlow
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import node_statuses, run_source, workflow

CHAIN = """
budget: {budget}
nodes:
  a: {{type: llm, prompt: a}}
  b: {{type: llm, prompt: b, needs: [a]}}
  c: {{type: llm, prompt: c, needs: [b]}}
"""


async def test_step_budget_stops_an_endless_loop(flow: AgentFlow) -> None:
    source = workflow(
        "spin",
        """
        budget: {steps: 7}
        nodes:
          tick: {type: transform, expr: "sum([tick || `0`, `1`])"}
          again:
            type: transform
            needs: [tick]
            expr: "tick"
            loop: {back_to: tick, until: "`false`", max: 1000}
        """,
    )
    run = await run_source(flow, source)
    assert run.status == "budget_exceeded"
    assert "steps limit of 7" in (run.error or "") and "spec.budget.steps" in (run.error or "")
    assert run.steps == 7
    [event] = [event for event in flow.store.events(run.id) if event["type"] == "budget_exceeded"]
    assert (event["limit"], event["allowed"]) == ("steps", 7)


async def test_token_budget_stops_before_the_next_call(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("x", usage=(60, 40))
    run = await run_source(flow, workflow("tokens", CHAIN.format(budget="{tokens: 150}")))
    assert run.status == "budget_exceeded"
    assert "tokens limit of 150" in (run.error or "")
    assert fake_llm.count() == 2  # the call that crossed the limit completed; nothing started after it
    assert run.tokens == 200


async def test_cost_budget(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("x", usage=(1000, 0))  # $0.001 per call at the test price
    run = await run_source(flow, workflow("usd", CHAIN.format(budget="{usd: 0.001}")))
    assert run.status == "budget_exceeded"
    assert "usd limit of 0.001" in (run.error or "")
    assert fake_llm.count() == 1
    assert run.cost_usd == pytest.approx(0.001)


async def test_wall_budget(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("slow", latency=5)
    run = await run_source(flow, workflow("wall", CHAIN.format(budget="{wall: 300ms}")))
    assert run.status == "budget_exceeded"
    assert "wall limit of 0.3" in (run.error or "")
    # Stopped mid-call: node a never finished, b never started, and the fake is still holding its 5 s reply.
    types = [event["type"] for event in flow.store.events(run.id)]
    assert "node_finished" not in types and "llm_call" not in types
    assert node_statuses(flow, run.id) == {}
    [request] = fake_llm.requests
    assert request["finished"] is None


async def test_budget_exceeded_is_the_cli_exit_code_four(flow: AgentFlow) -> None:
    from agentflow.cli import EXIT_CODES

    assert EXIT_CODES["budget_exceeded"] == 4
