"""The web UI in a real browser: Playwright driving Debian's Chromium against the real server.

Screenshots of every step go to `test-artifacts/` (git-ignored); the Chat tab
after a run is also saved as `docs/screenshot-chat.png` for the README when AGENTFLOW_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI, Request

from tests.e2e.server import fake_settings, record_console, serve
from tests.fakes.openai_server import FakeLLM, ServerThread, Text, ToolCalls
from tests.integration.helpers import workflow

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [
    pytest.mark.slow,
    # Raised inside gradio's queue (gradio 6.31 with pandas 3), not by our code.
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
README_SCREENSHOT = ROOT / "docs" / "screenshot-chat.png"
CHROMIUM = Path(os.environ.get("AGENTFLOW_CHROMIUM", "/usr/bin/chromium"))
# Offline machines: no downloads, no phoning home (see FACTS.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000  # the first chat turn imports LiteLLM (several seconds on a cold machine)
HOW_TO_FIX = "run `make test`, which installs it (or: sudo apt-get install -y chromium)"

SHOUT = workflow(
    "shout",
    """
    inputs: {text: {type: string, description: what to shout}}
    nodes:
      shout: {type: transform, expr: "join('', [inputs.text, '!'])"}
    outputs: {result: "{{ shout }}"}
    """,
).replace("metadata: {name: shout}", "metadata: {name: shout, description: Shout the text}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.fail(f"the Python package playwright is missing: {HOW_TO_FIX}")
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: {HOW_TO_FIX}")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Error as exc:
            pytest.fail(f"Chromium at {CHROMIUM} did not start ({exc}): {HOW_TO_FIX}")
        yield launched
        launched.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_describe_run_and_watch_a_workflow(browser: Browser, tmp_path: Path, fake_llm: FakeLLM) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    settings = fake_settings(tmp_path / "data", fake_llm)
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": SHOUT, "summary": "shout the text"})]))
    fake_llm.enqueue(Text("I wrote a workflow that shouts your text."))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})

    with serve(settings) as url:
        page = context.new_page()
        record_console(page)
        page.goto(url)
        message = page.locator("#chat-input textarea")
        expect(message).to_be_editable()
        expect(page.locator("#validation-status")).to_contain_text("No workflow yet")
        shot(page, "01-chat-empty")

        # Describe it: the assistant's YAML appears beside the conversation, marked valid.
        message.fill("I want a workflow that shouts my text")
        message.press("Enter")
        editor = page.locator("#yaml-editor .cm-content")
        expect(editor).to_contain_text("name: shout, description: Shout the text")
        expect(page.locator("#validation-status")).to_contain_text("Valid — draft 1")
        expect(page.locator("#chatbot")).to_contain_text("I wrote a workflow that shouts your text.")
        shot(page, "02-workflow-written")

        # Typing re-validates at once, without saving; errors carry line numbers.
        status = page.locator("#validation-status")
        node_line = editor.locator(".cm-line").filter(has_text="type: transform")
        node_line.click(position={"x": 2, "y": 2})
        page.keyboard.press("End")
        page.keyboard.type(" oops")
        expect(status).to_contain_text("Not valid")
        expect(status).to_contain_text("line 7")
        shot(page, "03-invalid-edit")
        page.locator("#apply-edit").click()  # refused: the text stays for fixing, nothing is saved
        expect(status).to_contain_text("Not valid")
        expect(editor).to_contain_text("oops")
        node_line.click(position={"x": 2, "y": 2})
        page.keyboard.press("End")
        for _ in " oops":
            page.keyboard.press("Backspace")
        expect(status).to_contain_text("Valid — draft 1")

        # A valid hand edit is applied as the next draft by "Apply edit", with its diff.
        editor.locator(".cm-line").filter(has_text="description: Shout the text").click(position={"x": 2, "y": 2})
        page.keyboard.press("End")
        page.keyboard.press("ArrowLeft")
        page.keyboard.type(" loudly")
        expect(status).to_contain_text("not applied yet")
        page.locator("#apply-edit").click()
        expect(status).to_contain_text("Valid — draft 2")
        page.get_by_text("Last edit (diff)").click()
        diff = page.locator("#edit-diff")
        expect(diff).to_contain_text("-metadata: {name: shout, description: Shout the text}")
        expect(diff).to_contain_text("+metadata: {name: shout, description: Shout the text loudly}")

        # The Run form comes from spec.inputs; the run goes through the executor.
        field = page.locator(".run-input").filter(has_text="text (string)")
        field.locator("textarea").fill("hey")
        page.locator("#run-button").click()
        expect(page.locator("#run-status")).to_contain_text("succeeded")
        expect(page.locator("#chatbot")).to_contain_text("hey!")
        shot(page, "04-run-succeeded")
        if os.environ.get("AGENTFLOW_UPDATE_SCREENSHOTS"):  # refresh the README's picture on request only
            page.screenshot(path=str(README_SCREENSHOT))

        # The Runs tab lists it; clicking it shows its per-node timeline.
        page.get_by_role("tab", name="Runs").click()
        runs = page.locator("#runs-table")
        expect(runs.get_by_role("gridcell", name="succeeded")).to_be_visible()
        runs.get_by_role("gridcell", name="shout", exact=True).click()
        expect(page.locator("#run-detail")).to_contain_text("succeeded")
        expect(page.locator("#run-console")).to_contain_text("shout")
        page.get_by_role("tab", name="Timeline").click()
        expect(page.locator("#run-nodes").get_by_role("gridcell", name="transform")).to_be_visible()
        # The Gantt chart of its nodes, with the workflow's bottleneck named.
        expect(page.locator("#run-gantt svg")).to_be_visible()
        expect(page.locator("#run-bottleneck")).to_contain_text("Bottleneck of `shout`".replace("`", ""))
        shot(page, "05-runs")

        # Running saved the workflow: the Workflows tab can open it in the chat again.
        page.get_by_role("tab", name="Workflows").click()
        page.locator("#workflows-table").get_by_role("gridcell", name="shout", exact=True).click()
        expect(page.locator("#open-in-chat")).to_be_enabled()
        shot(page, "06-workflows")
        page.locator("#open-in-chat").click()
        expect(page.locator("#chatbot")).to_contain_text("Opened 'shout'")
        expect(page.get_by_role("tab", name="Chat")).to_have_attribute("aria-selected", "true")

        page.get_by_role("tab", name="Costs").click()
        expect(page.locator("#costs-summary")).to_contain_text("1 run started")
        shot(page, "07-costs")
        page.get_by_role("tab", name="Settings").click()
        expect(page.locator("#settings-models")).to_contain_text("openai/test-model")
        shot(page, "08-settings")

        # A reload keeps the conversation and the workflow (the session id lives in localStorage).
        page.reload()
        expect(page.locator("#chatbot")).to_contain_text("I wrote a workflow that shouts your text.")
        expect(page.locator("#yaml-editor .cm-content")).to_contain_text("Shout the text loudly")
        expect(page.locator("#validation-status")).to_contain_text("Valid — draft 2")
        page.close()
    port = urlsplit(url).port or 0

    # So does restarting the server: same data directory, same address, a new tab.
    with serve(settings, port=port) as url:
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#chatbot")).to_contain_text("hey!")
        expect(page.locator("#yaml-editor .cm-content")).to_contain_text("Shout the text loudly")
        expect(page.locator("#validation-status")).to_contain_text("Valid — draft 2")
        shot(page, "09-after-restart")
        page.close()
    context.close()


def test_approve_rerun_and_cancel_from_the_runs_tab(browser: Browser, tmp_path: Path, fake_llm: FakeLLM) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    with serve(fake_settings(tmp_path / "data", fake_llm)) as url:
        page = context.new_page()
        page.goto(url)
        message = page.locator("#chat-input textarea")
        expect(page.locator("#validation-status")).to_contain_text("No workflow yet")
        message.fill("/new approval")
        message.press("Enter")
        expect(page.locator("#yaml-editor .cm-content")).to_contain_text("name: approval")
        amount = page.locator(".run-input").filter(has_text="amount (number)")
        amount.locator("textarea").fill("99")  # a string from the form; the engine coerces it
        page.locator("#run-button").click()
        expect(page.locator("#run-status")).to_contain_text("waiting_approval")

        page.get_by_role("tab", name="Runs").click()
        page.locator("#runs-table").get_by_role("gridcell", name="waiting_approval").click()
        expect(page.locator("#run-approval")).to_contain_text("Refund 99 EUR to ACME Corp?")
        page.get_by_label("Comment (for approve / reject)").fill("ok for Q3")
        shot(page, "10-waiting-for-approval")
        page.get_by_role("button", name="Approve").click()
        expect(page.locator("#run-action")).to_contain_text("Approved sign_off")
        # The executor continues the run by itself; the live list and the panel follow.
        detail = page.locator("#run-detail")
        expect(detail).to_contain_text("— succeeded")
        page.get_by_role("tab", name="Outputs").click()
        expect(page.locator("#run-outputs")).to_contain_text("ok for Q3")
        shot(page, "11-approved")

        page.get_by_role("button", name="Re-run").click()
        expect(page.locator("#run-action")).to_contain_text("Started run")
        expect(detail).to_contain_text("— waiting_approval")
        page.get_by_role("button", name="Cancel run").click()
        expect(detail).to_contain_text("— cancelled")
        expect(page.locator("#runs-table").get_by_role("gridcell", name="cancelled")).to_be_visible()
        shot(page, "12-cancelled")
        page.close()
    context.close()


def test_a_person_grants_in_the_browser_and_then_the_run_works(
    browser: Browser, tmp_path: Path, fake_llm: FakeLLM
) -> None:
    """The assistant's workflow reaches the network: it waits for the person's Grant, then runs."""
    from dataclasses import replace

    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    received: list[str] = []
    listener = FastAPI()

    @listener.post("/notify")
    async def notify(request: Request) -> dict[str, bool]:
        received.append((await request.body()).decode())
        return {"ok": True}

    server = ServerThread(listener)
    server.start()
    notifier = workflow(
        "notify",
        f"""
        inputs: {{text: {{type: string, description: what to send}}}}
        nodes:
          send:
            type: tool
            tool: http_request
            args: {{method: POST, url: "{server.url}/notify", body: "{{{{ inputs.text }}}}"}}
        outputs: {{status: "{{{{ send.status }}}}"}}
        """,
    )
    fake_llm.enqueue(ToolCalls([("write_workflow", {"yaml": notifier, "summary": "notify"})]))
    fake_llm.enqueue(ToolCalls([("run_workflow", {"inputs": {"text": "from the model"}})]))
    fake_llm.enqueue(Text("It needs your grant first: it posts to your server."))
    # The operator opened loopback, so only the grant stands between the draft and the listener.
    settings = replace(fake_settings(tmp_path / "data", fake_llm), egress_allow_internal=("127.0.0.1",))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        with serve(settings) as url:
            page = context.new_page()
            page.goto(url)
            message = page.locator("#chat-input textarea")
            # The page has loaded its session (events are wired) once the status says so.
            expect(page.locator("#validation-status")).to_contain_text("No workflow yet")
            message.fill("notify my server when something happens")
            message.press("Enter")
            review = page.locator("#grant-review")
            expect(review).to_contain_text("Needs your grant before it can run")
            expect(review).to_contain_text("tool http_request")
            expect(review).to_contain_text("egress to 127.0.0.1")
            assert received == []
            shot(page, "13-needs-grant")

            page.locator("#grant-button").click()
            expect(page.locator("#chatbot")).to_contain_text("Granted by web:local")
            expect(page.locator("#grant-button")).to_be_hidden()

            page.locator("#run-button").click()  # the required input is empty: refused, said under the form
            expect(page.locator("#run-status")).to_contain_text("Not run")
            expect(page.locator("#run-status")).to_contain_text("missing input 'text'")
            field = page.locator(".run-input").filter(has_text="text (string)")
            field.locator("textarea").fill("hello listener")
            page.locator("#run-button").click()
            expect(page.locator("#run-status")).to_contain_text("succeeded")
            assert received == ["hello listener"]
            shot(page, "14-granted-and-ran")

            # Typing and clicking Apply at once saves what was typed last, every time.
            editor = page.locator("#yaml-editor .cm-content")
            editor.locator(".cm-line").filter(has_text="metadata:").click(position={"x": 2, "y": 2})
            page.keyboard.press("End")
            page.keyboard.type("  # fast")
            page.locator("#apply-edit").click()
            expect(page.locator("#validation-status")).to_contain_text("Valid — draft 2")
            page.get_by_text("Last edit (diff)").click()
            expect(page.locator("#edit-diff")).to_contain_text("# fast")
            page.close()
    finally:
        context.close()
        server.stop()


def test_apply_reads_the_editor_text_in_the_browser(browser: Browser, tmp_path: Path, fake_llm: FakeLLM) -> None:
    """The script Apply runs finds CodeMirror's document (a CodeMirror upgrade that moves it fails here)."""
    from playwright.sync_api import expect

    from agentflow.web.ui.chat import CHECK_TEXT_JS, EDITOR_TEXT_JS

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context()
    with serve(fake_settings(tmp_path / "data", fake_llm)) as url:
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#validation-status")).to_contain_text("No workflow yet")
        page.locator("#chat-input textarea").fill("/new hello")
        page.locator("#chat-input textarea").press("Enter")
        expect(page.locator("#yaml-editor .cm-content")).to_contain_text("name: hello")
        session, text, key, stamp = page.evaluate(f"({EDITOR_TEXT_JS})('s', 'stale', 'k', '')")
        assert (session, key) == ("s", "k") and float(stamp) > 0
        assert text != "stale" and "name: hello" in text and text.count("\n") > 5
        session, text, stamp = page.evaluate(f"({CHECK_TEXT_JS})('s', 'stale', '')")
        assert text != "stale" and "name: hello" in text
        page.close()
    context.close()
