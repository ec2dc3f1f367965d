"""Every file in examples/ is valid and does what its comment says.

Each LLM-free example that needs no server runs through the real CLI in its
own process, and so does `summarize.yaml` against the fake OpenAI server; the
processes start together, which keeps the file fast. Variants, and examples
that need a local server or more scripted replies, go through the same
`agentflow.cli.main` in this process: a new interpreter costs seconds of imports.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentflow.cli import main
from agentflow.settings import Settings
from agentflow.spec.validate import load_workflow_file
from agentflow.tools.registry import builtin_registry
from tests import postgres
from tests.fakes.openai_server import Error, FakeLLM, Json, Reply, Text, ToolCalls

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
ALL_EXAMPLES = sorted(EXAMPLES.glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/workflow.schema.json"
TOKEN = "tok-3b9e51d0-canary"
PROCESS_TIMEOUT = 180

LLM_FREE = {
    "hello.yaml",
    "branching.yaml",
    "fan-out.yaml",
    "bounded-loop.yaml",
    "calculator-tool.yaml",
    "approval.yaml",
    "secret-webhook.yaml",
    "triggered-triage.yaml",
    "code-stats.yaml",
    "notify-slack.yaml",
    "sub-workflow.yaml",
}
NEEDS_A_MODEL = {
    "mcp-tools.yaml",
    "summarize.yaml",
    "research-agent.yaml",
    "model-fallback.yaml",
    "retry-and-budget.yaml",
    "ticket-triage.yaml",
    "sales-report.yaml",
    "inbox-files.yaml",
    "web-research.yaml",
    "news-digest.yaml",
    "local-ollama.yaml",
    "remember-facts.yaml",
    "ab-variants.yaml",
}
NEEDS_AN_AGENT = {"remote-agent.yaml"}  # validated here; tests/integration/test_remote_node.py runs remote nodes


CLI = Callable[..., tuple[int, dict[str, Any]]]


def example(name: str) -> str:
    return str(EXAMPLES / name)


# -- every example is valid and documented -----------------------------------------------


def test_the_examples_are_the_ones_this_file_knows() -> None:
    # A new example must be added to one of the sets, so that it runs here too.
    assert {path.name for path in ALL_EXAMPLES} == LLM_FREE | NEEDS_A_MODEL | NEEDS_AN_AGENT


# The operator's tools file the MCP example expects: a `files` server (validating never connects to it).
OPERATOR_TOOLS = "mcp:\n  files:\n    url: https://mcp.example.com/mcp\n"


@pytest.mark.parametrize("path", ALL_EXAMPLES, ids=lambda path: path.name)
def test_example_is_valid_and_says_how_to_run_it(path: Path, tmp_path: Path) -> None:
    (tmp_path / "tools.yaml").write_text(OPERATOR_TOOLS)
    registry = builtin_registry(Settings(home=tmp_path))
    workflow = load_workflow_file(path, known_tools=registry.known_names(), network_tools=registry.network_names())

    assert workflow.name == path.stem
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == SCHEMA_LINE
    header = text.split("apiVersion:")[0]
    assert "# Shows:" in header
    assert f"agentflow run examples/{path.name}" in header


@pytest.mark.parametrize("name", sorted(NEEDS_A_MODEL - {"model-fallback.yaml"}))
def test_llm_examples_leave_the_model_to_the_environment(name: str) -> None:
    workflow = load_workflow_file(example(name))
    models = [getattr(node, "model", None) for node in workflow.spec.nodes.values()]
    assert workflow.spec.defaults.model is None and not any(models), "omit `model:` so AGENTFLOW_MODEL applies"


# -- local servers ------------------------------------------------------------------------


@dataclass
class EchoServer:
    """An HTTP endpoint that answers a POST with what it received, the Authorization header included."""

    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoServer]:
    echo = EchoServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"null")
            echo.received.append({"path": self.path, "json": body, "authorization": self.headers.get("authorization")})
            reply = json.dumps({"json": body, "authorization": self.headers.get("authorization")}).encode()
            self.send_response(201)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    echo.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield echo
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


# -- the real CLI, one process per run ---------------------------------------------------


@dataclass
class Launched:
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen[str]

    def result(self) -> tuple[int, dict[str, Any]]:
        stdout, stderr = self.process.communicate(timeout=PROCESS_TIMEOUT)
        assert stdout.strip(), f"no JSON on stdout from {self.args}; stderr:\n{stderr}"
        return self.process.returncode, json.loads(stdout)


def launch(home: Path, *args: str, **extra_env: str) -> Launched:
    env = {**os.environ, "AGENTFLOW_HOME": str(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True", **extra_env}
    if postgres.ON_POSTGRES:  # the processes of one data directory share its database
        env |= {"AGENTFLOW_DATABASE_URL": postgres.database_for(home), "AGENTFLOW_EXECUTOR": "local"}
    command = [sys.executable, "-m", "agentflow.cli", *args]
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Launched(list(args), env, process)


SUMMARY = {
    "title": "AgentFlow runs workflows locally",
    "summary": "AgentFlow compiles YAML workflows to LangGraph and runs them durably.",
    "key_points": ["YAML workflows", "durable runs", "any LiteLLM model"],
    "sentiment": "positive",
}


@pytest.fixture(scope="module")
def summarize_llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        fake.enqueue(Json(SUMMARY, usage=(120, 40)))
        yield fake


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory, summarize_llm: FakeLLM) -> Iterator[dict[str, Launched]]:
    """Start every CLI run at once, each with its own data directory; tests collect their own."""
    runs: dict[str, Launched] = {}

    def start(label: str, *args: str, **extra_env: str) -> None:
        runs[label] = launch(tmp_path_factory.mktemp(label), *args, "--json", **extra_env)

    model = {
        "AGENTFLOW_MODEL": "openai/test-model",
        "AGENTFLOW_API_BASE": summarize_llm.base_url,
        "AGENTFLOW_API_KEY": "x",
        "AGENTFLOW_LLM_RETRIES": "0",
    }
    # The slowest one first: it imports LiteLLM.
    start("summarize", "run", example("summarize.yaml"), "-i", "text=AgentFlow is a local-first orchestrator.", **model)
    start("hello", "run", example("hello.yaml"))
    start("branching", "run", example("branching.yaml"), "-i", "amount=2500", "-i", "employee=ada")
    start("fan-out", "run", example("fan-out.yaml"))
    start("bounded-loop", "run", example("bounded-loop.yaml"))
    start("calculator-tool", "run", example("calculator-tool.yaml"))
    start("code-stats", "run", example("code-stats.yaml"))
    start("approval", "run", example("approval.yaml"), "-i", "amount=75.5")
    start("triggered-triage", "run", example("triggered-triage.yaml"), "-i", "ticket=the printer is on fire")
    yield runs
    for run in runs.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


def node_rows(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in result["nodes"]}


@pytest.mark.slow
def test_approval_waits_then_another_process_approves(launched: dict[str, Launched]) -> None:
    first = launched["approval"]
    code, result = first.result()

    assert (code, result["status"], result["outputs"]) == (3, "waiting_approval", None)
    assert "issue" not in node_rows(result)
    run_id = result["run_id"]

    approve = launch(Path(first.env["AGENTFLOW_HOME"]), "approve", run_id, "--comment", "ok for Q3", "--json")
    code, result = approve.result()

    assert (code, result["run_id"], result["status"]) == (0, run_id, "succeeded")
    assert result["outputs"] == {"refund": {"refunded": 75.5, "to": "ACME Corp", "note": "ok for Q3"}}
    assert node_rows(result)["prepare"]["attempts"] == 1  # completed nodes never run again


@pytest.mark.slow
def test_triggered_triage_runs_by_hand_then_deploys_as_its_header_says(launched: dict[str, Launched]) -> None:
    first = launched["triggered-triage"]
    code, result = first.result()
    assert (code, result["status"]) == (0, "succeeded")
    assert result["outputs"] == {"urgent": True, "ticket": "the printer is on fire", "source": "manual"}

    code, deployed = launch(Path(first.env["AGENTFLOW_HOME"]), "deploy", "triggered-triage", "--json").result()
    assert code == 0, deployed
    kinds = {trigger["name"]: trigger["kind"] for trigger in deployed["triggers"]}
    assert kinds == {"github": "webhook", "schedule": "schedule", "telegram": "telegram", "whatsapp": "whatsapp"}
    assert list(deployed["secrets"]) == ["github"]


def test_hello(launched: dict[str, Launched]) -> None:
    code, result = launched["hello"].result()

    assert (code, result["status"], result["outputs"]) == (0, "succeeded", {"greeting": "Hello, world!"})
    assert result["tokens"] == 0 and result["cost_usd"] == 0
    [node] = result["nodes"]
    assert {key: node[key] for key in ("id", "status", "attempts")} == {
        "id": "greet",
        "status": "succeeded",
        "attempts": 1,
    }
    assert set(result) >= {"run_id", "status", "outputs", "tokens", "cost_usd", "nodes"}
    assert set(node) >= {"id", "status", "attempts", "latency_ms", "tokens", "cost_usd"}


@pytest.mark.slow
def test_branching_runs_the_chosen_branch_and_skips_the_rest(launched: dict[str, Launched]) -> None:
    code, result = launched["branching"].result()

    assert (code, result["status"]) == (0, "succeeded")
    assert result["outputs"] == {
        "branch": "director_review",
        "approver": "director",
        "reason": "above 1000 EUR",
        "audited": True,
    }
    statuses = {node_id: row["status"] for node_id, row in node_rows(result).items()}
    assert statuses == {
        "route": "succeeded",
        "director_review": "succeeded",
        "manager_review": "skipped",
        "auto_approve": "skipped",
        "audit_log": "succeeded",
        "decision": "succeeded",
    }


@pytest.mark.slow
def test_fan_out_maps_in_order_and_fans_in(launched: dict[str, Launched]) -> None:
    code, result = launched["fan-out"].result()

    assert (code, result["status"]) == (0, "succeeded")
    assert result["outputs"] == {
        "line_totals": [13.5, 12, 20.0, 9.0],
        "skus": ["notebook", "stapler", "pencils", "folder"],
        "total": 54.5,
    }
    assert node_rows(result)["line_totals"]["type"] == "map"


@pytest.mark.slow
def test_bounded_loop_stops_when_until_holds(launched: dict[str, Launched]) -> None:
    code, result = launched["bounded-loop"].result()

    assert (code, result["status"]) == (0, "succeeded")
    assert result["outputs"] == {"months": 4, "balance": 1000, "reached": True}
    rows = node_rows(result)
    assert rows["deposit"]["attempts"] == rows["check"]["attempts"] == 4


@pytest.mark.slow
def test_code_stats_runs_python_and_shell_in_the_sandbox(launched: dict[str, Launched]) -> None:
    code, result = launched["code-stats"].result()

    assert (code, result["status"]) == (0, "succeeded"), result
    assert result["outputs"]["stats"] == {"count": 6, "mean": 8.792, "median": 8.0, "stdev": 3.951}
    assert result["outputs"]["histogram"] == "3: 1\n7: 2\n9: 1\n12: 1\n14: 1"


def test_calculator_tool(launched: dict[str, Launched]) -> None:
    code, result = launched["calculator-tool"].result()

    assert (code, result["status"]) == (0, "succeeded")
    outputs = result["outputs"]
    computed_at = outputs.pop("computed_at")
    assert outputs == {"bank": "Harbor", "final_amount": 1628.89, "interest": 628.89}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", computed_at)


@pytest.mark.slow
def test_summarize_through_the_cli_against_the_fake_llm(launched: dict[str, Launched], summarize_llm: FakeLLM) -> None:
    code, result = launched["summarize"].result()

    assert (code, result["status"]) == (0, "succeeded"), result["error"]
    assert result["outputs"] == {
        "headline": "[positive] AgentFlow runs workflows locally",
        "summary": SUMMARY["summary"],
        "key_points": SUMMARY["key_points"],
    }
    assert result["tokens"] == 160
    assert node_rows(result)["summary"]["tokens"] == 160
    [request] = summarize_llm.requests
    assert request["model"] == "test-model"
    assert request["authorization"] == "Bearer x"
    schema = request["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["title", "summary", "key_points", "sentiment"]
    assert schema["properties"]["sentiment"]["enum"] == ["positive", "neutral", "negative"]
    assert "AgentFlow is a local-first orchestrator." in request["messages"][-1]["content"]


# -- the same CLI in this process: variants and the other model examples ------------------


def local_copy(tmp_path: Path, name: str) -> str:
    """An example whose egress is this machine's local test servers instead of the hosts it ships with."""
    source = Path(example(name)).read_text()
    start = source.index("    egress: [")
    end = source.index("\n", start)
    copy = tmp_path / name
    copy.write_text(source[:start] + '    egress: ["127.0.0.1"]' + source[end:])
    return str(copy)


