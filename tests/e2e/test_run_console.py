"""The Runs tab as a person uses it: a run appears and grows live, with no reload and no timer; its
console shows the prompt sent and the reply; the person approves from it; its address opens it in a
fresh browser.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.server import fake_settings, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (a fixture)
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import workflow

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]

SUMMARISE = workflow(
    "summarise",
    """
    inputs: {text: {type: string}}
    nodes:
      draft: {type: llm, prompt: "Summarise for the board: {{ inputs.text }}"}
      review: {type: approval, needs: [draft], message: "Publish this summary? {{ draft }}"}
      publish: {type: transform, needs: [review], expr: "{summary: draft, note: review.comment}"}
    outputs: {result: "{{ publish }}"}
    """,
)


def test_a_run_streams_into_the_console_and_is_approved_there(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    fake_llm: FakeLLM,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    answer = threading.Event()

    def held_reply(body: dict[str, Any]) -> Text:
        answer.wait(60)  # the model "thinks" until the test has seen the node running
        return Text("Revenue rose 12% on strong cloud sales.")

    fake_llm.responder = held_reply
    with serve(fake_settings(tmp_path / "data", fake_llm)) as url, httpx.Client(base_url=url, timeout=30) as api:
        assert api.post("/api/workflows", json={"source": SUMMARISE}).status_code == 201
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.goto(f"{url}/?tab=runs")
        expect(page.get_by_role("tab", name="Runs", selected=True)).to_be_visible()
        table = page.locator("#runs-table")
        expect(page.locator("#run-detail")).to_contain_text("Click a run")

        # A run started elsewhere appears in the open list, live.
        run_id = api.post("/api/runs", json={"workflow": "summarise", "inputs": {"text": "Q3 numbers"}}).json()[
            "run_id"
        ]
        row = table.get_by_role("gridcell", name=run_id[:12])
        expect(row).to_be_visible()
        expect(table.get_by_role("gridcell", name="running")).to_be_visible()
        row.click()
        expect(page).to_have_url(re.compile(rf"\?tab=runs&run={run_id}"))
        console = page.locator("#run-console")
        expect(console.locator(".console-node", has_text="draft")).to_contain_text("running")
        page.get_by_role("tab", name="Timeline").click()
        expect(page.locator("#run-gantt .bar-running")).to_have_count(1)
        shot(page, "30-run-console-running")

        # The model answers: the console grows by itself, with the prompt sent and the reply.
        answer.set()
        page.get_by_role("tab", name="Console").click()
        call = console.locator(".console-llm")
        expect(call).to_contain_text("model call · openai/test-model")
        call.locator("summary").click()
        expect(call.locator(".console-prompt")).to_contain_text("Summarise for the board: Q3 numbers")
        expect(call.locator(".console-reply")).to_contain_text("Revenue rose 12% on strong cloud sales.")
        approval = page.locator("#run-approval")
        expect(approval).to_contain_text("Publish this summary? Revenue rose 12%")
        expect(console.locator(".console-waiting")).to_be_visible()
        shot(page, "31-run-console-waiting")

        # The person approves from the console; the run finishes while they watch.
        page.locator("#run-comment textarea").fill("good to go")
        page.locator("#run-approve").click()
        expect(page.locator("#run-action")).to_contain_text("Approved `review`".replace("`", ""))
        expect(page.locator("#run-detail")).to_contain_text("succeeded")
        page.get_by_role("tab", name="Outputs").click()
        expect(page.locator("#run-outputs")).to_contain_text("good to go")
        shot(page, "32-run-console-done")

        # Its address opens it in a fresh browser (nothing in common with the first one).
        fresh = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        fresh.goto(f"{url}/?tab=runs&run={run_id[:12]}")
        expect(fresh.locator("#run-detail")).to_contain_text(f"Run {run_id}")
        expect(fresh.locator("#run-detail")).to_contain_text("succeeded")
        expect(fresh.locator("#run-console")).to_contain_text("Summarise for the board")
        version_link = fresh.locator("#run-detail a", has_text="summarise")
        expect(version_link).to_have_attribute("href", re.compile(r"\?tab=workflows&workflow=summarise&version="))
        fresh.reload()  # survives a reload
        expect(fresh.locator("#run-detail")).to_contain_text(f"Run {run_id}")
