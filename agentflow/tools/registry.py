"""Tools: a name, a description, a pydantic model for the arguments and an async function.

Tools come from the `agentflow.tools` entry point group, the built-ins exactly as an outside package's
(`pip install agentflow-something` adds tools): each entry point names a `Tool`, or a function taking the
`Settings` and returning tools. The operator's LangChain tools and MCP servers are added from their file
(`agentflow.tools.operator`), never from a workflow.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

if TYPE_CHECKING:
    from agentflow.settings import Settings
    from agentflow.trust.egress import EgressPolicy

log = logging.getLogger(__name__)

ENTRY_POINTS = "agentflow.tools"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_.-]{1,64}){0,2}$")
"""`calculator`, `langchain/wikipedia`, `mcp/files/read_text_file`."""
_FUNCTION = re.compile(r"[^A-Za-z0-9_-]")  # what OpenAI-style function calling accepts in a name


class ToolError(ValueError):
    """A tool was misused (unknown name, bad arguments) or failed in a way the model can act on."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool call may reach: the run it serves and the network the workflow was granted."""

    run_id: str | None = None
    node_id: str | None = None
    egress: EgressPolicy | None = None
    """The hosts this call may reach; None: any public host, nothing internal (see `agentflow.trust.egress`)."""
    workflow: str | None = None
    workspace: Path | None = None
    """The workflow's own file workspace (read_file, write_file, code): created on first use."""
    secret: Callable[[str], str] | None = None
    """A granted secret's value by name (refused when not granted); the value is redacted from what is recorded."""
    settings: Settings | None = None
    memory: Any = None
    """The run's memory for this node (`agentflow.engine.memory.MemoryAccess`): None outside a run."""

    def secret_value(self, name: str) -> str:
        if self.secret is None:
            raise ToolError(f"secret {name} is not available here: only a workflow run can use a granted secret")
        return self.secret(name)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    args_model: type[pydantic.BaseModel]
    """Should forbid extra keys (`model_config = ConfigDict(extra="forbid")`)."""
    fn: Callable[[Any, ToolContext], Awaitable[Any]]
    """Called with a validated `args_model` instance and the call's context."""
    pure: bool = False
    """Only computes from its arguments (no network, files or side effects): not a capability to grant."""
    network: bool = False
    """Reaches the network: goes through the egress guard, and a workflow using it declares its egress."""
    hosts: tuple[str, ...] = ()
    """The fixed hosts a network tool reaches (en.wikipedia.org...): part of a workflow's egress when it uses it."""
    secret_arguments: tuple[str, ...] = ()
    """Arguments that name a secret (never hold one): a literal name in a tool node is a secret the workflow needs."""
    code: bool = False
    """Runs code in the sandbox: a workflow using it needs the `code` capability."""
    source: str = "builtin"
    """Where it comes from: builtin, a package's name, langchain, mcp:<server>."""
    timeout_s: float | None = None
    """A bound on every call (None: the tool bounds itself, e.g. by its own `timeout` argument)."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-' "
                "(adapters add a prefix: langchain/NAME, mcp/SERVER/NAME)"
            )

    @property
    def function_name(self) -> str:
        """The name a model calls it by: `mcp/files/read` becomes `mcp__files__read` (at most 64 characters)."""
        return _FUNCTION.sub("_", self.name.replace("/", "__"))[:64]

    def capability(self) -> str:
        """What a person grants when a workflow uses it, in words."""
        if self.pure:
            return "nothing (computes only)"
        needs = [f"tool {self.name}"]
        if self.code:
            needs.append("code execution in the sandbox")
        if self.network:
            needs.append(f"egress to {', '.join(self.hosts)}" if self.hosts else "egress to the hosts it is given")
        if self.secret_arguments:
            needs.append(f"the secret named by `{'`, `'.join(self.secret_arguments)}`")
        return "; ".join(needs)

    def parameters_schema(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return schema

    def openai_spec(self) -> dict[str, Any]:
        """The OpenAI function-tool definition, as LiteLLM expects it in `tools=`."""
        return {
            "type": "function",
            "function": {
                "name": self.function_name,
                "description": self.description,
                "parameters": self.parameters_schema(),
            },
        }

    async def call(self, arguments: dict[str, Any], context: ToolContext | None = None) -> Any:
        try:
            args = self.args_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise ToolError(f"invalid arguments for tool '{self.name}': {_describe(exc)}") from None
        if self.timeout_s is None:
            return await self.fn(args, context or ToolContext())
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.fn(args, context or ToolContext())
        except TimeoutError:
            raise ToolError(f"tool '{self.name}' gave no result within {self.timeout_s:g} s") from None

    def describe(self) -> dict[str, Any]:
        """For `agentflow tools list --json`, the API and the Tools view."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "parameters": self.parameters_schema(),
            "pure": self.pure,
            "network": self.network,
            "hosts": list(self.hosts),
            "code": self.code,
            "secret_arguments": list(self.secret_arguments),
            "capability": self.capability(),
        }


