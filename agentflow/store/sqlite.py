"""The embedded store: one SQLite file (WAL), writes batched through one writer thread."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from agentflow.engine import events as ev
from agentflow.store.base import ApprovalRecord, GrantRecord, NodeRunRecord, RunRecord, WorkflowVersion
from agentflow.store.migrations import migrate
from agentflow.store.writer import BatchWriter, connect

_JSON_FIELDS = ("inputs", "outputs")


def content_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def _text(value: str | None) -> str | None:
    """Text for a TEXT column: an unpaired surrogate (valid JSON, invalid UTF-8) becomes U+FFFD."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _dumps(value: Any) -> str:
    # ASCII-escaped: text with unpaired surrogates (valid JSON, invalid UTF-8) must not make a write fail.
    return json.dumps(value, default=str)


class SQLiteStore:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with connect(path, synchronous=synchronous) as conn:
            migrate(conn)
        conn.close()
        self.writer = BatchWriter(path, synchronous=synchronous)
        self._local = threading.local()

    # -- plumbing -------------------------------------------------------------

    def _read(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._read().execute(sql, params).fetchall()

    async def flush(self) -> None:
        await self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- workflows ------------------------------------------------------------

    def save_workflow(self, name: str, source: str, *, path: str | None = None) -> WorkflowVersion:
        version = WorkflowVersion(
            name=name, version=content_hash(source), source=source, created_at=time.time(), path=path
        )

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO workflow_versions (name, version, source, path, created_at) VALUES (?,?,?,?,?)",
                (name, version.version, source, path, version.created_at),
            )
            conn.execute(
                "INSERT INTO workflows (name, latest_version, created_at, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET latest_version = excluded.latest_version, "
                "updated_at = excluded.updated_at",
                (name, version.version, version.created_at, version.created_at),
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
        rows = self._rows("SELECT * FROM workflow_versions WHERE name = ? ORDER BY created_at DESC", (name,))
        return [WorkflowVersion(**dict(row)) for row in rows]

    # -- runs -----------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        run.created_at = run.created_at or time.time()
        row = _run_row(run)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.writer.call(
            lambda conn: conn.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", tuple(row.values()))
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        rows = self._rows("SELECT * FROM runs WHERE id = ?", (run_id,))
        return _run_record(rows[0]) if rows else None

    def find_run(self, prefix: str) -> list[RunRecord]:
        """Runs whose id starts with `prefix` (the CLI accepts short ids)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._rows("SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 5", (escaped + "%",))
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
        marks = ", ".join("?" for _ in statuses)
        now = time.time()

        def claim(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"UPDATE runs SET status = 'running', owner = ?, heartbeat_at = ?, "
                f"started_at = COALESCE(started_at, ?) WHERE id = ? AND status IN ({marks})",
                (owner, now, now, run_id, *statuses),
            )
            return cursor.rowcount == 1

        return self.writer.call(claim)

    def take_over_run(self, run_id: str, owner: str, *, previous_owner: str | None) -> bool:
        """Move a running run from a dead owner to `owner`, atomically."""
        now = time.time()

        def take(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE runs SET owner = ?, heartbeat_at = ? WHERE id = ? AND status = 'running' AND owner IS ?",
                (owner, now, run_id, previous_owner),
            )
            return cursor.rowcount == 1

        return self.writer.call(take)

    def cancel_requests(self, owner: str) -> list[str]:
        rows = self._rows(
            "SELECT id FROM runs WHERE cancel_requested = 1 AND owner = ? AND status = 'running'", (owner,)
        )
        return [row["id"] for row in rows]

    def update_run(self, run_id: str, **fields: Any) -> None:
        self.writer.call(lambda conn: _update_run(conn, run_id, fields))

    def heartbeat(self, run_ids: list[str], owner: str) -> None:
        now = time.time()
        self.writer.submit(
            lambda conn: conn.executemany(
                "UPDATE runs SET heartbeat_at = ? WHERE id = ? AND owner = ?",
                [(now, run_id, owner) for run_id in run_ids],
            )
        )

    def request_cancel(self, run_id: str) -> bool:
        def cancel(conn: sqlite3.Connection) -> bool:
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
                return True
            busy = conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ? AND status = 'running'", (run_id,))
            return busy.rowcount == 1

        return self.writer.call(cancel)

    def node_runs(self, run_id: str) -> list[NodeRunRecord]:
        rows = self._rows("SELECT * FROM node_runs WHERE run_id = ? ORDER BY started_at, id", (run_id,))
        return [NodeRunRecord(**{key: row[key] for key in row.keys() if key != "id"}) for row in rows]

    def events(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        rows = self._rows("SELECT id, payload FROM events WHERE run_id = ? AND id > ? ORDER BY id", (run_id, after))
        return [{"id": row["id"], **json.loads(row["payload"])} for row in rows]

    # -- approvals --------------------------------------------------------------

    def pending_approval(self, run_id: str) -> ApprovalRecord | None:
        rows = self._rows(
            "SELECT * FROM approvals WHERE run_id = ? AND status = 'pending' ORDER BY id DESC LIMIT 1", (run_id,)
        )
        return _approval(rows[0]) if rows else None

    def decide_approval(self, run_id: str, *, approved: bool, comment: str | None) -> ApprovalRecord | None:
        """Decide the pending approval exactly once; None when there is none (or it was already decided)."""

        def decide(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT id FROM approvals WHERE run_id = ? AND status = 'pending' ORDER BY id DESC LIMIT 1", (run_id,)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE approvals SET status = ?, comment = ?, decided_at = ? WHERE id = ? AND status = 'pending'",
                ("approved" if approved else "rejected", comment, time.time(), row[0]),
            )
            conn.execute("UPDATE runs SET status = 'queued' WHERE id = ? AND status = 'waiting_approval'", (run_id,))
            return int(row[0])

        approval_id = self.writer.call(decide)
        if approval_id is None:
            return None
        rows = self._rows("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        return _approval(rows[0])

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

    # -- grants -----------------------------------------------------------------

    def record_grant(
        self, workflow: str, version: str | None, capabilities: dict[str, list[str]], *, granted_by: str, note: str
    ) -> GrantRecord:
        now = time.time()

        def write(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO grants (workflow, version, capabilities, granted_by, granted_at, note) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (workflow, version, _dumps(capabilities), _text(granted_by), now, _text(note)),
            )
            return int(cursor.lastrowid or 0)

        grant_id = self.writer.call(write)
        return GrantRecord(grant_id, workflow, version, capabilities, granted_by, now, note)

    def latest_grant(self, workflow: str) -> GrantRecord | None:
        rows = self._rows("SELECT * FROM grants WHERE workflow = ? ORDER BY id DESC LIMIT 1", (workflow,))
        return _grant(rows[0]) if rows else None

    def list_grants(self, workflow: str) -> list[GrantRecord]:
        rows = self._rows("SELECT * FROM grants WHERE workflow = ? ORDER BY id DESC", (workflow,))
        return [_grant(row) for row in rows]

    # -- the event observer -----------------------------------------------------

    def record(self, event: ev.RunEvent) -> None:
        """Apply one engine event; queued, committed with the next batch."""
        # Serialised in the writer thread: the run's event loop only queues.
        self.writer.submit(lambda conn: _apply(conn, event, _dumps(event.to_dict())))


def _apply(conn: sqlite3.Connection, event: ev.RunEvent, payload: str) -> None:
    conn.execute(
        "INSERT INTO events (run_id, type, at, payload) VALUES (?, ?, ?, ?)",
        (event.run_id, event.type, event.at, payload),
    )
    if isinstance(event, ev.NodeFinished):
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
                _text(event.error),
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
            "latency_ms, error, at) SELECT ?, workflow, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM runs WHERE id = ?",
            (
                event.run_id,
                event.node_id,
                event.model,
                event.provider,
                event.input_tokens,
                event.output_tokens,
                event.cost_usd,
                event.latency_ms,
                event.error,
                event.at,
                event.run_id,
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
            (event.run_id, event.node_id, _text(event.message), event.at),
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


def _column(key: str, value: Any) -> Any:
    if key in _JSON_FIELDS and value is not None:
        return _dumps(value)
    return _text(value) if isinstance(value, str) else value


def _update_run(conn: sqlite3.Connection, run_id: str, fields: dict[str, Any]) -> None:
    if not fields:
        return
    values = [
        _dumps(value)
        if key in _JSON_FIELDS and value is not None
        else _text(value)
        if isinstance(value, str)
        else value
        for key, value in fields.items()
    ]
    assignments = ", ".join(f"{key} = ?" for key in fields)
    conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values, run_id))


def _grant(row: sqlite3.Row) -> GrantRecord:
    data = dict(row)
    data["capabilities"] = json.loads(data["capabilities"])
    return GrantRecord(**data)


def _approval(row: sqlite3.Row) -> ApprovalRecord:
    return ApprovalRecord(**{key: row[key] for key in row.keys() if key != "consumed"})


def _run_row(run: RunRecord) -> dict[str, Any]:
    row = {name: getattr(run, name) for name in RunRecord.__slots__}
    for key in _JSON_FIELDS:
        row[key] = None if row[key] is None else _dumps(row[key])
    row["cancel_requested"] = int(row["cancel_requested"])
    return row


def _run_record(row: sqlite3.Row) -> RunRecord:
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
