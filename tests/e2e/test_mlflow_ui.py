"""The MLflow tab in a real browser: MLflow's UI renders inside the iframe, runs link to their traces, and the
embedded UI is behind the app's login (SECURITY.md promise 9, "embedded UIs").

Screenshots go to `test-artifacts/mlflow-*.png`.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from agentflow.settings import Settings
from agentflow.web.auth import derive_api_token
from tests.e2e.server import serve
from tests.e2e.test_browser import SHOUT, TIMEOUT_MS, browser, shot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_browser.py

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]

PASSWORD = "correct horse battery staple"
TOKEN = derive_api_token(PASSWORD, "admin")
MLFLOW_TIMEOUT_MS = 90_000  # the first visit starts MLflow's server (~5 s here, more on a busy machine)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context
    context.close()


def open_mlflow_tab(page: Page) -> None:
    from playwright.sync_api import expect

    page.get_by_role("tab", name="MLflow").click()
    where = page.locator("#mlflow-where")
    expect(where).to_contain_text("Traces are stored in sqlite:///")
    expect(where.get_by_role("link", name="open MLflow in a new tab")).to_have_attribute("target", "_blank")
    frame = page.frame_locator("#mlflow-frame iframe")
    expect(frame.get_by_role("link", name="Experiments").first).to_be_visible(timeout=MLFLOW_TIMEOUT_MS)
    expect(frame.get_by_text("Welcome to MLflow")).to_be_visible()


def finish_a_run(url: str, headers: dict[str, str] | None = None) -> str:
    with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
        assert api.post("/api/workflows", json={"source": SHOUT}).status_code == 201
        run_id: str = api.post("/api/runs", json={"workflow": "shout", "inputs": {"text": "hi"}}).json()["run_id"]
        deadline = time.monotonic() + 30
        while (status := api.get(f"/api/runs/{run_id}").json()["status"]) in ("queued", "running"):
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.05)
        assert status == "succeeded"
    return run_id


def test_the_mlflow_tab_shows_mlflow_and_runs_link_to_their_traces(context: BrowserContext, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with serve(Settings(home=tmp_path / "data")) as url:  # tracing is on by default
        page = context.new_page()
        page.goto(url)
        started = time.perf_counter()
        open_mlflow_tab(page)
        print(f"MLflow rendered in the tab {time.perf_counter() - started:.1f} s after the click")
        shot(page, "mlflow-01-tab")

        run_id = finish_a_run(url)
        page.get_by_role("tab", name="Runs").click()
        runs = page.locator("#runs-table")
        expect(runs.get_by_role("gridcell", name="succeeded")).to_be_visible()
        runs.get_by_role("gridcell", name="shout", exact=True).click()
        expect(page.locator("#run-detail")).to_contain_text(run_id)
        # The app's exporter writes the trace in the background; the open panel shows the link when it is there.
        link = page.locator("#run-trace-link")
        expect(link).to_have_text("open it in MLflow", timeout=MLFLOW_TIMEOUT_MS)
        shot(page, "mlflow-02-run-with-trace")
        with context.expect_page() as opened:
            link.click()
        trace_page = opened.value
        expect(trace_page.get_by_text("hi!").first).to_be_visible(timeout=MLFLOW_TIMEOUT_MS)  # the run's output
        assert "/mlflow/#/experiments/" in trace_page.url and "selectedEvaluationId=tr-" in trace_page.url
        expect(trace_page.get_by_text("shout").first).to_be_visible()
        shot(trace_page, "mlflow-03-trace")


def raw_get(url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    """GET `path` byte for byte (HTTP clients would normalise dot segments away), with the token."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", host or address.netloc)
        connection.putheader("Authorization", f"Bearer {TOKEN}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_behind_the_login_the_tab_works_and_nothing_else_gets_in(context: BrowserContext, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with serve(Settings(home=tmp_path / "data", password=PASSWORD)) as url:  # 127.0.0.1 with a password: auth on
        anonymous = httpx.Client(base_url=url, timeout=60)
        assert anonymous.get("/mlflow/ajax-api/2.0/mlflow/experiments/search").status_code == 401
        browsing = anonymous.get("/mlflow/", headers={"Accept": "text/html"})
        assert (browsing.status_code, browsing.headers["location"]) == (303, "/")  # to the login form
        page = context.new_page()
        page.goto(f"{url}/mlflow/")
        expect(page.get_by_role("button", name="Login")).to_be_visible()
        shot(page, "mlflow-04-login")

        page.get_by_label("username").fill("admin")
        page.get_by_label("password").fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        open_mlflow_tab(page)  # the frame's requests carry the login cookie
        shot(page, "mlflow-05-tab-after-login")

        bearer = {"Authorization": f"Bearer {TOKEN}"}
        search = anonymous.get("/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=5", headers=bearer)
        assert search.status_code == 200 and "experiments" in search.json()
        for path in (
            "/mlflow/static-files/../../../../../../etc/passwd",
            "/mlflow/static-files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/mlflow/static-files/%252e%252e/%252e%252e/etc/passwd",
            "/mlflow/..%2f..%2f..%2fetc/passwd",
        ):
            status, body = raw_get(url, path)
            assert status in (400, 403, 404), path
            assert b"root:" not in body, path
        assert raw_get(url, "/mlflow/", host="evil.example")[0] == 403
        assert raw_get(url, "/mlflow/", host="ada-agentflow.hf.space")[0] == 200
