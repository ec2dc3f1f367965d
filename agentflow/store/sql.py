"""The SQL behind both databases: one implementation of the store contract over a dialect.

SQLite and Postgres share every statement here (written with `?` marks; the
Postgres adapter turns them into its own). What differs between them — how
a timestamp becomes a local date, how a connection is opened, how the event
stream is announced to other processes — lives in `sqlite.py` and
`postgres.py`. All writes go through one `BatchWriter` per process.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar

from agentflow.engine import events as ev
from agentflow.store.agents_sql import AgentSQL
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
from agentflow.store.writer import BatchWriter, Conn

_JSON_FIELDS = ("inputs", "outputs", "reply_to", "parent", "limits", "overrides")
_RUN_COLUMNS = frozenset(RunRecord.__slots__)
_SESSION_COLUMNS = frozenset(("title", "model", "current_version", "updated_at"))
_TRACE_UPSERT = (
    "INSERT INTO run_traces (run_id, trace_id, state, error, attempts, updated_at) VALUES (?,?,?,?,?,?) "
    "ON CONFLICT(run_id) DO UPDATE SET trace_id = excluded.trace_id, state = excluded.state, "
    "error = excluded.error, attempts = excluded.attempts, updated_at = excluded.updated_at"
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def content_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def text(value: str | None) -> str | None:
    """Text for a TEXT column: an unpaired surrogate (valid JSON, invalid UTF-8) becomes U+FFFD."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


def dumps(value: Any) -> str:
    # ASCII-escaped: text with unpaired surrogates (valid JSON, invalid UTF-8) must not make a write fail.
    return json.dumps(value, default=str)


Row = Mapping[str, Any]


