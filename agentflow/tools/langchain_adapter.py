"""A LangChain `BaseTool` the operator enabled, as the tool `langchain/<name>`.

Only the operator's tools file names a module to import; a workflow only names `langchain/<name>`, which
must already be in the registry. A LangChain tool does its own HTTP, which the egress guard cannot pin:
it is trusted code the operator chose, marked as reaching the network (so a workflow using it declares
its egress and a person grants it) unless the operator says otherwise.
"""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from agentflow.tools.mcp_adapter import json_schema_model
from agentflow.tools.registry import Tool, ToolContext, ToolError

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from agentflow.tools.operator import LangChainEntry

MAX_OUTPUT_CHARS = 100_000


def load_langchain_tool(name: str, entry: LangChainEntry) -> Tool:
    """Import `entry.object` and adapt the BaseTool it gives; ToolError says what is wrong with the entry."""
    return adapt(name, _base_tool(_import(entry.object), entry.kwargs), entry)


def adapt(name: str, tool: BaseTool, entry: LangChainEntry) -> Tool:
    """The `langchain/<name>` tool calling `tool.ainvoke` with arguments checked against its schema."""
    try:
        model = json_schema_model(name, _schema(tool))
    except ValueError as exc:
        raise ToolError(f"the LangChain tool {tool.name!r} cannot be offered: {exc}") from None
    label = f"langchain/{name}"

    async def call(args: BaseModel, context: ToolContext) -> Any:
        try:
            output = await tool.ainvoke(args.model_dump())
        except Exception as exc:
            raise ToolError(f"{label} failed: {type(exc).__name__}: {exc}") from None
        return bounded(output)

    return Tool(
        name=label,
        description=tool.description or f"the LangChain tool {tool.name}",
        args_model=model,
        fn=call,
        network=entry.network,
        hosts=tuple(entry.hosts),
        source="langchain",
        timeout_s=entry.timeout,
    )


def bounded(output: Any) -> Any:
    """JSON-able output as it is while it is small; anything else as text, cut at MAX_OUTPUT_CHARS."""
    content = getattr(output, "content", output)  # a ToolMessage carries its content
    try:
        text = json.dumps(content, ensure_ascii=False)
    except (TypeError, ValueError):
        text = None
    if text is not None and len(text) <= MAX_OUTPUT_CHARS:
        return content
    shown = content if isinstance(content, str) else str(content) if text is None else text
    if len(shown) <= MAX_OUTPUT_CHARS:
        return shown
    return shown[:MAX_OUTPUT_CHARS] + f"\n[cut at {MAX_OUTPUT_CHARS} characters]"


def _schema(tool: BaseTool) -> dict[str, Any]:
    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        return schema
    if hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    raise ToolError(f"the LangChain tool {tool.name!r} has a pydantic v1 schema; give it a pydantic v2 args_schema")


def _import(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ToolError(f"cannot import {module_name} ({exc}); install the package that provides it") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ToolError(f"{module_name} has no attribute {attribute!r}; check the name after the ':'") from None
    return found


def _base_tool(found: Any, kwargs: dict[str, Any]) -> BaseTool:
    """A BaseTool instance as it is; a BaseTool class or a factory called with `kwargs`."""
    try:
        from langchain_core.tools import BaseTool
    except ImportError:
        raise ToolError("LangChain tools need langchain-core: pip install 'agentflow[langchain]'") from None
    if isinstance(found, BaseTool):
        if kwargs:
            raise ToolError("kwargs are given, but the object is already a tool instance; remove kwargs")
        return found
    if not callable(found):
        raise ToolError(f"{found!r} is not a LangChain tool, a BaseTool class or a factory returning one")
    try:
        made = found(**kwargs)
    except Exception as exc:
        raise ToolError(f"creating it failed: {type(exc).__name__}: {exc}; check its kwargs") from None
    if not isinstance(made, BaseTool):
        raise ToolError(f"it gave {type(made).__name__}, not a LangChain BaseTool; name a tool, its class or factory")
    return made
