"""The Agents tab as an operator uses it: the empty tab says what to do; a token issued there enrols a real
`agentflow agent serve` process, listed healthy, then stale and offline once it is SIGKILLed; an agent added
by its card URL, then removed."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agentflow.settings import Settings
from agentflow.web.ui.agents import COLUMNS
from tests.e2e.server import record_console, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (a fixture)
from tests.fakes.agent_card import card, serve_card
from tests.integration.test_a2a_agent_process import agent_process

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]

TTL_S = 3.0  # silent for 3 s an agent is stale, for 9 s offline
STATE = COLUMNS.index("state")


def whole_cell(pattern: str) -> re.Pattern[str]:
    """`pattern` as a cell's whole text, within the spaces the dataframe pads it with."""
    return re.compile(rf"^\s*{pattern}\s*$")


AGENT_ID = whole_cell(r"agt_[0-9a-f]+")
TOKEN_ID = whole_cell(r"tok_[0-9a-f]+")
WHEN = whole_cell(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
LATENCY = whole_cell(r"(\d+ ms)?")  # none until the registry has timed a heartbeat or a card poll


def data_rows(page: Page, table: str) -> Locator:
    """A Gradio dataframe's rows of data, by their roles (it also keeps a hidden copy of the first for sizing)."""
    return page.locator(table).get_by_role("row").filter(has=page.get_by_role("gridcell"))


def refresh_until(page: Page, cell: Locator, text: str, *, within_s: float = 60.0) -> None:
    """Press the tab's Refresh until `cell` reads `text`: the table shows the registry as of the last refresh."""
    from playwright.sync_api import expect

    deadline = time.monotonic() + within_s
    while True:
        page.locator("#agents-refresh").click()
        try:
            expect(cell).to_have_text(text, timeout=1_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_the_agents_tab_enrols_an_agent_sees_it_go_offline_and_adds_and_removes_one_by_url(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    settings = Settings(
        home=tmp_path / "orchestrator", tracing=False, egress_allow_internal=("127.0.0.1",), agent_ttl_s=TTL_S
    )
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    with serve(settings) as url:
        page = context.new_page()
        record_console(page)
        page.goto(f"{url}/?tab=agents")
        expect(page.get_by_role("tab", name="Agents", selected=True)).to_be_visible()
        status, rows = page.locator("#agents-status"), data_rows(page, "#agents-table")
        expect(status).to_contain_text("No agents yet. Add one by its card URL below, or issue a token")
        expect(rows).to_have_count(0)
        shot(page, "60-agents-empty")

        # A one-time token, shown once.
        page.locator("#agents-token-note textarea").fill("hello on this machine")
        page.locator("#agents-issue").click()
        expect(status).to_contain_text("copy the token now, it is not shown again")
        shown = page.locator("#agents-token textarea")
        expect(shown).to_have_value(re.compile(r"^aft_"))
        token = shown.input_value()
        tokens = data_rows(page, "#agents-tokens")
        expect(tokens.get_by_role("gridcell")).to_have_text([TOKEN_ID, "hello on this machine", "unused", WHEN])
        shot(page, "61-agents-token-issued")

        with agent_process(tmp_path / "agent", "--register", url, "--token", token) as (_, process, _):
            hello = rows.filter(has_text="registered itself")
            refresh_until(page, hello.get_by_role("gridcell").nth(STATE), "healthy")
            expect(hello.get_by_role("gridcell")).to_have_text(
                ["hello", AGENT_ID, "hello", "registered itself", "healthy", WHEN, LATENCY]
            )
            expect(status).to_contain_text("1 agent: 1 healthy.")
            expect(shown).to_have_value("")  # a refresh does not show the token again
            expect(tokens.get_by_role("gridcell").nth(2)).to_have_text(whole_cell(r"used by agt_[0-9a-f]+"))
            shot(page, "62-agents-enrolled")

            # Killed, it cannot deregister: silent for one TTL it is stale, for three offline.
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            refresh_until(page, hello.get_by_role("gridcell").nth(STATE), "stale")
            expect(status).to_contain_text("1 agent: 1 stale.")
            shot(page, "63-agents-stale")
            refresh_until(page, hello.get_by_role("gridcell").nth(STATE), "offline")
            expect(status).to_contain_text("1 agent: 1 offline.")
            shot(page, "64-agents-offline")

        with serve_card(card("writer")) as served:
            page.locator("#agents-url textarea").fill(served.url)
            page.locator("#agents-add").click()
            expect(status).to_contain_text("Added writer (agt_")
            writer = rows.filter(has_text="added by URL")
            expect(writer.get_by_role("gridcell")).to_have_text(
                ["writer", AGENT_ID, "summarise", "added by URL", "healthy", WHEN, LATENCY]
            )
            expect(rows).to_have_count(2)
            shot(page, "65-agents-added-by-url")

            writer_id = writer.get_by_role("gridcell").nth(COLUMNS.index("id")).inner_text().strip()
            writer.get_by_role("gridcell").first.click()
            expect(page.locator("#agents-chosen textarea")).to_have_value(writer_id)
            page.locator("#agents-remove").click()
            expect(status).to_contain_text(f"Removed {writer_id}.")
            expect(writer).to_have_count(0)
            expect(rows).to_have_count(1)  # the offline agent stays listed
            expect(hello.get_by_role("gridcell").nth(STATE)).to_have_text("offline")
            shot(page, "66-agents-removed")
