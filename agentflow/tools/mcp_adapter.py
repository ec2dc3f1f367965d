"""The operator's MCP servers as tools: `mcp/<server>/<tool>`, listed on first need and called over one session.

Nothing connects while a workflow is loaded or validated: a name under a configured server is known before
its tool is (`McpServer.get` hands out a tool that reads the server's list on its first call). The list is
cached for `LIST_TTL_S` and `refresh()` reads it again. An HTTP server is reached only through a client
whose every connection goes to the address the egress guard checked when the session opened (internal
addresses need the operator's AGENTFLOW_EGRESS_ALLOW_INTERNAL); a stdio server's command runs in the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2
import jsonschema
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from agentflow.sandbox.base import PACKAGES
from agentflow.tools.registry import Tool, ToolContext, ToolError
from agentflow.trust.egress import EgressDenied, EgressPolicy

if TYPE_CHECKING:
    from agentflow.settings import Settings
    from agentflow.tools.operator import McpServerConfig

log = logging.getLogger(__name__)

LIST_TTL_S = 300.0
"""How long a server's tool list is trusted before the next use reads it again."""
MAX_RESULT_CHARS = 100_000
MAX_LIST_PAGES = 50

ClientFactory = Callable[[], Client]


class _AnyArguments(BaseModel):
    # The arguments of a tool whose server has not been asked yet: checked against its schema when it is called.
    model_config = ConfigDict(extra="allow")


@dataclass(eq=False)
class _Session:
    client: Client
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None
    broken: bool = False


