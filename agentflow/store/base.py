"""The store contract: small role Protocols, the records they speak in, one contract suite.

The store is the source of truth; it learns about runs only through the
engine's event stream (`record`) plus the explicit calls below. Callers type
against the role they use (`RunStore`, `ChatStore`, `LedgerStore`, ...);
`Store` is all of them, which every implementation provides: the in-memory
reference (`memory.py`), SQLite (`sqlite.py`) and Postgres (`postgres.py`).
They all pass `tests/unit/test_store_contract.py`. No SQL is written outside
this package.

Calls are synchronous and quick; writes are batched (group commit). A write
that returns a result is visible to reads once the call returns; those that
only queue (`record`, `add_message`, `queue_*`) are visible after `flush()`. Code on an event
loop calls them through `asyncio.to_thread` where a read may wait on the
database (see `engine/executor.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agentflow.engine.events import RunEvent

if TYPE_CHECKING:
    from agentflow.store.checkpoint import DurableSaver


@dataclass(slots=True)
class WorkflowVersion:
    name: str
    version: str  # the content hash: the version's stable id
    source: str
    created_at: float
    path: str | None = None
    number: int = 0  # v1, v2, … per workflow, in the order first saved (what people read; docs/versions.md)


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
    executed_by: str | None = None  # the last process that executed it (host:pid:id)
    reply_to: dict[str, Any] | None = None
    """Where a chat-started run answers: {"channel": "telegram", "chat": "123", ...} (channels/notifier.py)."""
    parent: dict[str, Any] | None = None
    """The run and node that started this one as a sub-workflow: {"run_id": ..., "node_id": ...}."""
    limits: dict[str, float] | None = None
    """The most it may use, below its own budget: a sub-workflow's share of its parent's {steps, tokens, usd}."""
    overrides: dict[str, Any] | None = None
    """How this run departs from a plain run of its version (JSON): `replay` {run_id, node_id, state} starts it
    from another run's state before a node; `pinned` {node_id: output} answers those nodes without running them;
    `variants` {node_id: variant name} chooses a node's variant instead of drawing one."""


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
    decided_by: str | None = None  # the person: api:admin, web:admin, telegram:12345, whatsapp:+336...


@dataclass(slots=True)
class GrantRecord:
    id: int
    workflow: str
    version: str | None
    capabilities: dict[str, list[str]]
    granted_by: str
    granted_at: float
    note: str | None


@dataclass(slots=True)
class Session:
    id: str
    channel: str
    title: str | None
    model: str | None
    current_version: int
    created_at: float
    updated_at: float


@dataclass(slots=True)
class Message:
    role: str  # user | assistant
    content: str
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(slots=True)
class ConfigVersion:
    number: int
    parent: int
    source: str
    diff: str
    author: str  # assistant | user | command
    note: str
    created_at: float


@dataclass(frozen=True, slots=True)
class CostRow:
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class DailyCost:
    """A group's calls on one local day (`YYYY-MM-DD`): a cell of a day × workflow (or source...) grid."""

    day: str
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class AssistantCall:
    """A model call of the chat assistant (writing workflows): in the ledger with its session, without a run."""

    session_id: str
    model: str
    provider: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    error: str | None = None
    at: float = 0.0
    source: str = "assistant"
    """"assistant", or "analyse" for a model reading a run's trace (agentflow/analyse.py; session `analyse:<run>`)."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """One step of a workflow's deployment history; the newest is in force (`version` None: undeployed)."""

    id: int
    workflow: str
    version: str | None
    action: str  # deploy | rollback | undeploy
    deployed_by: str
    deployed_at: float
    note: str | None = None


