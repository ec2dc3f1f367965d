"""One executor per node type; `map` and `approval` are structural and live in the compiler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agentflow.engine.nodes import agent, llm, switch, tool, transform
from agentflow.engine.nodes.base import NodeConfigError, Outcome

Executor = Callable[[Any, dict[str, Any], Any, str], Awaitable[Outcome]]
EXECUTORS: dict[str, Executor] = {
    "llm": llm.execute,
    "agent": agent.execute,
    "tool": tool.execute,
    "transform": transform.execute,
    "switch": switch.execute,
}
# Nodes with effects outside the run: everything before them must be durable first.
EFFECTFUL = frozenset({"llm", "agent", "tool", "approval"})

__all__ = ["EFFECTFUL", "EXECUTORS", "NodeConfigError", "Outcome"]
