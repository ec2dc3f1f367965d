"""Run a tracer in a child process, so that its CPU work never competes with runs for the GIL.

MLflow's store does ~15 ms of Python (SQLAlchemy) work per trace; in a thread
of the app that work would slow every run on the event loop. The child is a
plain Python subprocess running `main()` below (not multiprocessing, which
would re-import the app's `__main__`), speaking pickles over its stdin and a
private copy of its stdout; its own prints and logs go to stderr.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from agentflow.observability.tracer import RunTrace, SpanRecord, Tracer

_ENTRY = "from agentflow.observability.process import main; main()"


class TracerUnavailable(RuntimeError):
    """The tracing backend (or the process it runs in) failed for the whole batch."""


class TraceExportError(RuntimeError):
    """One run's trace was refused; the message comes from the tracing process."""


class ProcessTracer:
    """A `Tracer` that runs `factory()`'s tracer in a child process, started on first use."""

    def __init__(self, factory: Callable[[], Tracer]) -> None:
        self._factory = factory
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def export(self, batch: list[RunTrace]) -> list[str | Exception]:
        if not batch:
            return []
        results: list[tuple[bool, str]] = self._call("export", batch)
        return [text if ok else TraceExportError(text) for ok, text in results]

    def read(self, trace_id: str) -> list[SpanRecord]:
        spans: list[SpanRecord] = self._call("read", trace_id)
        return spans

    def close(self) -> None:
        with self._lock:
            self._stop()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def _call(self, command: str, argument: Any) -> Any:
        with self._lock:
            try:
                child = self._start()
                assert child.stdin is not None and child.stdout is not None
                pickle.dump((command, argument), child.stdin)
                child.stdin.flush()
                status, payload = pickle.load(child.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                self._stop()  # a fresh child next time
                raise TracerUnavailable(f"the tracing process stopped ({type(exc).__name__})") from None
        if status == "missing":
            raise LookupError(payload)
        if status != "ok":
            raise TracerUnavailable(payload)
        return payload

    def _start(self) -> subprocess.Popen[bytes]:
        if self._child is not None and self._child.poll() is None:
            return self._child
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        child = subprocess.Popen(
            [sys.executable, "-c", _ENTRY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._child = child
        assert child.stdin is not None and child.stdout is not None
        pickle.dump(("start", self._factory), child.stdin)
        child.stdin.flush()
        status, payload = pickle.load(child.stdout)
        if status != "ok":
            self._stop()
            raise TracerUnavailable(f"the tracing process could not start: {payload}")
        return child

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()  # end of input: the child exits
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    tracer: Tracer | None = None
    while True:
        try:
            command, argument = pickle.load(requests)
        except EOFError:
            break
        reply: tuple[str, Any]
        try:
            if command == "start":
                tracer = argument()
                reply = ("ok", None)
            elif tracer is None:
                reply = ("error", "the tracer was not started")
            elif command == "export":
                results = tracer.export(argument)
                reply = ("ok", [(True, r) if isinstance(r, str) else (False, _describe(r)) for r in results])
            else:
                try:
                    reply = ("ok", tracer.read(argument))
                except Exception as exc:
                    reply = ("missing", _describe(exc))
        except Exception as exc:
            reply = ("error", _describe(exc))
        pickle.dump(reply, replies)
        replies.flush()
    if tracer is not None:
        tracer.close()


def main() -> None:
    """The child's entry point."""
    # Replies go to a private copy of stdout; anything else printed lands on stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _serve(sys.stdin.buffer, replies)
