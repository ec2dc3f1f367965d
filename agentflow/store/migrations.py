"""Numbered, append-only schema migrations. Never edit one that has shipped: add the next."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(function: Migration) -> Migration:
    MIGRATIONS.append((function.__name__, function))
    return function


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("workflows").create(
        {"name": str, "latest_version": str, "created_at": float, "updated_at": float}, pk="name"
    )
    db.table("workflow_versions").create(
        {"name": str, "version": str, "source": str, "path": str, "created_at": float}, pk=("name", "version")
    )
    db.table("runs").create(
        {
            "id": str,
            "workflow": str,
            "version": str,
            "trigger": str,
            "status": str,
            "inputs": str,
            "outputs": str,
            "error": str,
            "tokens": int,
            "cost_usd": float,
            "steps": int,
            "created_at": float,
            "started_at": float,
            "finished_at": float,
            "owner": str,
            "heartbeat_at": float,
            "active_s": float,
            "cancel_requested": int,
        },
        pk="id",
        not_null={"workflow", "version", "status"},
        defaults={"tokens": 0, "cost_usd": 0.0, "steps": 0, "active_s": 0.0, "cancel_requested": 0},
    )
    db.table("runs").create_index(["status", "created_at"])
    db.table("runs").create_index(["workflow", "created_at"])
    db.table("node_runs").create(
        {
            "id": int,
            "run_id": str,
            "node_id": str,
            "node_type": str,
            "status": str,
            "attempt": int,
            "iteration": int,
            "item_index": int,
            "started_at": float,
            "finished_at": float,
            "latency_ms": float,
            "model": str,
            "tokens": int,
            "cost_usd": float,
            "error": str,
        },
        pk="id",
    )
    db.table("node_runs").create_index(["run_id"])
    db.table("events").create({"id": int, "run_id": str, "type": str, "at": float, "payload": str}, pk="id")
    db.table("events").create_index(["run_id", "id"])
    db.table("approvals").create(
        {
            "id": int,
            "run_id": str,
            "node_id": str,
            "message": str,
            "status": str,
            "comment": str,
            "requested_at": float,
            "decided_at": float,
            "consumed": int,
        },
        pk="id",
        defaults={"consumed": 0},
    )
    db.table("approvals").create_index(["run_id", "status"])
    # LangGraph checkpoints, written incrementally (one blob per channel version).
    db.table("cp_checkpoints").create(
        {
            "thread_id": str,
            "checkpoint_ns": str,
            "checkpoint_id": str,
            "parent_id": str,
            "checkpoint_type": str,
            "checkpoint": bytes,
            "metadata_type": str,
            "metadata": bytes,
        },
        pk=("thread_id", "checkpoint_ns", "checkpoint_id"),
    )
    db.table("cp_blobs").create(
        {"thread_id": str, "checkpoint_ns": str, "channel": str, "version": str, "type": str, "blob": bytes},
        pk=("thread_id", "checkpoint_ns", "channel", "version"),
    )
    db.table("cp_writes").create(
        {
            "thread_id": str,
            "checkpoint_ns": str,
            "checkpoint_id": str,
            "task_id": str,
            "idx": int,
            "channel": str,
            "type": str,
            "value": bytes,
            "task_path": str,
        },
        pk=("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"),
    )


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns their names."""
    db = sqlite_utils.Database(conn)
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    applied = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    done = []
    for name, function in MIGRATIONS:
        if name in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while we waited for the lock.
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("ROLLBACK")
                continue
            function(db)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        done.append(name)
    return done


