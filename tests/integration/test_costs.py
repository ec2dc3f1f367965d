"""The cost ledger, daily budgets as circuit breakers, and the bottleneck profile."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from agentflow.engine.budget import BudgetExceededError
from agentflow.observability.costs import Ledger, spend
from agentflow.observability.profile import profile, render
from agentflow.runtime import AgentFlow
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import run_source, workflow

TWO_MODELS = workflow(
    "priced",
    """
    nodes:
      cheap: {type: llm, prompt: a}
      local: {type: llm, prompt: b, model: ollama_chat/free, needs: [cheap]}
    """,
)


async def test_ledger_prices_calls_and_groups_them(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("x", usage=(1000, 500))
    # The local model is never reached (no Ollama here); only priced calls are in the ledger totals.
    run = await run_source(flow, workflow("priced", "nodes:\n  cheap: {type: llm, prompt: a}"))
    assert run.status == "succeeded", run.error
    [by_model] = spend(flow.store, by="model")
    assert (by_model.key, by_model.calls, by_model.input_tokens, by_model.output_tokens) == (
        "openai/test-model",
        1,
        1000,
        500,
    )
    assert by_model.cost_usd == pytest.approx(1000 * 1e-6 + 500 * 2e-6)
    assert [row.key for row in spend(flow.store, by="node")] == ["priced.cheap"]
    assert [row.key for row in spend(flow.store, by="provider")] == ["openai"]
    assert len(spend(flow.store, by="day")) == 1
    with pytest.raises(ValueError, match="use one of"):
        spend(flow.store, by="colour")


DAILY = workflow(
    "daily",
    """
    budget: {daily_usd: 0.0015}
    nodes:
      a: {type: llm, prompt: a}
      b: {type: llm, prompt: b, needs: [a]}
      c: {type: llm, prompt: c, needs: [b]}
    """,
)


async def test_workflow_daily_budget_stops_a_run_and_refuses_the_next(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("x", usage=(1000, 0))  # $0.001 per call
    run = await run_source(flow, DAILY)
    assert run.status == "budget_exceeded"
    assert "daily budget of workflow 'daily'" in (run.error or "") and "spec.budget.daily_usd" in (run.error or "")
    assert fake_llm.count() == 2
    version = flow.save_workflow(DAILY)
    with pytest.raises(BudgetExceededError, match="daily budget of workflow 'daily'"):
        flow.submit(version, {})
    # An LLM-free workflow costs nothing and still runs.
    free = await run_source(flow, workflow("free", "nodes:\n  t: {type: transform, expr: \"'ok'\"}"))
    assert free.status == "succeeded"


async def test_global_daily_budget(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("x", usage=(1000, 0))
    flow.engine.services.ledger = Ledger(flow.store, global_daily_usd=0.001)
    first = await run_source(flow, workflow("one", "nodes:\n  a: {type: llm, prompt: a}"))
    assert first.status == "succeeded"
    with pytest.raises(BudgetExceededError, match=r"global daily budget of \$0\.001"):
        flow.submit(flow.save_workflow(workflow("two", "nodes:\n  a: {type: llm, prompt: a}")), {})
    status = flow.engine.services.ledger.status({"one": 1.0})
    assert status[0]["tripped"] is True and status[1]["tripped"] is False


async def test_profile_flags_the_slow_branch_as_the_bottleneck(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda body: Text(
        "slow" if "slow" in body["messages"][-1]["content"] else "fast",
        latency=0.3 if "slow" in body["messages"][-1]["content"] else 0.0,
    )
    source = workflow(
        "shape",
        """
        nodes:
          quick: {type: llm, prompt: fast one}
          heavy: {type: llm, prompt: slow one}
          merge: {type: transform, expr: "[quick, heavy]", needs: [quick, heavy]}
        """,
    )
    for _ in range(2):
        assert (await run_source(flow, source)).status == "succeeded"
    result = profile(flow.store, "shape")
    assert result.runs == 2
    assert result.bottleneck is not None and result.bottleneck.node_id == "heavy"
    by_id = {node.node_id: node for node in result.nodes}
    assert by_id["quick"].critical_share == 0
    recorded = [
        node_run.latency_ms or 0.0
        for run in flow.store.list_runs(workflow="shape")
        for node_run in flow.store.node_runs(run.id)
        if node_run.node_id == "heavy"
    ]
    assert by_id["heavy"].p50_ms == pytest.approx(statistics.median(recorded)) and by_id["heavy"].executions == 2
    assert by_id["heavy"].cost_share == pytest.approx(0.5)
    assert "← bottleneck" in render(result).splitlines()[2]


async def test_cli_costs_and_profile(flow: AgentFlow, fake_llm: FakeLLM, home, capsys) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import os

    from agentflow.cli import main as cli_main

    async def main(argv: list[str]) -> int:
        return await asyncio.to_thread(cli_main, argv)  # the CLI runs its own event loop

    await run_source(flow, workflow("clicost", "nodes:\n  a: {type: llm, prompt: a}"))
    await flow.store.flush()
    os.environ["AGENTFLOW_HOME"] = str(home)
    try:
        assert await main(["costs", "--by", "workflow", "--since", "1d"]) == 0
        assert "clicost" in capsys.readouterr().out
        assert await main(["profile", "clicost"]) == 0
        assert "bottleneck" in capsys.readouterr().out
        assert await main(["costs", "--since", "yesterday-ish"]) == 2
    finally:
        del os.environ["AGENTFLOW_HOME"]


def test_settings_read_the_global_daily_budget() -> None:
    from agentflow.settings import Settings

    assert Settings.from_env({"AGENTFLOW_DAILY_BUDGET_USD": "2.5"}).daily_budget_usd == 2.5
    assert Settings.from_env({}).daily_budget_usd is None
    assert replace(Settings(), daily_budget_usd=1.0).daily_budget_usd == 1.0


async def test_costs_tab_shows_a_tripped_budget_as_an_alert(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    from agentflow.web.ui.costs import budget_status

    fake_llm.default = Text("x", usage=(1000, 0))
    await run_source(flow, DAILY)
    await flow.store.flush()
    text = budget_status(flow.engine.services.ledger, flow.store)
    assert "daily (spec.budget.daily_usd)" in text and "tripped" in text
    assert "No daily budget" in budget_status(Ledger(flow.store, global_daily_usd=None), _empty_store(flow))


def _empty_store(flow: AgentFlow):  # type: ignore[no-untyped-def]
    import tempfile
    from pathlib import Path

    from agentflow.store.sqlite import SQLiteStore

    return SQLiteStore(Path(tempfile.mkdtemp()) / "empty.db")