@pytest.fixture
def cli(tmp_path: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CLI:
    """`cli("run", FILE, ...)` -> (exit code, the --json object), models served by the fake."""
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path / "data"))
    # The operator opens loopback to network tools: the local echo servers stand in for the internet.
    monkeypatch.setenv("AGENTFLOW_EGRESS_ALLOW_INTERNAL", "127.0.0.1")
    monkeypatch.setenv("AGENTFLOW_MODEL", "openai/test-model")
    monkeypatch.setenv("AGENTFLOW_API_BASE", fake_llm.base_url)
    monkeypatch.setenv("AGENTFLOW_API_KEY", "x")
    monkeypatch.setenv("AGENTFLOW_LLM_RETRIES", "0")

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        code = main([*args, "--json"])
        captured = capsys.readouterr()
        assert captured.out.strip(), captured.err
        return code, json.loads(captured.out)

    return run


def test_branching_default_branch(cli: CLI) -> None:
    code, result = cli("run", example("branching.yaml"), "-i", "amount=40")

    assert (code, result["status"]) == (0, "succeeded")
    assert result["outputs"] == {
        "branch": "auto_approve",
        "approver": "nobody",
        "reason": "small expense",
        "audited": False,
    }
    rows = node_rows(result)
    assert [rows[node]["status"] for node in ("director_review", "manager_review", "audit_log")] == ["skipped"] * 3