@dataclass(frozen=True, slots=True)
class HookSecret:
    """A webhook trigger's signing secret; a rotated one stays valid until `retired_at` (the grace period)."""

    workflow: str
    trigger: str
    secret: str
    created_at: float
    retired_at: float | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one thing the world sent: a webhook delivery, a schedule's fire, a chat message."""

    workflow: str
    trigger: str
    channel: str  # webhook | schedule | telegram | whatsapp
    outcome: str  # accepted | duplicate | refused
    key: str | None = None  # the delivery id, the fire time, the update id, the message SID
    detail: str | None = None  # why it was refused (with the HTTP status), or what it started
    run_id: str | None = None
    at: float = 0.0
    id: int = 0


@dataclass(frozen=True, slots=True)
class Schedule:
    """A deployed schedule trigger and its next fire time (unix seconds; None once nothing is left to fire)."""

    workflow: str
    trigger: str
    version: str
    cron: str
    timezone: str
    next_fire_at: float | None
    last_fire_at: float | None = None


@dataclass(frozen=True, slots=True)
class TriggeredRun:
    """A run a trigger asks for, under its idempotency key: one run per (scope, key), ever."""

    run: RunRecord
    scope: str  # e.g. webhook:WORKFLOW:TRIGGER, schedule:WORKFLOW:TRIGGER, telegram:BOT
    key: str  # the delivery id, the fire time, the update id...
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class TraceState:
    run_id: str
    trace_id: str | None
    state: str  # pending | exported | failed
    error: str | None
    attempts: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An A2A agent the registry knows: its card as last fetched, how it came, when it was last heard from."""

    id: str
    name: str
    url: str  # the A2A endpoint the card names
    card_url: str
    card: dict[str, Any]
    source: str  # registered (it enrolled itself) | url (an operator added it by URL)
    created_at: float
    description: str = ""
    card_version: str | None = None
    card_etag: str | None = None
    skills: list[dict[str, Any]] = field(default_factory=list)  # [{id, name, description, tags}]
    secret_hash: str | None = None  # the per-agent secret's SHA-256 (registered agents only)
    last_seen: float | None = None  # the last heartbeat, card poll or call that reached it
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class CardChange:
    """One change of an agent's card (append-only): its version and skills after, and what changed."""

    agent_id: str
    at: float
    version: str | None
    skills: list[str]
    change: str


@dataclass(frozen=True, slots=True)
class EnrolmentToken:
    """A one-time token an operator issues so that one agent can enrol; only its SHA-256 is kept."""

    id: str
    token_hash: str
    created_at: float
    expires_at: float
    note: str | None = None
    used_at: float | None = None
    used_by: str | None = None  # the agent id it enrolled
    revoked_at: float | None = None


# Checkpoint rows, as LangGraph's serializer produced them (see checkpoint.py).
CheckpointRow = tuple[str, str, str | None, str, bytes, str, bytes]  # ns, id, parent, type, blob, meta type, meta
BlobRow = tuple[str, str, str, str, bytes]  # ns, channel, version, type, blob
WriteRow = tuple[str, str, str, int, str, str, bytes, str]  # ns, checkpoint id, task, idx, channel, type, value, path


@dataclass(slots=True)
class ThreadRows:
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    blobs: list[BlobRow] = field(default_factory=list)
    writes: list[WriteRow] = field(default_factory=list)


class WorkflowStore(Protocol):
    """Versions of workflows by content hash, numbered per workflow in the order first saved (v1, v2, …);
    the latest saved is the workflow's current one. Saving a version's text again adds no number."""

    def save_workflow(self, name: str, source: str, *, path: str | None = None) -> WorkflowVersion: ...
    def get_workflow(self, name: str, version: str | None = None) -> WorkflowVersion | None: ...
    def list_workflows(self) -> list[WorkflowVersion]: ...
    def list_versions(self, name: str) -> list[WorkflowVersion]: ...
    def version_counts(self) -> dict[str, int]: ...


