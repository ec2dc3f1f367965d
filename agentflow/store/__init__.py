"""The store: SQLite by default, Postgres when AGENTFLOW_DATABASE_URL names one (see base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.settings import Settings
    from agentflow.store.base import Store


def open_store(settings: Settings) -> Store:
    """The store these settings name, migrated: Postgres for a postgresql:// URL, else SQLite in the data dir."""
    if settings.database_url:
        from agentflow.store.postgres import PostgresStore

        return PostgresStore(settings.database_url, queue=settings.distributed)
    from agentflow.store.sqlite import SQLiteStore

    return SQLiteStore(settings.db_path, synchronous=settings.sqlite_synchronous)
