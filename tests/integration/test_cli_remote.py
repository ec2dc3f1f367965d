"""`agentflow --server URL run|runs|approve|cancel|logs` against a real server process, and `agentflow logs` locally."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.client import AgentFlowClient
from agentflow.progress import event_line
from tests.fakes.openai_server import FakeLLM
from tests.integration.helpers import workflow
from tests.integration.server_process import ROOT, ServerProcess, server_process

EXAMPLES = ROOT / "examples"
HELLO = EXAMPLES / "hello.yaml"
APPROVAL = EXAMPLES / "approval.yaml"
FOLLOW_TIMEOUT_S = 120.0
pytestmark = pytest.mark.slow

Result = tuple[int, str, str]
CLI = Callable[..., Result]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_llm_server: FakeLLM) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("server") / "data", fake_llm_server) as running:
        yield running


@pytest.fixture
def local_home(tmp_path: Path) -> Path:
    return tmp_path / "local-data"


@pytest.fixture
def cli(
    local_home: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> CLI:
    """`cli(*args)` -> (exit code, stdout, stderr) through the real entry point; local data in `local_home`."""
    monkeypatch.setenv("AGENTFLOW_HOME", str(local_home))
    monkeypatch.setenv("AGENTFLOW_MODEL", "openai/test-model")
    monkeypatch.setenv("AGENTFLOW_API_BASE", fake_llm.base_url)
    monkeypatch.setenv("AGENTFLOW_API_KEY", "fake-test-key")
    monkeypatch.delenv("AGENTFLOW_SERVER", raising=False)
    monkeypatch.delenv("AGENTFLOW_API_TOKEN", raising=False)

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def remote(cli: CLI, server: ServerProcess, local_home: Path) -> Iterator[CLI]:
    """`remote(*args)`: `agentflow --server URL --token T *args`; it must never touch the local data directory."""
    yield lambda *args: cli("--server", server.url, "--token", server.token, *args)
    assert not local_home.exists(), "a command against the server created the local data directory"


def masked(text: str) -> str:
    """Output with what differs between two runs of the same workflow (ids, times, latencies) replaced."""
    text = re.sub(r"\b[0-9a-f]{32}\b", "RUN", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{3})?", "TIME", text)
    return re.sub(r"\b\d+ ms\b", "N ms", text)


def run_id_in(out: str) -> str:
    found = re.search(r"as run ([0-9a-f]{32})", out)
    assert found, out
    return found.group(1)


# -- the same output as the local commands --------------------------------------------


def test_run_against_a_server_prints_what_a_local_run_prints(
    cli: CLI, remote: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = remote("run", str(HELLO), "-i", "name=Ada")
    assert (code, err) == (0, "")
    assert out.startswith("running hello (")
    assert "status: succeeded" in out and '"greeting": "Hello, Ada!"' in out

    remote_json = json.loads(remote("run", str(HELLO), "--json")[1])
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "compared"))  # the local runs to compare with
    local_code, local_out, _ = cli("run", str(HELLO), "-i", "name=Ada")
    assert local_code == 0
    assert masked(out) == masked(local_out)
    local_json = json.loads(cli("run", str(HELLO), "--json")[1])
    assert list(remote_json) == list(local_json)
    varying = {"run_id", "trigger", "created_at", "started_at", "finished_at", "executed_by", "nodes"}
    assert {key: value for key, value in remote_json.items() if key not in varying} == {
        key: value for key, value in local_json.items() if key not in varying
    }
    assert [{**node, "latency_ms": 0} for node in remote_json["nodes"]] == [
        {**node, "latency_ms": 0} for node in local_json["nodes"]
    ]
    assert (remote_json["trigger"], local_json["trigger"]) == ("api", "manual")


def test_run_waits_for_approval_and_approve_continues_it(remote: CLI) -> None:
    code, out, _ = remote("run", str(APPROVAL), "-i", "amount=75")
    assert code == 3
    run_id = run_id_in(out)
    version = re.search(r"running approval \((\w+)\)", out)
    assert version
    assert masked(out).splitlines() == [
        f"running approval ({version.group(1)}) as run RUN",
        "  ✓ prepare N ms",
        "  ⏸ sign_off waits for approval",
        f"run RUN  approval ({version.group(1)})",
        "status: waiting_approval",
        "  ✓ prepare (transform) N ms",
        "tokens: 0   cost: $0.000000",
        "waiting for approval at 'sign_off':",
        "  Refund 75 EUR to ACME Corp?",
        "continue with: agentflow approve RUN [--comment TEXT]   or: agentflow approve RUN --reject",
    ]

    code, out, _ = remote("approve", run_id[:12], "--comment", "ok for Q3")

    assert code == 0
    lines = masked(out).splitlines()
    assert lines[0] == "approved 'sign_off' of run RUN; continuing…"
    assert lines[1].startswith("resuming approval (") and lines[1].endswith(") as run RUN")
    assert "  ✓ issue N ms" in lines
    assert "status: succeeded" in lines
    assert '"note": "ok for Q3"' in out


def test_approve_reject_and_approve_json(remote: CLI) -> None:
    rejected = run_id_in(remote("run", str(APPROVAL))[1])
    code, out, _ = remote("approve", rejected[:12], "--reject", "--comment", "no")
    assert code == 5
    assert out.startswith(f"rejected 'sign_off' of run {rejected}; continuing…")
    assert "status: rejected" in out

    waiting = json.loads(remote("run", str(APPROVAL), "--json")[1])
    assert waiting["status"] == "waiting_approval"
    assert waiting["approval"]["node_id"] == "sign_off" and waiting["approval"]["message"].startswith("Refund 120")
    code, out, _ = remote("approve", waiting["run_id"], "--json")
    assert code == 0
    decided = json.loads(out)
    assert decided["status"] == "succeeded" and "approval" not in decided


def test_runs_list_and_show(remote: CLI) -> None:
    _, out, _ = remote("run", str(APPROVAL))
    run_id = run_id_in(out)

    code, listed, _ = remote("runs", "list", "--status", "waiting_approval", "--workflow", "approval")
    assert code == 0
    header, *rows = listed.splitlines()
    assert header.split() == ["run", "workflow", "status", "started", "tokens", "cost"]
    assert any(row.startswith(f"{run_id[:12]}  approval                waiting_approval") for row in rows)
    as_json = json.loads(remote("runs", "list", "--json", "--limit", "3")[1])
    assert len(as_json) <= 3 and {"run_id", "status", "outputs", "cost_usd"} <= set(as_json[0])

    code, shown, _ = remote("runs", "show", run_id[:12], "--events")
    assert code == 0
    assert shown.startswith(f"run {run_id}  approval (")
    events = shown.split("events:\n", 1)[1].splitlines()
    assert [line.split()[2] for line in events] == [
        "run_started",
        "node_started",
        "node_finished",
        "approval_requested",
    ]
    detail = json.loads(remote("runs", "show", run_id, "--json", "--events")[1])
    assert detail["approval"]["node_id"] == "sign_off"
    assert [event["type"] for event in detail["events"]][-1] == "approval_requested"
    assert "cancel_requested" not in detail


def test_cancel_a_waiting_run_and_then_again(remote: CLI) -> None:
    run_id = run_id_in(remote("run", str(APPROVAL))[1])

    assert remote("cancel", run_id[:12]) == (0, f"cancelled run {run_id}\n", "")
    code, out, err = remote("cancel", run_id[:12])

    assert (code, out) == (2, "")
    assert err == f"error: run {run_id} is cancelled; only queued, waiting_approval or running runs can be cancelled\n"


def test_logs_prints_one_line_per_event(remote: CLI, server: ServerProcess) -> None:
    run_id = run_id_in(remote("run", str(HELLO))[1])
    with AgentFlowClient(server.url, server.token) as client:
        stored = client.runs.events(run_id).events

    code, out, _ = remote("logs", run_id[:12])

    assert code == 0
    assert out.splitlines() == [event_line(event) for event in stored]
    assert [line.split()[2] for line in out.splitlines()] == [
        "run_started",
        "node_started",
        "node_finished",
        "run_finished",
    ]
    _, as_json, _ = remote("logs", run_id, "--json", "--after", str(stored[1]["id"]))
    assert [json.loads(line) for line in as_json.splitlines()] == stored[2:]


# -- following a run ------------------------------------------------------------------


def follow_process(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """`agentflow *args` in its own process; its stdout lines arrive on the queue ("" once it ended)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def read_until(lines: queue.Queue[str], kind: str) -> list[str]:
    """The lines printed up to and including the first event of type `kind`."""
    seen: list[str] = []
    while True:
        line = lines.get(timeout=FOLLOW_TIMEOUT_S)
        assert line, "the process ended first; it printed:\n" + "".join(seen)
        seen.append(line)
        if line.split()[2] == kind:
            return seen


