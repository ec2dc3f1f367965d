"""Per-node overhead on Postgres: the 100-node no-op chain, AgentFlow vs LangGraph + AsyncPostgresSaver.

AgentFlow opens with AGENTFLOW_DATABASE_URL on a fresh database (store, events and
checkpoints all on Postgres, `executor="local"`), timed from `submit` to the finished run
as in node_overhead.py. The baseline is the same chain in bare LangGraph compiled with
`AsyncPostgresSaver` over an `AsyncConnectionPool` on the same database, `ainvoke`d with
`durability="sync"` and a fresh thread per run; bare LangGraph without a checkpointer is
reported for reference. Runs alternate in one process and one event loop after one warm-up
run each; medians are compared.

`temporary_database()` (a fresh `agentflow_bench_<hex>`, dropped afterwards) is shared
with queue_latency.py and worker_throughput.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from benchmarks._common import Report, main_for, median
from benchmarks.node_overhead import NODES, langgraph_chain, workflow_yaml

SERVER = "postgresql://postgres@127.0.0.1:5432"
RUNS = 21
TARGET_RATIO = 1.0


@contextlib.contextmanager
def temporary_database(server: str = SERVER) -> Iterator[str]:
    """Yield the URL of a new, empty database; it is dropped on the way out, even after a failure."""
    import psycopg

    name = f"agentflow_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(runs: int = RUNS) -> Report:
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings

    report = Report("postgres_overhead")
    with tempfile.TemporaryDirectory(prefix="agentflow-bench-") as tmp, temporary_database() as url:

        async def main() -> tuple[dict[str, list[float]], dict[str, list[float]]]:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            flow = AgentFlow.open(Settings(home=Path(tmp) / "home", database_url=url, executor="local"))
            pool = AsyncConnectionPool(
                conninfo=url,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
                open=False,
            )
            await pool.open()
            try:
                saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
                await saver.setup()
                graphs = {"langgraph_postgres": langgraph_chain(saver), "langgraph_bare": langgraph_chain(None)}
                version = flow.save_workflow(workflow_yaml())

                async def agentflow_run() -> tuple[float, float]:
                    started, cpu = time.perf_counter(), time.process_time()
                    record = flow.submit(version, {})
                    status = await flow.executor.run(record.id)
                    elapsed = time.perf_counter() - started, time.process_time() - cpu
                    if status != "succeeded":
                        raise RuntimeError(f"the AgentFlow run ended {status}")
                    steps = len(await asyncio.to_thread(flow.store.node_runs, record.id))
                    if steps != NODES:
                        raise RuntimeError(f"the AgentFlow run recorded {steps} node runs, not {NODES}")
                    return elapsed

                async def langgraph_run(name: str) -> tuple[float, float]:
                    config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 4 * NODES}
                    kwargs = {} if name == "langgraph_bare" else {"durability": "sync"}
                    started, cpu = time.perf_counter(), time.process_time()
                    await graphs[name].ainvoke({"results": {}, "status": {}}, config, **kwargs)
                    return time.perf_counter() - started, time.process_time() - cpu

                async def once(name: str) -> tuple[float, float]:
                    return await (agentflow_run() if name == "agentflow" else langgraph_run(name))

                order = ["agentflow", "langgraph_postgres", "langgraph_bare"]
                times: dict[str, list[float]] = {name: [] for name in order}
                cpu_times: dict[str, list[float]] = {name: [] for name in order}
                for name in order:  # warm-up: compile the workflow, open connections
                    await once(name)
                for _ in range(runs):
                    for name in order:
                        wall, cpu = await once(name)
                        times[name].append(wall)
                        cpu_times[name].append(cpu)
                return times, cpu_times
            finally:
                await pool.close()
                flow.close()

        times, cpu_times = asyncio.run(main())

    ms = {name: median(values) * 1000 / NODES for name, values in times.items()}
    pairwise = [a / b for a, b in zip(times["agentflow"], times["langgraph_postgres"], strict=True)]
    best = min(times["agentflow"]) / min(times["langgraph_postgres"])
    cpu_ratio = median(cpu_times["agentflow"]) / median(cpu_times["langgraph_postgres"])
    ratio = ms["agentflow"] / ms["langgraph_postgres"]
    report.add("AgentFlow (durable, Postgres, executor=local)", ms["agentflow"], "ms/node")
    report.add("LangGraph + AsyncPostgresSaver, durability=sync", ms["langgraph_postgres"], "ms/node")
    report.add("LangGraph, no checkpointer", ms["langgraph_bare"], "ms/node", note="reference")
    report.add(
        "ratio AgentFlow / LangGraph+AsyncPostgresSaver",
        ratio,
        "x",
        target=f"<= {TARGET_RATIO:.1f}x",
        ok=ratio <= TARGET_RATIO,
        note=f"medians; pairwise median {median(pairwise):.2f}x, best-of {best:.2f}x, CPU {cpu_ratio:.2f}x",
    )
    report.details = {
        "nodes": NODES,
        "runs_each": runs,
        "ms_per_node": {name: round(value, 4) for name, value in ms.items()},
        # CPU time of this process only: Postgres's own work is in its server processes.
        "cpu_ms_per_node": {name: round(median(values) * 1000 / NODES, 4) for name, values in cpu_times.items()},
        "ratio_pairwise_median": round(median(pairwise), 3),
        "ratio_best_of_runs": round(best, 3),
        "seconds_per_run": {name: [round(v, 5) for v in values] for name, values in times.items()},
    }
    return report


if __name__ == "__main__":
    main_for(run)