@migration
def m002_chat(db: sqlite_utils.Database) -> None:
    db.table("chat_sessions").create(
        {
            "id": str,
            "channel": str,
            "title": str,
            "model": str,
            "current_version": int,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        defaults={"current_version": 0},
    )
    db.table("chat_messages").create(
        {"id": int, "session_id": str, "role": str, "content": str, "meta": str, "created_at": float}, pk="id"
    )
    db.table("chat_messages").create_index(["session_id", "id"])
    # Every accepted edit of a session's workflow; `parent` makes undo/redo a walk over a tree.
    db.table("config_versions").create(
        {
            "session_id": str,
            "number": int,
            "parent": int,
            "source": str,
            "diff": str,
            "author": str,
            "note": str,
            "created_at": float,
        },
        pk=("session_id", "number"),
    )


@migration
def m003_traces(db: sqlite_utils.Database) -> None:
    # The trace export state of finished runs, owned by agentflow.observability.exporter. A table of
    # its own rather than columns on `runs`: `runs` rows map 1:1 onto RunRecord, and the exporter's
    # bookkeeping (attempts, errors) is not part of a run. No row (or state 'pending') = not exported yet.
    table = db.table("run_traces")
    table.create(
        {"run_id": str, "trace_id": str, "state": str, "error": str, "attempts": int, "updated_at": float},
        pk="run_id",
        not_null={"state"},
        defaults={"attempts": 0},
    )
    table.create_index(["state", "updated_at"])
    # Finding finished-but-unexported runs walks finished runs only, in the order they finished.
    db.execute("CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL")


@migration
def m004_ledger(db: sqlite_utils.Database) -> None:
    # One row per provider call, whatever the provider: the cost ledger behind budgets and reports.
    table = db.table("llm_calls")
    table.create(
        {
            "id": int,
            "run_id": str,
            "workflow": str,
            "node_id": str,
            "model": str,
            "provider": str,
            "input_tokens": int,
            "output_tokens": int,
            "cost_usd": float,
            "latency_ms": float,
            "error": str,
            "at": float,
        },
        pk="id",
    )
    table.create_index(["at"])
    table.create_index(["workflow", "at"])
    # Backfill from the event log, so the ledger covers calls made before it existed.
    db.execute(
        "INSERT INTO llm_calls (run_id, workflow, node_id, model, provider, input_tokens, output_tokens, cost_usd, "
        "latency_ms, error, at) "
        "SELECT e.run_id, r.workflow, json_extract(e.payload, '$.node_id'), json_extract(e.payload, '$.model'), "
        "json_extract(e.payload, '$.provider'), json_extract(e.payload, '$.input_tokens'), "
        "json_extract(e.payload, '$.output_tokens'), json_extract(e.payload, '$.cost_usd'), "
        "json_extract(e.payload, '$.latency_ms'), json_extract(e.payload, '$.error'), e.at "
        "FROM events e JOIN runs r ON r.id = e.run_id WHERE e.type = 'llm_call'"
    )


@migration
def m005_grants(db: sqlite_utils.Database) -> None:
    # Who granted which capabilities to a workflow, and when; append-only. The newest row of a
    # workflow is its grant: the capabilities (JSON) every version of it may use.
    table = db.table("grants")
    table.create(
        {
            "id": int,
            "workflow": str,
            "version": str,
            "capabilities": str,
            "granted_by": str,
            "granted_at": float,
            "note": str,
        },
        pk="id",
        not_null={"workflow", "capabilities", "granted_by", "granted_at"},
    )
    table.create_index(["workflow", "id"])


@migration
def m006_executed_by(db: sqlite_utils.Database) -> None:
    # Which process executed a run last (host:pid:id): the owner is cleared when a run stops.
    db.table("runs").add_column("executed_by", str)


@migration
def m007_version_numbers(db: sqlite_utils.Database) -> None:
    # People name a workflow's versions v1, v2, … in the order first saved; the content hash stays the id.
    db.table("workflow_versions").add_column("number", int)
    db.execute(
        "UPDATE workflow_versions SET number = (SELECT COUNT(*) FROM workflow_versions AS earlier "
        "WHERE earlier.name = workflow_versions.name AND (earlier.created_at < workflow_versions.created_at "
        "OR (earlier.created_at = workflow_versions.created_at AND earlier.version <= workflow_versions.version)))"
    )
    db.execute("CREATE UNIQUE INDEX workflow_versions_number ON workflow_versions (name, number)")


@migration
def m008_ledger_sources(db: sqlite_utils.Database) -> None:
    # Who made a call: a run ('run', every call so far) or the chat assistant ('assistant', with the
    # session it served and no run), so the ledger holds every model call the installation pays for.
    table = db.table("llm_calls")
    table.add_column("source", str, not_null_default="run")
    table.add_column("session_id", str)


@migration
def m009_triggers(db: sqlite_utils.Database) -> None:
    # What starts runs from the world (agentflow/triggers/): deployments (append-only; the newest per
    # workflow is in force), webhook secrets (rotation keeps the old one valid for a grace period), one
    # run per idempotency key ever (webhook delivery ids, schedule fire times, chat update ids), the
    # delivery log, and schedules with their next fire time (claimed atomically by one process).
    db.table("deployments").create(
        {
            "id": int,
            "workflow": str,
            "version": str,
            "action": str,
            "deployed_by": str,
            "deployed_at": float,
            "note": str,
        },
        pk="id",
        not_null={"workflow", "action", "deployed_by", "deployed_at"},
    )
    db.table("deployments").create_index(["workflow", "id"])
    db.table("hook_secrets").create(
        {"id": int, "workflow": str, "trigger": str, "secret": str, "created_at": float, "retired_at": float},
        pk="id",
        not_null={"workflow", "trigger", "secret", "created_at"},
    )
    db.table("hook_secrets").create_index(["workflow", "trigger", "id"])
    db.table("trigger_keys").create(
        {"scope": str, "key": str, "run_id": str, "created_at": float},
        pk=("scope", "key"),
        not_null={"scope", "key", "created_at"},
    )
    db.table("deliveries").create(
        {
            "id": int,
            "workflow": str,
            "trigger": str,
            "channel": str,
            "outcome": str,
            "key": str,
            "detail": str,
            "run_id": str,
            "at": float,
        },
        pk="id",
        not_null={"workflow", "trigger", "channel", "outcome", "at"},
    )
    db.table("deliveries").create_index(["workflow", "id"])
    db.table("schedules").create(
        {
            "workflow": str,
            "trigger": str,
            "version": str,
            "cron": str,
            "timezone": str,
            "next_fire_at": float,
            "last_fire_at": float,
        },
        pk=("workflow", "trigger"),
        not_null={"version", "cron", "timezone"},
    )
    db.table("runs").add_column("reply_to", str)
    db.table("approvals").add_column("decided_by", str)


@migration
def m010_agents(db: sqlite_utils.Database) -> None:
    # The agent registry (agentflow/registry/): A2A agents with their card as last fetched, the history
    # of card changes, and one-time enrolment tokens. Secrets and tokens are kept as SHA-256 only; an
    # agent's state is not a column: it follows from last_seen, the same in every process.
    db.table("agents").create(
        {
            "id": str,
            "name": str,
            "url": str,
            "card_url": str,
            "card": str,
            "description": str,
            "card_version": str,
            "card_etag": str,
            "skills": str,
            "source": str,
            "secret_hash": str,
            "created_at": float,
            "last_seen": float,
            "latency_ms": float,
        },
        pk="id",
        not_null={"name", "url", "card_url", "card", "source", "created_at"},
    )
    db.table("agent_cards").create(
        {"id": int, "agent_id": str, "at": float, "version": str, "skills": str, "change": str},
        pk="id",
        not_null={"agent_id", "at"},
    )
    db.table("agent_cards").create_index(["agent_id", "id"])
    db.table("enrolment_tokens").create(
        {
            "id": str,
            "token_hash": str,
            "note": str,
            "created_at": float,
            "expires_at": float,
            "used_at": float,
            "used_by": str,
            "revoked_at": float,
        },
        pk="id",
        not_null={"token_hash", "created_at", "expires_at"},
    )
    db.execute("CREATE UNIQUE INDEX enrolment_tokens_hash ON enrolment_tokens (token_hash)")


@migration
def m011_sub_runs(db: sqlite_utils.Database) -> None:
    # A run started by a `workflow` node: the parent run and node (JSON), and the share of the parent's
    # budget it may use (JSON {steps, tokens, usd}).
    db.table("runs").add_column("parent", str)
    db.table("runs").add_column("limits", str)


@migration
def m012_run_overrides(db: sqlite_utils.Database) -> None:
    # How a run departs from a plain run of its version (JSON): a replay's starting state, pinned node
    # outputs, chosen variants (RunRecord.overrides).
    db.table("runs").add_column("overrides", str)
