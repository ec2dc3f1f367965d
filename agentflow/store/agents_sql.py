"""The agent registry's rows in SQL (the `AgentStore` role of base.py), shared by SQLite and Postgres."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentflow.store.base import AgentRecord, CardChange, EnrolmentToken

if TYPE_CHECKING:
    from agentflow.store.sql import Row
    from agentflow.store.writer import BatchWriter, Conn

_AGENT_COLUMNS = (
    "id", "name", "url", "card_url", "card", "description", "card_version", "card_etag", "skills", "source",
    "secret_hash", "created_at", "last_seen", "latency_ms",
)  # fmt: skip
_TOKEN_COLUMNS = ("id", "token_hash", "note", "created_at", "expires_at", "used_at", "used_by", "revoked_at")


class AgentSQL:
    """Mixed into SQLStore: it brings the writer and the readers."""

    writer: BatchWriter

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Row]:
        raise NotImplementedError

    def save_agent(self, agent: AgentRecord) -> None:
        from agentflow.store.sql import dumps, text

        values = (
            agent.id, text(agent.name), text(agent.url), text(agent.card_url), dumps(agent.card),
            text(agent.description), text(agent.card_version), text(agent.card_etag), dumps(agent.skills),
            agent.source, agent.secret_hash, agent.created_at, agent.last_seen, agent.latency_ms,
        )  # fmt: skip
        updates = ", ".join(f"{column} = excluded.{column}" for column in _AGENT_COLUMNS[1:])
        statement = (
            f"INSERT INTO agents ({', '.join(_AGENT_COLUMNS)}) VALUES ({', '.join('?' for _ in _AGENT_COLUMNS)}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}"
        )
        self.writer.call(lambda conn: conn.execute(statement, values))

    def get_agent(self, agent_id: str) -> AgentRecord | None:
        rows = self._rows("SELECT * FROM agents WHERE id = ?", (agent_id,))
        return _agent(rows[0]) if rows else None

    def list_agents(self) -> list[AgentRecord]:
        return [_agent(row) for row in self._rows("SELECT * FROM agents ORDER BY created_at, id")]

    def touch_agent(self, agent_id: str, *, seen_at: float | None, latency_ms: float | None) -> bool:
        def touch(conn: Conn) -> bool:
            cursor = conn.execute(
                "UPDATE agents SET last_seen = COALESCE(?, last_seen), latency_ms = COALESCE(?, latency_ms) "
                "WHERE id = ?",
                (seen_at, latency_ms, agent_id),
            )
            return bool(cursor.rowcount == 1)

        return self.writer.call(touch)

    def touch_agents(self, seen: Mapping[str, float]) -> list[str]:
        def touch(conn: Conn) -> list[str]:
            missing = []
            for agent_id, at in seen.items():
                cursor = conn.execute(
                    "UPDATE agents SET last_seen = CASE WHEN last_seen IS NULL OR last_seen < ? THEN ? "
                    "ELSE last_seen END WHERE id = ?",
                    (at, at, agent_id),
                )
                if cursor.rowcount != 1:
                    missing.append(agent_id)
            return missing

        return self.writer.call(touch) if seen else []

    def delete_agent(self, agent_id: str) -> bool:
        def delete(conn: Conn) -> bool:
            conn.execute("DELETE FROM agent_cards WHERE agent_id = ?", (agent_id,))
            return bool(conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,)).rowcount == 1)

        return self.writer.call(delete)

    def delete_agents_unseen_since(self, cutoff: float) -> list[str]:
        def delete(conn: Conn) -> list[str]:
            rows = conn.execute(
                "SELECT id FROM agents WHERE COALESCE(last_seen, created_at) < ? ORDER BY id", (cutoff,)
            ).fetchall()
            ids = [row[0] for row in rows]
            for agent_id in ids:
                conn.execute("DELETE FROM agent_cards WHERE agent_id = ?", (agent_id,))
                conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
            return ids

        return self.writer.call(delete)

    def record_card_change(self, change: CardChange) -> None:
        from agentflow.store.sql import dumps, text

        values = (change.agent_id, change.at, text(change.version), dumps(change.skills), text(change.change))
        self.writer.call(
            lambda conn: conn.execute(
                "INSERT INTO agent_cards (agent_id, at, version, skills, change) VALUES (?,?,?,?,?)", values
            )
        )

    def card_history(self, agent_id: str) -> list[CardChange]:
        rows = self._rows("SELECT * FROM agent_cards WHERE agent_id = ? ORDER BY id", (agent_id,))
        return [
            CardChange(
                agent_id=row["agent_id"],
                at=row["at"],
                version=row["version"],
                skills=json.loads(row["skills"] or "[]"),
                change=row["change"] or "",
            )
            for row in rows
        ]

    def add_enrolment_token(self, token: EnrolmentToken) -> None:
        from agentflow.store.sql import text

        values = (
            token.id, token.token_hash, text(token.note), token.created_at, token.expires_at, token.used_at,
            token.used_by, token.revoked_at,
        )  # fmt: skip
        statement = f"INSERT INTO enrolment_tokens ({', '.join(_TOKEN_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?)"
        self.writer.call(lambda conn: conn.execute(statement, values))

    def enrolment_token(self, token_hash: str) -> EnrolmentToken | None:
        rows = self._rows("SELECT * FROM enrolment_tokens WHERE token_hash = ?", (token_hash,))
        return _token(rows[0]) if rows else None

    def enrolment_tokens(self) -> list[EnrolmentToken]:
        return [_token(row) for row in self._rows("SELECT * FROM enrolment_tokens ORDER BY created_at DESC, id")]

    def use_enrolment_token(self, token_hash: str, *, agent_id: str, now: float) -> bool:
        def use(conn: Conn) -> bool:
            cursor = conn.execute(
                "UPDATE enrolment_tokens SET used_at = ?, used_by = ? WHERE token_hash = ? AND used_at IS NULL "
                "AND revoked_at IS NULL AND expires_at > ?",
                (now, agent_id, token_hash, now),
            )
            return bool(cursor.rowcount == 1)

        return self.writer.call(use)

    def revoke_enrolment_token(self, token_id: str, *, now: float) -> bool:
        def revoke(conn: Conn) -> bool:
            cursor = conn.execute(
                "UPDATE enrolment_tokens SET revoked_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL",
                (now, token_id),
            )
            return bool(cursor.rowcount == 1)

        return self.writer.call(revoke)


def _agent(row: Row) -> AgentRecord:
    fields = {column: row[column] for column in _AGENT_COLUMNS}
    fields["card"] = json.loads(fields["card"])
    fields["skills"] = json.loads(fields["skills"] or "[]")
    fields["description"] = fields["description"] or ""
    return AgentRecord(**fields)


def _token(row: Row) -> EnrolmentToken:
    return EnrolmentToken(**{column: row[column] for column in _TOKEN_COLUMNS})
