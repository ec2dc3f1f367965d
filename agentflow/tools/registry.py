"""Tools: a name, a description, a pydantic model for the arguments and an async function.

Built-in tools register through `ToolRegistry.register`, exactly as an outside plugin would.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic

if TYPE_CHECKING:
    from agentflow.trust.egress import EgressPolicy

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI-style function calling accepts


class ToolError(ValueError):
    """A tool was misused (unknown name, bad arguments) or failed in a way the model can act on."""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool call may reach: the run it serves and the network the workflow was granted."""

    run_id: str | None = None
    node_id: str | None = None
    egress: EgressPolicy | None = None
    """The hosts this call may reach; None: any public host, nothing internal (see `agentflow.trust.egress`)."""


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

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'")

    def parameters_schema(self) -> dict[str, Any]:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return schema

    def openai_spec(self) -> dict[str, Any]:
        """The OpenAI function-tool definition, as LiteLLM expects it in `tools=`."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters_schema()},
        }

    async def call(self, arguments: dict[str, Any], context: ToolContext | None = None) -> Any:
        try:
            args = self.args_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise ToolError(f"invalid arguments for tool '{self.name}': {_describe(exc)}") from None
        return await self.fn(args, context or ToolContext())


def _describe(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def register(self, tool: Tool, *, replace: bool = False) -> Tool:
        if tool.name in self._tools and not replace:
            raise ValueError(f"a tool named '{tool.name}' is already registered; pass replace=True to override it")
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolError(f"unknown tool '{name}'; available: {', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._tools)

    def network_names(self) -> list[str]:
        """The tools that reach the network (a workflow using one declares its egress)."""
        return sorted(name for name, tool in self._tools.items() if tool.network)

    def pure_names(self) -> list[str]:
        """The tools that only compute: using them needs no grant."""
        return sorted(name for name, tool in self._tools.items() if tool.pure)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter([self._tools[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._tools)


def builtin_registry() -> ToolRegistry:
    """A fresh registry holding the built-in tools."""
    from agentflow.tools.builtin import register_builtins

    registry = ToolRegistry()
    register_builtins(registry)
    return registry
