"""A scripted MCP server for the adapter's tests: in-process (`Client(build_server())`) or over streamable HTTP.

Its tools: `add` (structured result), `echo` (text), `fail` (reports an error), `slow` (waits until released,
so a timeout can be tested without a clock) and `count_calls`. `McpHttpServer.requests` logs every HTTP
request the server received, so a test can prove nothing connected.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError as MCPToolError
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fakes.openai_server import _bind, _Server


class FakeTools:
    """The state the fake's tools share with a test: calls made, and the gate the slow tool waits on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.slow_started = threading.Event()
        self.release = threading.Event()


def build_server(state: FakeTools | None = None) -> MCPServer:
    state = state or FakeTools()
    server = MCPServer("fake-tools", log_level="WARNING")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> dict[str, int]:
        state.calls.append(("add", {"a": a, "b": b}))
        return {"sum": a + b}

    @server.tool(description="Return the text it is given.")
    def echo(text: str) -> str:
        state.calls.append(("echo", {"text": text}))
        return text

    @server.tool(description="Always fails.")
    def fail(reason: str = "broken on purpose") -> str:
        state.calls.append(("fail", {"reason": reason}))
        raise MCPToolError(reason)

    @server.tool(description="Waits until the test releases it.")
    async def slow() -> str:
        state.calls.append(("slow", {}))
        state.slow_started.set()
        await asyncio.to_thread(state.release.wait)
        return "released"

    return server


class _RequestLog:
    """ASGI middleware recording (method, path, headers) of every HTTP request."""

    def __init__(self, app: ASGIApp, log: list[dict[str, Any]]) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
            self.log.append({"method": scope["method"], "path": scope["path"], "headers": headers})
        await self.app(scope, receive, send)


class McpHttpServer:
    """The fake MCP server over streamable HTTP on 127.0.0.1 (a free port), from a daemon thread."""

    def __init__(self, state: FakeTools | None = None, port: int = 0) -> None:
        self.state = state or FakeTools()
        self.requests: list[dict[str, Any]] = []
        app = build_server(self.state).streamable_http_app(streamable_http_path="/mcp")
        self._socket = _bind(port)
        self.port: int = self._socket.getsockname()[1]
        self._ready = threading.Event()
        config = uvicorn.Config(
            _RequestLog(app, self.requests), log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        self._server = _Server(config, self._ready.set)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def __enter__(self) -> McpHttpServer:
        self._thread.start()
        if not self._ready.wait(timeout=15):
            raise RuntimeError("fake MCP server did not start within 15 s")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.state.release.set()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


STDIO_SERVER = """
import os, socket
from mcp.server.mcpserver import MCPServer

server = MCPServer("sandboxed", log_level="WARNING")

@server.tool(description="Where this server runs.")
def where() -> dict:
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2).close()
        network = "reachable"
    except OSError as exc:
        network = f"refused: {exc}"
    return {
        "uid": os.getuid(),
        "greeting": os.environ.get("GREETING"),
        "home_visible": os.path.exists("/root"),
        "network": network,
    }

server.run()
"""
"""A stdio MCP server as `python3 -c` source: the sandbox mounts no test files, only the packages."""