@dataclass(eq=False)
class McpServer:
    """One server of the operator's tools file: a `ToolProvider` for the names under `mcp/<name>/`."""

    name: str
    config: McpServerConfig
    settings: Settings
    client_factory: ClientFactory | None = None
    """How to open a client (tests connect in-process); None: from the config (HTTP, or stdio in the sandbox)."""
    ttl_s: float = LIST_TTL_S
    _tools: dict[str, Tool] = field(default_factory=dict, init=False)
    _listed_at: float | None = field(default=None, init=False)
    _session: _Session | None = field(default=None, init=False)
    _lock: asyncio.Lock | None = field(default=None, init=False)
    _lock_loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)

    @property
    def prefix(self) -> str:
        return f"mcp/{self.name}/"

    @property
    def hosts(self) -> tuple[str, ...]:
        host = httpx2.URL(self.config.url).host if self.config.url else ""
        return (host,) if host else ()

    @property
    def where(self) -> str:
        return self.config.url or "stdio: " + " ".join(self.config.command or ())

    # -- the provider side: names, without connecting ---------------------------------------

    def get(self, name: str) -> Tool:
        """The listed tool, or (not listed yet) one that lists the server on its first call."""
        tool_name = name.removeprefix(self.prefix)
        return self._tools.get(tool_name) or self._deferred(tool_name)

    def listed(self) -> list[Tool]:
        """The tools of the last listing (none before the first): never connects."""
        return [self._tools[name] for name in sorted(self._tools)]

    def _deferred(self, tool_name: str) -> Tool:
        async def call(args: _AnyArguments, context: ToolContext) -> Any:
            self._check_egress(self.prefix + tool_name, context)
            tool = await self.tool(tool_name)
            return await tool.call(args.model_dump(), context)

        return Tool(
            name=self.prefix + tool_name,
            description=f"{tool_name} on the MCP server '{self.name}' (its arguments are read on first use)",
            args_model=_AnyArguments,
            fn=call,
            network=bool(self.hosts),
            hosts=self.hosts,
            source=f"mcp:{self.name}",
        )

    # -- listing ------------------------------------------------------------------------------

    async def tool(self, tool_name: str) -> Tool:
        """A tool of this server by its own name; ToolError naming the ones it has when it has no such tool."""
        if tool_name not in self._tools or not self._fresh():
            await self.refresh()
        if tool_name not in self._tools:
            have = ", ".join(sorted(self._tools)) or "none"
            raise ToolError(f"the MCP server '{self.name}' has no tool '{tool_name}'; its tools are: {have}")
        return self._tools[tool_name]

    async def tools(self) -> list[Tool]:
        """The server's tools, from the cache while it is fresh."""
        if not self._fresh():
            await self.refresh()
        return self.listed()

    async def refresh(self) -> list[Tool]:
        """Ask the server for its tools now (after `ttl_s`, a use asks again by itself)."""
        session = await self._open()
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.config.timeout):
                for _ in range(MAX_LIST_PAGES):
                    page = await session.client.list_tools(cursor=cursor, cache_mode="refresh")
                    listed += page.tools
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except TimeoutError:
            raise ToolError(
                f"the MCP server '{self.name}' did not list its tools within {self.config.timeout:g} s"
            ) from None
        except Exception as exc:
            await self._drop(session)
            raise self._failure("listing its tools", exc) from None
        tools = {}
        for item in listed:
            tool = self._adapt(item)
            if tool is not None:
                tools[item.name] = tool
        self._tools, self._listed_at = tools, time.monotonic()
        return self.listed()

    def _fresh(self) -> bool:
        return self._listed_at is not None and time.monotonic() - self._listed_at < self.ttl_s

    def _adapt(self, item: mcp_types.Tool) -> Tool | None:
        name = self.prefix + item.name
        try:
            model = json_schema_model(item.name, item.input_schema)

            async def call(args: BaseModel, context: ToolContext) -> Any:
                return await self.call(item.name, args.model_dump(), context)

            return Tool(
                name=name,
                description=item.description or f"{item.name} on the MCP server '{self.name}'",
                args_model=model,
                fn=call,
                network=bool(self.hosts),
                hosts=self.hosts,
                source=f"mcp:{self.name}",
                timeout_s=self.config.timeout,
            )
        except ValueError as exc:
            log.warning("the MCP server %r offers a tool AgentFlow cannot use (%r): %s", self.name, item.name, exc)
            return None

    # -- calling -------------------------------------------------------------------------------

    async def call(self, tool_name: str, arguments: dict[str, Any], context: ToolContext | None = None) -> Any:
        """Call a tool on the server; its error text, a lost connection or a refused host come back as ToolError."""
        label = f"{self.prefix}{tool_name}"
        self._check_egress(label, context)
        session = await self._open()
        try:
            result = await session.client.call_tool(tool_name, arguments)
        except (asyncio.CancelledError, TimeoutError):
            raise
        except MCPError as exc:
            if exc.code != mcp_types.CONNECTION_CLOSED:
                raise ToolError(f"{label} failed: {exc.message}") from None
            await self._drop(session)
            raise self._failure(f"calling {tool_name}", exc) from None
        except Exception as exc:
            await self._drop(session)
            raise self._failure(f"calling {tool_name}", exc) from None
        if result.is_error:
            raise ToolError(f"{label} failed: {_text(result.content) or 'the server gave no reason'}")
        return _json_result(result)

    def _check_egress(self, label: str, context: ToolContext | None) -> None:
        """The workflow must have been granted the server's host (it joins the egress a person grants)."""
        if context is None or context.egress is None:
            return
        for host in self.hosts:
            try:
                context.egress.check_host(host)
            except EgressDenied as exc:
                raise EgressDenied(f"{label} to {exc.target}", exc.reason) from None

    # -- the session ---------------------------------------------------------------------------

    async def _open(self) -> _Session:
        """The server's session, opened on first use and reopened after a failure or in another event loop."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            session = self._session
            if session is not None and session.loop is loop and not session.broken:
                return session
            if session is not None and session.loop is loop:
                await self._drop(session)
            self._session = await self._connect(loop)
            return self._session

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Session:
        client = self.client_factory() if self.client_factory is not None else self._client()
        ready: asyncio.Future[None] = loop.create_future()
        session = _Session(client=client, loop=loop, stop=asyncio.Event())
        # The client's task group must be entered and left in one task: a task holds it for the session's life.
        session.task = loop.create_task(self._hold(session, ready), name=f"mcp-session-{self.name}")
        try:
            async with asyncio.timeout(self.config.timeout):
                await asyncio.shield(ready)
        except TimeoutError:
            await self._drop(session)
            raise ToolError(
                f"the MCP server '{self.name}' ({self.where}) did not answer within {self.config.timeout:g} s; "
                f"check that it runs, or raise its timeout in {self.settings.tools_file}"
            ) from None
        except BaseException as exc:
            await self._drop(session)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self._failure("connecting", exc) from None
        return session

    async def _hold(self, session: _Session, ready: asyncio.Future[None]) -> None:
        try:
            async with session.client:
                ready.set_result(None)
                await session.stop.wait()
        except BaseException as exc:
            session.broken = True
            if not ready.done():
                ready.set_exception(_root(exc))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("the session with the MCP server %r ended: %s", self.name, _root(exc))

    def _client(self) -> Client:
        if self.config.url is not None:
            return Client(streamable_http_client(self.config.url, http_client=self._http_client()))
        return Client(sandboxed_stdio(self.settings, self.config))

    def _http_client(self) -> httpx2.AsyncClient:
        from agentflow.trust.secrets import OperatorSecrets

        secrets = OperatorSecrets(self.settings.home)
        headers = {key: self.config.header_value(key, secrets) for key in self.config.headers}
        transport = PinnedTransport(
            EgressPolicy(hosts=None, allow_internal=self.settings.egress_allow_internal),
            httpx2.URL(self.config.url or ""),
        )
        timeout = httpx2.Timeout(self.config.timeout, read=max(self.config.timeout, 300.0))
        return httpx2.AsyncClient(
            transport=transport, headers=headers, timeout=timeout, trust_env=False, follow_redirects=False
        )

    async def _drop(self, session: _Session) -> None:
        """Close a session (the next use opens a new one)."""
        session.broken = True
        session.stop.set()
        if self._session is session:
            self._session = None
        task = session.task
        if task is not None and not task.done() and session.loop is asyncio.get_running_loop():
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except Exception:
                pass

    async def aclose(self) -> None:
        if self._session is not None:
            await self._drop(self._session)

    def close(self, timeout: float = 10) -> None:
        """Close the session from any thread (at shutdown): on the loop that holds it, while that loop runs."""
        session = self._session
        if session is None:
            return
        if session.loop.is_closed() or not session.loop.is_running():
            self._session = None  # its loop is gone, and the session's task with it
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is session.loop:  # called from the session's own loop: it cannot block, so it asks
            session.broken = True
            session.stop.set()  # the session's task leaves the client at the loop's next turn
            self._session = None
            return
        future = asyncio.run_coroutine_threadsafe(self._drop(session), session.loop)
        try:
            future.result(timeout)
        except Exception as exc:  # shutting down: say so, and go on
            log.warning("closing the session with the MCP server %r: %s", self.name, type(exc).__name__)

    def _failure(self, doing: str, exc: BaseException) -> ToolError:
        cause = _root(exc)
        if isinstance(cause, EgressDenied):
            return EgressDenied(f"the MCP server '{self.name}' at {cause.target}", cause.reason)
        if isinstance(cause, ToolError):
            return cause
        return ToolError(
            f"the MCP server '{self.name}' ({self.where}) failed while {doing}: {type(cause).__name__}: {cause}; "
            f"check that it runs and its entry in {self.settings.tools_file} (the next use reconnects)"
        )


class PinnedTransport(httpx2.AsyncBaseTransport):
    """Sends every request of an MCP session to its endpoint's origin, at the address checked when it opened.

    The name is resolved once, through the egress guard's rules (a public address, or one the operator
    opened); `Host`, TLS SNI and certificate checks keep the name. A request for another origin is refused.
    """

    def __init__(self, policy: EgressPolicy, endpoint: httpx2.URL) -> None:
        if endpoint.scheme not in ("http", "https"):
            raise EgressDenied(str(endpoint), "an MCP server URL must be http:// or https://")
        self._policy = policy
        self._origin = (endpoint.scheme, endpoint.host, endpoint.port)
        self._addresses: list[Any] | None = None
        self._inner = httpx2.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if (url.scheme, url.host, url.port) != self._origin:
            raise EgressDenied(str(url), "an MCP session only talks to its own server's origin")
        host = url.host
        if self._addresses is None:
            self._addresses = await self._policy.resolve(host, url.port or (443 if url.scheme == "https" else 80))
        netloc = f"[{host}]" if ":" in host else host
        headers = [(key, value) for key, value in request.headers.raw if key.lower() != b"host"]
        headers.insert(0, (b"Host", (netloc if url.port is None else f"{netloc}:{url.port}").encode("ascii")))
        extensions = dict(request.extensions)
        if url.scheme == "https" and ":" not in host and not host.replace(".", "").isdigit():
            extensions["sni_hostname"] = host
        last: Exception | None = None
        for address in self._addresses:
            pinned = httpx2.Request(
                request.method,
                url.copy_with(host=str(address)),
                headers=headers,
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx2.ConnectError as exc:  # the next checked address when one refuses the connection
                last = exc
        assert last is not None
        raise last

    async def aclose(self) -> None:
        await self._inner.aclose()


def _root(exc: BaseException) -> BaseException:
    """The first real error inside the task groups' exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _text(content: list[mcp_types.ContentBlock]) -> str:
    return "\n".join(block.text for block in content if isinstance(block, mcp_types.TextContent))


