"""`memory_search` and `memory_save`: an agent reads and writes the memory of its workflow.

The scopes are the workflow's own (`workflow`, `agent`, `user`, `session`) and, when a person granted it
(`spec.permissions.memory: [global]`), the shared `global` one. Outside a workflow run there is no memory.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentflow.settings import Settings
from agentflow.tools.registry import Tool, ToolContext, ToolError

Scope = Literal["workflow", "agent", "user", "session", "global"]


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="What to look for, in words", min_length=1, max_length=2000)
    scope: Scope = Field("workflow", description="workflow (default), agent, user, session, or global if granted")
    top_k: int = Field(5, ge=1, le=20, description="At most this many memories")


class SaveArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="One durable fact, in a sentence", min_length=1, max_length=4000)
    scope: Scope = Field("workflow", description="workflow (default), agent, user, session, or global if granted")
    tags: list[str] = Field(default_factory=list, max_length=10)
    importance: float = Field(0.5, ge=0, le=1)


def _memory(context: ToolContext) -> Any:
    if context.memory is None:
        raise ToolError("memory is only available to an agent inside a workflow run")
    return context.memory


async def memory_search(args: SearchArgs, context: ToolContext) -> list[dict[str, Any]]:
    return list(await _memory(context).search(args.query, args.scope, args.top_k))


async def memory_save(args: SaveArgs, context: ToolContext) -> dict[str, Any]:
    item_id = await _memory(context).save(args.text, args.scope, args.tags, args.importance)
    return {"saved": item_id, "scope": args.scope}


def tools(settings: Settings) -> list[Tool]:
    return [
        Tool(
            name="memory_search",
            description=(
                "Search what this workflow remembers from earlier runs (keyword and, when configured, semantic "
                "search). Returns [{id, text, score}] best first."
            ),
            args_model=SearchArgs,
            fn=memory_search,
            timeout_s=30,
        ),
        Tool(
            name="memory_save",
            description="Remember one durable fact for later runs of this workflow. Never save secrets.",
            args_model=SaveArgs,
            fn=memory_save,
            timeout_s=30,
        ),
    ]
