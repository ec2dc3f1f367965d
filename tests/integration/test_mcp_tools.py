"""The operator's MCP servers as tools: listed lazily, called in-process and over streamable HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from agentflow.cli import main
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.spec.errors import SpecErrors
from agentflow.spec.validate import load_workflow
from agentflow.tools.mcp_adapter import McpServer
from agentflow.tools.operator import McpServerConfig, aclose_operator_tools, mcp_servers, register_operator_tools
from agentflow.tools.registry import ToolContext, ToolError, ToolRegistry
from agentflow.trust.capabilities import derive
from agentflow.trust.egress import EgressDenied, EgressPolicy
from tests.conftest import fake_settings
from tests.fakes.mcp_server import STDIO_SERVER, FakeTools, McpHttpServer, build_server
from tests.fakes.openai_server import FakeLLM, Text, ToolCalls
from tests.integration.helpers import run_source, workflow
from tests.network_guard import closed_port

pytestmark = pytest.mark.store_agnostic

OPEN_LOOPBACK = Settings(egress_allow_internal=("127.0.0.1",))


def in_process(state: FakeTools | None = None, *, timeout: float = 5) -> McpServer:
    fake = build_server(state)
    config = McpServerConfig(url="http://mcp.example.com/mcp", timeout=timeout)
    return McpServer("fake", config, Settings(), client_factory=lambda: Client(fake))


@pytest.fixture
def http_server() -> Iterator[McpHttpServer]:
    with McpHttpServer() as server:
        yield server


def tools_file(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "tools.yaml"
    path.write_text(text)
    return Settings(home=tmp_path, tools_config=path, egress_allow_internal=("127.0.0.1",))


WORKFLOW = """
apiVersion: agentflow/v1
kind: Workflow
metadata: {name: uses-mcp}
spec:
  nodes:
    total:
      type: tool
      tool: mcp/fake/add
      args: {a: 2, b: 3}
  outputs:
    total: "{{ total }}"
