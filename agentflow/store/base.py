"""The store contract: workflows, runs, node runs, events and approvals.

The store is the source of truth; it learns about runs only through the
engine's event stream (`record`) plus the few explicit calls below.
Implementations must pass `tests/unit/test_store_contract.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from agentflow.engine.events import RunEvent


@dataclass(slots=True)
class WorkflowVersion:
    name: str
    version: str
    source: str
    created_at: float
    path: str | None = None


@dataclass(slots=True)
class RunRecord:
    id: str
    workflow: str
    version: str
    status: str = "queued"
    trigger: str = "manual"
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    steps: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    owner: str | None = None
    heartbeat_at: float | None = None
    active_s: float = 0.0
    cancel_requested: bool = False


@dataclass(slots=True)
class NodeRunRecord:
    run_id: str
    node_id: str
    node_type: str
    status: str
    attempt: int
    iteration: int
    item_index: int | None
    started_at: float
    finished_at: float
    latency_ms: float
    model: str | None
    tokens: int
    cost_usd: float
    error: str | None


@dataclass(slots=True)
class ApprovalRecord:
    id: int
    run_id: str
    node_id: str
    message: str
    status: str  # pending | approved | rejected
    comment: str | None
    requested_at: float
    decided_at: float | None


@dataclass(slots=True)
class GrantRecord:
    id: int
    workflow: str
    version: str | None
    capabilities: dict[str, list[str]]
    granted_by: str
    granted_at: float
    note: str | None


class GrantStore(Protocol):
    """Grants of capabilities to workflows, append-only; the newest per workflow is in force."""

    def record_grant(
        self, workflow: str, version: str | None, capabilities: dict[str, list[str]], *, granted_by: str, note: str
    ) -> GrantRecord: ...
    def latest_grant(self, workflow: str) -> GrantRecord | None: ...
    def list_grants(self, workflow: str) -> list[GrantRecord]: ...


class Store(Protocol):
    # workflows
    def save_workflow(self, name: str, source: str, *, path: str | None = None) -> WorkflowVersion: ...
    def get_workflow(self, name: str, version: str | None = None) -> WorkflowVersion | None: ...
    def list_workflows(self) -> list[WorkflowVersion]: ...
    def list_versions(self, name: str) -> list[WorkflowVersion]: ...

    # runs
    def create_run(self, run: RunRecord) -> None: ...
    def get_run(self, run_id: str) -> RunRecord | None: ...
    def list_runs(
        self, *, limit: int = 50, statuses: tuple[str, ...] = (), workflow: str | None = None
    ) -> list[RunRecord]: ...
    def claim_run(self, run_id: str, owner: str, *, statuses: tuple[str, ...]) -> bool: ...
    def update_run(self, run_id: str, **fields: Any) -> None: ...
    def heartbeat(self, run_ids: list[str], owner: str) -> None: ...
    def request_cancel(self, run_id: str) -> bool: ...
    def node_runs(self, run_id: str) -> list[NodeRunRecord]: ...
    def events(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]: ...

    # approvals
    def pending_approval(self, run_id: str) -> ApprovalRecord | None: ...
    def decide_approval(self, run_id: str, *, approved: bool, comment: str | None) -> ApprovalRecord | None: ...

    # the event observer and durability
    def record(self, event: RunEvent) -> None: ...
    async def flush(self) -> None: ...
    def close(self) -> None: ...
