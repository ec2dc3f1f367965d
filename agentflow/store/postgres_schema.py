"""Postgres migrations: the same numbered steps as migrations.py (SQLite), in Postgres's DDL.

Never edit one that has shipped: add the next, here and in migrations.py with
the same name, so both databases say which steps they have. `q001_queue`
installs Procrastinate's schema (the run queue); it exists only here.
"""

from __future__ import annotations

from collections.abc import Callable

from agentflow.store.writer import Conn

Step = Callable[[Conn], None]
MIGRATIONS: list[tuple[str, Step]] = []


def sql(name: str, statements: str) -> None:
    def step(conn: Conn) -> None:
        for statement in filter(None, (part.strip() for part in statements.split(";"))):
            conn.execute(statement)

    MIGRATIONS.append((name, step))


sql(
    "m001_initial",
    """
    CREATE TABLE workflows (name TEXT PRIMARY KEY, latest_version TEXT, created_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION);
    CREATE TABLE workflow_versions (name TEXT, version TEXT, source TEXT, path TEXT, created_at DOUBLE PRECISION,
        PRIMARY KEY (name, version));
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, workflow TEXT NOT NULL, version TEXT NOT NULL, trigger TEXT, status TEXT NOT NULL,
        inputs TEXT, outputs TEXT, error TEXT, tokens INTEGER DEFAULT 0, cost_usd DOUBLE PRECISION DEFAULT 0.0,
        steps INTEGER DEFAULT 0, created_at DOUBLE PRECISION, started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION, owner TEXT, heartbeat_at DOUBLE PRECISION, active_s DOUBLE PRECISION DEFAULT 0.0,
        cancel_requested INTEGER DEFAULT 0);
    CREATE INDEX idx_runs_status_created_at ON runs (status, created_at);
    CREATE INDEX idx_runs_workflow_created_at ON runs (workflow, created_at);
    CREATE TABLE node_runs (
        id BIGSERIAL PRIMARY KEY, run_id TEXT, node_id TEXT, node_type TEXT, status TEXT, attempt INTEGER,
        iteration INTEGER, item_index INTEGER, started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION,
        latency_ms DOUBLE PRECISION, model TEXT, tokens INTEGER, cost_usd DOUBLE PRECISION, error TEXT);
    CREATE INDEX idx_node_runs_run_id ON node_runs (run_id);
    CREATE TABLE events (id BIGSERIAL PRIMARY KEY, run_id TEXT, type TEXT, at DOUBLE PRECISION, payload TEXT);
    CREATE INDEX idx_events_run_id_id ON events (run_id, id);
    CREATE TABLE approvals (
        id BIGSERIAL PRIMARY KEY, run_id TEXT, node_id TEXT, message TEXT, status TEXT, comment TEXT,
        requested_at DOUBLE PRECISION, decided_at DOUBLE PRECISION, consumed INTEGER DEFAULT 0);
    CREATE INDEX idx_approvals_run_id_status ON approvals (run_id, status);
    CREATE TABLE cp_checkpoints (
        thread_id TEXT, checkpoint_ns TEXT, checkpoint_id TEXT, parent_id TEXT, checkpoint_type TEXT,
        checkpoint BYTEA, metadata_type TEXT, metadata BYTEA, PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id));
    CREATE TABLE cp_blobs (
        thread_id TEXT, checkpoint_ns TEXT, channel TEXT, version TEXT, type TEXT, blob BYTEA,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version));
    CREATE TABLE cp_writes (
        thread_id TEXT, checkpoint_ns TEXT, checkpoint_id TEXT, task_id TEXT, idx INTEGER, channel TEXT, type TEXT,
        value BYTEA, task_path TEXT, PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx))
    """,
)

sql(
    "m002_chat",
    """
    CREATE TABLE chat_sessions (
        id TEXT PRIMARY KEY, channel TEXT, title TEXT, model TEXT, current_version INTEGER DEFAULT 0,
        created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION);
    CREATE TABLE chat_messages (
        id BIGSERIAL PRIMARY KEY, session_id TEXT, role TEXT, content TEXT, meta TEXT, created_at DOUBLE PRECISION);
    CREATE INDEX idx_chat_messages_session_id_id ON chat_messages (session_id, id);
    CREATE TABLE config_versions (
        session_id TEXT, number INTEGER, parent INTEGER, source TEXT, diff TEXT, author TEXT, note TEXT,
        created_at DOUBLE PRECISION, PRIMARY KEY (session_id, number))
    """,
)

sql(
    "m003_traces",
    """
    CREATE TABLE run_traces (
        run_id TEXT PRIMARY KEY, trace_id TEXT, state TEXT NOT NULL, error TEXT, attempts INTEGER DEFAULT 0,
        updated_at DOUBLE PRECISION);
    CREATE INDEX idx_run_traces_state_updated_at ON run_traces (state, updated_at);
    CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL
    """,
)