def finish(process: subprocess.Popen[str], lines: queue.Queue[str]) -> tuple[list[str], str]:
    rest: list[str] = []
    while line := lines.get(timeout=FOLLOW_TIMEOUT_S):
        rest.append(line)
    assert process.wait(timeout=FOLLOW_TIMEOUT_S) == 0
    assert process.stderr is not None
    return rest, process.stderr.read()


def test_logs_follow_against_a_server_streams_until_the_run_ends(
    remote: CLI, server: ServerProcess, tmp_path: Path
) -> None:
    run_id = run_id_in(remote("run", str(APPROVAL))[1])
    env = {**os.environ, "AGENTFLOW_SERVER": server.url, "AGENTFLOW_API_TOKEN": server.token}
    env["AGENTFLOW_HOME"] = str(tmp_path / "never-written")
    process, lines = follow_process(["logs", run_id[:12], "--follow"], env)
    try:
        waiting = read_until(lines, "approval_requested")  # the run waits: the stream stays open
        with AgentFlowClient(server.url, server.token) as client:
            client.runs.approve(run_id, comment="go")
            rest, errors = finish(process, lines)
            stored = client.runs.events(run_id).events
    finally:
        process.kill()
        process.wait()
    assert errors == ""
    assert [line.rstrip("\n") for line in waiting + rest] == [event_line(event) for event in stored]
    assert rest[-1].split()[2] == "run_finished" and "succeeded" in rest[-1]
    assert not (tmp_path / "never-written").exists()


