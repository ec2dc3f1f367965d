"""The engine's one typed event stream, and the bus observers subscribe to.

The engine emits; it never calls the store, tracing or UI directly. Each
observer is a callable taking one event; it must be quick (queue work, do not
block) because it runs inline on the run's event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

RunStatus = Literal[
    "queued", "running", "waiting_approval", "succeeded", "failed", "cancelled", "budget_exceeded", "rejected"
]
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "budget_exceeded", "rejected"})
NodeStatus = Literal["succeeded", "failed", "skipped", "waiting"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEvent:
    type: ClassVar[str] = "event"
    run_id: str
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **{item.name: getattr(self, item.name) for item in fields(self)}}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(RunEvent):
    type: ClassVar[str] = "run_started"
    workflow: str
    version: str
    resumed: bool = False
    replay_of: dict[str, Any] | None = None
    """A replay's source: {run_id, node_id, reused: {nodes, calls, tool_calls, tokens, cost_usd}} (replay.py)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(RunEvent):
    type: ClassVar[str] = "run_finished"
    status: RunStatus
    outputs: dict[str, Any] | None = None
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStarted(RunEvent):
    type: ClassVar[str] = "node_started"
    node_id: str
    node_type: str
    attempt: int = 1
    iteration: int = 0
    item_index: int | None = None
    inputs: Any = None
    """What the node reads: its `needs`' results (or the run's inputs), its map item; redacted, truncated."""
    variant: str | None = None
    """The node's variant this run uses (`variants:`, agentflow/engine/variant_draw.py); None without variants."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeFinished(RunEvent):
    type: ClassVar[str] = "node_finished"
    node_id: str
    node_type: str
    status: NodeStatus
    attempt: int = 1
    iteration: int = 0
    item_index: int | None = None
    started_at: float = 0.0
    latency_ms: float = 0.0
    tokens: int = 0
    cost_usd: float = 0.0
    model: str | None = None
    output: Any = None
    error: str | None = None
    pinned: bool = False
    """The output was given with the run (`overrides["pinned"]`, agentflow/engine/pins.py): nothing executed."""
    reused_from: str | None = None
    """A replay took this result from the run it replays (agentflow/replay.py): nothing executed again."""
    variant: str | None = None
    """The node's variant this execution used; None for a node without variants."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMCalled(RunEvent):
    type: ClassVar[str] = "llm_call"
    node_id: str
    model: str
    provider: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    error: str | None = None
    prompt: list[dict[str, Any]] | None = None
    """The messages sent, secrets redacted and long texts truncated (agentflow/engine/nodes/base.py)."""
    reply: dict[str, Any] | None = None
    """The assistant message that came back (content, tool calls), redacted and truncated likewise."""
    prompt_ref: str | None = None
    """The registry prompt the call used, as name@version (`triage.classify@3`; several joined by ", ")."""
    variant: str | None = None
    """The node's variant the call was made for; None for a node without variants."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCalled(RunEvent):
    type: ClassVar[str] = "tool_call"
    node_id: str
    tool: str
    latency_ms: float
    error: str | None = None
    arguments: Any = None
    result: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryRecalled(RunEvent):
    """A node (or an agent's memory_search) read memory: the scopes, the query and what it found."""

    type: ClassVar[str] = "memory_recall"
    node_id: str
    scopes: list[str]
    query: str
    items: list[dict[str, Any]]
    """{id, scope, text, score} of each memory found, in rank order."""
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryWritten(RunEvent):
    """A node's save, an agent's memory_save, or an automatic extraction added, updated or deleted a memory."""

    type: ClassVar[str] = "memory_write"
    node_id: str
    scope: str
    operation: Literal["add", "update", "delete"]
    item_id: str
    text: str | None
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteUpdate(RunEvent):
    """A `remote` node's agent said something: a streamed status or artifact update, or why it was passed over."""

    type: ClassVar[str] = "remote_update"
    node_id: str
    agent: str
    """The agent's name."""
    agent_id: str
    url: str
    state: str
    """The task's A2A state (`working`, `completed`, ...); `unreachable`, `stale` or `offline` when passed over."""
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequested(RunEvent):
    type: ClassVar[str] = "approval_requested"
    node_id: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecided(RunEvent):
    type: ClassVar[str] = "approval_decided"
    node_id: str
    approved: bool
    comment: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetExceeded(RunEvent):
    type: ClassVar[str] = "budget_exceeded"
    limit: str
    used: float
    allowed: float


EVENT_TYPES = frozenset(kind.type for kind in RunEvent.__subclasses__())

Observer = Callable[[RunEvent], None]


Watcher = Callable[[str, bool], None]  # (run id, changed by another process)


class EventBus:
    """Fan-out of run events to observers, in subscription order; and of "this run changed" to watchers.

    Observers get this process's events. Watchers get the id of any run that changed, here (as its
    events are emitted) or in another process (`changed`, fed by the store's change feed), so a caller
    waiting for a run re-reads the store instead of polling it.
    """

    def __init__(self) -> None:
        self._observers: list[Observer] = []
        self._watchers: list[Watcher] = []

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        """Call `watcher(run_id, remote)` whenever a run changes; a remote change comes from another thread."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher)

    def emit(self, event: RunEvent) -> None:
        for observer in tuple(self._observers):
            observer(event)
        for watcher in tuple(self._watchers):
            watcher(event.run_id, False)

    def changed(self, run_id: str) -> None:
        """Another process changed this run (the store's change feed calls this)."""
        for watcher in tuple(self._watchers):
            watcher(run_id, True)
