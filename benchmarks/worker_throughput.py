"""Worker throughput on Postgres: 200 runs of a 3-LLM-node chain with 1, 2 and 4 worker processes.

For each worker count: a fresh database, N `agentflow worker` processes
(AGENTFLOW_MAX_CONCURRENT_RUNS=8 each, so up to 8 x N runs at once) answering from the fake
OpenAI-compatible server of benchmarks/_fake_server.py in its own process (every reply
takes 0.05 s), registered in `procrastinate_workers` before anything is submitted. After a
warm-up batch (8 runs per worker: workflow compile, model client, connections), the app
submits 200 runs and `wait_for`s every one; the time is from the first submit to the last
run seen finished. Ideal: 200 / (8 x N) x 3 x 0.05 s. The CPU seconds of every worker
process and the machine's busy share over that window (from /proc) say whether the
workers or the cores are the limit.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks._common import Report, main_for
from benchmarks._fake_server import serve
from benchmarks.postgres_overhead import temporary_database
from benchmarks.queue_latency import workers

RUNS = 200
WORKER_COUNTS = (1, 2, 4)
CONCURRENCY = 8
WARM_UP_PER_WORKER = 8
LATENCY = 0.05
NODES = 3

WORKFLOW = """\
apiVersion: agentflow/v1
kind: Workflow
metadata:
  name: bench-worker-chain
spec:
  nodes:
    first:
      type: llm
      prompt: "Say something."
    second:
      type: llm
      prompt: "Answer this: {{ first }}"
      needs: first
    third:
      type: llm
      prompt: "Summarise this: {{ second }}"
      needs: second
  outputs:
    answer: "{{ third }}"
"""


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds() -> float:
    """All `postgres` processes on the machine (the server and its backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


async def _batch(flow: Any, version: Any, runs: int) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    records = [flow.submit(version, {}) for _ in range(runs)]
    finished = await asyncio.gather(*(flow.executor.wait_for(record.id) for record in records))
    elapsed = time.perf_counter() - started
    failed = [run for run in finished if run.status != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {runs} runs did not succeed, e.g.: {failed[0].error}")
    return elapsed, finished


def _measure(count: int, base_url: str, tmp: Path) -> dict[str, Any]:
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings

    env = {
        "AGENTFLOW_MAX_CONCURRENT_RUNS": str(CONCURRENCY),
        "AGENTFLOW_MODEL": "openai/test-model",
        "AGENTFLOW_API_BASE": base_url,
        "AGENTFLOW_API_KEY": "x",
        "AGENTFLOW_LLM_RETRIES": "0",  # a failed call fails its run, loudly, instead of hiding as latency
    }
    with temporary_database() as url:
        # The app opens first: migrations are applied once, before the workers start.
        flow = AgentFlow.open(Settings(home=tmp / f"app-{count}", database_url=url, executor="workers"))
        try:
            version = flow.save_workflow(WORKFLOW)
            with workers(url, tmp / f"workers-{count}", count, env) as pids:

                def sample() -> tuple[list[float], float, tuple[float, float], float]:
                    workers_cpu = [_cpu_seconds(pid) for pid in pids]
                    return workers_cpu, _postgres_cpu_seconds(), _machine_busy(), time.process_time()

                async def main() -> tuple[float, list[Any], tuple[Any, ...], tuple[Any, ...]]:
                    await _batch(flow, version, WARM_UP_PER_WORKER * count)
                    before = sample()
                    elapsed, finished = await _batch(flow, version, RUNS)
                    return elapsed, finished, before, sample()

                elapsed, finished, before, after = asyncio.run(main())
        finally:
            flow.close()
    workers_cpu = [end - start for start, end in zip(before[0], after[0], strict=True)]
    busy = (after[2][0] - before[2][0]) / max(1, after[2][1] - before[2][1])
    ours = sum(workers_cpu) + (after[1] - before[1]) + (after[3] - before[3])
    return {
        "seconds": elapsed,
        "runs_per_s": RUNS / elapsed,
        "ideal_s": RUNS / (CONCURRENCY * count) * NODES * LATENCY,
        "runs_per_worker": sorted(Counter(run.executed_by for run in finished).values(), reverse=True),
        "cpu_s_workers": [round(value, 2) for value in workers_cpu],
        "cpu_s_postgres": round(after[1] - before[1], 2),
        "cpu_s_app": round(after[3] - before[3], 2),  # this process: submits and wait_for
        "machine_busy_share": round(busy, 3),
        # Busy core-seconds not in the workers, Postgres or this process: the fake server, and anything
        # else on the machine (a build next door shows up here, and means the numbers are noisy).
        "cpu_s_other": round(busy * (os.cpu_count() or 1) * elapsed - ours, 2),
        "worker_cpu_ms_per_llm_call": round(sum(workers_cpu) * 1000 / (RUNS * NODES), 2),
    }


def run() -> Report:
    report = Report("worker_throughput")
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="agentflow-bench-") as tmp, serve("process", LATENCY) as base_url:
        for count in WORKER_COUNTS:
            results[count] = _measure(count, base_url, Path(tmp))
    single = results[WORKER_COUNTS[0]]["runs_per_s"]
    for count, result in results.items():
        cores = os.cpu_count() or 1
        report.add(
            f"{count} worker{'s' if count > 1 else ''} x {CONCURRENCY}, {RUNS} runs",
            result["runs_per_s"],
            "runs/s",
            note=(
                f"{result['seconds']:.2f} s, ideal {result['ideal_s']:.2f} s; "
                f"machine {result['machine_busy_share'] * cores:.1f}/{cores} cores busy, "
                f"{result['worker_cpu_ms_per_llm_call']:.1f} ms worker CPU/LLM call"
            ),
        )
    for count in WORKER_COUNTS[1:]:
        report.add(f"speed-up {count} workers / 1", results[count]["runs_per_s"] / single, "x", note="reference")
    report.details = {
        "runs": RUNS,
        "concurrency_per_worker": CONCURRENCY,
        "warm_up_per_worker": WARM_UP_PER_WORKER,
        "latency_s": LATENCY,
        "cpus": os.cpu_count(),
        # CPU seconds and the machine's busy share over the timed batch only (after the warm-up).
        "by_workers": {str(count): result for count, result in results.items()},
    }
    return report


if __name__ == "__main__":
    main_for(run)