def test_logs_follow_on_local_data_sees_another_process_finish_the_run(cli: CLI, local_home: Path) -> None:
    code, out, _ = cli("run", str(APPROVAL))
    assert code == 3
    run_id = run_id_in(out)
    env = {**os.environ, "AGENTFLOW_HOME": str(local_home)}
    process, lines = follow_process(["logs", run_id[:12], "--follow"], env)
    try:
        waiting = read_until(lines, "approval_requested")
        assert cli("approve", run_id, "--comment", "local")[0] == 0  # this process executes the rest
        rest, errors = finish(process, lines)
    finally:
        process.kill()
        process.wait()
    assert errors == ""
    code, logged, _ = cli("logs", run_id)
    assert code == 0
    assert "".join(waiting + rest) == logged
    assert rest[-1].split()[2] == "run_finished" and "succeeded" in rest[-1]


def test_logs_of_a_finished_local_run_and_with_follow_ends_at_once(cli: CLI) -> None:
    run_id = run_id_in(cli("run", str(HELLO))[1])

    code, out, _ = cli("logs", run_id[:12])
    assert code == 0
    assert [line.split()[2] for line in out.splitlines()] == [
        "run_started",
        "node_started",
        "node_finished",
        "run_finished",
    ]
    assert cli("logs", run_id[:12], "--follow") == (0, out, "")
    assert cli("logs", "ffffffffffff")[0] == 2


# -- mistakes: clear messages and a non-zero exit -------------------------------------


