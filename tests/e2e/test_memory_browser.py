"""The Memory tab as an operator uses it: a workflow's memories, a search, one memory whole, deleting it,
and forgetting the rest of the scope."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agentflow.memory.open import open_memory
from tests.e2e.server import fake_settings, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (a fixture)
from tests.fakes.openai_server import FakeLLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]


def test_the_memory_tab_browses_searches_deletes_and_forgets(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    fake_llm: FakeLLM,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    settings = fake_settings(tmp_path / "data", fake_llm)
    memory = open_memory(settings)
    memory.add("workflow:support", "The refund window is 30 days.", tags=["policy"])
    memory.add("workflow:support", "Shipping to Norway takes a week.")
    memory.add("agent:support/triage", "Tickets about invoices go to billing.")
    memory.add("workflow:sales", "The sales team meets on Mondays.")
    memory.close()
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    with serve(settings) as url:
        page = context.new_page()
        page.goto(f"{url}/?tab=memory")
        expect(page.get_by_role("tab", name="Memory", selected=True)).to_be_visible()
        page.locator("#memory-workflow input").click()
        page.get_by_role("option", name="support", exact=True).click()
        table, status = page.locator("#memory-table"), page.locator("#memory-status")
        expect(status).to_contain_text("3 memories in 2 scopes")
        expect(table).to_contain_text("The refund window is 30 days.")
        expect(table).to_contain_text("Tickets about invoices go to billing.")
        expect(table).not_to_contain_text("Mondays")  # another workflow's memory is not listed here
        shot(page, "50-memory")

        query = page.locator("#memory-query textarea")
        query.fill("refund")
        query.press("Enter")
        expect(status).to_contain_text("1 memory matches")
        table.get_by_text("The refund window is 30 days.", exact=True).locator("visible=true").first.click()
        expect(page.locator("#memory-detail")).to_contain_text("workflow:support")
        expect(page.locator("#memory-detail")).to_contain_text("policy")
        page.locator("#memory-delete").click()
        expect(status).to_contain_text("Deleted")
        expect(table).not_to_contain_text("The refund window")

        query.fill("")
        query.press("Enter")
        expect(status).to_contain_text("2 memories in 2 scopes")
        page.locator("#memory-forget").click()
        expect(status).to_contain_text("Tick I am sure")
        page.locator("#memory-sure input").check()
        page.locator("#memory-forget").click()
        expect(status).to_contain_text("Forgot 2 memories of support")
    remaining = open_memory(settings)
    try:
        assert [item.text for item in remaining.list("workflow:sales")] == ["The sales team meets on Mondays."]
        assert remaining.list("workflow:support") == []
    finally:
        remaining.close()