def test_sub_workflow_runs_hello_as_its_header_says(cli: CLI, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", example("sub-workflow.yaml")]) != 0
    assert "sub-workflow.yaml:23:7: workflow 'hello' is not stored" in capsys.readouterr().err

    assert cli("run", example("hello.yaml"))[0] == 0
    code, result = cli("run", example("sub-workflow.yaml"), "-i", "team=Ada,Grace")
    assert (code, result["status"]) == (0, "succeeded"), result
    assert result["outputs"] == {"first": "Hello, Ada!", "team": "Hello, Ada,Grace!"}


def test_bounded_loop_stops_at_max(cli: CLI) -> None:
    code, result = cli("run", example("bounded-loop.yaml"), "-i", "goal=100000")

    assert (code, result["status"]) == (0, "succeeded")
    assert result["outputs"] == {"months": 12, "balance": 3000, "reached": False}


def test_approval_rejected_ends_the_run(cli: CLI) -> None:
    code, result = cli("run", example("approval.yaml"))
    assert (code, result["status"]) == (3, "waiting_approval")
    assert result["approval"]["node_id"] == "sign_off" and "Refund" in result["approval"]["message"]

    code, result = cli("approve", result["run_id"], "--reject", "--comment", "too much")

    assert (code, result["status"], result["outputs"]) == (5, "rejected", None)
    assert "too much" in result["error"]
    assert "issue" not in node_rows(result)


def test_secret_webhook_sends_the_token_and_never_shows_or_stores_it(
    cli: CLI, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTFLOW_SECRET_NOTIFY_TOKEN", TOKEN)
    url = f"{echo_server.url}/hooks/deploy"
    # As shipped, the example may reach only its listed hosts: the local echo server is refused.
    code, result = cli("run", example("secret-webhook.yaml"), "-i", f"url={url}")
    assert (code, result["status"]) == (1, "failed")
    assert "host 127.0.0.1 is not in this workflow's granted egress" in result["error"]
    assert echo_server.received == []

    code, result = cli("run", local_copy(tmp_path, "secret-webhook.yaml"), "-i", f"url={url}")

    assert (code, result["status"]) == (0, "succeeded"), result["error"]
    assert {"path": "/hooks/deploy", "json": {"text": "Deployment finished"}, "authorization": f"Bearer {TOKEN}"} in (
        echo_server.received
    )
    assert result["outputs"] == {
        "status": 201,
        "response": {"json": {"text": "Deployment finished"}, "authorization": "Bearer ***"},
    }
    assert TOKEN not in json.dumps(result)
    for path in (tmp_path / "data").rglob("*"):
        assert TOKEN.encode() not in path.read_bytes(), f"the secret was written to {path.name}"


def test_retry_and_budget_retries_a_failed_node(cli: CLI, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("The solar kettle boils water with sunlight. It folds flat. It needs no fuel."))
    fake_llm.enqueue(Error(400, "malformed request"))  # not transient: the node fails, and `retry` runs it again
    fake_llm.enqueue(Text("A fold-flat kettle that boils water with sunlight alone."))

    code, result = cli("run", example("retry-and-budget.yaml"), "-i", "product=a solar kettle")

    assert (code, result["status"]) == (0, "succeeded"), result["error"]
    assert result["outputs"] == {"blurb": "A fold-flat kettle that boils water with sunlight alone."}
    rows = node_rows(result)
    assert (rows["draft"]["attempts"], rows["tighten"]["attempts"]) == (1, 2)


def test_retry_and_budget_stops_at_the_token_budget(cli: CLI, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("A very long blurb", usage=(3000, 1200)))

    code, result = cli("run", example("retry-and-budget.yaml"), "-i", "product=a solar kettle")

    assert (code, result["status"]) == (4, "budget_exceeded")
    assert "tokens limit of 4000" in result["error"]
    assert len(fake_llm.requests) == 1  # `tighten` never called the model
    assert "tighten" not in node_rows(result) or node_rows(result)["tighten"]["status"] == "failed"


def test_research_agent_calls_its_tools(cli: CLI, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(ToolCalls([("current_time", {"timezone": "UTC"}), ("calculator", {"expression": "365 - 326"})]))
    fake_llm.enqueue(Text("39 days are left; I used current_time and calculator."))

    code, result = cli("run", example("research-agent.yaml"), "-i", "question=How many days are left this year?")

    assert (code, result["status"]) == (0, "succeeded"), result["error"]
    assert result["outputs"] == {"answer": "39 days are left; I used current_time and calculator."}
    first, second = fake_llm.requests
    assert {tool["function"]["name"] for tool in first["tools"]} == {"calculator", "current_time", "http_request"}
    assert first["messages"][-1]["content"] == "How many days are left this year?"
    tool_results = [message["content"] for message in second["messages"] if message["role"] == "tool"]
    assert tool_results[1] == "39"


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A local port that refuses connections: bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_model_fallback_asks_the_next_model(
    cli: CLI, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch, refused_port: int
) -> None:
    monkeypatch.setenv("OLLAMA_API_BASE", f"http://127.0.0.1:{refused_port}")  # Ollama is "down"
    fake_llm.enqueue(Text("Rain on the window"), model="gpt-4o-mini")
    fake_llm.enqueue(Text("The window image."), model="gpt-4o-mini")

    code, result = cli("run", example("model-fallback.yaml"))

    assert (code, result["status"]) == (0, "succeeded"), result["error"]
    assert result["outputs"] == {"haiku": "Rain on the window", "critique": "The window image."}
    code, shown = cli("runs", "show", result["run_id"], "--events")
    calls = [
        (event["node_id"], event["model"], event["error"] is None)
        for event in shown["events"]
        if event["type"] == "llm_call"
    ]
    assert calls == [
        ("haiku", "openai/gpt-4o-mini", True),
        ("critique", "ollama/llama3.2", False),
        ("critique", "openai/gpt-4o-mini", True),
    ]


TRIAGE_BILLING: list[Reply] = [
    Json({"category": "billing", "topics": ["double charge", "refund"]}),
    Text("Double charges are refunded within 5 days."),
    Text("Refunds go back to the original card."),
    ToolCalls([("calculator", {"expression": "2 * 19.99"})]),
    Text("We charged you 39.98 instead of 19.99 and will refund 19.99."),
    Json({"ok": False, "feedback": "Apologize first."}),
    Text("Sorry! We charged you twice and will refund 19.99 within 5 days."),
    Json({"ok": True, "feedback": ""}),
]


def test_ticket_triage_drafts_reviews_and_waits_for_approval(cli: CLI, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue_all(TRIAGE_BILLING)

    code, result = cli("run", example("ticket-triage.yaml"), "-i", "ticket=I was charged twice for March")

    assert (code, result["status"]) == (3, "waiting_approval"), result["error"]
    rows = node_rows(result)
    assert rows["escalate"]["status"] == "skipped"
    assert (rows["draft"]["attempts"], rows["review"]["attempts"]) == (2, 2)
    assert fake_llm.pending == 0
    second_draft = fake_llm.requests[6]
    assert "Apologize first." in second_draft["messages"][0]["content"]  # the review fed back into the draft

    code, result = cli("approve", result["run_id"])

    assert (code, result["status"]) == (0, "succeeded"), result["error"]
    assert result["outputs"] == {
        "category": "billing",
        "reply": "Sorry! We charged you twice and will refund 19.99 within 5 days.",
        "escalated": None,
    }


def test_ticket_triage_escalates_bugs_to_the_tracker(
    cli: CLI, fake_llm: FakeLLM, echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTFLOW_SECRET_TRACKER_URL", f"{echo_server.url}/issues")
    fake_llm.enqueue(Json({"category": "bug", "topics": ["crash on login"]}))

    triage = local_copy(tmp_path, "ticket-triage.yaml")
    code, result = cli("run", triage, "-i", "ticket=The app crashes when I log in")

    assert (code, result["status"]) == (0, "succeeded"), result["error"]
    assert result["outputs"] == {"category": "bug", "reply": None, "escalated": 201}
    assert {"path": "/issues", "json": {"title": "The app crashes when I log in", "topics": ["crash on login"]}} in [
        {"path": request["path"], "json": request["json"]} for request in echo_server.received
    ]
    rows = node_rows(result)
    assert [rows[node]["status"] for node in ("research", "draft", "review", "approve")] == ["skipped"] * 4
    assert len(fake_llm.requests) == 1  # only the classifier: nothing is researched or drafted for a bug


def test_remember_facts_recalls_in_the_next_run_what_the_first_taught_it(cli: CLI, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("Noted: the plumber on Thursday, and the new door code."))
    fake_llm.enqueue(
        Json(
            {
                "operations": [
                    {"op": "add", "text": "The plumber comes on Thursday."},
                    {"op": "add", "text": "The door code is 4312."},
                ]
            }
        )
    )
    code, result = cli(
        "run", example("remember-facts.yaml"), "-i", "message=The plumber comes on Thursday; the door code is now 4312"
    )
    assert (code, result["status"]) == (0, "succeeded"), result["error"]

    # Another process, another run: the first run's facts are in the model's prompt.
    fake_llm.enqueue(Text("Thursday; the code is 4312."))
    fake_llm.enqueue(Json({"operations": []}))
    code, result = cli(
        "run", example("remember-facts.yaml"), "-i", "message=When is the plumber coming, and what is the door code?"
    )
    assert (code, result["status"]) == (0, "succeeded"), result["error"]
    assert result["outputs"] == {"reply": "Thursday; the code is 4312."}
    asked = "\n".join(str(message["content"]) for message in fake_llm.requests[2]["messages"])
    assert "The door code is 4312." in asked and "The plumber comes on Thursday." in asked

    code, listed = cli("memory", "list", "--workflow", "remember-facts")
    assert code == 0 and sorted(item["text"] for item in listed) == [
        "The door code is 4312.",
        "The plumber comes on Thursday.",
    ]


def test_ab_variants_records_each_runs_variant_and_compares_them(cli: CLI, fake_llm: FakeLLM) -> None:
    prompts = {
        "terse": "Queue (billing, bug or other) for: I was charged twice. One word.",
        "reasoned": "A customer wrote:\n\nI was charged twice\n\nWhich queue",
    }
    used = []
    for _ in range(3):
        fake_llm.enqueue(Text("billing"))
        code, result = cli("run", example("ab-variants.yaml"), "-i", "ticket=I was charged twice")
        assert (code, result["outputs"]) == (0, {"queue": "billing"}), result["error"]
        _, shown = cli("runs", "show", result["run_id"], "--events")
        [started] = [event for event in shown["events"] if event["type"] == "node_started"][:1]
        used.append(started["variant"])
        sent = fake_llm.requests[-1]["messages"][-1]["content"]
        assert sent.startswith(prompts[started["variant"]])  # the variant's own prompt went to the model

    code, report = cli("variants", "ab-variants", "--node", "classify")
    assert code == 0
    [node] = report["nodes"]
    assert node["weights"] == {"terse": 70, "reasoned": 30} and node["runs"] == 3
    assert {stats["variant"]: stats["n"] for stats in node["variants"]} == {
        name: used.count(name) for name in set(used)
    }
