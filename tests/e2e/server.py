"""The real app — REST API, Gradio UI, executor — served by uvicorn from a background thread.

`serve(settings)` starts it on a free port of 127.0.0.1 with its lifespan (so
the executor and Gradio's queue run) and yields the base URL.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from agentflow.settings import Price, Settings
from agentflow.web.server import create_app
from agentflow.web.ui import build_ui
from tests.fakes.openai_server import FakeLLM

if TYPE_CHECKING:
    from playwright.sync_api import Page

START_TIMEOUT = 60.0


class _Server(uvicorn.Server):
    """A uvicorn server that says when it accepts connections (after the app's lifespan started)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


def fake_settings(home: Path, fake_llm: FakeLLM) -> Settings:
    """Settings whose every model — the assistant's included — is the scripted fake.

    No trace export: each exporter is a child process importing MLflow, whose start-up would compete
    with the browser for these machines' two cores; tracing has its own tests (test_tracing, test_mlflow_ui).
    """
    return Settings(
        tracing=False,
        home=home,
        model="openai/test-model",
        api_base=fake_llm.base_url,
        api_key="test-key",
        llm_timeout=10.0,
        llm_retries=0,
        prices={"openai/test-model": Price(input_per_token=1e-6, output_per_token=2e-6)},
    )


@contextmanager
def serve(settings: Settings, *, port: int = 0, ui: bool = True) -> Iterator[str]:
    """Serve the whole app until the block ends; yields e.g. `http://127.0.0.1:43117`.

    `port=0` picks a free port; pass a previous URL's port to restart "the same" server
    (a browser keeps localStorage per origin). `ui=False` serves the API alone (quicker to start).
    """
    app = create_app(settings, build_ui=build_ui if ui else None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="agentflow-e2e")
    thread.start()
    # Wake up when the server is ready, or soon after its thread died (a failed lifespan).
    waited = 0.0
    while not server.ready.wait(timeout=0.25):
        waited += 0.25
        if not thread.is_alive():
            raise RuntimeError("the AgentFlow server stopped during start-up; see the log above")
        if waited > START_TIMEOUT:
            raise RuntimeError(f"the AgentFlow server did not start within {START_TIMEOUT:g} s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def record_console(page: Page) -> None:
    """Print the page's console and errors (shown with a failing test's output, beside the server's log)."""
    page.on("console", lambda message: print(f"browser console {message.type}: {message.text}"))
    page.on("pageerror", lambda error: print(f"browser page error: {error}"))
