"""The Workflows tab in a real browser, as a person uses it: versions numbered as the chat said, a diff, a run link.

Playwright drives Debian's Chromium against the real server (fixtures in test_browser.py and server.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.server import fake_settings, record_console, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (browser is a fixture)
from tests.fakes.openai_server import FakeLLM

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),  # raised inside gradio's queue
]


def send(page: Page, text: str) -> None:
    message = page.locator("#chat-input textarea")
    message.fill(text)
    message.press("Enter")


def test_versions_saved_in_the_chat_are_the_versions_of_the_workflows_tab(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    fake_llm: FakeLLM,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    with serve(fake_settings(tmp_path / "data", fake_llm)) as url:
        page = context.new_page()
        record_console(page)
        page.goto(url)
        chatbot, status = page.locator("#chatbot"), page.locator("#validation-status")
        expect(status).to_contain_text("No workflow yet")

        # Save twice from the chat: the chat numbers the versions v1 and v2.
        send(page, "/new hello")
        expect(page.locator("#yaml-editor .cm-content")).to_contain_text("name: hello")
        expect(status).to_contain_text("Valid — draft 1, not saved as a version yet")
        send(page, "/save greeter")
        expect(chatbot).to_contain_text("Saved as 'greeter' v1")
        expect(status).to_contain_text("Valid — draft 2, saved as 'greeter' v1")
        editor = page.locator("#yaml-editor .cm-content")
        expect(editor).to_contain_text("# Shows: the smallest workflow")  # /save kept the example's comments
        editor.locator(".cm-line").filter(has_text="description: Greet someone").click(position={"x": 2, "y": 2})
        page.keyboard.press("End")
        page.keyboard.type(" warmly")
        page.locator("#apply-edit").click()
        expect(status).to_contain_text("Valid — draft 3, not saved as a version yet")
        send(page, "/save greeter")
        expect(chatbot).to_contain_text("Saved as 'greeter' v2")
        expect(status).to_contain_text("Valid — draft 3, saved as 'greeter' v2")
        page.locator(".run-input").filter(has_text="name (string)").locator("textarea").fill("Ada")
        page.locator("#run-button").click()
        expect(page.locator("#run-status")).to_contain_text("succeeded")
        expect(chatbot).to_contain_text("of 'greeter' v2: succeeded")
        shot(page, "40-saved-twice")

        # The Workflows tab names them the same way.
        page.get_by_role("tab", name="Workflows").click()
        table = page.locator("#workflows-table")
        table.get_by_role("gridcell", name="greeter", exact=True).click()
        heading = page.locator("#workflow-heading")
        expect(heading).to_contain_text("greeter v2 (current; 2 versions)")
        expect(page.locator("#workflow-versions input")).to_have_value(re.compile(r"^v2 \(current\) — "))
        expect(table.get_by_role("gridcell", name="v2", exact=True)).to_be_visible()
        expect(page).to_have_url(re.compile(r"/\?tab=workflows&workflow=greeter&version=v2$"))

        # A diff between the two.
        page.locator("#workflow-compare input").click()
        page.get_by_role("option").filter(has_text=re.compile(r"^\W*v1 — ")).click()
        diff = page.locator("#workflow-diff")
        expect(diff).to_contain_text("--- greeter v1")
        expect(diff).to_contain_text("+++ greeter v2")
        expect(diff).to_contain_text("+  description: Greet someone, with no LLM at all warmly")
        expect(heading).to_contain_text("Changes from v1 to v2 below")
        expect(page).to_have_url(re.compile(r"/\?tab=workflows&workflow=greeter&version=v2&compare=v1$"))
        expect(page.locator("#workflow-grant")).to_contain_text("Granted")
        expect(page.locator("#workflow-profile")).to_contain_text("bottleneck greet")
        shot(page, "41-workflow-diff")
        diff_address = page.url

        # Its run links to the run.
        run_link = page.locator("#workflow-runs a.run-link")
        expect(run_link).to_have_count(1)
        run_id = (run_link.get_attribute("href") or "").rpartition("run=")[2]
        assert len(run_id) == 32, run_id
        run_link.click()
        expect(page).to_have_url(re.compile(rf"/\?tab=runs&run={run_id}$"))
        expect(page.get_by_role("tab", name="Runs")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#run-detail")).to_contain_text(run_id[:12])
        expect(page.locator("#run-detail")).to_contain_text("succeeded")
        shot(page, "42-run-from-workflow")
        page.close()

        # The diff's address, shared: a fresh browser opens the same view.
        fresh = browser.new_context(viewport={"width": 1400, "height": 1100})
        shared = fresh.new_page()
        shared.goto(diff_address)
        expect(shared.get_by_role("tab", name="Workflows")).to_have_attribute("aria-selected", "true")
        expect(shared.locator("#workflows-table").get_by_role("gridcell", name="greeter", exact=True)).to_be_visible()
        expect(shared.locator("#workflow-heading")).to_contain_text("greeter v2")
        expect(shared.locator("#workflow-diff")).to_contain_text("+++ greeter v2")
        # An address naming a version that does not exist says so, and what does.
        shared.goto(f"{url}/?tab=workflows&workflow=greeter&version=v7")
        expect(shared.locator("#workflow-heading")).to_contain_text(
            "'greeter' has no version 'v7'; its versions, newest first: v2, v1"
        )
        expect(shared.locator("#workflow-versions input")).to_have_value("")
        expect(shared.locator("#workflows-table").get_by_role("gridcell", name="greeter", exact=True)).to_be_visible()
        shot(shared, "43-unknown-version")
        fresh.close()
    context.close()