class SQLStore(AgentSQL):
    """The contract over SQL; subclasses open the connections and say how days are computed."""

    # SQL turning a unix time column into the local date, 'YYYY-MM-DD'.
    LOCAL_DATE: ClassVar[str]
    location: str

    def __init__(self, writer: BatchWriter) -> None:
        self.writer = writer
        self._local = threading.local()

    # -- plumbing (per dialect) ---------------------------------------------------

    def _connect_reader(self) -> Any:
        raise NotImplementedError

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect_reader()
        return list(conn.execute(sql, params).fetchall())

    def _announce(self, conn: Conn, run_ids: set[str]) -> None:
        """Tell other processes that these runs have new events (Postgres NOTIFY; nothing for SQLite)."""

    async def flush(self) -> None:
        await self.writer.flush()

    def flush_sync(self) -> None:
        self.writer.flush_sync()

    def close(self) -> None:
        self.writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def checkpointer(self) -> DurableSaver:
        return DurableSaver(self)

    def watch_changes(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        return lambda: None

    # -- workflows ------------------------------------------------------------

    def save_workflow(self, name: str, source: str, *, path: str | None = None) -> WorkflowVersion:
        version = WorkflowVersion(
            name=name, version=content_hash(source), source=source, created_at=time.time(), path=path
        )

        def write(conn: Conn) -> None:
            # The workflow's row first: on Postgres it locks, so concurrent saves of one workflow number in turn.
            conn.execute(
                "INSERT INTO workflows (name, latest_version, created_at, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET latest_version = excluded.latest_version, "
                "updated_at = excluded.updated_at",
                (name, version.version, version.created_at, version.created_at),
            )
            conn.execute(
                "INSERT INTO workflow_versions (name, version, source, path, created_at, number) "
                "SELECT ?, ?, ?, ?, ?, COALESCE(MAX(number), 0) + 1 FROM workflow_versions WHERE name = ? "
                "ON CONFLICT DO NOTHING",
                (name, version.version, text(source), text(path), version.created_at, name),
            )

        self.writer.call(write)
        return self.get_workflow(name, version.version) or version

    def get_workflow(self, name: str, version: str | None = None) -> WorkflowVersion | None:
        if version is None:
            rows = self._rows(
                "SELECT v.* FROM workflow_versions v JOIN workflows w "
                "ON w.name = v.name AND w.latest_version = v.version WHERE w.name = ?",
                (name,),
            )
        else:
            rows = self._rows("SELECT * FROM workflow_versions WHERE name = ? AND version = ?", (name, version))
        return WorkflowVersion(**dict(rows[0])) if rows else None

    def list_workflows(self) -> list[WorkflowVersion]:
        rows = self._rows(
            "SELECT v.* FROM workflow_versions v JOIN workflows w ON w.name = v.name AND w.latest_version = v.version "
            "ORDER BY w.updated_at DESC"
        )
        return [WorkflowVersion(**dict(row)) for row in rows]

    def list_versions(self, name: str) -> list[WorkflowVersion]:
        rows = self._rows("SELECT * FROM workflow_versions WHERE name = ? ORDER BY number DESC", (name,))
        return [WorkflowVersion(**dict(row)) for row in rows]

    def version_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT name, COUNT(*) AS versions FROM workflow_versions GROUP BY name")
        return {row["name"]: int(row["versions"]) for row in rows}

    # -- runs -----------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        run.created_at = run.created_at or time.time()
        row = _run_row(run)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)

        def insert(conn: Conn) -> None:
            conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", tuple(row.values()))
            self._enqueue(conn, run.id)

        self.writer.call(insert)

    def _enqueue(self, conn: Conn, run_id: str) -> None:
        """Hand a queued run to the task queue, in the transaction that queued it (Postgres with workers)."""

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._rows("SELECT * FROM runs WHERE id = ?", (run_id,))
        return _run_record(rows[0]) if rows else None

    def find_run(self, prefix: str) -> list[RunRecord]:
        """Runs whose id starts with `prefix` (the CLI accepts short ids)."""
        rows = self._rows(
            "SELECT * FROM runs WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC LIMIT 5", (len(prefix), prefix)
        )
        return [_run_record(row) for row in rows]

    def list_runs(
        self, *, limit: int = 50, statuses: tuple[str, ...] = (), workflow: str | None = None
    ) -> list[RunRecord]:
        clauses: list[str] = []
        params: list[Any] = []
        if statuses:
            clauses.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        if workflow:
            clauses.append("workflow = ?")
            params.append(workflow)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(f"SELECT * FROM runs {where} ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [_run_record(row) for row in rows]

    def claim_run(self, run_id: str, owner: str, *, statuses: tuple[str, ...]) -> bool:
        if not statuses:
            return False
        marks = ", ".join("?" for _ in statuses)
        now = time.time()

        def claim(conn: Conn) -> bool:
            cursor = conn.execute(
                f"UPDATE runs SET status = 'running', owner = ?, executed_by = ?, heartbeat_at = ?, "
                f"started_at = COALESCE(started_at, ?) WHERE id = ? AND status IN ({marks})",
                (owner, owner, now, now, run_id, *statuses),
            )
            return bool(cursor.rowcount == 1)

        return self.writer.call(claim)

    def take_over_run(self, run_id: str, owner: str, *, previous_owner: str | None) -> bool:
        """Move a running run from a dead owner to `owner`, atomically."""
        now = time.time()

        def take(conn: Conn) -> bool:
            cursor = conn.execute(
                "UPDATE runs SET owner = ?, executed_by = ?, heartbeat_at = ? "
                "WHERE id = ? AND status = 'running' AND owner IS NOT DISTINCT FROM ?",
                (owner, owner, now, run_id, previous_owner),
            )
            return bool(cursor.rowcount == 1)

        return self.writer.call(take)

    def cancel_requests(self, owner: str) -> list[str]:
        rows = self._rows(
            "SELECT id FROM runs WHERE cancel_requested = 1 AND owner = ? AND status = 'running'", (owner,)
        )
        return [row["id"] for row in rows]

    def update_run(self, run_id: str, **fields: Any) -> None:
        unknown = set(fields) - _RUN_COLUMNS
        if unknown:
            raise ValueError(f"runs have no field {', '.join(sorted(unknown))}")
        self.writer.call(lambda conn: _update_run(conn, run_id, fields))

    def heartbeat(self, run_ids: list[str], owner: str) -> list[str]:
        """Renew our lease on these runs; returns those another owner took over (stop them).

        A run released by its own events (waiting for approval, finished: owner cleared) is not taken:
        its task is only finishing up.
        """
        if not run_ids:
            return []
        now = time.time()
        marks = ", ".join("?" for _ in run_ids)

        def beat(conn: Conn) -> list[str]:
            conn.execute(
                f"UPDATE runs SET heartbeat_at = ? WHERE owner = ? AND id IN ({marks})", (now, owner, *run_ids)
            )
            others = conn.execute(
                f"SELECT id FROM runs WHERE owner IS NOT NULL AND owner != ? AND id IN ({marks})", (owner, *run_ids)
            )
            taken = {row[0] for row in others.fetchall()}
            return [run_id for run_id in run_ids if run_id in taken]

        return self.writer.call(beat)

    def request_cancel(self, run_id: str) -> bool:
        def cancel(conn: Conn) -> bool:
            # Queued or waiting runs have no process working on them: cancel them here and now.
            now = time.time()
            idle = conn.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = ?, error = 'cancelled by request' "
                "WHERE id = ? AND status IN ('queued', 'waiting_approval')",
                (now, run_id),
            )
            if idle.rowcount:
                conn.execute(
                    "UPDATE approvals SET status = 'cancelled', decided_at = ? WHERE run_id = ? AND status = 'pending'",
                    (now, run_id),
                )
                # Its event log ends like any finished run's, so whoever follows it sees the end.
                finished = ev.RunFinished(run_id=run_id, status="cancelled", error="cancelled by request", at=now)
                conn.execute(
                    "INSERT INTO events (run_id, type, at, payload) VALUES (?, ?, ?, ?)",
                    (run_id, finished.type, now, dumps(finished.to_dict())),
                )
                self._announce(conn, {run_id})
                return True
            busy = conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (run_id,))
            if busy.rowcount == 1:
                self._announce(conn, {run_id})
            return bool(busy.rowcount == 1)

        return self.writer.call(cancel)

    def node_runs(self, run_id: str) -> list[NodeRunRecord]:
        rows = self._rows("SELECT * FROM node_runs WHERE run_id = ? ORDER BY started_at, id", (run_id,))
        return [NodeRunRecord(**{key: row[key] for key in row.keys() if key != "id"}) for row in rows]

    def events(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        rows = self._rows("SELECT id, payload FROM events WHERE run_id = ? AND id > ? ORDER BY id", (run_id, after))
        return [{"id": row["id"], **json.loads(row["payload"])} for row in rows]

    def events_after(self, after: int, *, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._rows("SELECT id, payload FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        return [{"id": row["id"], **json.loads(row["payload"])} for row in rows]

    def last_event_id(self) -> int:
        rows = self._rows("SELECT COALESCE(MAX(id), 0) AS last FROM events")
        return int(rows[0]["last"])

    # -- approvals --------------------------------------------------------------

    def pending_approval(self, run_id: str) -> ApprovalRecord | None:
        rows = self._rows(
            "SELECT * FROM approvals WHERE run_id = ? AND status = 'pending' ORDER BY id DESC LIMIT 1", (run_id,)
        )
        return _approval(rows[0]) if rows else None

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

        def decide(conn: Conn) -> int | None:
            row = conn.execute(
                "SELECT id FROM approvals WHERE run_id = ? AND status = 'pending' ORDER BY id DESC LIMIT 1", (run_id,)
            ).fetchone()
            if row is None or (approval_id is not None and int(row[0]) != approval_id):
                return None
            decided = conn.execute(
                "UPDATE approvals SET status = ?, comment = ?, decided_at = ?, decided_by = ? "
                "WHERE id = ? AND status = 'pending'",
                ("approved" if approved else "rejected", text(comment), time.time(), text(decided_by), row[0]),
            )
            if decided.rowcount != 1:
                return None
            resumed = conn.execute(
                "UPDATE runs SET status = 'queued' WHERE id = ? AND status = 'waiting_approval'", (run_id,)
            )
            if resumed.rowcount == 1:
                self._enqueue(conn, run_id)
            self._announce(conn, {run_id})
            return int(row[0])

        approval_id = self.writer.call(decide)
        return None if approval_id is None else self.approval(approval_id)

    def decided_approval(self, run_id: str) -> ApprovalRecord | None:
        """The latest decision not yet consumed by a continuation of the run."""
        rows = self._rows(
            "SELECT * FROM approvals WHERE run_id = ? AND status IN ('approved', 'rejected') AND consumed = 0 "
            "ORDER BY id DESC LIMIT 1",
            (run_id,),
        )
        return _approval(rows[0]) if rows else None

    def consume_approval(self, approval_id: int) -> None:
        self.writer.call(lambda conn: conn.execute("UPDATE approvals SET consumed = 1 WHERE id = ?", (approval_id,)))

    def approval(self, approval_id: int) -> ApprovalRecord | None:
        rows = self._rows("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        return _approval(rows[0]) if rows else None

    # -- triggers -----------------------------------------------------------------

    def record_deployment(
        self, workflow: str, version: str | None, *, action: str, by: str, note: str | None = None
    ) -> Deployment:
        now = time.time()

        def write(conn: Conn) -> int:
            cursor = conn.execute(
                "INSERT INTO deployments (workflow, version, action, deployed_by, deployed_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (workflow, version, action, text(by), now, text(note)),
            )
            return int(cursor.fetchone()[0])

        return Deployment(self.writer.call(write), workflow, version, action, by, now, note)

    def current_deployment(self, workflow: str) -> Deployment | None:
        rows = self._rows("SELECT * FROM deployments WHERE workflow = ? ORDER BY id DESC LIMIT 1", (workflow,))
        current = Deployment(**rows[0]) if rows else None
        return current if current is not None and current.version is not None else None

    def deployment_history(self, workflow: str, *, limit: int = 50) -> list[Deployment]:
        rows = self._rows("SELECT * FROM deployments WHERE workflow = ? ORDER BY id DESC LIMIT ?", (workflow, limit))
        return [Deployment(**row) for row in rows]

    def deployments(self) -> list[Deployment]:
        rows = self._rows(
            "SELECT d.* FROM deployments AS d JOIN (SELECT workflow, MAX(id) AS id FROM deployments GROUP BY workflow) "
            "AS latest ON latest.id = d.id WHERE d.version IS NOT NULL ORDER BY d.workflow"
        )
        return [Deployment(**row) for row in rows]

    def add_hook_secret(self, workflow: str, trigger: str, secret: str, *, retire_others_at: float) -> HookSecret:
        now = time.time()

        def write(conn: Conn) -> None:
            conn.execute(
                "UPDATE hook_secrets SET retired_at = ? WHERE workflow = ? AND trigger = ? "
                "AND (retired_at IS NULL OR retired_at > ?)",
                (retire_others_at, workflow, trigger, retire_others_at),
            )
            conn.execute(
                "INSERT INTO hook_secrets (workflow, trigger, secret, created_at) VALUES (?, ?, ?, ?)",
                (workflow, trigger, secret, now),
            )

        self.writer.call(write)
        return HookSecret(workflow, trigger, secret, now)

    def hook_secrets(self, workflow: str, trigger: str, *, now: float) -> list[HookSecret]:
        rows = self._rows(
            "SELECT workflow, trigger, secret, created_at, retired_at FROM hook_secrets "
            "WHERE workflow = ? AND trigger = ? AND (retired_at IS NULL OR retired_at > ?) ORDER BY id DESC",
            (workflow, trigger, now),
        )
        return [HookSecret(**row) for row in rows]

    def start_triggered(self, requests: list[TriggeredRun]) -> list[tuple[str, bool]]:
        return self.writer.call(lambda conn: [self._start_triggered(conn, request) for request in requests])

    async def astart_triggered(self, requests: list[TriggeredRun]) -> list[tuple[str, bool]]:
        return await self.writer.run(lambda conn: [self._start_triggered(conn, request) for request in requests])

    def _start_triggered(self, conn: Conn, request: TriggeredRun) -> tuple[str, bool]:
        run = request.run
        run.created_at = run.created_at or time.time()
        inserted = conn.execute(
            "INSERT INTO trigger_keys (scope, key, run_id, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (scope, key) DO NOTHING",
            (request.scope, text(request.key), run.id, run.created_at),
        )
        if inserted.rowcount == 1:
            row = _run_row(run)
            conn.execute(
                f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})", tuple(row.values())
            )
            self._enqueue(conn, run.id)
            _insert_delivery(conn, replace(request.delivery, run_id=run.id, at=run.created_at))
            return run.id, True
        found = conn.execute(
            "SELECT run_id FROM trigger_keys WHERE scope = ? AND key = ?", (request.scope, text(request.key))
        ).fetchone()
        first = found[0] if found is not None else None
        _insert_delivery(
            conn,
            replace(
                request.delivery, outcome="duplicate", run_id=first, at=time.time(), detail="seen before: no new run"
            ),
        )
        return first or "", False

    def first_sighting(self, scope: str, key: str) -> bool:
        def insert(conn: Conn) -> bool:
            cursor = conn.execute(
                "INSERT INTO trigger_keys (scope, key, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (scope, key) DO NOTHING",
                (scope, text(key), time.time()),
            )
            return bool(cursor.rowcount == 1)

        return self.writer.call(insert)

    def log_delivery(self, delivery: Delivery) -> None:
        self.writer.submit(lambda conn: _insert_delivery(conn, replace(delivery, at=delivery.at or time.time())))

    def deliveries(self, workflow: str | None = None, *, limit: int = 20) -> list[Delivery]:
        where, params = ("WHERE workflow = ?", (workflow,)) if workflow is not None else ("", ())
        rows = self._rows(f"SELECT * FROM deliveries {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [Delivery(**row) for row in rows]

    def set_schedules(self, workflow: str, schedules: list[Schedule]) -> None:
        def write(conn: Conn) -> None:
            conn.execute("DELETE FROM schedules WHERE workflow = ?", (workflow,))
            conn.executemany(
                "INSERT INTO schedules (workflow, trigger, version, cron, timezone, next_fire_at, last_fire_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        workflow,
                        item.trigger,
                        item.version,
                        item.cron,
                        item.timezone,
                        item.next_fire_at,
                        item.last_fire_at,
                    )
                    for item in schedules
                ],
            )

        self.writer.call(write)

    def schedules(self, workflow: str | None = None) -> list[Schedule]:
        where, params = ("WHERE workflow = ?", (workflow,)) if workflow is not None else ("", ())
        rows = self._rows(f"SELECT * FROM schedules {where} ORDER BY workflow, trigger", params)
        return [Schedule(**row) for row in rows]

    def claim_fire(self, schedule: Schedule, *, next_fire_at: float | None, runs: list[TriggeredRun]) -> bool:
        def claim(conn: Conn) -> bool:
            cursor = conn.execute(
                "UPDATE schedules SET next_fire_at = ?, last_fire_at = ? WHERE workflow = ? AND trigger = ? "
                "AND version = ? AND next_fire_at = ?",
                (
                    next_fire_at,
                    schedule.next_fire_at,
                    schedule.workflow,
                    schedule.trigger,
                    schedule.version,
                    schedule.next_fire_at,
                ),
            )
            if cursor.rowcount != 1:
                return False
            for request in runs:
                self._start_triggered(conn, request)
            return True

        return self.writer.call(claim)

    # -- grants -----------------------------------------------------------------

    def record_grant(
        self, workflow: str, version: str | None, capabilities: dict[str, list[str]], *, granted_by: str, note: str
    ) -> GrantRecord:
        now = time.time()

        def write(conn: Conn) -> int:
            cursor = conn.execute(
                "INSERT INTO grants (workflow, version, capabilities, granted_by, granted_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (workflow, version, dumps(capabilities), text(granted_by), now, text(note)),
            )
            return int(cursor.fetchone()[0])

        grant_id = self.writer.call(write)
        return GrantRecord(grant_id, workflow, version, capabilities, granted_by, now, note)

    def latest_grant(self, workflow: str) -> GrantRecord | None:
        rows = self._rows("SELECT * FROM grants WHERE workflow = ? ORDER BY id DESC LIMIT 1", (workflow,))
        return _grant(rows[0]) if rows else None

    def list_grants(self, workflow: str) -> list[GrantRecord]:
        rows = self._rows("SELECT * FROM grants WHERE workflow = ? ORDER BY id DESC", (workflow,))
        return [_grant(row) for row in rows]

    # -- chat -------------------------------------------------------------------

    def create_session(self, session: Session) -> Session:
        self.writer.call(
            lambda conn: conn.execute(
                "INSERT INTO chat_sessions (id, channel, title, model, current_version, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    session.id,
                    session.channel,
                    text(session.title),
                    session.model,
                    session.current_version,
                    session.created_at,
                    session.updated_at,
                ),
            )
        )
        return self.get_session(session.id) or session

    def get_session(self, session_id: str) -> Session | None:
        rows = self._rows("SELECT * FROM chat_sessions WHERE id = ?", (session_id,))
        return Session(**dict(rows[0])) if rows else None

    def list_sessions(self, *, channel: str | None = None, limit: int = 50) -> list[Session]:
        where, params = ("WHERE channel = ?", (channel,)) if channel else ("", ())
        rows = self._rows(f"SELECT * FROM chat_sessions {where} ORDER BY updated_at DESC LIMIT ?", (*params, limit))
        return [Session(**dict(row)) for row in rows]

    def update_session(self, session_id: str, **fields: Any) -> None:
        unknown = set(fields) - _SESSION_COLUMNS
        if unknown:
            raise ValueError(f"chat sessions have no field {', '.join(sorted(unknown))}")
        fields.setdefault("updated_at", time.time())
        assignments = ", ".join(f"{key} = ?" for key in fields)
        values = tuple(text(value) if isinstance(value, str) else value for value in fields.values())
        self.writer.call(
            lambda conn: conn.execute(f"UPDATE chat_sessions SET {assignments} WHERE id = ?", (*values, session_id))
        )

    def add_message(self, session_id: str, message: Message) -> None:
        payload = dumps(message.meta)
        at = message.created_at or time.time()
        self.writer.submit(
            lambda conn: (
                conn.execute(
                    "INSERT INTO chat_messages (session_id, role, content, meta, created_at) VALUES (?, ?, ?, ?, ?)",
                    (session_id, message.role, text(message.content), payload, at),
                ),
                conn.execute("UPDATE chat_sessions SET updated_at = ? WHERE id = ?", (at, session_id)),
            )
        )

    def messages(self, session_id: str, *, limit: int = 200) -> list[Message]:
        self.writer.flush_sync()  # `add_message` queues; a reader expects its own messages
        rows = self._rows(
            "SELECT * FROM (SELECT * FROM chat_messages WHERE session_id = ? ORDER BY id DESC LIMIT ?) AS recent "
            "ORDER BY id",
            (session_id, limit),
        )
        return [
            Message(row["role"], row["content"], json.loads(row["meta"] or "{}"), row["created_at"]) for row in rows
        ]

    def add_config_version(
        self, session_id: str, *, parent: int, source: str, diff: Callable[[int], str], author: str, note: str
    ) -> int:
        now = time.time()

        def insert(conn: Conn) -> int:
            number = int(
                conn.execute(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM config_versions WHERE session_id = ?", (session_id,)
                ).fetchone()[0]
            )
            conn.execute(
                "INSERT INTO config_versions (session_id, number, parent, source, diff, author, note, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, number, parent, text(source), text(diff(number)), author, text(note), now),
            )
            conn.execute(
                "UPDATE chat_sessions SET current_version = ?, updated_at = ? WHERE id = ?", (number, now, session_id)
            )
            return number

        return self.writer.call(insert)

    def config_version(self, session_id: str, number: int) -> ConfigVersion | None:
        rows = self._rows("SELECT * FROM config_versions WHERE session_id = ? AND number = ?", (session_id, number))
        return _config_version(rows[0]) if rows else None

    def config_versions(self, session_id: str) -> list[ConfigVersion]:
        rows = self._rows("SELECT * FROM config_versions WHERE session_id = ? ORDER BY number", (session_id,))
        return [_config_version(row) for row in rows]

    def newest_child(self, session_id: str, parent: int) -> ConfigVersion | None:
        rows = self._rows(
            "SELECT * FROM config_versions WHERE session_id = ? AND parent = ? ORDER BY number DESC LIMIT 1",
            (session_id, parent),
        )
        return _config_version(rows[0]) if rows else None

    # -- the ledger ---------------------------------------------------------------

    def record_assistant_call(self, call: AssistantCall) -> None:
        row = (
            call.model,
            call.provider,
            call.input_tokens,
            call.output_tokens,
            call.cost_usd,
            call.latency_ms,
            text(call.error),
            call.at or time.time(),
            text(call.session_id),
            call.source,
        )
        self.writer.submit(
            lambda conn: conn.execute(
                "INSERT INTO llm_calls (model, provider, input_tokens, output_tokens, cost_usd, latency_ms, error, at, "
                "session_id, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    def _group(self, by: str) -> str:
        # A call without a run belongs to no workflow: "(assistant)", "(analyse)".
        assistant = f"WHEN source = 'assistant' THEN '{ASSISTANT}' WHEN source <> 'run' THEN '(' || source || ')'"
        return {
            "day": self.LOCAL_DATE.format(column="at"),
            "model": "COALESCE(model, '?')",
            "provider": "COALESCE(provider, '?')",
            "workflow": f"CASE {assistant} ELSE COALESCE(workflow, '?') END",
            "node": f"CASE {assistant} ELSE COALESCE(workflow, '?') || '.' || COALESCE(node_id, '?') END",
            "source": "source",
            "session": "COALESCE(session_id, '?')",
        }[by]

    def spend(self, *, by: str, since: float) -> list[CostRow]:
        if by not in GROUPS:
            raise ValueError(f"cannot group costs by '{by}'; use one of {', '.join(GROUPS)}")
        group = self._group(by)
        order = "key DESC" if by == "day" else "cost_usd DESC, key"
        rows = self._rows(
            f"SELECT {group} AS key, {_SUMS} FROM llm_calls WHERE at >= ? GROUP BY {group} ORDER BY {order}", (since,)
        )
        return [CostRow(str(row["key"]), *_sums(row)) for row in rows]

    def daily_spend(self, *, by: str, since: float) -> list[DailyCost]:
        if by not in GROUPS or by == "day":
            choices = ", ".join(group for group in GROUPS if group != "day")
            raise ValueError(f"cannot group daily costs by '{by}'; use one of {choices}")
        day, group = self._group("day"), self._group(by)
        rows = self._rows(
            f"SELECT {day} AS day, {group} AS key, {_SUMS} FROM llm_calls WHERE at >= ? "
            f"GROUP BY {day}, {group} ORDER BY day, key",
            (since,),
        )
        return [DailyCost(str(row["day"]), str(row["key"]), *_sums(row)) for row in rows]

    def spent(self, *, since: float, workflow: str | None = None) -> float:
        clause, params = ("AND workflow = ?", (since, workflow)) if workflow else ("", (since,))
        rows = self._rows(f"SELECT COALESCE(SUM(cost_usd), 0) AS total FROM llm_calls WHERE at >= ? {clause}", params)
        return float(rows[0]["total"])

    def spent_by_workflow(self, *, since: float) -> dict[str, float]:
        rows = self._rows(
            "SELECT COALESCE(workflow, '') AS workflow, SUM(cost_usd) AS total FROM llm_calls WHERE at >= ? "
            "GROUP BY COALESCE(workflow, '')",
            (since,),
        )
        return {row["workflow"]: float(row["total"] or 0.0) for row in rows}

    def node_costs(self, run_ids: list[str]) -> dict[str, float]:
        if not run_ids:
            return {}
        marks = ", ".join("?" for _ in run_ids)
        rows = self._rows(
            f"SELECT node_id, SUM(cost_usd) AS cost FROM llm_calls WHERE run_id IN ({marks}) GROUP BY node_id",
            tuple(run_ids),
        )
        return {row["node_id"]: float(row["cost"] or 0.0) for row in rows}

    def run_counts(self, *, since: float) -> dict[str, int]:
        rows = self._rows("SELECT status, COUNT(*) AS runs FROM runs WHERE created_at >= ? GROUP BY status", (since,))
        return {row["status"]: int(row["runs"]) for row in rows}

    # -- trace export state -----------------------------------------------------------

    def trace_backlog(self) -> list[str]:
        rows = self._rows(
            "SELECT r.id AS id FROM runs r LEFT JOIN run_traces t ON t.run_id = r.id "
            "WHERE r.finished_at IS NOT NULL AND (t.state IS NULL OR t.state = 'pending') ORDER BY r.finished_at"
        )
        return [row["id"] for row in rows]

    def trace_of(self, run_id: str) -> TraceState | None:
        rows = self._rows("SELECT * FROM run_traces WHERE run_id = ?", (run_id,))
        return TraceState(**dict(rows[0])) if rows else None

    def trace_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT state, COUNT(*) AS n FROM run_traces GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}

    def trace_failures(self, limit: int = 50) -> list[TraceState]:
        rows = self._rows("SELECT * FROM run_traces WHERE state = 'failed' ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [TraceState(**dict(row)) for row in rows]

    def record_traces(self, states: list[TraceState]) -> None:
        rows = [
            (state.run_id, state.trace_id, state.state, text(state.error), state.attempts, state.updated_at)
            for state in states
        ]
        if rows:
            self.writer.call(lambda conn: conn.executemany(_TRACE_UPSERT, rows))

    def reset_failed_traces(self) -> list[str]:
        def reset(conn: Conn) -> list[str]:
            cursor = conn.execute(
                "UPDATE run_traces SET state = 'pending', attempts = 0 WHERE state = 'failed' RETURNING run_id"
            )
            return [row[0] for row in cursor.fetchall()]

        return self.writer.call(reset)

    # -- checkpoints ----------------------------------------------------------------

    def load_thread(self, thread_id: str) -> ThreadRows:
        checkpoints = self._rows(
            "SELECT checkpoint_ns, checkpoint_id, parent_id, checkpoint_type, checkpoint, metadata_type, metadata "
            "FROM cp_checkpoints WHERE thread_id = ?",
            (thread_id,),
        )
        blobs = self._rows(
            "SELECT checkpoint_ns, channel, version, type, blob FROM cp_blobs WHERE thread_id = ?", (thread_id,)
        )
        writes = self._rows(
            "SELECT checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value, task_path "
            "FROM cp_writes WHERE thread_id = ?",
            (thread_id,),
        )
        return ThreadRows(
            [_checkpoint_row(row) for row in checkpoints],
            [(row["checkpoint_ns"], row["channel"], row["version"], row["type"], bytes(row["blob"])) for row in blobs],
            [
                (
                    row["checkpoint_ns"],
                    row["checkpoint_id"],
                    row["task_id"],
                    int(row["idx"]),
                    row["channel"],
                    row["type"],
                    bytes(row["value"]),
                    row["task_path"],
                )
                for row in writes
            ],
        )

    def queue_checkpoint(self, thread_id: str, checkpoint: CheckpointRow, blobs: list[BlobRow]) -> None:
        blob_rows = [(thread_id, *blob) for blob in blobs]
        row = (thread_id, *checkpoint)

        def write(conn: Conn) -> None:
            if blob_rows:
                conn.executemany(
                    "INSERT INTO cp_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (thread_id, checkpoint_ns, channel, version) "
                    "DO UPDATE SET type = excluded.type, blob = excluded.blob",
                    blob_rows,
                )
            conn.execute(
                "INSERT INTO cp_checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_id, checkpoint_type, "
                "checkpoint, metadata_type, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET parent_id = excluded.parent_id, "
                "checkpoint_type = excluded.checkpoint_type, checkpoint = excluded.checkpoint, "
                "metadata_type = excluded.metadata_type, metadata = excluded.metadata",
                row,
            )

        self.writer.submit(write)

    def queue_writes(self, thread_id: str, writes: list[WriteRow]) -> None:
        rows = [(thread_id, *write) for write in writes]
        if not rows:
            return
        self.writer.submit(
            lambda conn: conn.executemany(
                "INSERT INTO cp_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value, "
                "task_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET "
                "channel = excluded.channel, type = excluded.type, value = excluded.value, "
                "task_path = excluded.task_path",
                rows,
            )
        )

    def queue_delete_thread(self, thread_id: str) -> None:
        self.writer.submit(
            lambda conn: [
                conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))
                for table in ("cp_checkpoints", "cp_blobs", "cp_writes")
            ]
        )

    # -- the event observer -----------------------------------------------------

    def record(self, event: ev.RunEvent) -> None:
        """Apply one engine event; queued, committed with the next batch."""
        # Serialised in the writer thread: the run's event loop only queues.
        payload = dumps(event.to_dict())

        def apply(conn: Conn) -> None:
            _apply(conn, event, payload)
            self._announce(conn, {event.run_id})

        self.writer.submit(apply)