class RunStore(Protocol):
    """Runs, their node runs and events; ownership (claim, heartbeat, take-over) and cancel requests."""

    def create_run(self, run: RunRecord) -> None: ...
    def get_run(self, run_id: str) -> RunRecord | None: ...
    def find_run(self, prefix: str) -> list[RunRecord]: ...
    def list_runs(
        self, *, limit: int = 50, statuses: tuple[str, ...] = (), workflow: str | None = None
    ) -> list[RunRecord]: ...
    def claim_run(self, run_id: str, owner: str, *, statuses: tuple[str, ...]) -> bool: ...
    def take_over_run(self, run_id: str, owner: str, *, previous_owner: str | None) -> bool: ...
    def update_run(self, run_id: str, **fields: Any) -> None: ...
    def heartbeat(self, run_ids: list[str], owner: str) -> list[str]: ...
    def request_cancel(self, run_id: str) -> bool: ...
    def cancel_requests(self, owner: str) -> list[str]: ...
    def node_runs(self, run_id: str) -> list[NodeRunRecord]: ...
    def events(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]: ...
    def events_after(self, after: int, *, limit: int = 1000) -> list[dict[str, Any]]:
        """Every run's events with an id above `after`, oldest first (the live feed and /api/events read these)."""
        ...

    def last_event_id(self) -> int: ...


class ApprovalStore(Protocol):
    """Approvals a run waits for; decided exactly once, consumed by the run's continuation."""

    def pending_approval(self, run_id: str) -> ApprovalRecord | None: ...
    def decide_approval(
        self,
        run_id: str,
        *,
        approved: bool,
        comment: str | None,
        approval_id: int | None = None,
        decided_by: str | None = None,
    ) -> ApprovalRecord | None:
        """Decide the run's pending approval exactly once (only approval `approval_id` when given: a button
        for an earlier approval never decides a later one); None when there is nothing left to decide."""
        ...

    def decided_approval(self, run_id: str) -> ApprovalRecord | None: ...
    def consume_approval(self, approval_id: int) -> None: ...
    def approval(self, approval_id: int) -> ApprovalRecord | None: ...


class GrantStore(Protocol):
    """Grants of capabilities to workflows, append-only; the newest per workflow is in force."""

    def record_grant(
        self, workflow: str, version: str | None, capabilities: dict[str, list[str]], *, granted_by: str, note: str
    ) -> GrantRecord: ...
    def latest_grant(self, workflow: str) -> GrantRecord | None: ...
    def list_grants(self, workflow: str) -> list[GrantRecord]: ...


class TriggerStore(Protocol):
    """What starts runs from the world: deployments, webhook secrets, idempotency keys, schedules, and the
    log of deliveries (accepted, duplicate, refused)."""

    def record_deployment(
        self, workflow: str, version: str | None, *, action: str, by: str, note: str | None = None
    ) -> Deployment: ...
    def current_deployment(self, workflow: str) -> Deployment | None:
        """The deployment in force; None when never deployed or undeployed."""
        ...

    def deployment_history(self, workflow: str, *, limit: int = 50) -> list[Deployment]:
        """Newest first."""
        ...

    def deployments(self) -> list[Deployment]:
        """Every workflow's deployment in force."""
        ...

    def add_hook_secret(self, workflow: str, trigger: str, secret: str, *, retire_others_at: float) -> HookSecret:
        """A new signing secret for a webhook trigger; the ones before it stay valid until `retire_others_at`."""
        ...

    def hook_secrets(self, workflow: str, trigger: str, *, now: float) -> list[HookSecret]:
        """The secrets valid at `now`, newest first."""
        ...

    def start_triggered(self, requests: list[TriggeredRun]) -> list[tuple[str, bool]]:
        """Record each run with its key and its delivery, atomically: (run id, True) for a new run, or
        (the first run's id, False) when the key was seen before (the delivery is then logged a duplicate).
        Durable when it returns; the runs are queued as `create_run` queues."""
        ...

    async def astart_triggered(self, requests: list[TriggeredRun]) -> list[tuple[str, bool]]:
        """`start_triggered` awaited on an event loop, holding no thread while it waits for the commit:
        concurrent deliveries then share one commit (the webhook path)."""
        ...

    def first_sighting(self, scope: str, key: str) -> bool:
        """Record a key that starts no run (a chat message to the assistant, a button press); False when seen."""
        ...

    def log_delivery(self, delivery: Delivery) -> None:
        """Queue a delivery for the log (refusals; visible after `flush`)."""
        ...

    def deliveries(self, workflow: str | None = None, *, limit: int = 20) -> list[Delivery]:
        """The latest deliveries, newest first."""
        ...

    def set_schedules(self, workflow: str, schedules: list[Schedule]) -> None:
        """Replace a workflow's schedules (on deploy, rollback, undeploy)."""
        ...

    def schedules(self, workflow: str | None = None) -> list[Schedule]: ...
    def claim_fire(self, schedule: Schedule, *, next_fire_at: float | None, runs: list[TriggeredRun]) -> bool:
        """Move a schedule from its `next_fire_at` to the next one and record its runs, atomically; False when
        another process claimed that fire first (or the schedule changed): then nothing is recorded."""
        ...