"""


async def test_tools_are_listed_and_called_in_process() -> None:
    state = FakeTools()
    server = in_process(state)
    tools = await server.tools()
    assert [tool.name for tool in tools] == ["mcp/fake/add", "mcp/fake/echo", "mcp/fake/fail", "mcp/fake/slow"]
    add = server.get("mcp/fake/add")
    assert add.parameters_schema()["required"] == ["a", "b"]
    assert add.source == "mcp:fake"
    assert await add.call({"a": 2, "b": 40}) == {"sum": 42}
    assert await server.get("mcp/fake/echo").call({"text": "hello"}) == {"result": "hello"}
    assert state.calls == [("add", {"a": 2, "b": 40}), ("echo", {"text": "hello"})]
    await server.aclose()


async def test_bad_arguments_unknown_keys_and_unknown_tools_are_refused_with_the_fix() -> None:
    state = FakeTools()
    server = in_process(state)
    await server.tools()
    with pytest.raises(ToolError, match=r"unknown argument 'c'; valid arguments are a, b"):
        await server.get("mcp/fake/add").call({"a": 1, "b": 2, "c": 3})
    with pytest.raises(ToolError, match=r"'b' is a required property"):
        await server.get("mcp/fake/add").call({"a": 1})
    with pytest.raises(ToolError, match=r"has no tool 'nope'; its tools are: add, echo, fail, slow"):
        await server.get("mcp/fake/nope").call({})
    assert state.calls == []  # nothing invalid reached the server
    await server.aclose()


async def test_a_tool_error_comes_back_with_the_servers_text() -> None:
    server = in_process()
    with pytest.raises(ToolError, match=r"mcp/fake/fail failed: .*disk on fire"):
        await server.get("mcp/fake/fail").call({"reason": "disk on fire"})
    await server.aclose()


async def test_a_slow_tool_times_out_and_the_session_keeps_working(http_server: McpHttpServer) -> None:
    server = McpServer("slow", McpServerConfig(url=http_server.url, timeout=1), OPEN_LOOPBACK)
    await server.tools()
    with pytest.raises(ToolError, match=r"'mcp/slow/slow' gave no result within 1 s"):
        await server.get("mcp/slow/slow").call({})
    assert http_server.state.slow_started.is_set()
    http_server.state.release.set()
    assert await server.get("mcp/slow/add").call({"a": 1, "b": 1}) == {"sum": 2}
    await server.aclose()


async def test_over_http_one_session_serves_every_call(http_server: McpHttpServer) -> None:
    server = McpServer("files", McpServerConfig(url=http_server.url), OPEN_LOOPBACK)
    assert await server.get("mcp/files/add").call({"a": 1, "b": 2}) == {"sum": 3}
    assert await server.get("mcp/files/add").call({"a": 3, "b": 4}) == {"sum": 7}
    sessions = {request["headers"].get("mcp-session-id") for request in http_server.requests}
    assert len(sessions) == 1
    assert all(request["headers"]["host"] == f"127.0.0.1:{http_server.port}" for request in http_server.requests)
    await server.aclose()


async def test_an_internal_url_the_operator_did_not_open_is_refused(http_server: McpHttpServer) -> None:
    server = McpServer("internal", McpServerConfig(url=http_server.url), Settings())
    with pytest.raises(EgressDenied, match=r"MCP server 'internal'.*AGENTFLOW_EGRESS_ALLOW_INTERNAL=127.0.0.1"):
        await server.get("mcp/internal/add").call({"a": 1, "b": 2})
    assert http_server.requests == []


async def test_a_workflow_not_granted_the_servers_host_cannot_call_it(http_server: McpHttpServer) -> None:
    server = McpServer("files", McpServerConfig(url=http_server.url), OPEN_LOOPBACK)
    context = ToolContext(egress=EgressPolicy(hosts=frozenset({"api.example.com"})))
    with pytest.raises(EgressDenied, match=r"mcp/files/add to 127.0.0.1.*not in this workflow's granted egress"):
        await server.get("mcp/files/add").call({"a": 1, "b": 2}, context)
    assert http_server.requests == []


async def test_a_server_that_went_away_is_reported_and_the_next_use_reconnects() -> None:
    with McpHttpServer() as first:
        port = first.port
        server = McpServer("flaky", McpServerConfig(url=first.url, timeout=5), OPEN_LOOPBACK)
        assert await server.get("mcp/flaky/add").call({"a": 1, "b": 1}) == {"sum": 2}
    with pytest.raises(ToolError, match=r"MCP server 'flaky' \(http://127.0.0.1:\d+/mcp\).*check that it runs"):
        await server.get("mcp/flaky/add").call({"a": 1, "b": 1})
    with McpHttpServer(port=port) as second:
        assert await server.get("mcp/flaky/add").call({"a": 2, "b": 2}) == {"sum": 4}
        assert second.requests  # a new session with the restarted server
    await server.aclose()


async def test_a_header_secret_is_sent_from_the_operators_secrets(
    http_server: McpHttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_SECRET_MCP_TOKEN", "s3cret-token-value")
    config = McpServerConfig(url=http_server.url, headers={"Authorization": "Bearer ${secret:MCP_TOKEN}"})
    server = McpServer("auth", config, Settings(home=tmp_path, egress_allow_internal=("127.0.0.1",)))
    await server.tools()
    assert {request["headers"]["authorization"] for request in http_server.requests} == {"Bearer s3cret-token-value"}
    await server.aclose()
    missing = McpServerConfig(url=http_server.url, headers={"Authorization": "Bearer ${secret:NOT_SET}"})
    with pytest.raises(ToolError, match=r"secret NOT_SET is not set; set AGENTFLOW_SECRET_NOT_SET"):
        await McpServer("nosecret", missing, Settings(home=tmp_path, egress_allow_internal=("127.0.0.1",))).tools()


async def test_nothing_connects_while_a_workflow_naming_mcp_tools_is_loaded(
    http_server: McpHttpServer, tmp_path: Path
) -> None:
    settings = tools_file(tmp_path, f"mcp:\n  fake:\n    url: {http_server.url}\n")
    registry = ToolRegistry()
    register_operator_tools(registry, settings)
    known = registry.known_names()
    workflow = load_workflow(WORKFLOW, "uses-mcp.yaml", known_tools=known, network_tools=registry.network_names())
    capabilities = derive(workflow, registry)
    assert "mcp/fake/add" in capabilities.tools
    assert "127.0.0.1" in capabilities.egress  # the server's host joins what a person grants
    assert registry.get("mcp/fake/add").capability() == "tool mcp/fake/add; egress to 127.0.0.1"
    assert http_server.requests == []  # loading, validating and deriving connected to nothing
    with pytest.raises(SpecErrors, match=r"unknown tool 'mcp/other/add'"):
        load_workflow(WORKFLOW.replace("mcp/fake/add", "mcp/other/add"), "x.yaml", known_tools=known)

    assert await registry.get("mcp/fake/add").call({"a": 2, "b": 3}) == {"sum": 5}  # the first use connects
    assert http_server.requests
    assert [server.name for server in mcp_servers(registry)] == ["fake"]
    assert "mcp/fake/echo" in list(known)  # listed now
    await aclose_operator_tools(registry)


def test_a_workflow_cannot_configure_an_mcp_server() -> None:
    configured = WORKFLOW.replace("  nodes:", "  mcp:\n    evil: {command: [sh, -c, 'touch /tmp/pwned']}\n  nodes:")
    with pytest.raises(SpecErrors, match=r"mcp"):
        load_workflow(configured, "evil.yaml")


async def test_the_listing_is_cached_and_refresh_reads_it_again() -> None:
    fake = build_server()
    opened: list[int] = []

    def connect() -> Client:
        opened.append(1)
        return Client(fake)

    server = McpServer("fake", McpServerConfig(url="http://mcp.example.com/mcp"), Settings(), client_factory=connect)
    first = await server.tools()
    again = await server.tools()
    assert [tool.name for tool in again] == [tool.name for tool in first]

    @fake.tool(description="Added later.")
    def later() -> str:
        return "new"

    assert "mcp/fake/later" not in [tool.name for tool in await server.tools()]  # still the cached list
    assert "mcp/fake/later" in [tool.name for tool in await server.refresh()]
    assert opened == [1]  # one session for all of it
    server.ttl_s = 0
    assert await server.get("mcp/fake/later").call({}) == {"result": "new"}
    await server.aclose()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
async def test_a_stdio_server_runs_inside_the_sandbox(tmp_path: Path) -> None:
    site_packages = next(Path(path) for path in sys.path if path.endswith("site-packages") and "mcp" in _listing(path))
    config = McpServerConfig(command=["python3", "-c", STDIO_SERVER], env={"GREETING": "from the sandbox"})
    server = McpServer("local", config, Settings(home=tmp_path, sandbox_packages=site_packages))
    text = await server.get("mcp/local/where").call({})
    result = json.loads(text)
    assert result["uid"] == 65534
    assert result["greeting"] == "from the sandbox"
    assert result["home_visible"] is False  # the host's files are not there
    assert result["network"].startswith("refused")
    await server.aclose()


def _listing(path: str) -> list[str]:
    try:
        return [entry.name for entry in Path(path).iterdir()]
    except OSError:
        return []


async def test_cancelling_a_call_leaves_no_task_behind() -> None:
    state = FakeTools()
    server = in_process(state)
    call = asyncio.ensure_future(server.get("mcp/fake/slow").call({}))
    await asyncio.to_thread(state.slow_started.wait, 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    state.release.set()
    await server.aclose()
    leftover = [task for task in asyncio.all_tasks() if task.get_name().startswith("mcp-session-")]
    assert leftover == []


async def test_a_workflows_agent_uses_an_mcp_servers_tools_with_their_schemas(
    http_server: McpHttpServer, tmp_path: Path, fake_llm: FakeLLM
) -> None:
    tools_yaml = tmp_path / "tools.yaml"
    tools_yaml.write_text(f"mcp:\n  fake:\n    url: {http_server.url}\n")
    settings = dataclasses.replace(fake_settings(tmp_path, fake_llm), tools_config=tools_yaml)
    flow = AgentFlow.open(settings)
    try:
        source = workflow(
            "mcp-agent",
            """
            inputs: {question: string}
            nodes:
              solve:
                type: agent
                instructions: Use the tools.
                input: "{{ inputs.question }}"
                tools: [mcp/fake/add]
            outputs: {answer: "{{ solve }}"}
            """,
        )
        assert http_server.requests == [], "saving the workflow connected to nothing"
        fake_llm.enqueue(ToolCalls([("mcp__fake__add", {"a": 2, "b": 40})]))
        fake_llm.enqueue(Text("2 + 40 = 42"))
        run = await run_source(flow, source, {"question": "What is 2 + 40?"})
        assert run.status == "succeeded", run.error
        (offered,) = fake_llm.requests[0]["tools"]
        assert offered["function"]["name"] == "mcp__fake__add"
        assert set(offered["function"]["parameters"]["properties"]) == {"a", "b"}  # the server's schema, listed
        (call,) = [event for event in flow.store.events(run.id) if event["type"] == "tool_call"]
        assert call["tool"] == "mcp/fake/add"
        assert call["result"] == {"sum": 42}
    finally:
        flow.close()
    assert mcp_servers(flow.engine.services.tools)[0]._session is None, "closing the app closed the session"


def test_tools_list_asks_each_server_and_names_one_that_does_not_answer(
    http_server: McpHttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tools_yaml = tmp_path / "tools.yaml"
    down = f"http://127.0.0.1:{closed_port()}/mcp"
    tools_yaml.write_text(f"mcp:\n  fake:\n    url: {http_server.url}\n  down:\n    url: {down}\n    timeout: 3\n")
    monkeypatch.setenv("AGENTFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AGENTFLOW_TOOLS_CONFIG", str(tools_yaml))
    monkeypatch.setenv("AGENTFLOW_EGRESS_ALLOW_INTERNAL", "127.0.0.1")
    assert main(["tools", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows["mcp/fake/add"]["parameters"]["properties"]) == {"a", "b"}
    assert rows["mcp/fake/add"]["source"] == "mcp:fake"
    assert "calculator" in rows
    assert "the MCP server 'down'" in rows["mcp/down/*"]["error"]
    assert main(["tools", "list"]) == 0
    text = capsys.readouterr().out
    assert "mcp/fake/echo" in text and "error: the MCP server 'down'" in text
