"""The batch writer survives what its callers do: a waiter cancelled mid-commit loses nothing."""

from __future__ import annotations

import threading
from pathlib import Path

from agentflow.store.writer import BatchWriter, connect


def test_a_cancelled_waiter_does_not_stop_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = BatchWriter(lambda: connect(path), name="test")
    try:
        writer.call(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
        busy, release = threading.Event(), threading.Event()

        def slow(conn: object) -> None:
            busy.set()
            release.wait(30)

        writer.submit(slow, now=True)
        assert busy.wait(30)  # the writer is committing `slow`'s batch
        cancelled = writer.submit(lambda conn: conn.execute("INSERT INTO t VALUES (1)"), now=True)
        assert cancelled.cancel()  # as asyncio.wrap_future does when its task is cancelled
        release.set()
        count = writer.submit(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0], now=True)
        assert count.result(timeout=30) == 1
    finally:
        writer.close()
