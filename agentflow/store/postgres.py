"""The scale-out store: Postgres (psycopg 3), the same contract and statements as SQLite.

Chosen by AGENTFLOW_DATABASE_URL=postgresql://... Every process (the app,
each worker) has one writer connection committing batches, as with SQLite,
and a read connection per thread. Beyond SQLite it does two things:

- a queued run is also a Procrastinate job (`agentflow.run`, lock = run id),
  inserted in the same transaction that records the run or its approval, so
  a run is never recorded without being queued nor queued without a record;
- every committed batch of events NOTIFYs `agentflow_events` with the run ids
  it touched, so other processes (the app showing a run a worker executes)
  follow runs live (see `agentflow/store/listen.py`).

Migrations run under a Postgres advisory lock: concurrent starts wait for the
first one instead of racing (`agentflow migrate` runs them explicitly).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agentflow.store.postgres_schema import MIGRATIONS
from agentflow.store.sql import SQLStore
from agentflow.store.writer import BatchWriter, Conn

log = logging.getLogger("agentflow.store")

NOTIFY_CHANNEL = "agentflow_events"
QUEUE = "runs"
RUN_TASK = "agentflow.run"
MIGRATION_LOCK = 0x41_47_46_4C  # "AGFL": the advisory lock key migrations hold


@functools.lru_cache(maxsize=1024)
def _postgres_sql(sql: str) -> str:
    """Our statements use `?` marks (outside quoted literals) and no literal `%`; psycopg wants `%s`."""
    parts = sql.split("'")
    # Even parts are outside quotes ('it''s' splits into balanced pieces, so this holds for escapes too).
    return "'".join(part.replace("?", "%s") if index % 2 == 0 else part for index, part in enumerate(parts))


def _value(value: Any) -> Any:
    # Postgres text cannot hold NUL; SQLite can. Keep the rest of the text.
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


class PgConn:
    """A psycopg connection that speaks the writer's `Conn`: `?` marks, explicit BEGIN/COMMIT."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(_postgres_sql(sql), [_value(value) for value in params])

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(_postgres_sql(sql), [[_value(value) for value in row] for row in rows])
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


def _local_timezone() -> str | None:
    """The machine's IANA zone (days in reports are local days, as with SQLite's 'localtime')."""
    if os.environ.get("TZ"):
        return os.environ["TZ"].lstrip(":")
    try:
        target = Path("/etc/localtime").resolve()
    except OSError:
        return None
    parts = target.parts
    return "/".join(parts[parts.index("zoneinfo") + 1 :]) if "zoneinfo" in parts else None


def connect(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True, prepare_threshold=None, application_name="agentflow")
    zone = _local_timezone()
    if zone:
        with contextlib.suppress(psycopg.Error):  # an unknown zone name: the server's zone it is
            conn.execute("SELECT set_config('TimeZone', %s, false)", [zone])
    return conn


def migrate(url: str) -> list[str]:
    """Apply pending migrations once, under an advisory lock; returns the names applied here."""
    done: list[str] = []
    with connect(url) as raw:
        conn = PgConn(raw)
        conn.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)")
            applied = {row[0] for row in conn.execute("SELECT name FROM _migrations").fetchall()}
            for name, step in MIGRATIONS:
                if name in applied:
                    continue
                with raw.transaction():
                    step(conn)
                    conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
                done.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))
    return done


def pending_migrations(url: str) -> list[str]:
    with connect(url) as raw:
        exists = raw.execute("SELECT to_regclass('_migrations') IS NOT NULL").fetchone()
        applied = (
            {row[0] for row in raw.execute("SELECT name FROM _migrations").fetchall()}
            if exists and exists[0]
            else set()
        )
    return [name for name, _ in MIGRATIONS if name not in applied]


class PostgresStore(SQLStore):
    LOCAL_DATE = "to_char(to_timestamp({column}), 'YYYY-MM-DD')"

    def __init__(self, url: str, *, queue: bool = True, run_migrations: bool = True) -> None:
        """`queue`: queued runs become Procrastinate jobs for `agentflow worker` (off: this process runs them)."""
        self.url = url
        self.queue = queue
        self.location = _redacted(url)
        if run_migrations:
            migrate(url)
        else:
            missing = pending_migrations(url)
            if missing:
                raise RuntimeError(f"the database {self.location} needs migrations {missing}: run `agentflow migrate`")

        def open_writer() -> Conn:
            return PgConn(connect(url))

        super().__init__(BatchWriter(open_writer, name=f"postgres:{self.location}", begin="BEGIN"))

    def _connect_reader(self) -> Any:
        return _Reader(self.url)

    def watch_changes(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        return _Listener(self.url, on_change).stop

    def _announce(self, conn: Conn, run_ids: set[str]) -> None:
        for run_id in run_ids:
            # Delivered at commit; Postgres folds duplicates within one transaction.
            conn.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, run_id))

    def _enqueue(self, conn: Conn, run_id: str) -> None:
        if not self.queue:
            return
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(?, ?, 0, ?, NULL, ?::jsonb, NULL)"
            "::procrastinate_job_to_defer_v1])",
            (QUEUE, RUN_TASK, run_id, json.dumps({"run_id": run_id})),
        )


class _Listener:
    """A thread LISTENing on the events channel; calls `on_change(run_id)` for every notification."""

    def __init__(self, url: str, on_change: Callable[[str], None]) -> None:
        self._url = url
        self._on_change = on_change
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="agentflow-listen", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                with connect(self._url) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._ready.set()
                    while not self._stopping.is_set():
                        for notification in conn.notifies(timeout=0.5):
                            self._on_change(notification.payload)
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    return
                log.warning("listening for run changes failed (%s); reconnecting", exc)
                self._stopping.wait(1.0)
            finally:
                self._ready.set()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)


class _Reader:
    """A read connection answering with dict rows, with `?` marks like every statement in sql.py."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn = self._open()

    def _open(self) -> psycopg.Connection[Any]:
        conn = connect(self._url)
        conn.row_factory = dict_row
        return conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        values = [_value(value) for value in params]
        try:
            return self._conn.execute(_postgres_sql(sql), values)
        except psycopg.OperationalError:
            if not self._conn.closed:
                raise
            # The server restarted or dropped us: one reconnect, then the error stands.
            self._conn = self._open()
            return self._conn.execute(_postgres_sql(sql), values)

    def close(self) -> None:
        self._conn.close()


def _redacted(url: str) -> str:
    """The URL without its password, for messages and the UI."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