def _json_result(result: mcp_types.CallToolResult) -> Any:
    """Structured content as it is; otherwise the text (one block) or a list of blocks, cut at MAX_RESULT_CHARS."""
    if result.structured_content is not None:
        return result.structured_content
    blocks = [_block(block) for block in result.content]
    if len(blocks) == 1 and isinstance(blocks[0], str):
        return _cut(blocks[0])
    return blocks


def _block(block: mcp_types.ContentBlock) -> Any:
    if isinstance(block, mcp_types.TextContent):
        return _cut(block.text)
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        return {"type": block.type, "mime_type": block.mime_type, "base64_chars": len(block.data)}
    if isinstance(block, mcp_types.ResourceLink):
        return {"type": "resource_link", "uri": str(block.uri), "name": block.name}
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        text = getattr(resource, "text", None)
        return {"type": "resource", "uri": str(resource.uri), **({"text": _cut(text)} if text is not None else {})}
    return {"type": getattr(block, "type", "unknown")}


def _cut(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    return text[:MAX_RESULT_CHARS] + f"\n[cut at {MAX_RESULT_CHARS} characters]"


# -- arguments checked against a JSON schema (MCP tools; LangChain tools reuse it) ------------------


def json_schema_model(title: str, schema: Mapping[str, Any]) -> type[BaseModel]:
    """A pydantic model whose validation is `schema` (JSON Schema) with unknown keys refused at the top.

    ValueError when the schema itself is not valid JSON Schema or does not describe an object.
    """
    closed = dict(schema)
    if closed.get("type", "object") != "object":
        raise ValueError(f"its arguments schema must describe an object, not {closed.get('type')!r}")
    closed.setdefault("type", "object")
    closed.setdefault("properties", {})
    closed.setdefault("additionalProperties", False)
    try:
        validator_class = jsonschema.validators.validator_for(closed, default=jsonschema.Draft202012Validator)
        validator_class.check_schema(closed)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"its arguments schema is not valid JSON Schema: {exc.message}") from None
    validator = validator_class(closed)
    published = {key: value for key, value in closed.items() if key not in ("title", "$schema")}

    class Arguments(BaseModel):
        model_config = ConfigDict(extra="allow")

        @model_validator(mode="before")
        @classmethod
        def _check(cls, data: Any) -> Any:
            if not isinstance(data, dict):
                raise PydanticCustomError("arguments", "arguments must be an object (a mapping of names to values)")
            problems = [_schema_problem(error, closed) for error in validator.iter_errors(data)]
            if problems:
                raise PydanticCustomError("arguments", "; ".join(sorted(problems)[:5]))
            return data

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return copy.deepcopy(published)

    Arguments.__name__ = Arguments.__qualname__ = f"{title}_arguments"
    return Arguments


