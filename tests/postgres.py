"""Databases for tests on this machine's PostgreSQL (127.0.0.1:5432; `make test` starts it when it is down).

Each test gets a database of its own, copied from a template migrated once per
session, and dropped after it. AGENTFLOW_TEST_POSTGRES names the server
(an admin URL); AGENTFLOW_TEST_STORE=postgres runs the integration suite with
every AgentFlow process of the test on Postgres instead of SQLite.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_URL = os.environ.get("AGENTFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
ON_POSTGRES = os.environ.get("AGENTFLOW_TEST_STORE", "").strip().lower() == "postgres"
_TEMPLATE = f"agentflow_template_{os.getpid()}"
_template_ready = False


def url_of(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def _template() -> str:
    """A database with every migration applied, copied for each test (faster than migrating each)."""
    global _template_ready
    if not _template_ready:
        from agentflow.store.postgres import migrate

        _admin(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')
        _admin(f'CREATE DATABASE "{_TEMPLATE}"')
        migrate(url_of(_TEMPLATE))
        _template_ready = True
    return _TEMPLATE


def create_database(*, migrated: bool = True) -> str:
    name = f"agentflow_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_template()}"' if migrated else ""
    _admin(f'CREATE DATABASE "{name}"{template}')
    return url_of(name)


def drop_database(url: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')


@contextmanager
def database(*, migrated: bool = True) -> Iterator[str]:
    url = create_database(migrated=migrated)
    try:
        yield url
    finally:
        drop_database(url)


def drop_template() -> None:
    if _template_ready:
        _admin(f'DROP DATABASE IF EXISTS "{_TEMPLATE}" WITH (FORCE)')


_by_home: dict[str, str] = {}


def database_for(home: object) -> str:
    """The database of a data directory that processes started by a test share (created on first use)."""
    key = str(home)
    if key not in _by_home:
        _by_home[key] = create_database()
    return _by_home[key]


def dump(url: str) -> bytes:
    """Everything the database holds, as `pg_dump --data-only` writes it (for "is X anywhere?" checks)."""
    import subprocess

    return subprocess.run(["pg_dump", "--data-only", url], check=True, capture_output=True).stdout


def drop_all() -> None:
    for url in _by_home.values():
        drop_database(url)
    _by_home.clear()
    drop_template()
