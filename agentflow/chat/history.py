"""Chat sessions, their messages and the versions of their workflow, in the store.

Only valid workflows become versions. Versions form a tree by `parent`: undo
moves to the parent, redo to the newest child, and a new edit after an undo
starts a new branch without deleting anything.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agentflow.store.sqlite import SQLiteStore


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


def unified_diff(before: str, after: str, *, before_label: str = "before", after_label: str = "after") -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), before_label, after_label
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class ChatHistory:
    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self.store._rows(sql, params)

    # -- sessions ---------------------------------------------------------------

    def create_session(self, *, channel: str, session_id: str | None = None, model: str | None = None) -> Session:
        now = time.time()
        session = Session(session_id or uuid.uuid4().hex, channel, None, model, 0, now, now)
        self.store.writer.call(
            lambda conn: conn.execute(
                "INSERT OR IGNORE INTO chat_sessions "
                "(id, channel, title, model, current_version, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 0, ?, ?)",
                (session.id, channel, None, model, now, now),
            )
        )
        return self.get_session(session.id) or session

    def get_session(self, session_id: str) -> Session | None:
        rows = self._rows("SELECT * FROM chat_sessions WHERE id = ?", (session_id,))
        return Session(**dict(rows[0])) if rows else None

    def session(self, session_id: str, *, channel: str) -> Session:
        """The session with this id, created on first use."""
        return self.get_session(session_id) or self.create_session(channel=channel, session_id=session_id)

    def list_sessions(self, *, channel: str | None = None, limit: int = 50) -> list[Session]:
        where, params = ("WHERE channel = ?", (channel,)) if channel else ("", ())
        rows = self._rows(f"SELECT * FROM chat_sessions {where} ORDER BY updated_at DESC LIMIT ?", (*params, limit))
        return [Session(**dict(row)) for row in rows]

    def update_session(self, session_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{key} = ?" for key in fields)
        self.store.writer.call(
            lambda conn: conn.execute(
                f"UPDATE chat_sessions SET {assignments} WHERE id = ?", (*fields.values(), session_id)
            )
        )

    # -- messages ---------------------------------------------------------------

    def add_message(self, session_id: str, role: str, content: str, meta: dict[str, Any] | None = None) -> None:
        now = time.time()
        payload = json.dumps(meta or {}, default=str)
        self.store.writer.submit(
            lambda conn: (
                conn.execute(
                    "INSERT INTO chat_messages (session_id, role, content, meta, created_at) VALUES (?, ?, ?, ?, ?)",
                    (session_id, role, content, payload, now),
                ),
                conn.execute("UPDATE chat_sessions SET updated_at = ? WHERE id = ?", (now, session_id)),
            )
        )

    def messages(self, session_id: str, *, limit: int = 200) -> list[Message]:
        rows = self._rows(
            "SELECT * FROM (SELECT * FROM chat_messages WHERE session_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (session_id, limit),
        )
        return [
            Message(row["role"], row["content"], json.loads(row["meta"] or "{}"), row["created_at"]) for row in rows
        ]

    # -- workflow versions ----------------------------------------------------------

    def current(self, session_id: str) -> ConfigVersion | None:
        session = self.get_session(session_id)
        if session is None or not session.current_version:
            return None
        return self.version(session_id, session.current_version)

    def version(self, session_id: str, number: int) -> ConfigVersion | None:
        rows = self._rows("SELECT * FROM config_versions WHERE session_id = ? AND number = ?", (session_id, number))
        return _version(rows[0]) if rows else None

    def versions(self, session_id: str) -> list[ConfigVersion]:
        rows = self._rows("SELECT * FROM config_versions WHERE session_id = ? ORDER BY number", (session_id,))
        return [_version(row) for row in rows]

    def add_version(self, session_id: str, source: str, *, author: str, note: str = "") -> ConfigVersion | None:
        """Make `source` (already validated) the current version; None when nothing changed."""
        current = self.current(session_id)
        before = current.source if current else ""
        if current is not None and current.source == source:
            return None
        parent = current.number if current else 0
        now = time.time()
        label = f"v{parent}" if parent else "empty"

        def insert(conn: sqlite3.Connection) -> int:
            number = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM config_versions WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            diff = unified_diff(before, source, before_label=label, after_label=f"v{number}")
            conn.execute(
                "INSERT INTO config_versions (session_id, number, parent, source, diff, author, note, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, number, parent, source, diff, author, note, now),
            )
            conn.execute(
                "UPDATE chat_sessions SET current_version = ?, updated_at = ? WHERE id = ?", (number, now, session_id)
            )
            return int(number)

        number = self.store.writer.call(insert)
        return self.version(session_id, number)

    def undo(self, session_id: str) -> ConfigVersion | None:
        """Step back to the parent version; None when there is nothing to undo."""
        current = self.current(session_id)
        if current is None:
            return None
        self.update_session(session_id, current_version=current.parent)
        return self.version(session_id, current.parent) if current.parent else None

    def can_undo(self, session_id: str) -> bool:
        return self.current(session_id) is not None

    def redo(self, session_id: str) -> ConfigVersion | None:
        session = self.get_session(session_id)
        if session is None:
            return None
        rows = self._rows(
            "SELECT * FROM config_versions WHERE session_id = ? AND parent = ? ORDER BY number DESC LIMIT 1",
            (session_id, session.current_version),
        )
        if not rows:
            return None
        version = _version(rows[0])
        self.update_session(session_id, current_version=version.number)
        return version


def _version(row: sqlite3.Row) -> ConfigVersion:
    return ConfigVersion(**{key: row[key] for key in row.keys() if key != "session_id"})