def _describe(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


class ToolProvider(Protocol):
    """Tools under a name prefix that are known only by asking a server (an MCP server's `mcp/<server>/`).

    `get` and `listed` never connect: loading and validating a workflow stay offline. `tools` asks the
    server; `prepare` on the registry calls it before a run uses one of the provider's tools."""

    @property
    def prefix(self) -> str: ...

    def get(self, name: str) -> Tool:
        """The tool for a full name under the prefix (a deferred one when not listed yet)."""
        ...

    def listed(self) -> list[Tool]:
        """The tools of the last listing, without connecting."""
        ...

    async def tools(self) -> list[Tool]:
        """The provider's tools now (connects when the listing is missing or stale)."""
        ...


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._providers: list[ToolProvider] = []

    def add_provider(self, provider: ToolProvider) -> None:
        """Names under `provider.prefix` are the provider's (a registered tool of the same name comes first)."""
        if any(other.prefix == provider.prefix for other in self._providers):
            raise ValueError(f"a tool provider for '{provider.prefix}' is already registered")
        self._providers.append(provider)

    def providers(self) -> list[ToolProvider]:
        return list(self._providers)

    def _provider_for(self, name: str) -> ToolProvider | None:
        return next(
            (p for p in self._providers if name.startswith(p.prefix) and len(name) > len(p.prefix)),
            None,
        )

    async def prepare(self, names: Iterable[str]) -> None:
        """List the providers these names belong to (before a run's agent offers them to a model)."""
        wanted = {id(p): p for name in names if name not in self._tools if (p := self._provider_for(name))}
        for provider in wanted.values():
            await provider.tools()

    def known_names(self) -> Collection[str]:
        """What a workflow may name: the registered tools, and any name under a provider's prefix (its
        server is not asked while validating; a name it lacks fails at the call, naming the ones it has)."""
        return _KnownNames(self)

    def register(self, tool: Tool, *, replace: bool = False) -> Tool:
        if tool.name in self._tools and not replace:
            raise ValueError(f"a tool named '{tool.name}' is already registered; pass replace=True to override it")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is not None:
            return tool
        provider = self._provider_for(name)
        if provider is not None:
            return provider.get(name)
        raise ToolError(f"unknown tool '{name}'; available: {', '.join(self.names()) or 'none'}")

    def names(self) -> list[str]:
        return sorted(self._tools)

    def network_names(self) -> list[str]:
        """The tools that reach the network (a workflow using one declares its egress)."""
        return sorted(name for name, tool in self._tools.items() if tool.network)

    def pure_names(self) -> list[str]:
        """The tools that only compute: using them needs no grant."""
        return sorted(name for name, tool in self._tools.items() if tool.pure)

    def __contains__(self, name: object) -> bool:
        return name in self._tools or (isinstance(name, str) and self._provider_for(name) is not None)

    def __iter__(self) -> Iterator[Tool]:
        """The registered tools and the providers' tools as last listed (iterating never connects)."""
        listed = {tool.name: tool for provider in self._providers for tool in provider.listed()}
        every = {**listed, **self._tools}
        return iter([every[name] for name in sorted(every)])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    async def listing(self) -> tuple[list[Tool], dict[str, str]]:
        """Every tool, the providers asked now; a provider that cannot list gives its error, by prefix."""
        problems: dict[str, str] = {}
        for provider in self._providers:
            try:
                await provider.tools()
            except ToolError as exc:
                problems[provider.prefix] = str(exc)
        return list(self), problems

    def code_names(self) -> list[str]:
        """The tools that run code in the sandbox (python, shell): using one needs the `code` capability."""
        return sorted(name for name, tool in self._tools.items() if tool.code)

    def by_function_name(self, function_name: str) -> Tool | None:
        return next((tool for tool in self._tools.values() if tool.function_name == function_name), None)


class _KnownNames(Collection[str]):
    def __init__(self, registry: ToolRegistry) -> None:
        self._registry = registry

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __iter__(self) -> Iterator[str]:
        listed = [tool.name for provider in self._registry.providers() for tool in provider.listed()]
        return iter(sorted({*self._registry.names(), *listed}))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def installed_tools(settings: Settings) -> Iterator[Tool]:
    """Every tool of the `agentflow.tools` entry point group; a broken plugin is logged and skipped."""
    for point in sorted(entry_points(group=ENTRY_POINTS), key=lambda point: (point.dist is None, point.name)):
        distribution = point.dist.name if point.dist is not None else None
        try:
            loaded = point.load()
            tools: Iterable[Tool] = [loaded] if isinstance(loaded, Tool) else loaded(settings)
            for tool in tools:
                # A package's tools say which package they come from; AgentFlow's own are the built-ins.
                yield tool if distribution in (None, "agentflow") else replace(tool, source=distribution)
        except Exception as exc:
            log.warning(
                "tool plugin %r (%s) could not be loaded: %s: %s", point.name, point.value, type(exc).__name__, exc
            )


def builtin_registry(settings: Settings | None = None, *, operator: bool = True) -> ToolRegistry:
    """A fresh registry holding every installed tool, and (with `operator`) the operator's LangChain and MCP
    tools from their file."""
    from agentflow.settings import Settings

    settings = settings or Settings.from_env()
    registry = ToolRegistry()
    for tool in installed_tools(settings):
        if tool.name in registry:
            log.warning("tool %r from %s is already registered; the first one is kept", tool.name, tool.source)
            continue
        registry.register(tool)
    if "calculator" not in registry:
        raise RuntimeError(
            "the built-in tools are missing: AgentFlow's entry points are not installed (run `make install`, "
            "or `pip install -e .` in this checkout)"
        )
    if operator:
        from agentflow.tools.operator import register_operator_tools

        register_operator_tools(registry, settings)
    return registry