class ChatStore(Protocol):
    """Chat sessions, their messages, and the tree of their workflow's versions."""

    def create_session(self, session: Session) -> Session: ...
    def get_session(self, session_id: str) -> Session | None: ...
    def list_sessions(self, *, channel: str | None = None, limit: int = 50) -> list[Session]: ...
    def update_session(self, session_id: str, **fields: Any) -> None: ...
    def add_message(self, session_id: str, message: Message) -> None: ...
    def messages(self, session_id: str, *, limit: int = 200) -> list[Message]: ...
    def add_config_version(
        self, session_id: str, *, parent: int, source: str, diff: Callable[[int], str], author: str, note: str
    ) -> int:
        """Append a version numbered one past the session's highest (its diff made for that number) and
        make it current; returns the number."""
        ...

    def config_version(self, session_id: str, number: int) -> ConfigVersion | None: ...
    def config_versions(self, session_id: str) -> list[ConfigVersion]: ...
    def newest_child(self, session_id: str, parent: int) -> ConfigVersion | None: ...


class LedgerStore(Protocol):
    """What was spent: every provider call (the cost ledger, one source for every money and token
    figure), grouped for reports; and how many runs ended how.

    A run's calls enter through `record` (its `LLMCalled` events, source "run"); the chat assistant's
    through `record_assistant_call` (source "assistant", no run, no workflow: grouped as ASSISTANT).
    """

    def record_assistant_call(self, call: AssistantCall) -> None:
        """Queue an assistant call into the ledger (visible after `flush`, as `record`)."""
        ...

    def spend(self, *, by: str, since: float) -> list[CostRow]:
        """Calls since `since` grouped by day (local date), model, provider, workflow, node
        ("workflow.node"), source ("run", "assistant") or session (the assistant's chat session; '?' for
        a run's calls); most expensive first, or the latest day first."""
        ...

    def daily_spend(self, *, by: str, since: float) -> list[DailyCost]:
        """Calls since `since` by local day and by a group of `spend` other than day; by day, then key."""
        ...

    def spent(self, *, since: float, workflow: str | None = None) -> float: ...
    def spent_by_workflow(self, *, since: float) -> dict[str, float]:
        """Spend since `since` by workflow; calls without one (the assistant's, unknown runs') under ''."""
        ...

    def node_costs(self, run_ids: list[str]) -> dict[str, float]: ...
    def run_counts(self, *, since: float) -> dict[str, int]:
        """Runs created since `since`, counted by status."""
        ...


class TraceStore(Protocol):
    """The MLflow export state of finished runs (owned by observability.exporter)."""

    def trace_backlog(self) -> list[str]: ...
    def trace_of(self, run_id: str) -> TraceState | None: ...
    def trace_counts(self) -> dict[str, int]: ...
    def trace_failures(self, limit: int = 50) -> list[TraceState]: ...
    def record_traces(self, states: list[TraceState]) -> None: ...
    def reset_failed_traces(self) -> list[str]: ...


