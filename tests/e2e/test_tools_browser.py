"""The Tools tab as an operator uses it: every tool with the capability it needs, one tool's arguments schema,
and where code runs on this machine."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.server import fake_settings, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (a fixture)
from tests.fakes.openai_server import FakeLLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]


def test_the_tools_tab_lists_tools_their_needs_and_the_sandbox(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    fake_llm: FakeLLM,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    settings = dataclasses.replace(fake_settings(tmp_path / "data", fake_llm), sandbox="bwrap")
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    with serve(settings) as url:
        page = context.new_page()
        page.goto(f"{url}/?tab=tools")
        expect(page.get_by_role("tab", name="Tools", selected=True)).to_be_visible()
        table = page.locator("#tools-table")
        expect(table).to_contain_text("calculator")
        expect(table).to_contain_text("nothing (computes only)")
        expect(table).to_contain_text("code execution in the sandbox")
        expect(page.locator("#tools-sandbox")).to_contain_text("Code runs in bwrap")
        # Clicking a row shows that tool's description and arguments schema.
        table.get_by_text("http_request", exact=True).first.click()
        detail = page.locator("#tools-detail")
        expect(detail).to_contain_text("egress to the hosts it is given")
        expect(detail).to_contain_text('"follow_redirects"')
        shot(page, "40-tools")
