"""Time travel in the Runs tab: a person replays a finished run from its third node with an edited upstream
value, the new run opens in the console saying what it reused, and "Compare with…" shows the two runs' diff."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.e2e.server import fake_settings, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (a fixture)
from tests.fakes.openai_server import FakeLLM
from tests.integration.helpers import prompts
from tests.integration.test_replay import CHAIN, answer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]


def test_replay_from_here_and_compare_with_the_source(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    fake_llm: FakeLLM,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    fake_llm.responder = answer
    with serve(fake_settings(tmp_path / "data", fake_llm)) as url, httpx.Client(base_url=url, timeout=30) as api:
        assert api.post("/api/workflows", json={"source": CHAIN}).status_code == 201
        source = api.post("/api/runs", json={"workflow": "chain", "inputs": {"topic": "refunds"}}).json()["run_id"]
        page = browser.new_context(viewport={"width": 1400, "height": 1400}).new_page()
        page.goto(f"{url}/?tab=runs")
        table = page.locator("#runs-table")
        expect(table.get_by_role("gridcell", name="succeeded")).to_be_visible()  # the source run has ended
        table.get_by_role("gridcell", name=source[:12]).click()
        expect(page.locator("#run-detail")).to_contain_text(f"Run `{source}` — succeeded".replace("`", ""))
        before = len(fake_llm.requests)

        page.get_by_text("Time travel: replay from a node").click()
        page.locator("#replay-node input").click()
        page.get_by_role("option", name="c", exact=True).click()
        page.locator("#replay-edits textarea").fill("b.title=Edited in the browser")
        shot(page, "70-replay-from-here")
        page.locator("#replay-start").click()

        action = page.locator("#run-action")
        expect(action).to_contain_text("replayed from c: reused 2 node results (2 model calls, 30 tokens")
        detail = page.locator("#run-detail")
        expect(detail).to_contain_text("Replay of run")
        expect(detail).to_contain_text("succeeded")  # the new run, open in the console, ran to its end
        assert prompts(fake_llm.requests[before:]) == ["C titled Edited in the browser, calm", "D from C-out"]
        expect(page.locator("#run-console")).to_contain_text("C titled Edited in the browser")
        shot(page, "71-replay-opened")

        other = page.locator("#diff-other input")
        other.fill(source)
        other.press("Enter")
        page.locator("#diff-compare").click()
        diff = page.locator("#run-diff-table")
        expect(diff).to_be_visible()
        # a is the replay, b its source: a and b were reused, and b's edited title is the change marked.
        expect(diff.locator("tr", has_text="reused in a: not run there")).to_have_count(2)
        edited = diff.locator("tr.diff-changed", has_text="b (reused in a")
        expect(edited).to_contain_text('~ title: "Edited in the browser" → "Refund rules"')
        expect(diff.locator("tr", has_text="a (reused in a")).to_contain_text('= "A-out"')
        expect(diff.locator("tr", has_text="a (reused in a")).not_to_have_class("diff-changed")
        diff.scroll_into_view_if_needed()
        shot(page, "72-run-diff")