def test_the_server_and_token_may_come_from_the_environment(
    cli: CLI, server: ServerProcess, local_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_SERVER", server.url)
    monkeypatch.setenv("AGENTFLOW_API_TOKEN", server.token)
    code, out, _ = cli("runs", "list", "--limit", "1")
    assert code == 0 and out.startswith("run ")
    code, _, err = cli("runs", "list", "--token", "not-the-token-of-this-server")
    assert code == 2 and "refused the token" in err
    code, _, err = cli("resume", "abcd1234")
    assert code == 2
    assert err.startswith(
        f"error: `agentflow resume` works on this machine's data only, not against a server "
        f"(AGENTFLOW_SERVER={server.url}); run it where the server runs, or without AGENTFLOW_SERVER."
    )
    assert "Against a server: approve, cancel, logs, run, runs" in err
    assert not local_home.exists()


def test_options_after_the_command_work_too(cli: CLI, server: ServerProcess) -> None:
    code, out, _ = cli("runs", "list", "--server", server.url, "--token", server.token, "--json")
    assert code == 0 and isinstance(json.loads(out), list)


def test_a_wrong_or_missing_token_is_a_clear_error(cli: CLI, server: ServerProcess) -> None:
    code, out, err = cli("--server", server.url, "--token", "not-the-token-of-this-server", "runs", "list")
    assert (code, out) == (2, "")
    assert err.startswith(f"error: the server at {server.url} refused the token (from --token or AGENTFLOW_API_TOKEN)")
    code, _, err = cli("--server", server.url, "runs", "list")
    assert code == 2
    assert err.startswith("error: this API needs a token") and "pass it with --token or AGENTFLOW_API_TOKEN" in err


def test_no_server_at_the_address_is_a_clear_error(cli: CLI, local_home: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for command in (["runs", "list"], ["logs", "abcd1234", "--follow"], ["run", str(HELLO)]):
        code, out, err = cli("--server", url, *command)
        assert (code, out) == (2, ""), command
        assert err == (
            f"error: cannot reach the AgentFlow server at {url} (connection refused); is it running? start it with "
            "`agentflow serve` (or `make run` in a checkout), or point --server / AGENTFLOW_SERVER at a running "
            "server\n"
        )
    code, _, err = cli("--server", "localhost:7860", "runs", "list")
    assert code == 2
    assert err == (
        "error: server address 'localhost:7860' has no scheme; give it as http://localhost:7860 "
        "(from --server or AGENTFLOW_SERVER)\n"
    )
    assert not local_home.exists()


def test_commands_that_need_local_data_say_so(cli: CLI, server: ServerProcess) -> None:
    for command in (["costs"], ["worker"], ["grant", "hello", "--yes"], ["chat"]):
        code, _, err = cli("--server", server.url, *command)
        assert code == 2
        assert err.startswith(f"error: `agentflow {command[0]}` works on this machine's data only"), err
        assert "(--server); run it where the server runs, or without --server." in err


def test_bad_workflows_inputs_and_ids_against_a_server(remote: CLI, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(workflow("broken", "nodes:\n  greet:\n    type: transfrom\n    expr: \"'hi'\"\n"))
    code, out, err = remote("run", str(broken))
    assert (code, out) == (2, "")
    assert err.startswith(f"{broken}:7:7: unknown node type 'transfrom' (did you mean 'transform'?)")

    code, _, err = remote("run", str(APPROVAL), "-i", "amount=lots")
    assert code == 2
    assert err == f"error: {APPROVAL}: input 'amount' must be number; got 'lots'\n"
    code, _, err = remote("run", str(tmp_path / "missing.yaml"))
    assert code == 2 and err.startswith(f"error: cannot read {tmp_path / 'missing.yaml'}: ")
    code, _, err = remote("runs", "show", "0000000000ff")
    assert code == 2 and err.startswith("error: no run '0000000000ff'")
    code, _, err = remote("approve", run_id_in(remote("run", str(HELLO))[1]))
    assert code == 2 and "has no pending approval (its status is succeeded)" in err
