"""Chat sessions, their messages and the drafts of their workflow, in the store.

Only valid workflows become drafts (numbered per session; a saved or run draft is
also a stored version of its workflow: docs/versions.md). Drafts form a tree by
`parent`: undo moves to the parent, redo to the newest child, and a new edit after
an undo starts a new branch without deleting anything.
"""

from __future__ import annotations

import difflib
import time
import uuid
from typing import Any

from agentflow.store.base import ChatStore, ConfigVersion, Message, Session

__all__ = ["ChatHistory", "ConfigVersion", "Message", "Session", "unified_diff"]


def unified_diff(before: str, after: str, *, before_label: str = "before", after_label: str = "after") -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), before_label, after_label
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class ChatHistory:
    def __init__(self, store: ChatStore) -> None:
        self.store = store

    # -- sessions ---------------------------------------------------------------

    def create_session(self, *, channel: str, session_id: str | None = None, model: str | None = None) -> Session:
        now = time.time()
        return self.store.create_session(Session(session_id or uuid.uuid4().hex, channel, None, model, 0, now, now))

    def get_session(self, session_id: str) -> Session | None:
        return self.store.get_session(session_id)

    def session(self, session_id: str, *, channel: str) -> Session:
        """The session with this id, created on first use."""
        return self.get_session(session_id) or self.create_session(channel=channel, session_id=session_id)

    def list_sessions(self, *, channel: str | None = None, limit: int = 50) -> list[Session]:
        return self.store.list_sessions(channel=channel, limit=limit)

    def update_session(self, session_id: str, **fields: Any) -> None:
        self.store.update_session(session_id, **fields)

    # -- messages ---------------------------------------------------------------

    def add_message(self, session_id: str, role: str, content: str, meta: dict[str, Any] | None = None) -> None:
        self.store.add_message(session_id, Message(role, content, meta or {}, time.time()))

    def messages(self, session_id: str, *, limit: int = 200) -> list[Message]:
        return self.store.messages(session_id, limit=limit)

    # -- drafts (ConfigVersion rows) --------------------------------------------------

    def current(self, session_id: str) -> ConfigVersion | None:
        session = self.get_session(session_id)
        if session is None or not session.current_version:
            return None
        return self.version(session_id, session.current_version)

    def version(self, session_id: str, number: int) -> ConfigVersion | None:
        return self.store.config_version(session_id, number)

    def versions(self, session_id: str) -> list[ConfigVersion]:
        return self.store.config_versions(session_id)

    def add_version(self, session_id: str, source: str, *, author: str, note: str = "") -> ConfigVersion | None:
        """Make `source` (already validated) the current draft; None when nothing changed."""
        current = self.current(session_id)
        before = current.source if current else ""
        if current is not None and current.source == source:
            return None
        parent = current.number if current else 0
        label = f"v{parent}" if parent else "empty"
        number = self.store.add_config_version(
            session_id,
            parent=parent,
            source=source,
            diff=lambda number: unified_diff(before, source, before_label=label, after_label=f"v{number}"),
            author=author,
            note=note,
        )
        return self.version(session_id, number)

    def undo(self, session_id: str) -> ConfigVersion | None:
        """Step back to the parent draft; None when there is nothing to undo."""
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
        version = self.store.newest_child(session_id, session.current_version)
        if version is None:
            return None
        self.update_session(session_id, current_version=version.number)
        return version