class CheckpointStore(Protocol):
    """LangGraph checkpoints of runs (thread id = run id); writes are queued, made durable by `flush`."""

    def checkpointer(self) -> DurableSaver: ...
    def load_thread(self, thread_id: str) -> ThreadRows: ...
    def queue_checkpoint(self, thread_id: str, checkpoint: CheckpointRow, blobs: list[BlobRow]) -> None: ...
    def queue_writes(self, thread_id: str, writes: list[WriteRow]) -> None: ...
    def queue_delete_thread(self, thread_id: str) -> None: ...


class ChangeFeed(Protocol):
    """Which runs other processes changed, as they commit (Postgres LISTEN/NOTIFY).

    A store without one (SQLite, memory) returns a no-op: there, waiters see other processes'
    changes when they look again (executor.SAFETY_RECHECK_SECONDS).
    """

    def watch_changes(self, on_change: Callable[[str], None]) -> Callable[[], None]: ...


class Durability(Protocol):
    """The engine's event observer, and the group commit behind it."""

    def record(self, event: RunEvent) -> None: ...
    async def flush(self) -> None: ...
    def flush_sync(self) -> None: ...
    def close(self) -> None: ...


class AgentStore(Protocol):
    """The agent registry's rows: agents, the history of their cards, and enrolment tokens.

    States (healthy, stale, offline) are not stored: they follow from `last_seen` (agentflow/registry/health.py),
    so every process reading the store sees the same state.
    """

    def save_agent(self, agent: AgentRecord) -> None:
        """Insert the agent, or replace the one with its id."""
        ...

    def get_agent(self, agent_id: str) -> AgentRecord | None: ...
    def list_agents(self) -> list[AgentRecord]:
        """Every agent, oldest first."""
        ...

    def touch_agent(self, agent_id: str, *, seen_at: float | None, latency_ms: float | None) -> bool:
        """Record contact with an agent (a heartbeat, a poll, a call): the fields given; False when unknown."""
        ...

    def touch_agents(self, seen: Mapping[str, float]) -> list[str]:
        """Many heartbeats in one transaction: each agent's `last_seen` moves forward (never back) to its time;
        the ids that are not there (any more)."""
        ...

    def delete_agent(self, agent_id: str) -> bool:
        """Remove an agent and its card history; False when it was not there."""
        ...

    def delete_agents_unseen_since(self, cutoff: float) -> list[str]:
        """Remove every agent not heard from since `cutoff` (by `last_seen`, else `created_at`); their ids."""
        ...

    def record_card_change(self, change: CardChange) -> None: ...
    def card_history(self, agent_id: str) -> list[CardChange]:
        """Oldest first."""
        ...

    def add_enrolment_token(self, token: EnrolmentToken) -> None: ...
    def enrolment_token(self, token_hash: str) -> EnrolmentToken | None: ...
    def enrolment_tokens(self) -> list[EnrolmentToken]:
        """Newest first."""
        ...

    def use_enrolment_token(self, token_hash: str, *, agent_id: str, now: float) -> bool:
        """Mark the token used by `agent_id`, atomically, if it is unused, unrevoked and unexpired at `now`."""
        ...

    def revoke_enrolment_token(self, token_id: str, *, now: float) -> bool:
        """False when no unused, unrevoked token has that id."""
        ...


class Store(
    WorkflowStore,
    RunStore,
    ApprovalStore,
    GrantStore,
    TriggerStore,
    ChatStore,
    LedgerStore,
    TraceStore,
    CheckpointStore,
    AgentStore,
    ChangeFeed,
    Durability,
    Protocol,
):
    """Everything: what an implementation provides, and what `AgentFlow` holds."""

    location: str  # for people: the file or the database it keeps


GROUPS = ("day", "model", "provider", "workflow", "node", "source", "session")
SOURCES = ("run", "assistant", "analyse")  # who made a call: a run's node, the chat assistant, a run's analysis
ASSISTANT = "(assistant)"  # the assistant's calls' workflow and node in reports (not a slug: no workflow has it)
