"""Queue latency: enqueue to start of a run, the distributed path (Postgres + a worker) vs embedded.

One real `python -m agentflow.cli worker` process (AGENTFLOW_EXECUTOR=workers) on a fresh
Postgres database; once it is registered in `procrastinate_workers`, the app-side AgentFlow
(`executor="workers"`) submits a one-node no-op run N times, one after another, waiting
for each to finish (`executor.wait_for`, woken by NOTIFY). The latency of a run is its
`started_at` (written by the worker's claim, wall clock, same host) minus `time.time()`
taken just before `submit`: the insert of run + job, the NOTIFY, Procrastinate fetching the
job, and the claim. The baseline, in the same run, is the embedded path: SQLite and the
in-process executor (`executor.start()`), measured the same way. A few warm-up runs each
(workflow compile, connections) are excluded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, Report, main_for, median
from benchmarks.postgres_overhead import temporary_database

RUNS = 100
WARM_UP = 5
TARGET_P50_MS = 20.0
TARGET_P95_MS = 100.0
REGISTER_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

WORKFLOW = """\
apiVersion: agentflow/v1
kind: Workflow
metadata:
  name: bench-noop
spec:
  nodes:
    only:
      type: transform
      expr: "`1`"
"""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 100 values is the 95th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


def _registered(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0  # the first worker is still applying the migrations
    return int(row[0]) if row else 0


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGINT (the worker's Ctrl-C path), then SIGKILL whatever has not exited in time."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def workers(url: str, home: Path, count: int = 1, env: dict[str, str] | None = None) -> Iterator[list[int]]:
    """Start `count` worker processes on `url`; yield their pids once all are registered."""
    environment = {
        **os.environ,
        "AGENTFLOW_DATABASE_URL": url,
        "AGENTFLOW_EXECUTOR": "workers",
        "AGENTFLOW_HOME": str(home),
        "AGENTFLOW_TRACING": "0",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        **(env or {}),
    }
    home.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            log = (home / f"worker-{index}.log").open("wb")
            command = [sys.executable, "-m", "agentflow.cli", "worker"]
            processes.append(subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        while _registered(url) < count:
            codes = [process.poll() for process in processes]
            if any(code is not None for code in codes) or time.monotonic() > deadline:
                logs = (home / "worker-0.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the workers did not register (exit codes {codes}); worker-0 said:\n{logs}")
            time.sleep(0.1)
        yield [process.pid for process in processes]
    finally:
        _stop(processes)


async def _latencies(flow: Any, runs: int) -> tuple[list[float], list[float]]:
    """Submit `runs` no-op runs one at a time: ms from just before each submit to its `started_at`, and in submit."""
    version = flow.save_workflow(WORKFLOW)
    latencies: list[float] = []
    submits: list[float] = []
    for index in range(WARM_UP + runs):
        before = time.time()
        record = flow.submit(version, {})
        returned = time.time()
        finished = await flow.executor.wait_for(record.id)
        if finished.status != "succeeded":
            raise RuntimeError(f"run {record.id} ended {finished.status}: {finished.error}")
        if finished.started_at is None:
            raise RuntimeError(f"run {record.id} has no started_at")
        if index >= WARM_UP:
            latencies.append((finished.started_at - before) * 1000)
            submits.append((returned - before) * 1000)
    return latencies, submits


def run(runs: int = RUNS) -> Report:
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings

    report = Report("queue_latency")
    with tempfile.TemporaryDirectory(prefix="agentflow-bench-") as tmp:

        async def embedded() -> tuple[list[float], list[float]]:
            flow = AgentFlow.open(Settings(home=Path(tmp) / "embedded"))
            await flow.executor.start()
            try:
                return await _latencies(flow, runs)
            finally:
                await flow.executor.stop()
                flow.close()

        with temporary_database() as url:
            # The app opens first, so the migrations are applied once, here, before the worker starts.
            app = AgentFlow.open(Settings(home=Path(tmp) / "app", database_url=url, executor="workers"))
            try:
                with workers(url, Path(tmp) / "worker", 1):
                    distributed, distributed_submits = asyncio.run(_latencies(app, runs))
            finally:
                app.close()
        local, local_submits = asyncio.run(embedded())

    stats = {
        name: {"p50": median(values), "p95": percentile(values, 0.95), "max": max(values), "min": min(values)}
        for name, values in (("postgres_worker", distributed), ("embedded_sqlite", local))
    }
    worker, embed = stats["postgres_worker"], stats["embedded_sqlite"]
    report.add(
        "Postgres + 1 worker, submit -> started_at p50",
        worker["p50"],
        "ms",
        target=f"<= {TARGET_P50_MS:.0f} ms",
        ok=worker["p50"] <= TARGET_P50_MS,
        note=f"of which submit() itself {median(distributed_submits):.2f} ms",
    )
    report.add(
        "Postgres + 1 worker, p95",
        worker["p95"],
        "ms",
        target=f"<= {TARGET_P95_MS:.0f} ms",
        ok=worker["p95"] <= TARGET_P95_MS,
    )
    report.add("Postgres + 1 worker, max", worker["max"], "ms")
    report.add(
        "embedded (SQLite, in-process executor) p50",
        embed["p50"],
        "ms",
        note=f"baseline; of which submit() {median(local_submits):.2f} ms",
    )
    report.add("embedded p95", embed["p95"], "ms", note="baseline")
    report.add("embedded max", embed["max"], "ms", note="baseline")
    report.add("ratio p50 Postgres worker / embedded", worker["p50"] / embed["p50"], "x", note="reference")
    report.details = {
        "runs_each": runs,
        "warm_up_each": WARM_UP,
        "ms": {name: {key: round(value, 3) for key, value in values.items()} for name, values in stats.items()},
        "submit_ms_median": {
            "postgres_worker": round(median(distributed_submits), 3),
            "embedded_sqlite": round(median(local_submits), 3),
        },
        "latencies_ms": {
            "postgres_worker": [round(v, 2) for v in distributed],
            "embedded_sqlite": [round(v, 2) for v in local],
        },
    }
    return report


if __name__ == "__main__":
    main_for(run)
