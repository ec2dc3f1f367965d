"""The embedded store: one SQLite file (WAL), writes batched through one writer thread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentflow.store.migrations import migrate
from agentflow.store.sql import SQLStore, content_hash
from agentflow.store.writer import BatchWriter, connect

__all__ = ["SQLiteStore", "content_hash"]


class SQLiteStore(SQLStore):
    LOCAL_DATE = "date({column}, 'unixepoch', 'localtime')"

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.location = str(path)
        with connect(path, synchronous=synchronous) as conn:
            migrate(conn)
        conn.close()
        super().__init__(
            BatchWriter(lambda: connect(path, synchronous=synchronous), name=path.name, begin="BEGIN IMMEDIATE")
        )

    def _connect_reader(self) -> sqlite3.Connection:
        conn = connect(self.path, readonly=True)
        conn.row_factory = sqlite3.Row
        return conn