def _apply(conn: Conn, event: ev.RunEvent, payload: str) -> None:
    conn.execute(
        "INSERT INTO events (run_id, type, at, payload) VALUES (?, ?, ?, ?)",
        (event.run_id, event.type, event.at, payload),
    )
    if isinstance(event, ev.NodeFinished) and event.reused_from is None:  # a replay's reused result ran elsewhere
        conn.execute(
            "INSERT INTO node_runs (run_id, node_id, node_type, status, attempt, iteration, item_index, started_at, "
            "finished_at, latency_ms, model, tokens, cost_usd, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                event.run_id,
                event.node_id,
                event.node_type,
                event.status,
                event.attempt,
                event.iteration,
                event.item_index,
                event.started_at,
                event.at,
                event.latency_ms,
                event.model,
                event.tokens,
                event.cost_usd,
                text(event.error),
            ),
        )
        # Steps count node executions, as the step budget does; a map's own fan-in is not one.
        if event.status != "skipped" and event.node_type != "map":
            conn.execute("UPDATE runs SET steps = steps + 1 WHERE id = ?", (event.run_id,))
    elif isinstance(event, ev.LLMCalled):
        conn.execute(
            "UPDATE runs SET tokens = tokens + ?, cost_usd = cost_usd + ? WHERE id = ?",
            (event.input_tokens + event.output_tokens, event.cost_usd, event.run_id),
        )
        conn.execute(
            "INSERT INTO llm_calls (run_id, workflow, node_id, model, provider, input_tokens, output_tokens, cost_usd, "
            "latency_ms, error, at) VALUES (?, (SELECT workflow FROM runs WHERE id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.run_id,
                event.run_id,
                event.node_id,
                event.model,
                event.provider,
                event.input_tokens,
                event.output_tokens,
                event.cost_usd,
                event.latency_ms,
                text(event.error),
                event.at,
            ),
        )
    elif isinstance(event, ev.RunStarted):
        conn.execute(
            "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?) WHERE id = ?",
            (event.at, event.run_id),
        )
    elif isinstance(event, ev.ApprovalRequested):
        conn.execute(
            "INSERT INTO approvals (run_id, node_id, message, status, requested_at) VALUES (?, ?, ?, 'pending', ?)",
            (event.run_id, event.node_id, text(event.message), event.at),
        )
        # Nobody works on a waiting run: release it so any process may continue it after the decision.
        conn.execute("UPDATE runs SET status = 'waiting_approval', owner = NULL WHERE id = ?", (event.run_id,))
    elif isinstance(event, ev.ApprovalDecided):
        conn.execute(
            "UPDATE approvals SET consumed = 1 "
            "WHERE run_id = ? AND node_id = ? AND consumed = 0 AND status != 'pending'",
            (event.run_id, event.node_id),
        )
    elif isinstance(event, ev.RunFinished):
        _update_run(
            conn,
            event.run_id,
            {
                "status": event.status,
                "outputs": event.outputs,
                "error": event.error,
                "finished_at": event.at,
                "owner": None,
            },
        )


