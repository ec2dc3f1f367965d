"""One writer thread per database, committing queued operations in batches.

Every write in the process goes through here, so concurrent runs share
commits (group commit): a run awaiting durability waits for one commit, not
for its turn behind every other run's commits. Reads use their own
connections; WAL (SQLite) or MVCC (Postgres) lets them proceed while the
writer works. The writer is the same for both databases: it takes a
function that opens its connection and the statement that begins a batch.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Conn(Protocol):
    """What an operation gets: sqlite3.Connection, or the Postgres adapter in postgres.py."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any: ...
    @property
    def in_transaction(self) -> bool: ...
    def close(self) -> None: ...


Operation = Callable[[Any], Any]
_STOP = object()
MAX_BATCH = 2000


def connect(path: Path, *, synchronous: str = "NORMAL", readonly: bool = False) -> sqlite3.Connection:
    """A connection with the pragmas every AgentFlow connection uses."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout=30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process crash (SIGKILL); FULL also survives power loss.
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class BatchWriter:
    def __init__(self, open_connection: Callable[[], Conn], *, name: str, begin: str = "BEGIN IMMEDIATE") -> None:
        self._open = open_connection
        self._begin = begin
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._submitted = 0
        self._outstanding = 0  # submitted, not yet committed (items reach the queue in more than one order)
        self._lock = threading.Lock()
        self._closed = False
        # Operations submitted from an event loop are handed over once per loop iteration, not one
        # by one: each hand-over wakes the writer thread, and the GIL ping-pong costs more than the work.
        self._pending: list[tuple[Operation, Future[Any], int]] = []
        self._scheduled = False
        self._thread = threading.Thread(target=self._loop, name=f"agentflow-writer:{name}", daemon=True)
        self._ready: Future[None] = Future()
        self._thread.start()
        self._ready.result()

    def submit(self, operation: Callable[[Any], T], *, now: bool = False) -> Future[T]:
        """Queue an operation; its future resolves once its batch is committed.

        With `now`, hand it (and anything pending before it) to the writer at once: for callers that
        block on the result, which from an event loop would otherwise wait for an iteration that never comes.
        """
        future: Future[T] = Future()
        loop: asyncio.AbstractEventLoop | None = None
        if not now:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        else:
            self._hand_over()
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            self._submitted += 1
            self._outstanding += 1
            item = (operation, future, self._submitted)
            if loop is None:
                self._queue.put(item)
                return future
            self._pending.append(item)
            if self._scheduled:
                return future
            self._scheduled = True
        loop.call_soon(self._hand_over)
        return future

    def _hand_over(self) -> None:
        with self._lock:
            batch, self._pending, self._scheduled = self._pending, [], False
            if batch:
                self._queue.put(batch)

    def call(self, operation: Callable[[Any], T]) -> T:
        """Run an operation and wait until it is committed (for sync callers)."""
        return self.submit(operation, now=True).result()

    async def run(self, operation: Callable[[Any], T]) -> T:
        return await asyncio.wrap_future(self.submit(operation))

    @property
    def pending(self) -> bool:
        return self._outstanding > 0

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed."""
        if self.pending:
            future = self.submit(_noop)
            self._hand_over()
            await asyncio.wrap_future(future)

    def flush_sync(self) -> None:
        if self.pending:
            self._hand_over()
            self.call(_noop)

    def close(self) -> None:
        self._hand_over()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _loop(self) -> None:
        try:
            conn = self._open()
        except BaseException as exc:  # surface the reason to the constructor
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            work = []
            for item in batch:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, list):
                    work.extend(item)
                else:
                    work.append(item)
            if work:
                self._commit(conn, work)
        conn.close()

    def _commit(self, conn: Conn, work: list[tuple[Operation, Future[Any], int]]) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute(self._begin)
            for operation, future, _ in work:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((future, True, operation(conn)))
                    conn.execute("RELEASE op")
                except BaseException as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, False, exc))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, False, exc) for _, future, _ in work]
        with self._lock:
            self._outstanding -= len(work)
        for future, ok, value in outcomes:
            # A waiter that was cancelled (its run stopped) cancelled its future; the write stands.
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def _noop(conn: Conn) -> None:
    return None
