"""Where AgentFlow's time goes: the AgentFlow side of a benchmark under cProfile.

    python -m benchmarks.profiling node_overhead   # 5 runs of the 100-node chain
    python -m benchmarks.profiling concurrency     # one round of 200 concurrent 3-LLM-node runs
    python -m benchmarks.profiling concurrency --side bare   # the same round in bare LangGraph
    python -m benchmarks.profiling node_overhead --side bare # LangGraph + SqliteSaver

Prints self time grouped by package (who burns the CPU), then the top functions by self
and by cumulative time. The clock is the wall clock; with `--cpu` it is the main thread's CPU
time (`time.thread_time`), so neither other processes on this noisy machine nor waits for the
GIL or I/O are charged to whatever function happened to be running, but profiling is ~3x
slower. Function-call counts by area are printed too: they are exact, whatever the noise.
Not part of `python -m benchmarks`: profiling slows everything down (roughly 2x), so read the
shares, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks import concurrency, node_overhead
from benchmarks._fake_server import serve

AREAS = (
    ("agentflow/store", "agentflow store (events, runs)"),
    ("agentflow/engine/checkpoint", "agentflow checkpointer"),
    ("agentflow/engine/scheduler", "agentflow scheduler (plan)"),
    ("agentflow/", "agentflow other"),
    ("langgraph/", "langgraph"),
    ("langchain_core/", "langchain_core"),
    ("litellm/", "litellm"),
    ("openai/", "openai SDK"),
    ("httpx/", "httpx"),
    ("httpcore/", "httpcore"),
    ("aiohttp/", "aiohttp"),
    ("pydantic", "pydantic"),
    ("asyncio/", "asyncio"),
    ("threading.py", "threading"),
    ("concurrent/futures", "concurrent.futures"),
)


def area_of(filename: str, function: str) -> str:
    for marker, name in AREAS:
        if marker in filename:
            return name
    if filename == "~":
        if "epoll" in function or "select" in function:
            return "waiting in epoll (idle loop or GIL handoff)"
        if "lock" in function and "acquire" in function:
            return "waiting on a lock (sync writer calls, GIL handoff)"
        if "sqlite3" in function or "execute" in function:
            return "sqlite3 C calls"
        return "builtins (C)"
    return "other Python"


def by_area(stats: pstats.Stats) -> list[tuple[str, float, int]]:
    """(area, self seconds, function calls), most time first."""
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for (filename, _, function), (_, ncalls, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        area = area_of(filename, function)
        totals[area] += tottime
        calls[area] += ncalls
    return sorted(((area, totals[area], calls[area]) for area in totals), key=lambda item: -item[1])


CPU_CLOCK = False


def _profiler() -> cProfile.Profile:
    return cProfile.Profile(time.thread_time if CPU_CLOCK else time.perf_counter)


def profile_node_overhead(runs: int = 5, side: str = "agentflow") -> tuple[cProfile.Profile, float, float, int]:
    """`side="bare"`: the LangGraph + SqliteSaver chain of the benchmark instead."""
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings

    profiler = _profiler()
    with tempfile.TemporaryDirectory() as tmp, asyncio.Runner() as runner:
        flow = AgentFlow.open(Settings(home=Path(tmp)))
        version = flow.save_workflow(node_overhead.workflow_yaml())
        saver, conn = node_overhead._sqlite_saver(Path(tmp) / "langgraph.db")
        graph = node_overhead.langgraph_chain(saver)

        async def once() -> None:
            if side == "bare":
                config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 4 * node_overhead.NODES}
                graph.invoke({"results": {}, "status": {}}, config, durability="sync")
                return
            record = flow.submit(version, {})
            assert await flow.executor.run(record.id) == "succeeded"

        runner.run(once())
        started, cpu = time.perf_counter(), time.thread_time()
        profiler.enable()
        for _ in range(runs):
            runner.run(once())
        profiler.disable()
        elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
        flow.close()
        conn.close()
    return profiler, elapsed, cpu, runs * node_overhead.NODES


def profile_concurrency(
    runs: int = concurrency.RUNS, side: str = "agentflow"
) -> tuple[cProfile.Profile, float, float, int]:
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings

    profiler = _profiler()
    with tempfile.TemporaryDirectory() as tmp, serve("process", concurrency.LATENCY) as base_url:
        settings = Settings(home=Path(tmp), max_concurrent_runs=runs, api_base=base_url, api_key="x", llm_retries=0)

        async def main() -> tuple[float, float]:
            flow = AgentFlow.open(settings)
            version = flow.save_workflow(concurrency.WORKFLOW)

            graph = concurrency.bare_graph(base_url)

            async def round_(count: int) -> None:
                if side == "bare":
                    await asyncio.gather(*(graph.ainvoke({}) for _ in range(count)))
                    return
                records = [flow.submit(version, {}) for _ in range(count)]
                statuses = await asyncio.gather(*(flow.executor.run(record.id) for record in records))
                errors = {
                    flow.store.get_run(r.id).error for r, s in zip(records, statuses, strict=True) if s != "succeeded"
                }
                if errors:
                    raise RuntimeError(f"{statuses.count('failed')} runs failed: {errors}")

            await round_(concurrency.WARM_UP)
            started, cpu = time.perf_counter(), time.thread_time()
            profiler.enable()
            await round_(runs)
            profiler.disable()
            elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
            flow.close()
            return elapsed, cpu

        elapsed, cpu = asyncio.run(main())
    return profiler, elapsed, cpu, runs * concurrency.NODES


def report(
    profiler: cProfile.Profile,
    elapsed: float,
    cpu: float,
    units: int,
    unit: str,
    top: int,
    callers: list[str],
    where: str | None = None,
) -> None:
    stats = pstats.Stats(profiler)
    total = sum(tottime for (_, _, tottime, _, _) in stats.stats.values())  # type: ignore[attr-defined]
    print(
        f"under cProfile, {units} {unit}s: wall {elapsed:.2f} s ({elapsed * 1000 / units:.2f} ms/{unit}), "
        f"main-thread CPU {cpu:.2f} s ({cpu * 1000 / units:.2f} ms/{unit})"
    )
    clock = "main-thread CPU" if CPU_CLOCK else "wall clock"
    calls = sum(ncalls for (_, ncalls, _, _, _) in stats.stats.values())  # type: ignore[attr-defined]
    print(f"\nself time by area ({clock}; {total:.2f} s and {calls:,} function calls in all):")
    print(f"  {'seconds':>9}  {'share':>6}  {'ms/' + unit:>12}  {'calls/' + unit:>13}  area")
    for area, seconds, ncalls in by_area(stats):
        if seconds >= 0.005 * total:
            print(
                f"  {seconds:9.3f}  {100 * seconds / total:5.1f}%  {seconds * 1000 / units:12.3f}"
                f"  {ncalls / units:13.0f}  {area}"
            )
    restrictions: list[Any] = [*([where] if where else []), top]
    stats.sort_stats("tottime").print_stats(*restrictions)
    stats.sort_stats("cumulative").print_stats(*restrictions)
    for pattern in callers:
        stats.print_callers(pattern)


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    parser.add_argument("benchmark", choices=("node_overhead", "concurrency"))
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--side",
        choices=("agentflow", "bare"),
        default="agentflow",
        help="bare: the baseline (LangGraph + SqliteSaver, or LangGraph + LiteLLM) instead of AgentFlow",
    )
    parser.add_argument("--callers", action="append", default=[], help="also print the callers of matching functions")
    parser.add_argument("--where", help="only list functions whose file:line(name) matches this regex")
    parser.add_argument("--cpu", action="store_true", help="profile main-thread CPU time, not wall time")
    args = parser.parse_args(argv)
    global CPU_CLOCK
    CPU_CLOCK = args.cpu
    if args.benchmark == "node_overhead":
        report(*profile_node_overhead(side=args.side), "node", args.top, args.callers, args.where)
    else:
        report(*profile_concurrency(side=args.side), "LLM call", args.top, args.callers, args.where)


if __name__ == "__main__":
    main()