def _update_run(conn: Conn, run_id: str, fields: dict[str, Any]) -> None:
    if not fields:
        return
    values = [
        dumps(value)
        if key in _JSON_FIELDS and value is not None
        else text(value)
        if isinstance(value, str)
        else int(value)
        if isinstance(value, bool)
        else value
        for key, value in fields.items()
    ]
    assignments = ", ".join(f"{key} = ?" for key in fields)
    conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values, run_id))


_SUMS = (
    "COUNT(*) AS calls, COALESCE(SUM(input_tokens), 0) AS input_tokens, "
    "COALESCE(SUM(output_tokens), 0) AS output_tokens, COALESCE(SUM(cost_usd), 0) AS cost_usd"
)


def _sums(row: Row) -> tuple[int, int, int, float]:
    """A ledger group's calls, tokens in and out, and cost, as selected by _SUMS."""
    return int(row["calls"]), int(row["input_tokens"]), int(row["output_tokens"]), float(row["cost_usd"])


def _checkpoint_row(row: Row) -> CheckpointRow:
    return (
        row["checkpoint_ns"],
        row["checkpoint_id"],
        row["parent_id"],
        row["checkpoint_type"],
        bytes(row["checkpoint"]),
        row["metadata_type"],
        bytes(row["metadata"]),
    )