sql(
    "m004_ledger",
    """
    CREATE TABLE llm_calls (
        id BIGSERIAL PRIMARY KEY, run_id TEXT, workflow TEXT, node_id TEXT, model TEXT, provider TEXT,
        input_tokens INTEGER, output_tokens INTEGER, cost_usd DOUBLE PRECISION, latency_ms DOUBLE PRECISION,
        error TEXT, at DOUBLE PRECISION);
    CREATE INDEX idx_llm_calls_at ON llm_calls (at);
    CREATE INDEX idx_llm_calls_workflow_at ON llm_calls (workflow, at)
    """,
)

sql(
    "m005_grants",
    """
    CREATE TABLE grants (
        id BIGSERIAL PRIMARY KEY, workflow TEXT NOT NULL, version TEXT, capabilities TEXT NOT NULL,
        granted_by TEXT NOT NULL, granted_at DOUBLE PRECISION NOT NULL, note TEXT);
    CREATE INDEX idx_grants_workflow_id ON grants (workflow, id)
    """,
)

sql("m006_executed_by", "ALTER TABLE runs ADD COLUMN executed_by TEXT")

sql(
    "m007_version_numbers",
    """
    ALTER TABLE workflow_versions ADD COLUMN number INTEGER;
    UPDATE workflow_versions AS v SET number = ranked.number
        FROM (SELECT name, version, ROW_NUMBER() OVER (PARTITION BY name ORDER BY created_at, version) AS number
              FROM workflow_versions) AS ranked
        WHERE ranked.name = v.name AND ranked.version = v.version;
    CREATE UNIQUE INDEX idx_workflow_versions_name_number ON workflow_versions (name, number)
    """,
)

sql(
    "m008_ledger_sources",
    """
    ALTER TABLE llm_calls ADD COLUMN source TEXT NOT NULL DEFAULT 'run';
    ALTER TABLE llm_calls ADD COLUMN session_id TEXT
    """,
)

sql(
    "m009_triggers",
    """
    CREATE TABLE deployments (
        id BIGSERIAL PRIMARY KEY, workflow TEXT NOT NULL, version TEXT, action TEXT NOT NULL,
        deployed_by TEXT NOT NULL, deployed_at DOUBLE PRECISION NOT NULL, note TEXT);
    CREATE INDEX idx_deployments_workflow_id ON deployments (workflow, id);
    CREATE TABLE hook_secrets (
        id BIGSERIAL PRIMARY KEY, workflow TEXT NOT NULL, trigger TEXT NOT NULL, secret TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, retired_at DOUBLE PRECISION);
    CREATE INDEX idx_hook_secrets_workflow_trigger_id ON hook_secrets (workflow, trigger, id);
    CREATE TABLE trigger_keys (
        scope TEXT NOT NULL, key TEXT NOT NULL, run_id TEXT, created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scope, key));
    CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY, workflow TEXT NOT NULL, trigger TEXT NOT NULL, channel TEXT NOT NULL,
        outcome TEXT NOT NULL, key TEXT, detail TEXT, run_id TEXT, at DOUBLE PRECISION NOT NULL);
    CREATE INDEX idx_deliveries_workflow_id ON deliveries (workflow, id);
    CREATE TABLE schedules (
        workflow TEXT NOT NULL, trigger TEXT NOT NULL, version TEXT NOT NULL, cron TEXT NOT NULL,
        timezone TEXT NOT NULL, next_fire_at DOUBLE PRECISION, last_fire_at DOUBLE PRECISION,
        PRIMARY KEY (workflow, trigger));
    ALTER TABLE runs ADD COLUMN reply_to TEXT;
    ALTER TABLE approvals ADD COLUMN decided_by TEXT
    """,
)


sql(
    "m010_agents",
    """
    CREATE TABLE agents (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL, card_url TEXT NOT NULL, card TEXT NOT NULL,
        description TEXT, card_version TEXT, card_etag TEXT, skills TEXT, source TEXT NOT NULL, secret_hash TEXT,
        created_at DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION, latency_ms DOUBLE PRECISION);
    CREATE TABLE agent_cards (
        id BIGSERIAL PRIMARY KEY, agent_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, version TEXT, skills TEXT,
        change TEXT);
    CREATE INDEX idx_agent_cards_agent_id_id ON agent_cards (agent_id, id);
    CREATE TABLE enrolment_tokens (
        id TEXT PRIMARY KEY, token_hash TEXT NOT NULL, note TEXT, created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, used_at DOUBLE PRECISION, used_by TEXT, revoked_at DOUBLE PRECISION);
    CREATE UNIQUE INDEX enrolment_tokens_hash ON enrolment_tokens (token_hash)
    """,
)

sql(
    "m011_sub_runs",
    """
    ALTER TABLE runs ADD COLUMN parent TEXT;
    ALTER TABLE runs ADD COLUMN limits TEXT
    """,
)

sql("m012_run_overrides", "ALTER TABLE runs ADD COLUMN overrides TEXT")


def _queue_schema(conn: Conn) -> None:
    from procrastinate.schema import SchemaManager

    conn.execute(SchemaManager.get_schema())


MIGRATIONS.append(("q001_queue", _queue_schema))
