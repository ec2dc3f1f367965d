"""One executor per node type; `map` and `approval` are structural and live in the compiler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agentflow.engine.nodes import agent, code, llm, remote, switch, tool, transform, workflow
from agentflow.engine.nodes.base import NodeConfigError, Outcome

Executor = Callable[[Any, dict[str, Any], Any, str], Awaitable[Outcome]]
EXECUTORS: dict[str, Executor] = {
    "llm": llm.execute,
    "agent": agent.execute,
    "tool": tool.execute,
    "transform": transform.execute,
    "code": code.execute,
    "switch": switch.execute,
    "workflow": workflow.execute,
    "remote": remote.execute,
}
# Nodes with effects outside the run: everything before them must be durable first.
EFFECTFUL = frozenset({"llm", "agent", "tool", "code", "approval", "workflow", "remote"})

__all__ = ["EFFECTFUL", "EXECUTORS", "NodeConfigError", "Outcome"]