def _schema_problem(error: jsonschema.ValidationError, schema: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties" and not error.absolute_path:
        known = ", ".join(sorted(schema.get("properties", {}))) or "none"
        given = error.instance if isinstance(error.instance, dict) else {}
        unknown = sorted(set(given) - set(schema.get("properties", {})))
        return f"unknown argument {', '.join(repr(name) for name in unknown)}; valid arguments are {known}"
    if error.validator == "required":
        return f"{error.message} (a required argument)" if not where else f"{where}: {error.message}"
    return f"{where}: {error.message}" if where else error.message


# -- stdio servers: the command runs in the sandbox ---------------------------------------------------------


def sandboxed_stdio(settings: Settings, config: McpServerConfig) -> Any:
    """An MCP transport to a stdio server whose command runs under bubblewrap: no network, no host files.

    The sandbox backends run one-shot jobs; a server needs a long-lived process with open pipes, so it is
    started here with the sandbox's namespaces until the sandbox offers such a process itself.
    """
    if shutil.which("bwrap") is None:
        raise ToolError(
            "stdio MCP servers need the sandbox, and bubblewrap is not installed here: apt-get install bubblewrap, "
            "or run the server over HTTP and give its url in the tools file"
        )
    command = list(config.command or ())
    arguments = [*_BWRAP, *_packages_mount(settings), "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"]
    arguments += ["--setenv", "HOME", "/work", "--setenv", "LANG", "C.UTF-8"]
    if settings.sandbox_packages is not None and settings.sandbox_packages.is_dir():
        arguments += ["--setenv", "PYTHONPATH", PACKAGES]
    for key, value in config.env.items():
        arguments += ["--setenv", key, value]
    return stdio_client(StdioServerParameters(command="bwrap", args=[*arguments, "--", *command], env={}))


_BWRAP = (
    *("--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"),
    *("--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin"),
    *("--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/work", "--chdir", "/work"),
    *("--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"),
)
"""The namespaces and mounts of docs/sandbox.md: read-only /usr, an empty /work and /tmp, no network."""


def _packages_mount(settings: Settings) -> list[str]:
    packages = settings.sandbox_packages
    return ["--ro-bind", str(packages.resolve()), PACKAGES] if packages is not None and packages.is_dir() else []
