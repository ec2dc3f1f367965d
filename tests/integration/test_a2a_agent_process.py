"""`agentflow agent serve` as a real subprocess: its card, a message answered, its imports, registration."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from agentflow.a2a.client import call_agent
from agentflow.settings import Settings
from agentflow.trust.egress import EgressPolicy
from tests.e2e.server import serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.yaml"
START_TIMEOUT_S = 120.0
OPENED = EgressPolicy(hosts=None, allow_internal=("127.0.0.1",))
_SERVING = re.compile(r"over A2A at (http://127\.0\.0\.1:\d+)(/a2a/[a-z0-9-]+/)")


def agent_command(home: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agentflow.cli",
        "agent",
        "serve",
        str(HELLO),
        "--port",
        "0",
        "--home",
        str(home),
        *extra,
    ]


def agent_env() -> dict[str, str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    for name in ("AGENTFLOW_SERVER", "AGENTFLOW_PASSWORD", "AGENTFLOW_API_TOKEN", "AGENTFLOW_DATABASE_URL"):
        env.pop(name, None)
    return env


@contextmanager
def agent_process(home: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[str], list[str]]]:
    """Start the agent; yields (its A2A URL, the process, its stderr lines so far) once it serves."""
    process = subprocess.Popen(
        agent_command(home, *extra),
        env=agent_env(),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            line = lines.get(timeout=START_TIMEOUT_S)
            assert line, "the agent process stopped during start-up:\n" + "".join(log)
            if found := _SERVING.search(line):
                break
        yield found.group(1) + found.group(2), process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


async def test_the_agent_serves_its_card_and_answers(tmp_path: Path) -> None:
    with agent_process(tmp_path / "agent") as (url, process, _):
        async with httpx.AsyncClient(timeout=30) as http:
            card = (await http.get(url + ".well-known/agent-card.json")).json()
            legacy = (await http.get(url + ".well-known/agent.json")).json()
            health = (await http.get(url.split("/a2a/")[0] + "/health")).json()
        assert card == legacy
        assert card["name"] == "hello" and card["capabilities"]["streaming"] is True
        assert health == {"status": "ok", "workflow": "hello", "version": "'hello' v1"}
        reply = await call_agent(url, "Ada", timeout=30, policy=OPENED)
        assert (reply.state, reply.text) == ("completed", "Hello, Ada!")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_the_agent_imports_no_ui_mlflow_server_or_chat(tmp_path: Path) -> None:
    done = subprocess.run(
        [*agent_command(tmp_path / "agent"), "--check-imports"],
        env=agent_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "imported and not needed: none"


def test_register_without_a_token_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [*agent_command(tmp_path / "agent"), "--register", "http://127.0.0.1:9"],
        env=agent_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    assert done.returncode == 2
    assert "--register needs --token" in done.stderr


def test_the_agent_registers_and_deregisters_on_sigterm(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "orchestrator", tracing=False, egress_allow_internal=("127.0.0.1",))
    with serve(settings, ui=False) as orchestrator, httpx.Client(base_url=orchestrator, timeout=30) as api:
        token = api.post("/api/agents/tokens", json={"note": "test"}).json()["token"]
        with agent_process(tmp_path / "agent", "--register", orchestrator, "--token", token) as (url, process, log):
            agents = wait_for(lambda: [a for a in api.get("/api/agents").json() if a["name"] == "hello"])
            assert agents[0]["url"] == url
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        assert wait_for(lambda: not [a for a in api.get("/api/agents").json() if a["name"] == "hello"])
        assert any("registered with" in line for line in log)


def wait_for(check, deadline_s: float = 30.0):  # type: ignore[no-untyped-def]
    """Until `check()` is truthy (an observable state), within a deadline."""
    end = time.monotonic() + deadline_s
    while not (result := check()):
        assert time.monotonic() < end, "the state was not reached in time"
        time.sleep(0.05)
    return result
