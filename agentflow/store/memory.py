"""The reference store: the whole contract in plain Python dicts and lists, behind one lock.

It is the executable specification of `base.py`: SQLStore (sql.py) behaves the
same in everything the contract states, and both pass one suite
(`tests/unit/test_store_contract.py`). Values are kept as the databases keep
them (JSON fields through JSON, text through `text()`), and every call hands
back copies, so a caller never holds the store's own objects.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from agentflow.engine import events as ev
from agentflow.store.agents_memory import AgentMemory
from agentflow.store.base import (
    ASSISTANT,
    GROUPS,
    ApprovalRecord,
    AssistantCall,
    BlobRow,
    CheckpointRow,
    ConfigVersion,
    CostRow,
    DailyCost,
    Delivery,
    Deployment,
    GrantRecord,
    HookSecret,
    Message,
    NodeRunRecord,
    RunRecord,
    Schedule,
    Session,
    ThreadRows,
    TraceState,
    TriggeredRun,
    WorkflowVersion,
    WriteRow,
)
from agentflow.store.checkpoint import DurableSaver
from agentflow.store.sql import content_hash, dumps, text

T = TypeVar("T")
Method = TypeVar("Method", bound=Callable[..., Any])
_JSON_FIELDS = ("inputs", "outputs", "reply_to", "parent", "limits", "overrides")
_RUN_FIELDS = frozenset(RunRecord.__slots__)
_SESSION_FIELDS = frozenset(("title", "model", "current_version", "updated_at"))


def _locked(method: Method) -> Method:
    """Run the method holding the store's lock; hand back a copy of what it returns."""

    @functools.wraps(method)
    def locked(self: InMemoryStore, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return copy.deepcopy(method(self, *args, **kwargs))

    return locked  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Call:
    """A row of the cost ledger: a provider call by a run (with its workflow then) or by the assistant."""

    source: str  # run | assistant
    run_id: str | None
    workflow: str | None
    node_id: str | None
    session_id: str | None
    model: str
    provider: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    at: float


@dataclass(slots=True)
class _Thread:
    """A run's checkpoint rows by their primary keys (those of the cp_* tables, less the thread id)."""

    checkpoints: dict[tuple[str, ...], CheckpointRow] = field(default_factory=dict)
    blobs: dict[tuple[str, ...], BlobRow] = field(default_factory=dict)
    writes: dict[tuple[Any, ...], WriteRow] = field(default_factory=dict)


class InMemoryStore(AgentMemory):
    location = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._current: dict[str, tuple[str, float]] = {}  # workflow -> (its current version, updated_at)
        self._versions: dict[tuple[str, str], WorkflowVersion] = {}
        self._runs: dict[str, RunRecord] = {}
        self._node_runs: list[NodeRunRecord] = []
        # Ids count from 1 in order of arrival: an event's, approval's or grant's id is its position + 1.
        self._events: list[tuple[str, dict[str, Any]]] = []
        self._approvals: list[ApprovalRecord] = []
        self._grants: list[GrantRecord] = []
        self._consumed: set[int] = set()  # approval ids
        self._sessions: dict[str, Session] = {}
        self._messages: dict[str, list[Message]] = {}
        self._config_versions: dict[str, dict[int, ConfigVersion]] = {}
        self._calls: list[_Call] = []
        self._traces: dict[str, TraceState] = {}
        self._threads: dict[str, _Thread] = {}
        self._deployments: list[Deployment] = []
        self._hook_secrets: list[HookSecret] = []
        self._keys: dict[tuple[str, str], str | None] = {}  # (scope, key) -> the run it started
        self._deliveries: list[Delivery] = []
        self._schedules: dict[tuple[str, str], Schedule] = {}

    # -- durability: every write is applied before its call returns; no change feed ------

    async def flush(self) -> None: ...
    def flush_sync(self) -> None: ...
    def close(self) -> None: ...

    def checkpointer(self) -> DurableSaver:
        return DurableSaver(self)

    def watch_changes(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        return lambda: None  # one process: there are no other processes' changes to hear of

    # -- workflows ------------------------------------------------------------

    @_locked
    def save_workflow(self, name: str, source: str, *, path: str | None = None) -> WorkflowVersion:
        number = 1 + sum(1 for saved, _ in self._versions if saved == name)
        version = WorkflowVersion(name, content_hash(source), _text(source), time.time(), text(path), number)
        self._current[name] = (version.version, version.created_at)
        return self._versions.setdefault((name, version.version), version)

    @_locked
    def get_workflow(self, name: str, version: str | None = None) -> WorkflowVersion | None:
        if version is None:
            version = self._current[name][0] if name in self._current else ""
        return self._versions.get((name, version))

    @_locked
    def list_workflows(self) -> list[WorkflowVersion]:
        newest_first = sorted(self._current.items(), key=lambda item: item[1][1], reverse=True)
        return [self._versions[(name, version)] for name, (version, _) in newest_first]

    @_locked
    def list_versions(self, name: str) -> list[WorkflowVersion]:
        versions = [version for version in self._versions.values() if version.name == name]
        return sorted(versions, key=lambda version: version.number, reverse=True)

    @_locked
    def version_counts(self) -> dict[str, int]:
        return dict(Counter(name for name, _ in self._versions))

    # -- runs -----------------------------------------------------------------

    @_locked
    def create_run(self, run: RunRecord) -> None:
        if run.id in self._runs:
            raise ValueError(f"a run with id {run.id!r} exists already")
        run.created_at = run.created_at or time.time()
        self._runs[run.id] = RunRecord(**{key: _run_value(key, getattr(run, key)) for key in RunRecord.__slots__})

    @_locked
    def get_run(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

    @_locked
    def find_run(self, prefix: str) -> list[RunRecord]:
        """Runs whose id starts with `prefix` (the CLI accepts short ids)."""
        return [run for run in self._runs.values() if run.id.startswith(prefix)][:5]

    @_locked
    def list_runs(
        self, *, limit: int = 50, statuses: tuple[str, ...] = (), workflow: str | None = None
    ) -> list[RunRecord]:
        runs = [
            run
            for run in self._runs.values()
            if (not statuses or run.status in statuses) and (not workflow or run.workflow == workflow)
        ]
        return sorted(runs, key=lambda run: run.created_at, reverse=True)[:limit]

    @_locked
    def claim_run(self, run_id: str, owner: str, *, statuses: tuple[str, ...]) -> bool:
        run = self._runs.get(run_id)
        if run is None or run.status not in statuses:
            return False
        run.status, run.owner, run.executed_by, run.heartbeat_at = "running", owner, owner, time.time()
        run.started_at = run.heartbeat_at if run.started_at is None else run.started_at
        return True

    @_locked
    def take_over_run(self, run_id: str, owner: str, *, previous_owner: str | None) -> bool:
        """Move a running run from a dead owner to `owner`, atomically."""
        run = self._runs.get(run_id)
        if run is None or run.status != "running" or run.owner != previous_owner:
            return False
        run.owner, run.executed_by, run.heartbeat_at = owner, owner, time.time()
        return True

    @_locked
    def update_run(self, run_id: str, **fields: Any) -> None:
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise ValueError(f"runs have no field {', '.join(sorted(unknown))}")
        self._update_run(run_id, fields)

    def _update_run(self, run_id: str, fields: dict[str, Any]) -> None:
        run = self._runs.get(run_id)
        for key, value in fields.items() if run else ():
            setattr(run, key, _run_value(key, value))

    @_locked
    def heartbeat(self, run_ids: list[str], owner: str) -> list[str]:
        """Renew our lease on these runs; returns those another owner took over (stop them)."""
        taken = []
        for run_id in run_ids:
            run = self._runs.get(run_id)
            if run is not None and run.owner == owner:
                run.heartbeat_at = time.time()
            elif run is not None and run.owner is not None:
                taken.append(run_id)
        return taken

    @_locked
    def request_cancel(self, run_id: str) -> bool:
        run = self._runs.get(run_id)
        if run is not None and run.status in ("queued", "waiting_approval"):
            # No process works on it: cancelled here and now, with the approval it waits for.
            run.status, run.finished_at, run.error = "cancelled", time.time(), "cancelled by request"
            for approval in self._approvals:
                if approval.run_id == run_id and approval.status == "pending":
                    approval.status, approval.decided_at = "cancelled", run.finished_at
            finished = ev.RunFinished(run_id=run_id, status="cancelled", error=run.error, at=run.finished_at)
            self._events.append((run_id, json.loads(dumps(finished.to_dict()))))
            return True
        if run is not None and run.status == "running":
            run.cancel_requested = True
            return True
        return False

    @_locked
    def cancel_requests(self, owner: str) -> list[str]:
        runs = self._runs.values()
        return [run.id for run in runs if run.cancel_requested and run.owner == owner and run.status == "running"]

    @_locked
    def node_runs(self, run_id: str) -> list[NodeRunRecord]:
        node_runs = [node_run for node_run in self._node_runs if node_run.run_id == run_id]
        return sorted(node_runs, key=lambda node_run: node_run.started_at)

    @_locked
    def events(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        numbered = enumerate(self._events, start=1)
        return [
            {"id": event_id, **payload} for event_id, (of, payload) in numbered if of == run_id and event_id > after
        ]

    @_locked
    def events_after(self, after: int, *, limit: int = 1000) -> list[dict[str, Any]]:
        chosen = self._events[after : after + limit]
        return [{"id": event_id, **payload} for event_id, (_, payload) in enumerate(chosen, start=after + 1)]

    @_locked
    def last_event_id(self) -> int:
        return len(self._events)

    # -- approvals --------------------------------------------------------------

    @_locked
    def pending_approval(self, run_id: str) -> ApprovalRecord | None:
        return self._pending(run_id)

    def _pending(self, run_id: str) -> ApprovalRecord | None:
        return _last(self._approvals, lambda approval: approval.run_id == run_id and approval.status == "pending")

    @_locked
    def decide_approval(
        self,
        run_id: str,
        *,
        approved: bool,
        comment: str | None,
        approval_id: int | None = None,
        decided_by: str | None = None,
    ) -> ApprovalRecord | None:
        """Decide the pending approval exactly once; None when there is none (or it was already decided)."""
        approval = self._pending(run_id)
        if approval is None or (approval_id is not None and approval.id != approval_id):
            return None
        approval.status = "approved" if approved else "rejected"
        approval.comment, approval.decided_at, approval.decided_by = text(comment), time.time(), text(decided_by)
        run = self._runs.get(run_id)
        if run is not None and run.status == "waiting_approval":
            run.status = "queued"
        return approval

    @_locked
    def decided_approval(self, run_id: str) -> ApprovalRecord | None:
        """The latest decision not yet consumed by a continuation of the run."""
        return _last(
            self._approvals,
            lambda approval: (
                approval.run_id == run_id
                and approval.status in ("approved", "rejected")
                and approval.id not in self._consumed
            ),
        )

    @_locked
    def consume_approval(self, approval_id: int) -> None:
        self._consumed.add(approval_id)

    @_locked
    def approval(self, approval_id: int) -> ApprovalRecord | None:
        return _last(self._approvals, lambda approval: approval.id == approval_id)

    # -- triggers -----------------------------------------------------------------

    @_locked
    def record_deployment(
        self, workflow: str, version: str | None, *, action: str, by: str, note: str | None = None
    ) -> Deployment:
        deployment = Deployment(len(self._deployments) + 1, workflow, version, action, by, time.time(), note)
        self._deployments.append(replace(deployment, deployed_by=_text(by), note=text(note)))
        return deployment

    @_locked
    def current_deployment(self, workflow: str) -> Deployment | None:
        current = _last(self._deployments, lambda deployment: deployment.workflow == workflow)
        return current if current is not None and current.version is not None else None

    @_locked
    def deployment_history(self, workflow: str, *, limit: int = 50) -> list[Deployment]:
        return [deployment for deployment in reversed(self._deployments) if deployment.workflow == workflow][:limit]

    @_locked
    def deployments(self) -> list[Deployment]:
        latest = {deployment.workflow: deployment for deployment in self._deployments}
        return [latest[name] for name in sorted(latest) if latest[name].version is not None]

    @_locked
    def add_hook_secret(self, workflow: str, trigger: str, secret: str, *, retire_others_at: float) -> HookSecret:
        for index, old in enumerate(self._hook_secrets):
            if (old.workflow, old.trigger) == (workflow, trigger) and (
                old.retired_at is None or old.retired_at > retire_others_at
            ):
                self._hook_secrets[index] = replace(old, retired_at=retire_others_at)
        added = HookSecret(workflow, trigger, secret, time.time())
        self._hook_secrets.append(added)
        return added

    @_locked
    def hook_secrets(self, workflow: str, trigger: str, *, now: float) -> list[HookSecret]:
        return [
            secret
            for secret in reversed(self._hook_secrets)
            if (secret.workflow, secret.trigger) == (workflow, trigger)
            and (secret.retired_at is None or secret.retired_at > now)
        ]

    @_locked
    def start_triggered(self, requests: list[TriggeredRun]) -> list[tuple[str, bool]]:
        return [self._start_triggered(request) for request in requests]

    async def astart_triggered(self, requests: list[TriggeredRun]) -> list[tuple[str, bool]]:
        return self.start_triggered(requests)

    def _start_triggered(self, request: TriggeredRun) -> tuple[str, bool]:
        run = request.run
        run.created_at = run.created_at or time.time()
        found = (request.scope, _text(request.key))
        if found in self._keys:
            first = self._keys[found]
            self._add_delivery(
                replace(request.delivery, outcome="duplicate", run_id=first, detail="seen before: no new run")
            )
            return first or "", False
        self._keys[found] = run.id
        self._runs[run.id] = RunRecord(**{key: _run_value(key, getattr(run, key)) for key in RunRecord.__slots__})
        self._add_delivery(replace(request.delivery, run_id=run.id, at=run.created_at))
        return run.id, True

    def _add_delivery(self, delivery: Delivery) -> None:
        self._deliveries.append(
            replace(
                delivery,
                id=len(self._deliveries) + 1,
                key=text(delivery.key),
                detail=text(delivery.detail),
                at=delivery.at or time.time(),
            )
        )

    @_locked
    def first_sighting(self, scope: str, key: str) -> bool:
        if (scope, _text(key)) in self._keys:
            return False
        self._keys[(scope, _text(key))] = None
        return True

    @_locked
    def log_delivery(self, delivery: Delivery) -> None:
        self._add_delivery(delivery)

    @_locked
    def deliveries(self, workflow: str | None = None, *, limit: int = 20) -> list[Delivery]:
        return [item for item in reversed(self._deliveries) if workflow is None or item.workflow == workflow][:limit]

    @_locked
    def set_schedules(self, workflow: str, schedules: list[Schedule]) -> None:
        for key in [key for key in self._schedules if key[0] == workflow]:
            del self._schedules[key]
        for schedule in schedules:
            self._schedules[(workflow, schedule.trigger)] = replace(schedule, workflow=workflow)

    @_locked
    def schedules(self, workflow: str | None = None) -> list[Schedule]:
        return [self._schedules[key] for key in sorted(self._schedules) if workflow is None or key[0] == workflow]

    @_locked
    def claim_fire(self, schedule: Schedule, *, next_fire_at: float | None, runs: list[TriggeredRun]) -> bool:
        current = self._schedules.get((schedule.workflow, schedule.trigger))
        if (
            current is None
            or current.version != schedule.version
            or current.next_fire_at is None
            or current.next_fire_at != schedule.next_fire_at
        ):
            return False
        self._schedules[(schedule.workflow, schedule.trigger)] = replace(
            current, next_fire_at=next_fire_at, last_fire_at=schedule.next_fire_at
        )
        for request in runs:
            self._start_triggered(request)
        return True

    # -- grants -----------------------------------------------------------------

    @_locked
    def record_grant(
        self, workflow: str, version: str | None, capabilities: dict[str, list[str]], *, granted_by: str, note: str
    ) -> GrantRecord:
        grant_id = len(self._grants) + 1
        now = time.time()
        self._grants.append(
            GrantRecord(grant_id, workflow, version, _json(capabilities), _text(granted_by), now, text(note))
        )
        return GrantRecord(grant_id, workflow, version, capabilities, granted_by, now, note)

    @_locked
    def latest_grant(self, workflow: str) -> GrantRecord | None:
        return _last(self._grants, lambda grant: grant.workflow == workflow)

    @_locked
    def list_grants(self, workflow: str) -> list[GrantRecord]:
        return [grant for grant in reversed(self._grants) if grant.workflow == workflow]

    # -- chat -------------------------------------------------------------------

    @_locked
    def create_session(self, session: Session) -> Session:
        return self._sessions.setdefault(session.id, replace(session, title=text(session.title)))

    @_locked
    def get_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    @_locked
    def list_sessions(self, *, channel: str | None = None, limit: int = 50) -> list[Session]:
        sessions = [session for session in self._sessions.values() if not channel or session.channel == channel]
        return sorted(sessions, key=lambda session: session.updated_at, reverse=True)[:limit]

    @_locked
    def update_session(self, session_id: str, **fields: Any) -> None:
        unknown = set(fields) - _SESSION_FIELDS
        if unknown:
            raise ValueError(f"chat sessions have no field {', '.join(sorted(unknown))}")
        fields.setdefault("updated_at", time.time())
        session = self._sessions.get(session_id)
        for key, value in fields.items() if session else ():
            setattr(session, key, text(value) if isinstance(value, str) else value)

    @_locked
    def add_message(self, session_id: str, message: Message) -> None:
        at = message.created_at or time.time()
        self._messages.setdefault(session_id, []).append(
            Message(message.role, _text(message.content), _json(message.meta), at)
        )
        if session_id in self._sessions:
            self._sessions[session_id].updated_at = at

    @_locked
    def messages(self, session_id: str, *, limit: int = 200) -> list[Message]:
        every = self._messages.get(session_id, [])
        return every[max(len(every) - limit, 0) :]

    @_locked
    def add_config_version(
        self, session_id: str, *, parent: int, source: str, diff: Callable[[int], str], author: str, note: str
    ) -> int:
        versions = self._config_versions.setdefault(session_id, {})
        number = max(versions, default=0) + 1
        now = time.time()
        versions[number] = ConfigVersion(number, parent, _text(source), _text(diff(number)), author, _text(note), now)
        if session_id in self._sessions:
            self._sessions[session_id].current_version = number
            self._sessions[session_id].updated_at = now
        return number

    @_locked
    def config_version(self, session_id: str, number: int) -> ConfigVersion | None:
        return self._config_versions.get(session_id, {}).get(number)

    @_locked
    def config_versions(self, session_id: str) -> list[ConfigVersion]:
        versions = self._config_versions.get(session_id, {})
        return [versions[number] for number in sorted(versions)]

    @_locked
    def newest_child(self, session_id: str, parent: int) -> ConfigVersion | None:
        return _last(self.config_versions(session_id), lambda version: version.parent == parent)

    # -- the ledger ---------------------------------------------------------------

    @_locked
    def record_assistant_call(self, call: AssistantCall) -> None:
        """Queue an assistant call into the ledger (visible after `flush`, as `record`)."""
        at = call.at or time.time()
        self._calls.append(
            _Call(
                call.source,
                None,
                None,
                None,
                text(call.session_id),
                call.model,
                call.provider,
                call.input_tokens,
                call.output_tokens,
                call.cost_usd,
                at,
            )
        )

    @_locked
    def spend(self, *, by: str, since: float) -> list[CostRow]:
        """Calls since `since` grouped by day (local date), model, provider, workflow, node
        ("workflow.node"), source ("run", "assistant") or session (the assistant's chat session; '?' for
        a run's calls); most expensive first, or the latest day first."""
        if by not in GROUPS:
            raise ValueError(f"cannot group costs by '{by}'; use one of {', '.join(GROUPS)}")
        groups = _grouped(self._calls_since(since), lambda call: _spend_key(by, call))
        rows = [CostRow(key, *_sums(calls)) for key, calls in groups.items()]
        if by == "day":
            return sorted(rows, key=lambda row: row.key, reverse=True)
        return sorted(rows, key=lambda row: (-row.cost_usd, row.key))

    @_locked
    def daily_spend(self, *, by: str, since: float) -> list[DailyCost]:
        """Calls since `since` by local day and by a group of `spend` other than day; by day, then key."""
        if by not in GROUPS or by == "day":
            choices = ", ".join(group for group in GROUPS if group != "day")
            raise ValueError(f"cannot group daily costs by '{by}'; use one of {choices}")
        cells: dict[tuple[str, str], list[_Call]] = {}
        for call in self._calls_since(since):
            cells.setdefault((_local_date(call.at), _spend_key(by, call)), []).append(call)
        rows = [DailyCost(day, key, *_sums(calls)) for (day, key), calls in cells.items()]
        return sorted(rows, key=lambda row: (row.day, row.key))

    @_locked
    def spent(self, *, since: float, workflow: str | None = None) -> float:
        calls = self._calls_since(since)
        return float(sum(call.cost_usd for call in calls if not workflow or call.workflow == workflow))

    @_locked
    def spent_by_workflow(self, *, since: float) -> dict[str, float]:
        """Spend since `since` by workflow; calls without one (the assistant's, unknown runs') under ''."""
        return _sum_by((call.workflow or "", call.cost_usd) for call in self._calls_since(since))

    @_locked
    def node_costs(self, run_ids: list[str]) -> dict[str, float]:
        calls = [call for call in self._calls if call.run_id is not None and call.run_id in run_ids]
        return _sum_by((call.node_id or "", call.cost_usd) for call in calls)

    def _calls_since(self, since: float) -> list[_Call]:
        return [call for call in self._calls if call.at >= since]

    @_locked
    def run_counts(self, *, since: float) -> dict[str, int]:
        """Runs created since `since`, counted by status."""
        return dict(Counter(run.status for run in self._runs.values() if run.created_at >= since))

    # -- trace export state -----------------------------------------------------------

    @_locked
    def trace_backlog(self) -> list[str]:
        # No trace state yet means not exported yet, as state 'pending' does.
        waiting = [
            run
            for run in self._runs.values()
            if run.finished_at is not None and (run.id not in self._traces or self._traces[run.id].state == "pending")
        ]
        return [run.id for run in sorted(waiting, key=lambda run: run.finished_at or 0.0)]

    @_locked
    def trace_of(self, run_id: str) -> TraceState | None:
        return self._traces.get(run_id)

    @_locked
    def trace_counts(self) -> dict[str, int]:
        return dict(Counter(trace.state for trace in self._traces.values()))

    @_locked
    def trace_failures(self, limit: int = 50) -> list[TraceState]:
        failed = [trace for trace in self._traces.values() if trace.state == "failed"]
        return sorted(failed, key=lambda trace: trace.updated_at, reverse=True)[:limit]

    @_locked
    def record_traces(self, states: list[TraceState]) -> None:
        self._traces.update((state.run_id, replace(state, error=text(state.error))) for state in states)

    @_locked
    def reset_failed_traces(self) -> list[str]:
        failed = [trace.run_id for trace in self._traces.values() if trace.state == "failed"]
        self._traces.update((run_id, replace(self._traces[run_id], state="pending", attempts=0)) for run_id in failed)
        return failed

    # -- checkpoints: upserts by primary key, as in the cp_* tables ------------------

    @_locked
    def load_thread(self, thread_id: str) -> ThreadRows:
        thread = self._threads.get(thread_id, _Thread())
        return ThreadRows(list(thread.checkpoints.values()), list(thread.blobs.values()), list(thread.writes.values()))

    @_locked
    def queue_checkpoint(self, thread_id: str, checkpoint: CheckpointRow, blobs: list[BlobRow]) -> None:
        thread = self._threads.setdefault(thread_id, _Thread())
        thread.blobs.update((blob[:3], blob) for blob in blobs)  # (ns, channel, version)
        thread.checkpoints[checkpoint[:2]] = checkpoint  # (ns, checkpoint id)

    @_locked
    def queue_writes(self, thread_id: str, writes: list[WriteRow]) -> None:
        thread = self._threads.setdefault(thread_id, _Thread())
        thread.writes.update((write[:4], write) for write in writes)  # (ns, checkpoint id, task id, idx)

    @_locked
    def queue_delete_thread(self, thread_id: str) -> None:
        self._threads.pop(thread_id, None)

    # -- the event observer -----------------------------------------------------

    @_locked
    def record(self, event: ev.RunEvent) -> None:
        """Apply one engine event: what each kind does to runs, node runs, the ledger and approvals."""
        self._events.append((event.run_id, json.loads(dumps(event.to_dict()))))
        run = self._runs.get(event.run_id)
        if isinstance(event, ev.NodeFinished) and event.reused_from is None:  # a replay's reused result ran elsewhere
            same = {name: getattr(event, name) for name in NodeRunRecord.__slots__ if hasattr(event, name)}
            self._node_runs.append(NodeRunRecord(**{**same, "finished_at": event.at, "error": text(event.error)}))
            # Steps count node executions, as the step budget does; a map's own fan-in is not one.
            if run is not None and event.status != "skipped" and event.node_type != "map":
                run.steps += 1
        elif isinstance(event, ev.LLMCalled):
            if run is not None:
                run.tokens += event.input_tokens + event.output_tokens
                run.cost_usd += event.cost_usd
            self._calls.append(
                _Call(
                    "run",
                    event.run_id,
                    run.workflow if run else None,
                    event.node_id,
                    None,
                    event.model,
                    event.provider,
                    event.input_tokens,
                    event.output_tokens,
                    event.cost_usd,
                    event.at,
                )
            )
        elif isinstance(event, ev.RunStarted) and run is not None:
            run.status = "running"
            run.started_at = event.at if run.started_at is None else run.started_at
        elif isinstance(event, ev.ApprovalRequested):
            approval_id, message = len(self._approvals) + 1, _text(event.message)
            self._approvals.append(
                ApprovalRecord(approval_id, event.run_id, event.node_id, message, "pending", None, event.at, None)
            )
            # Nobody works on a waiting run: release it so any process may continue it after the decision.
            if run is not None:
                run.status, run.owner = "waiting_approval", None
        elif isinstance(event, ev.ApprovalDecided):
            for approval in self._approvals:
                if (approval.run_id, approval.node_id) == (
                    event.run_id,
                    event.node_id,
                ) and approval.status != "pending":
                    self._consumed.add(approval.id)
        elif isinstance(event, ev.RunFinished):
            finished = {"status": event.status, "outputs": event.outputs, "error": event.error, "finished_at": event.at}
            self._update_run(event.run_id, {**finished, "owner": None})


def _json(value: Any) -> Any:
    """The value a JSON column gives back."""
    return None if value is None else json.loads(dumps(value))


def _text(value: str) -> str:
    """`text()` of a value that is never None."""
    return text(value) or ""


def _run_value(key: str, value: Any) -> Any:
    """A run's field as the runs table gives it back."""
    if key in _JSON_FIELDS:
        return _json(value) or {} if key == "inputs" else _json(value)
    if key == "cancel_requested":
        return bool(value)
    return text(value) if isinstance(value, str) else value


def _local_date(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(at))


def _last(records: Iterable[T], keep: Callable[[T], bool]) -> T | None:
    """The last record kept: the newest, records being in order of arrival."""
    return next((record for record in reversed(list(records)) if keep(record)), None)


def _grouped(items: Iterable[T], key: Callable[[T], str]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def _sum_by(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key, value in pairs:
        totals[key] = totals.get(key, 0.0) + value
    return totals


def _spend_key(by: str, call: _Call) -> str:
    """The group a provider call counts in; '?' for what the ledger does not know."""
    if by == "day":
        return _local_date(call.at)
    if by == "source":
        return call.source
    if by == "session":
        return _known(call.session_id)
    if by in ("workflow", "node") and call.source == "assistant":
        return ASSISTANT
    if by in ("workflow", "node") and call.source != "run":
        return f"({call.source})"  # a call without a run belongs to no workflow: "(analyse)"
    if by == "node":
        return f"{_known(call.workflow)}.{_known(call.node_id)}"
    return _known({"model": call.model, "provider": call.provider, "workflow": call.workflow}[by])


def _known(value: str | None) -> str:
    return "?" if value is None else value


def _sums(calls: Sequence[_Call]) -> tuple[int, int, int, float]:
    """A ledger group's calls, tokens in and out, and cost."""
    inputs, outputs = sum(call.input_tokens for call in calls), sum(call.output_tokens for call in calls)
    return len(calls), inputs, outputs, float(sum(call.cost_usd for call in calls))
