"""The Costs and Overview tabs as a person uses them: an empty installation says what to do; after a
chat and a run, the Costs totals are the ledger's (the assistant's calls a line of their own); the
Overview lists the run waiting for a person, and its link opens that run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agentflow.observability.costs import start_of_day
from agentflow.settings import Settings
from agentflow.store import open_store
from agentflow.web.ui import queries
from tests.e2e.server import fake_settings, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (a fixture)
from tests.fakes.openai_server import FakeLLM, Text, ToolCalls
from tests.integration.helpers import workflow

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]

SUMMARISE = workflow(
    "summarise",
    """
    inputs: {text: {type: string, description: what to summarise}}
    nodes:
      draft: {type: llm, prompt: "Summarise for the board: {{ inputs.text }}"}
      review: {type: approval, needs: [draft], message: "Publish this summary? {{ draft }}"}
    outputs: {result: "{{ draft }}"}
    """,
)


def ledger(settings: Settings) -> tuple[dict[str, queries.CostRow], str]:
    """The ledger's totals of the last 30 days by source, and the one run's id, read from the server's store."""
    store = open_store(settings)
    try:
        [run] = store.list_runs()
        return queries.totals(store, queries.since(30)), run.id
    finally:
        store.close()


def spent_today(settings: Settings) -> str:
    """Today's spend as the tabs print it, read when asked (a run just before midnight is yesterday's)."""
    store = open_store(settings)
    try:
        return queries.money(queries.totals(store, start_of_day())["all"].cost_usd)
    finally:
        store.close()


def test_costs_match_the_ledger_and_the_overview_opens_a_waiting_run(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    fake_llm: FakeLLM,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    settings = fake_settings(tmp_path / "data", fake_llm)
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": SUMMARISE, "summary": "summarise"})], usage=(300, 40)))
    fake_llm.enqueue(Text("I wrote it: it drafts a summary and waits for your approval.", usage=(320, 12)))
    fake_llm.default = Text("Revenue rose 12% on strong cloud sales.", usage=(1000, 500))
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    with serve(settings) as url:
        page = context.new_page()
        # An empty installation: the Costs tab says what to do and draws no empty charts.
        page.goto(f"{url}/?tab=costs")
        expect(page.get_by_role("tab", name="Costs", selected=True)).to_be_visible()
        expect(page.locator("#costs-empty")).to_contain_text("No model calls yet")
        expect(page.locator("#costs-empty")).to_contain_text("Chat")
        expect(page.locator("#costs-charts")).to_be_hidden()
        shot(page, "20-costs-empty")
        page.goto(f"{url}/?tab=overview")
        expect(page.get_by_role("tab", name="Overview", selected=True)).to_be_visible()
        expect(page.locator("#overview-waiting")).to_contain_text("Nobody is waited for")
        expect(page.locator("#overview-heatmap")).to_contain_text("No tokens used")
        shot(page, "21-overview-empty")

        # The person describes a workflow, the assistant writes it, the person runs it: it waits for them.
        page.goto(url)
        message = page.locator("#chat-input textarea")
        expect(page.locator("#validation-status")).to_contain_text("No workflow yet")
        message.fill("Summarise the quarter for the board, and let me approve it first")
        message.press("Enter")
        expect(page.locator("#validation-status")).to_contain_text("Valid —")
        page.locator(".run-input").filter(has_text="text (string)").locator("textarea").fill("Q3 numbers")
        page.locator("#run-button").click()
        expect(page.locator("#run-status")).to_contain_text("waiting_approval")

        # The Costs totals are the ledger's: the run's model call, and the assistant's two as theirs.
        found, run_id = ledger(settings)
        total, assistant = found["all"], found["assistant"]
        assert (total.calls, assistant.calls) == (3, 2)
        page.goto(f"{url}/?tab=costs")
        summary = page.locator("#costs-summary")
        expect(summary).to_contain_text(f"{queries.money(total.cost_usd)} on 3 model calls")
        expect(summary).to_contain_text(f"(2 by the assistant, {queries.money(assistant.cost_usd)})")
        expect(summary).to_contain_text(f"{total.input_tokens + total.output_tokens:,} tokens")
        expect(summary).to_contain_text("1 run started")
        expect(page.locator("#costs-charts")).to_be_visible()
        expect(page.locator("#costs-empty")).to_be_hidden()
        sources = page.locator("#costs-sources")
        expect(sources.get_by_role("gridcell", name="assistant", exact=True)).to_be_visible()
        expect(sources.get_by_role("gridcell", name=queries.money(assistant.cost_usd), exact=True)).to_be_visible()
        expect(page.locator("#costs-budgets")).to_contain_text(f"{spent_today(settings)} spent on models")
        shot(page, "22-costs")

        # The Overview: the run waits for a person, with today's spend; its link opens it in the Runs tab.
        page.goto(f"{url}/?tab=overview")
        expect(page.locator("#overview-waiting-count")).to_contain_text("1")
        expect(page.locator("#overview-spend")).to_contain_text(spent_today(settings))
        expect(page.locator("#overview-heatmap")).to_contain_text("summarise")
        waiting = page.locator("#overview-waiting")
        expect(waiting).to_contain_text("Publish this summary? Revenue rose 12%")
        shot(page, "23-overview")
        waiting.get_by_role("link", name=run_id[:12]).click()
        expect(page).to_have_url(re.compile(rf"\?tab=runs&run={run_id[:12]}"))
        expect(page.get_by_role("tab", name="Runs", selected=True)).to_be_visible()
        expect(page.locator("#run-detail")).to_contain_text(f"Run {run_id}")
        expect(page.locator("#run-detail")).to_contain_text("waiting_approval")
        shot(page, "24-followed-the-link")
        page.close()
    context.close()