def _insert_delivery(conn: Conn, delivery: Delivery) -> None:
    conn.execute(
        "INSERT INTO deliveries (workflow, trigger, channel, outcome, key, detail, run_id, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            delivery.workflow,
            delivery.trigger,
            delivery.channel,
            delivery.outcome,
            text(delivery.key),
            text(delivery.detail),
            delivery.run_id,
            delivery.at or time.time(),
        ),
    )


def _grant(row: Row) -> GrantRecord:
    data = dict(row)
    data["capabilities"] = json.loads(data["capabilities"])
    return GrantRecord(**data)


def _approval(row: Row) -> ApprovalRecord:
    return ApprovalRecord(**{key: row[key] for key in row.keys() if key != "consumed"})


def _config_version(row: Row) -> ConfigVersion:
    return ConfigVersion(**{key: row[key] for key in row.keys() if key != "session_id"})


def _run_row(run: RunRecord) -> dict[str, Any]:
    row = {name: getattr(run, name) for name in RunRecord.__slots__}
    for key in _JSON_FIELDS:
        row[key] = None if row[key] is None else dumps(row[key])
    row["cancel_requested"] = int(row["cancel_requested"])
    for key in ("workflow", "error"):
        row[key] = text(row[key])
    return row


def _run_record(row: Row) -> RunRecord:
    data = dict(row)
    for key in _JSON_FIELDS:
        data[key] = None if data[key] is None else json.loads(data[key])
    data["inputs"] = data["inputs"] or {}
    data["cancel_requested"] = bool(data["cancel_requested"])
    data["tokens"] = data["tokens"] or 0
    data["cost_usd"] = data["cost_usd"] or 0.0
    data["steps"] = data["steps"] or 0
    data["active_s"] = data["active_s"] or 0.0
    return RunRecord(**data)
