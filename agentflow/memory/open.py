"""The memory store these settings name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.memory.base import MemoryStore
    from agentflow.settings import Settings

FILE = "memory.db"


def open_memory(settings: Settings) -> MemoryStore:
    """Postgres when the main store is (`AGENTFLOW_DATABASE_URL`: workers on other hosts share it), else
    SQLite in the data directory (`AGENTFLOW_HOME/memory.db`), beside the main store."""
    if settings.database_url:
        from agentflow.store.memories_postgres import PostgresMemoryStore

        return PostgresMemoryStore(settings.database_url)
    from agentflow.store.memories_sqlite import SQLiteMemoryStore

    return SQLiteMemoryStore(settings.home / FILE)
