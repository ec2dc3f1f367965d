"""A real AgentFlow server in its own process, for the SDK and `agentflow --server` tests.

It is the app `agentflow serve` starts (REST API, SSE streams, the run executor, auth), served by
uvicorn from `create_app` without the Gradio UI: these tests never open a page, and building the
UI would double the start-up. Its models are the test session's fake LLM; it needs the API token.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.openai_server import FakeLLM

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sdk-test-token-0123456789abcdef"
PASSWORD = "sdk-test-password"
START_TIMEOUT_S = 180.0
_LISTENING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


@dataclass(frozen=True)
class ServerProcess:
    url: str
    token: str
    home: Path
    process: subprocess.Popen[str]


def server_env(home: Path, fake_llm: FakeLLM) -> dict[str, str]:
    env = {
        **os.environ,
        "AGENTFLOW_HOME": str(home),
        "AGENTFLOW_MODEL": "openai/test-model",
        "AGENTFLOW_API_BASE": fake_llm.base_url,
        "AGENTFLOW_API_KEY": "test-key",
        "AGENTFLOW_LLM_RETRIES": "0",
        "AGENTFLOW_TRACING": "0",
        "AGENTFLOW_PASSWORD": PASSWORD,
        "AGENTFLOW_API_TOKEN": TOKEN,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    for name in ("AGENTFLOW_SERVER", "AGENTFLOW_PORT", "AGENTFLOW_HOST"):
        env.pop(name, None)
    return env


@contextmanager
def server_process(home: Path, fake_llm: FakeLLM) -> Iterator[ServerProcess]:
    """Start the server on a free port of 127.0.0.1; yields once it accepts requests; stops it (Ctrl-C) after."""
    command = [sys.executable, "-m", "uvicorn", "--factory", "agentflow.web.server:create_app"]
    command += ["--host", "127.0.0.1", "--port", "0", "--log-level", "info", "--timeout-graceful-shutdown", "2"]
    process = subprocess.Popen(
        command, env=server_env(home, fake_llm), cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            lines.put(line)
        lines.put("")  # the process is gone

    threading.Thread(target=read, daemon=True, name="agentflow-server-log").start()
    try:
        while True:
            line = lines.get(timeout=START_TIMEOUT_S)
            if not line:
                raise RuntimeError("the AgentFlow server exited during start-up:\n" + "".join(log))
            listening = _LISTENING.search(line)
            if listening:
                break
        yield ServerProcess(url=listening.group(1), token=TOKEN, home=home, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
