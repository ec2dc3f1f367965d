"""The Overview and Costs tabs read every money and token figure from the ledger, the assistant's calls included.

The tabs are built in a Blocks context and refreshed as the UI does; their figures are checked
against what the fake model answered and the suite's price ($1 and $2 per million tokens in and
out): a run's call here is 1000 tokens in and 500 out ($0.002), the assistant's 100 and 50.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd
import pytest

from agentflow.chat.engine import ConversationEngine
from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.events import LLMCalled
from agentflow.observability.costs import Ledger
from agentflow.runtime import AgentFlow
from agentflow.store.base import ASSISTANT, RunRecord
from agentflow.web.server import AppState
from agentflow.web.ui import costs, overview, queries
from agentflow.web.ui.chat import engine_of
from tests.fakes.openai_server import Error, FakeLLM, Text, ToolCalls
from tests.integration.helpers import run_source, workflow

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

USAGE = (1000, 500)
PER_CALL = 1000 * 1e-6 + 500 * 2e-6  # the suite's TEST_PRICE
ASSISTANT_USAGE = (100, 50)
ASSISTANT_CALL = 100 * 1e-6 + 50 * 2e-6
TWO_CALLS = workflow(
    "pricey",
    """
    nodes:
      plan: {type: llm, prompt: plan it}
      write: {type: llm, prompt: "write {{ plan }}", needs: [plan]}
    """,
)
GATED = workflow(
    "gated",
    """
    nodes:
      gate: {type: approval, message: "Ship <b>it</b>?"}
    """,
)
FLAKY = workflow(
    "flaky",
    """
    nodes:
      ask: {type: llm, prompt: ask, retry: {attempts: 1}}
    """,
)


@pytest.fixture
def state(flow: AgentFlow) -> Iterator[AppState]:
    yield AppState(flow.settings, _flow=flow)


@pytest.fixture
def tabs(state: AppState) -> tuple[overview.OverviewTab, costs.CostsTab]:
    with gr.Blocks():
        return overview.build(state), costs.build(state)


async def assistant_writes(
    chat: ConversationEngine, fake_llm: FakeLLM, session_id: str, *, usage: tuple[int, int] = ASSISTANT_USAGE
) -> None:
    """One chat turn in which the assistant makes two model calls: it writes a workflow, then says so."""
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": TWO_CALLS, "summary": "it"})], usage=usage))
    fake_llm.enqueue(Text("Written.", usage=usage))
    await chat.handle(session_id, "write me a workflow")
    await chat.flow.store.flush()


def frame(updates: dict[Any, Any], component: Any) -> pd.DataFrame:
    value = updates[component]
    return value["value"] if isinstance(value, dict) else value


async def test_costs_figures_are_the_ledgers_and_the_assistant_has_its_own_line(
    flow: AgentFlow, fake_llm: FakeLLM, state: AppState, tabs: tuple[overview.OverviewTab, costs.CostsTab]
) -> None:
    _, tab = tabs
    chat = engine_of(state)
    await assistant_writes(chat, fake_llm, "s-costs")
    fake_llm.default = Text("x", usage=USAGE)
    run = await run_source(flow, TWO_CALLS)
    assert run.status == "succeeded", run.error
    await flow.store.flush()
    assert fake_llm.count() == 4

    updates = tab.refresh("Last 7 days")
    summary = updates[tab.summary]
    assert f"{queries.money(2 * PER_CALL + 2 * ASSISTANT_CALL)} on 4 model calls" in summary
    assert f"(2 by the assistant, {queries.money(2 * ASSISTANT_CALL)})" in summary
    assert "3,300 tokens (2,200 in, 1,100 out); 1 run started." in summary
    assert updates[tab.empty]["visible"] is False and updates[tab.charts]["visible"] is True

    sources = updates[tab.sources].set_index("source")
    assert sources.loc["runs", "calls"] == 2 and sources.loc["assistant", "calls"] == 2
    assert sources.loc["assistant", "cost"] == queries.money(2 * ASSISTANT_CALL)
    assert list(updates[tab.workflows]["workflow"]) == ["pricey", ASSISTANT]
    assert ASSISTANT in list(updates[tab.nodes]["node"])
    # The day charts: one series per source, summing to the same totals.
    daily = frame(updates, tab.cost_by_day)
    assert set(daily["source"]) == {"runs", "assistant"}
    assert daily["cost_usd"].sum() == pytest.approx(2 * PER_CALL + 2 * ASSISTANT_CALL)
    assert frame(updates, tab.tokens_by_day)["tokens"].sum() == 3300
    assert len(daily) == 7 * 2  # every day of the window, zero where nothing was spent
    # The run's own total (shown in the Runs tab) is the ledger's for that run.
    assert run.cost_usd == pytest.approx(2 * PER_CALL)
    assert "of it by the assistant" in updates[tab.budgets]


async def test_the_assistants_calls_are_in_the_ledger_with_their_session(
    flow: AgentFlow, fake_llm: FakeLLM, state: AppState
) -> None:
    chat = engine_of(state)
    await assistant_writes(chat, fake_llm, "s-marked")
    fake_llm.enqueue(Error(400, "the provider says no"))
    reply = await chat.handle("s-marked", "again")
    assert "The assistant's model failed" in reply.text
    await flow.store.flush()
    by_session = {row.key: row for row in flow.store.spend(by="session", since=0)}
    assert set(by_session) == {"s-marked"}
    # Two answered calls and the refused one (which costs nothing), all marked as the assistant's.
    assert by_session["s-marked"].calls == 3
    assert by_session["s-marked"].cost_usd == pytest.approx(2 * ASSISTANT_CALL)
    [source] = flow.store.spend(by="source", since=0)
    assert source.key == "assistant" and source.calls == 3
    assert flow.store.spent_by_workflow(since=0) == {"": pytest.approx(2 * ASSISTANT_CALL)}
    assert flow.store.list_runs() == []  # no run was made for them


async def test_the_assistants_spend_counts_against_the_global_daily_budget_and_stops_with_it(
    flow: AgentFlow, fake_llm: FakeLLM, state: AppState
) -> None:
    flow.engine.services.ledger = Ledger(flow.store, global_daily_usd=1.5 * PER_CALL)
    chat = engine_of(state)
    await assistant_writes(chat, fake_llm, "s-budget", usage=USAGE)
    assert fake_llm.count() == 2  # the first call was under the budget, the second spent it

    refused = await chat.handle("s-budget", "and now?")
    assert "global daily budget" in refused.text and "AGENTFLOW_DAILY_BUDGET_USD" in refused.text
    assert "Slash commands still work" in refused.text
    assert fake_llm.count() == 2  # refused before the provider was called
    assert "/undo" in (await chat.handle("s-budget", "/help")).text
    # Runs that call models are refused too: the assistant's spend is the installation's.
    with pytest.raises(BudgetExceededError, match="global daily budget"):
        flow.submit(flow.save_workflow(TWO_CALLS), {})
    status = costs.budget_status(flow.engine.services.ledger, flow.store)
    assert "tripped" in status and "count against the global budget" in status


async def test_an_empty_installation_says_what_to_do(
    flow: AgentFlow, tabs: tuple[overview.OverviewTab, costs.CostsTab]
) -> None:
    board, tab = tabs
    updates = tab.refresh(costs.DEFAULT_WINDOW)
    assert updates[tab.empty]["visible"] is True
    assert "No model calls yet" in updates[tab.empty]["value"] and "Chat" in updates[tab.empty]["value"]
    assert updates[tab.charts]["visible"] is False  # no empty chart boxes
    assert "$0.00" in updates[tab.summary] and "0 model calls" in updates[tab.summary]
    assert tab.tokens_by_day.y_axis_format == costs.TOKEN_AXIS != tab.cost_by_day.y_axis_format

    shown = board.refresh()
    assert "No run is active" in shown[board.active]
    assert "Nobody is waited for" in shown[board.waiting]
    assert "No model calls in the last 7 days" in shown[board.workflows]
    assert "No tokens used in the last 14 days" in shown[board.heatmap]
    assert "no run finished" in shown[board.headline]


async def test_a_window_without_calls_is_not_an_empty_installation(
    flow: AgentFlow, tabs: tuple[overview.OverviewTab, costs.CostsTab]
) -> None:
    _, tab = tabs
    long_ago = time.time() - 40 * 86400
    flow.store.create_run(RunRecord(id="old-run", workflow="pricey", version="v1", created_at=long_ago))
    flow.store.record(
        LLMCalled(run_id="old-run", node_id="plan", model="openai/test-model", provider="openai", input_tokens=1,
                  output_tokens=1, cost_usd=0.5, latency_ms=1.0, at=long_ago)
    )  # fmt: skip
    await flow.store.flush()
    empty = tab.refresh("Last 7 days")[tab.empty]
    assert empty["visible"] is True and "No model calls in the last 7 days** — choose a longer period" in empty["value"]
    updates = tab.refresh("Last 90 days")
    assert updates[tab.empty]["visible"] is False
    assert f"{queries.money(0.5)} on 1 model call," in updates[tab.summary]
    assert "1 run started" in updates[tab.summary]


async def test_overview_shows_runs_rates_spend_and_who_waits_for_a_person(
    flow: AgentFlow, fake_llm: FakeLLM, state: AppState, tabs: tuple[overview.OverviewTab, costs.CostsTab]
) -> None:
    board, _ = tabs
    chat = engine_of(state)
    await assistant_writes(chat, fake_llm, "s-overview")
    fake_llm.default = Text("x", usage=USAGE)
    succeeded = await run_source(flow, TWO_CALLS)
    fake_llm.enqueue(Error(400, "no"))
    failed = await run_source(flow, FLAKY)
    waiting = await run_source(flow, GATED)
    assert (succeeded.status, failed.status, waiting.status) == ("succeeded", "failed", "waiting_approval")
    await flow.store.flush()

    shown = board.refresh()
    headline = shown[board.headline]
    assert "50%" in headline and "2 finished" in headline  # one of the two finished runs succeeded
    assert queries.money(2 * PER_CALL + 2 * ASSISTANT_CALL) in headline  # spent today, the assistant's included
    assert f"assistant {queries.money(2 * ASSISTANT_CALL)}" in headline
    waits = shown[board.waiting]
    assert f'href="/?tab=runs&amp;run={waiting.id[:12]}"' in waits
    assert "Ship &lt;b&gt;it&lt;/b&gt;?" in waits  # the approval's message, as text
    assert 'href="/?tab=workflows&amp;workflow=gated"' in waits
    # Costliest workflows and nodes are the ledger's groups, most expensive first.
    ledger_order = [row.key for row in flow.store.spend(by="workflow", since=queries.since(7))]
    shown_workflows = shown[board.workflows]
    positions = [shown_workflows.index(f">{html_of(key)}<") for key in ledger_order]
    assert positions == sorted(positions) and ledger_order[0] == "pricey"
    assert "pricey</a>.write" in shown[board.nodes]
    # The heat-map: a row per workflow with tokens today (the assistant's included), a column per day.
    heat = shown[board.heatmap]
    assert heat.count("<tr>") == 1 + 3  # the days, then pricey, the assistant and flaky
    today = queries.window_days(14)[-1]
    assert f"pricey, {today}: 3,000 tokens" in heat and f"{ASSISTANT}, {today}: 300 tokens" in heat
    assert f"flaky, {today}: 0 tokens" in heat  # its one call failed: in the ledger, without tokens


def html_of(key: str) -> str:
    return html.escape(key)
