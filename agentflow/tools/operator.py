"""The operator's tools file (AGENTFLOW_HOME/tools.yaml): LangChain tools and MCP servers, never a workflow's.

Only the operator writes this file; a workflow names `langchain/<name>` or `mcp/<server>/<tool>` and can
reach nothing this file does not enable. A missing file means no operator tools; a broken one stops the
start with the file, line and key to fix. Reading it imports the LangChain modules it names (code the
operator chose) and connects to nothing: MCP servers are asked for their tools on first need.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentflow.settings import SettingsError
from agentflow.spec.errors import SpecErrors
from agentflow.spec.loader import MAX_FILE_BYTES, load_yaml
from agentflow.spec.model_errors import suggest
from agentflow.tools.registry import ToolError

if TYPE_CHECKING:
    from agentflow.settings import Settings
    from agentflow.tools.mcp_adapter import McpServer
    from agentflow.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_OBJECT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_SECRET = re.compile(r"\$\{secret:([A-Za-z_][A-Za-z0-9_]*)\}")


class OperatorToolsError(SettingsError):
    """The tools file cannot be used as written: the message names the file, line and key to fix."""


class LangChainEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    object: str = Field(description="`module:attribute`: a BaseTool class, instance, or a factory returning one")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Passed to the class or factory")
    network: bool = Field(True, description="It reaches the network (its own HTTP, which the guard cannot pin)")
    hosts: list[str] = Field(default_factory=list, description="The fixed hosts it reaches, added to egress")
    timeout: float = Field(60.0, gt=0, le=3600, description="Seconds for one call")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"object": value} if isinstance(value, str) else value

    @field_validator("object")
    @classmethod
    def _object(cls, value: str) -> str:
        if not _OBJECT.match(value):
            raise ValueError(f"{value!r} must be `module:attribute`, e.g. mypackage.tools:shout")
        return value


class McpServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="A streamable HTTP endpoint, e.g. https://mcp.example.com/mcp")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request; ${secret:NAME}")
    command: list[str] | None = Field(None, description="A stdio server's command, run inside the sandbox")
    env: dict[str, str] = Field(default_factory=dict, description="The stdio server's whole environment")
    network: bool = Field(False, description="stdio servers run without network")
    timeout: float = Field(30.0, gt=0, le=600, description="Seconds to connect, list or call")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.url is None) == (self.command is None):
            raise ValueError("give either `url` (a streamable HTTP server) or `command` (a stdio server), not both")
        if self.url is not None:
            if not re.match(r"^https?://[^/?#]+", self.url):
                raise ValueError(f"url {self.url!r} must be an http:// or https:// URL")
            if self.env:
                raise ValueError("`env` is for stdio servers (`command`); an HTTP server takes `headers`")
        else:
            if not self.command or not all(self.command):
                raise ValueError("`command` must be a non-empty list, e.g. [python3, -m, mcp_server_git]")
            if self.headers:
                raise ValueError("`headers` are for HTTP servers (`url`); a stdio server takes `env`")
            if self.network:
                raise ValueError(
                    "stdio servers run in the sandbox without network; serve it over HTTP and give its `url`"
                )
        for key, value in self.headers.items():
            if "${" in _SECRET.sub("", value):
                raise ValueError(f"header {key}: only ${{secret:NAME}} is substituted (an operator secret by name)")
        return self

    def header_value(self, key: str, secrets: Mapping[str, str]) -> str:
        """The header with its `${secret:NAME}` references resolved from the operator's secrets."""

        def resolve(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in secrets:
                why = getattr(secrets, "why_missing", None)
                raise ToolError(why(name) if why else f"secret {name} is not set")
            return secrets[name]

        return _SECRET.sub(resolve, self.headers[key])


class ToolsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    langchain: dict[str, LangChainEntry] = Field(default_factory=dict, description="name -> module:attribute")
    mcp: dict[str, McpServerConfig] = Field(default_factory=dict, description="server name -> how to reach it")

    @field_validator("langchain", "mcp", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not _NAME.match(str(name)):
                    raise ValueError(f"name {name!r} must be 1-64 letters, digits, '_' or '-'")
        return {} if value is None else value


def load_tools_file(path: Path) -> ToolsFile | None:
    """The operator's tools file, validated; None when there is none. OperatorToolsError says what to fix."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise OperatorToolsError(f"{path}: larger than {MAX_FILE_BYTES} bytes; a tools file is a few lines")
        source = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OperatorToolsError(f"{path}: cannot be read ({exc.strerror}); fix its permissions") from None
    try:
        document = load_yaml(source, str(path))
    except SpecErrors as exc:
        raise OperatorToolsError(str(exc)) from None
    if document.data is None:
        return ToolsFile()
    if not isinstance(document.data, dict):
        raise OperatorToolsError(f"{path}:1:1: the tools file is a mapping with `langchain:` and `mcp:` sections")
    try:
        return ToolsFile.model_validate(document.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = _data_path(error["loc"], document.data)
            line, column = document.position(where)
            problems.append(f"{path}:{line}:{column}: {_message(error, where, document.data)}")
        raise OperatorToolsError("\n".join(dict.fromkeys(problems))) from None


def _data_path(loc: tuple[int | str, ...], data: Any) -> tuple[str | int, ...]:
    """The part of a pydantic location that names keys in the file (validator names dropped)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        listed = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if listed or (isinstance(node, dict) and part in node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and part not in ("function-after", "function-before"):
            path.append(part)  # a missing or unknown key: name it
            break
    return tuple(path)


def _message(error: Any, where: tuple[str | int, ...], data: Any) -> str:
    key = ".".join(str(part) for part in where) or "the file"
    if error["type"] == "extra_forbidden":
        models: dict[int, type[BaseModel]] = {0: ToolsFile, 1: ToolsFile, 2: LangChainEntry}
        model = models.get(len(where) - 1, ToolsFile)
        if len(where) == 3 and where[0] == "mcp":
            model = McpServerConfig
        return f"{key}: unknown key; {suggest(str(where[-1]), list(model.model_fields), 'valid keys are')}"
    if error["type"] == "missing":
        return f"{key}: required; add it"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: {message}"


def register_operator_tools(registry: ToolRegistry, settings: Settings) -> None:
    """Add the tools file's LangChain tools (`langchain/<name>`) and MCP servers (`mcp/<server>/...`)."""
    loaded = load_tools_file(settings.tools_file)
    if loaded is None:
        return
    path = settings.tools_file
    if loaded.langchain:
        from agentflow.tools.langchain_adapter import load_langchain_tool

        for name, entry in loaded.langchain.items():
            try:
                registry.register(load_langchain_tool(name, entry), replace=True)
            except ToolError as exc:
                raise OperatorToolsError(f"{path}: langchain.{name}: {exc}") from None
    if loaded.mcp:
        from agentflow.tools.mcp_adapter import McpServer

        for name, config in loaded.mcp.items():
            registry.add_provider(McpServer(name, config, settings))


async def aclose_operator_tools(registry: ToolRegistry) -> None:
    """Close the sessions with the operator's MCP servers (at shutdown)."""
    from agentflow.tools.mcp_adapter import McpServer

    for provider in registry.providers():
        if isinstance(provider, McpServer):
            await provider.aclose()


def close_operator_tools(registry: ToolRegistry) -> None:
    """`aclose_operator_tools` from outside any event loop (the app's and the CLI's shutdown)."""
    for server in mcp_servers(registry):
        server.close()


def mcp_servers(registry: ToolRegistry) -> list[McpServer]:
    """The MCP servers the registry consults (for `agentflow tools list` and the Tools view)."""
    from agentflow.tools.mcp_adapter import McpServer

    return [provider for provider in registry.providers() if isinstance(provider, McpServer)]
