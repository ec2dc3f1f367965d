"""The Evaluate tab as a person uses it: cases pasted, a scorer chosen, the evaluation run in the background,
each case and the aggregate shown, and the evaluation listed among the workflow's past ones (from MLflow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agentflow.runtime import AgentFlow
from tests.e2e.server import fake_settings, serve
from tests.e2e.test_browser import TIMEOUT_MS, browser, shot  # noqa: F401 (a fixture)
from tests.fakes.openai_server import FakeLLM, Reply, Text
from tests.integration.helpers import PERSON, workflow

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]

CAPITAL = workflow(
    "capitals",
    """
    inputs: {country: {type: string}}
    nodes:
      answer: {type: llm, prompt: "Capital of {{ inputs.country }}? One word."}
    outputs: {capital: "{{ answer }}"}
    """,
)
ANSWERS = {"France": "Paris", "Peru": "Lima", "Canada": "Toronto"}  # the last one is wrong


def capitals(body: dict[str, Any]) -> Reply | None:
    text = body["messages"][-1]["content"]
    return next((Text(city) for country, city in ANSWERS.items() if country in text), None)


def test_an_evaluation_runs_from_the_tab_and_is_listed_with_the_past_ones(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
    fake_llm: FakeLLM,
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=90_000)  # the server imports MLflow and creates its store on the first evaluation
    fake_llm.responder = capitals
    settings = fake_settings(tmp_path / "data", fake_llm)
    flow = AgentFlow.open(settings)
    flow.grant_version(flow.save_workflow(CAPITAL), by=PERSON)
    flow.close()
    cases = [("France", "Paris"), ("Peru", "Lima"), ("Canada", "Ottawa")]
    data = "\n".join(json.dumps({"inputs": {"country": country}, "expected": city}) for country, city in cases)
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    with serve(settings) as url:
        page = context.new_page()
        page.goto(f"{url}/?tab=evaluate", timeout=TIMEOUT_MS)
        expect(page.get_by_role("tab", name="Evaluate", selected=True)).to_be_visible()
        expect(page.locator("#eval-workflow input")).to_have_value("capitals")
        page.locator("#eval-data .cm-content").fill(data)
        page.locator("#eval-run").click()

        status, table = page.locator("#eval-status"), page.locator("#eval-cases")
        summary = page.locator("#eval-summary")
        expect(status).to_contain_text("Done: 3 cases")
        for city in ("Paris", "Lima", "Toronto", "Ottawa"):
            expect(table).to_contain_text(city)
        expect(summary).to_contain_text("passed 2/3 (67%)")
        expect(summary).to_contain_text("exact_match 0.67")
        expect(page.get_by_text("Past evaluations (MLflow)")).to_be_visible()
        expect(page.locator("table").filter(has_text="MLflow run").last).to_contain_text("67%")
        shot(page, "75-evaluate")

        page.locator("#eval-data .cm-content").fill('{"inputs": {"land": "Peru"}, "expected": "Lima"}')
        page.locator("#eval-run").click()
        expect(status).to_contain_text("Cannot evaluate: dataset:1: unknown input 'land'")
