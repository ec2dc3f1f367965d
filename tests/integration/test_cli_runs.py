"""`agentflow runs show` in text and JSON, and `agentflow serve` / `python app.py` on a busy port."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow.cli import main
from tests.fakes.openai_server import Error, FakeLLM, Text
from tests.integration.helpers import workflow

ROOT = Path(__file__).resolve().parents[2]
REFUND = workflow(
    "refund",
    """
    inputs: {amount: {type: number, default: 120}}
    nodes:
      prepare: {type: transform, expr: "{amount: inputs.amount}"}
      total: {type: tool, tool: calculator, needs: [prepare], args: {expression: "{{ prepare.amount }} * 2"}}
      draft: {type: llm, needs: [total], prompt: "Write a note about {{ total }}"}
      sign_off: {type: approval, needs: [draft], message: "Refund {{ prepare.amount }}?\\nNote: {{ draft }}"}
    """,
)
BUSY = "port {port} on 127.0.0.1 is in use; stop the other server or set AGENTFLOW_PORT (or --port) to a free port"

CLI = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(tmp_path: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CLI:
    """`cli("runs", "show", ...)` -> (exit code, stdout), through the real entry point; models are the fake."""
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("AGENTFLOW_MODEL", "openai/test-model")
    monkeypatch.setenv("AGENTFLOW_API_BASE", fake_llm.base_url)
    monkeypatch.setenv("AGENTFLOW_API_KEY", "x")
    monkeypatch.setenv("AGENTFLOW_LLM_RETRIES", "0")

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(args))
        return code, capsys.readouterr().out

    return run


def start(cli: CLI, tmp_path: Path, source: str) -> dict[str, Any]:
    path = tmp_path / "flow.yaml"
    path.write_text(source)
    _, out = cli("run", str(path), "--json")
    result: dict[str, Any] = json.loads(out)
    return result


def event_lines(out: str) -> list[str]:
    """The event log of `runs show --events`, times and latencies masked (they differ run to run)."""
    lines = out.split("events:\n", 1)[1].splitlines()
    masked = (re.sub(r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  ", "  TIME  ", line) for line in lines)
    return [re.sub(r"\b\d+ ms\b", "N ms", line).rstrip() for line in masked]


def test_runs_show_events_prints_one_readable_line_per_event(cli: CLI, tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("Refund approved soon.", usage=(12, 4))
    run = start(cli, tmp_path, REFUND)
    assert run["status"] == "waiting_approval"

    code, out = cli("runs", "show", run["run_id"][:8], "--events")

    assert code == 0
    assert out.startswith(f"run {run['run_id']}  refund ")
    assert "waiting for approval at 'sign_off':" in out
    version = run["version"]
    assert event_lines(out) == [
        f"  TIME  run_started                                   refund ({version})",
        "  TIME  node_started        prepare (transform)",
        "  TIME  node_finished       prepare (transform)       succeeded, N ms",
        "  TIME  node_started        total (tool)",
        "  TIME  tool_call           total                     tool calculator, N ms",
        "  TIME  node_finished       total (tool)              succeeded, N ms",
        "  TIME  node_started        draft (llm)",
        "  TIME  llm_call            draft                     12 in + 4 out tokens, model openai/test-model, N ms,"
        " provider=openai",
        "  TIME  node_finished       draft (llm)               succeeded, 16 tokens, model openai/test-model, N ms",
        "  TIME  approval_requested  sign_off                  message: Refund 120? Note: Refund approved soon.",
    ]


def test_runs_show_events_names_the_error(cli: CLI, tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.default = Error(500, "the model is down")
    run = start(cli, tmp_path, REFUND)
    assert run["status"] == "failed"

    _, out = cli("runs", "show", run["run_id"], "--events")

    [node] = [line for line in event_lines(out) if "node_finished       draft" in line]
    assert node.startswith("  TIME  node_finished       draft (llm)               failed, error: ")
    assert "the model is down" in node
    [finished] = [line for line in event_lines(out) if " run_finished " in line]
    assert "failed, error: " in finished and "the model is down" in finished


def test_runs_show_json_includes_the_pending_approval(cli: CLI, tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("Refund approved soon.")
    run = start(cli, tmp_path, REFUND)

    code, out = cli("runs", "show", run["run_id"], "--json")

    shown = json.loads(out)
    assert code == 0 and shown["status"] == "waiting_approval"
    approval = shown["approval"]
    assert (approval["node_id"], approval["message"]) == ("sign_off", "Refund 120?\nNote: Refund approved soon.")
    assert shown["started_at"] <= approval["requested_at"]
    assert "events" not in shown

    _, out = cli("runs", "show", run["run_id"], "--json", "--events")
    assert [event["type"] for event in json.loads(out)["events"]][-1] == "approval_requested"


def test_a_decided_run_has_no_approval_in_its_json(cli: CLI, tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("Refund approved soon.")
    run = start(cli, tmp_path, REFUND)
    assert cli("approve", run["run_id"], "--json")[0] == 0

    shown = json.loads(cli("runs", "show", run["run_id"], "--json")[1])

    assert shown["status"] == "succeeded"
    assert "approval" not in shown


def server_env(tmp_path: Path, port: int | None) -> dict[str, str]:
    env = {**os.environ, "AGENTFLOW_HOME": str(tmp_path / "data")}
    env.pop("AGENTFLOW_PORT", None)
    if port is not None:
        env["AGENTFLOW_PORT"] = str(port)
    return env


@pytest.mark.slow
def test_a_busy_port_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        commands = {
            "python app.py": ([sys.executable, str(ROOT / "app.py")], port),
            "agentflow serve": ([sys.executable, "-m", "agentflow.cli", "serve"], port),
            "agentflow serve --port": ([sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)], None),
        }
        # Started together: each spends seconds importing the web app before it tries the port.
        processes = {
            name: subprocess.Popen(
                command,
                env=server_env(tmp_path / name.replace(" ", "-"), env_port),
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, (command, env_port) in commands.items()
        }
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=180)
            assert process.returncode == 2, (name, stderr)
            assert stderr.splitlines()[-1] == "error: " + BUSY.format(port=port), (name, stderr)
            assert "Traceback" not in stderr, name
            assert stdout == "", name


@pytest.mark.slow
def test_serve_answers_on_its_port_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port: bound, then released for the server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow.cli", "serve", "--port", str(port)],
        env=server_env(tmp_path, None),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put("")  # end of output: the process is gone

    threading.Thread(target=read, daemon=True).start()
    try:
        seen: list[str] = []
        while not seen or "Application startup complete" not in seen[-1]:
            seen.append(lines.get(timeout=180))
            assert seen[-1], "the server exited before it started:\n" + "".join(seen)
        assert f"AgentFlow starting on http://127.0.0.1:{port}" in "".join(seen)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).json()["status"] == "ok"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
