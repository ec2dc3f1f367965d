"""Export finished runs as traces, off the run path: an event observer that queues, a thread that batches.

A run's latency never depends on the tracing backend: the observer only notes
the run id. The worker thread reads the run back from the store (the source of
truth), builds its trace and hands batches to the tracer. When the backend is
down, runs stay pending and are retried with backoff; at start the exporter
picks up every finished run without a trace (a crash, an outage, tracing
switched on late). Runs whose trace cannot be written after `max_attempts` are
marked failed with the reason, so nothing is lost silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from agentflow.engine.events import RunEvent, RunFinished
from agentflow.observability.tracer import RunTrace, Tracer, TraceSettings, build_run_trace, secrets_in
from agentflow.settings import Price
from agentflow.store.base import Durability, RunStore, TraceState, TraceStore, WorkflowStore

log = logging.getLogger(__name__)


class ExportStore(RunStore, WorkflowStore, TraceStore, Durability, Protocol):
    """What the exporter reads (runs, their events and workflow) and writes (trace states)."""


class TraceExporter:
    def __init__(
        self,
        store: ExportStore,
        tracer: Tracer,
        settings: TraceSettings,
        *,
        secrets: Iterable[str | None] = (),
        prices: Mapping[str, Price] | None = None,
        environ: Mapping[str, str] | None = None,
        # `environ`: the operator's secrets by name (what `${env:NAME}` resolves to), for redaction.
        batch_size: int = 200,
        linger: float = 0.2,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.store, self.tracer, self.settings = store, tracer, settings
        self.batch_size, self.linger, self.max_attempts = batch_size, linger, max_attempts
        self._extra_secrets = [secret for secret in secrets if secret]
        self._prices = prices or {}
        self._environ: Mapping[str, str] = {} if environ is None else environ
        self._first_backoff, self._max_backoff = backoff
        self._backoff = self._first_backoff
        self._cond = threading.Condition()
        self._queue: dict[str, None] = {}  # an ordered set: a run queued twice is exported once
        self._waiting: dict[str, None] = {}  # failed an attempt; retried at `_retry_at`
        self._retry_at = 0.0
        self._busy = 0
        self._attempts: dict[str, int] = {}
        self._flush_asked = self._flush_done = self._retried_for = 0
        self._stopping = False
        self._last_error: str | None = None
        self._secrets: dict[tuple[str, str], set[str]] = {}
        self._thread = threading.Thread(target=self._loop, name="agentflow-trace-exporter", daemon=True)
        self.unsubscribe: Callable[[], None] | None = None
        self.on_recorded: Callable[[str], None] | None = None
        """Called with each run id whose trace state was just recorded (from the export thread)."""

    # -- the observer: on the run's event loop, so it only queues -------------------

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunFinished):
            with self._cond:
                self._queue[event.run_id] = None
                self._cond.notify()

    # -- control ----------------------------------------------------------------------

    def start(self) -> TraceExporter:
        """Queue the backlog (finished runs without a trace) and start the worker thread."""
        backlog = self.backlog()
        with self._cond:
            self._queue.update(dict.fromkeys(backlog))
        if backlog:
            log.info("exporting the traces of %d earlier runs", len(backlog))
        self._thread.start()
        return self

    def flush(self, timeout: float | None = None) -> bool:
        """Attempt every pending run now (retries included) and wait; True when none is left pending."""
        with self._cond:
            if self._thread.is_alive():
                self._flush_asked += 1
                asked = self._flush_asked
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._flush_done >= asked or not self._thread.is_alive(), timeout)
            return not (self._queue or self._waiting or self._busy)

    def close(self, timeout: float = 10.0) -> None:
        """Stop observing, try the pending runs once more, stop the thread. What is left stays in the backlog."""
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
        if self._thread.is_alive():
            self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.tracer.close()

    def retry_failed(self) -> int:
        """Give the runs marked failed another chance (after fixing their cause); returns how many."""
        run_ids = self.store.reset_failed_traces()
        with self._cond:
            self._queue.update(dict.fromkeys(run_ids))
            for run_id in run_ids:
                self._attempts.pop(run_id, None)
            self._cond.notify()
        return len(run_ids)

    # -- what the UI shows ---------------------------------------------------------------

    def backlog(self) -> list[str]:
        """Ids of finished runs whose trace is not exported (nor given up on), oldest first."""
        return self.store.trace_backlog()

    def status(self) -> dict[str, Any]:
        """{exported, pending, failed, last_error}: counts of finished runs by trace state."""
        counts = self.store.trace_counts()
        with self._cond:
            pending = len(self._queue) + len(self._waiting) + self._busy
            last_error = self._last_error
        return {
            "exported": counts.get("exported", 0),
            "pending": pending,
            "failed": counts.get("failed", 0),
            "last_error": last_error,
        }

    def trace_of(self, run_id: str) -> dict[str, Any] | None:
        """{trace_id, state, error} of a run's trace; None while nothing was attempted."""
        state = self.store.trace_of(run_id)
        return None if state is None else {"trace_id": state.trace_id, "state": state.state, "error": state.error}

    def failures(self, limit: int = 50) -> list[tuple[str, str]]:
        """(run id, reason) of the runs whose trace was given up on, newest first."""
        return [(state.run_id, state.error or "") for state in self.store.trace_failures(limit)]

    # -- the worker thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
            try:
                self._export(batch)
            except Exception as exc:  # a bug or a closed store: keep the runs, report, go on
                log.exception("trace export failed unexpectedly")
                self._retry_later(batch, exc)
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()

    def _next_batch(self) -> list[str] | None:
        """Called holding the lock: wait for work, linger briefly for a fuller batch, take it."""
        while True:
            flushing = self._flush_asked > self._flush_done
            # A flush retries the waiting runs at once, but only once: if they fail again, it is over.
            retry_now = flushing and self._retried_for < self._flush_asked
            due = not flushing and time.monotonic() >= self._retry_at
            if self._waiting and (retry_now or due):
                self._retried_for = self._flush_asked
                self._queue.update(self._waiting)
                self._waiting.clear()
            if self._queue:
                break
            if flushing:
                self._flush_done = self._flush_asked
                self._cond.notify_all()
                continue
            if self._stopping:
                return None
            timeout = max(self._retry_at - time.monotonic(), 0.0) if self._waiting else None
            self._cond.wait(timeout)
        deadline = time.monotonic() + self.linger
        while len(self._queue) < self.batch_size and not (self._flush_asked > self._flush_done or self._stopping):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        batch = list(self._queue)[: self.batch_size]
        for run_id in batch:
            del self._queue[run_id]
        self._busy = len(batch)
        return batch

    def _export(self, run_ids: list[str]) -> None:
        self.store.flush_sync()  # the runs' last events were queued before RunFinished reached us
        traces: list[RunTrace] = []
        outcomes: dict[str, str | Exception] = {}
        for run_id in run_ids:
            try:
                trace = self._build(run_id)
            except Exception as exc:
                outcomes[run_id] = exc
            else:
                if trace is None:
                    outcomes[run_id] = LookupError("the run is not in the store")
                else:
                    traces.append(trace)
        try:
            results = self.tracer.export(traces) if traces else []
        except Exception as exc:  # the backend is down: nothing was written, everything waits
            self._retry_later(run_ids, exc)
            return
        for trace, result in zip(traces, results, strict=True):
            outcomes[trace.run_id] = result
        self._record(outcomes)

    def _build(self, run_id: str) -> RunTrace | None:
        run = self.store.get_run(run_id)
        if run is None:
            return None
        key = (run.workflow, run.version)
        if key not in self._secrets:
            stored = self.store.get_workflow(run.workflow, run.version)
            self._secrets[key] = secrets_in(stored.source if stored else "", self._environ, self._extra_secrets)
        return build_run_trace(
            run,
            self.store.events(run_id),
            max_chars=self.settings.max_chars,
            secrets=self._secrets[key],
            prices=self._prices,
        )

    def _record(self, outcomes: dict[str, str | Exception]) -> None:
        now = time.time()
        rows: list[TraceState] = []
        retry: list[str] = []
        with self._cond:
            for run_id, outcome in outcomes.items():
                if isinstance(outcome, str):
                    self._attempts.pop(run_id, None)
                    rows.append(TraceState(run_id, outcome, "exported", None, 0, now))
                    continue
                attempts = self._attempts.pop(run_id, 0) + 1
                if attempts < self.max_attempts:
                    self._attempts[run_id] = attempts
                    retry.append(run_id)
                state = "pending" if attempts < self.max_attempts else "failed"
                rows.append(TraceState(run_id, None, state, _describe(outcome), attempts, now))
        self.store.record_traces(rows)
        if self.on_recorded is not None:
            for row in rows:
                self.on_recorded(row.run_id)  # an open run console shows the trace link now
        with self._cond:
            if len(retry) < len(outcomes):
                self._backoff = self._first_backoff
            errors = [row.error for row in rows if row.error]
            self._last_error = errors[-1] if errors else None
            if retry:
                self._wait(retry)

    def _retry_later(self, run_ids: list[str], exc: Exception) -> None:
        error = _describe(exc)
        with self._cond:
            if self._last_error != error:
                log.warning("traces not exported (%s); %d run(s) wait and will be retried", error, len(run_ids))
            self._last_error = error
            self._wait(run_ids)

    def _wait(self, run_ids: list[str]) -> None:
        """Called holding the lock."""
        self._waiting.update(dict.fromkeys(run_ids))
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__
