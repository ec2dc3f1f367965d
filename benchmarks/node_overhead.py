"""Per-node overhead: a 100-node chain of no-op transforms, AgentFlow vs bare LangGraph.

AgentFlow runs the normal durable path (`AgentFlow.open` on a SQLite file in a temporary
AGENTFLOW_HOME, events recorded, checkpoints written through), timed from `submit` to the
finished run. The baseline is the same chain in bare LangGraph, compiled with
`SqliteSaver` on a file and invoked with `durability="sync"` and a fresh thread per run;
bare LangGraph without a checkpointer is reported for reference. Its state mirrors ours in
size: a `results` and a `status` dict, each merged by a reducer, growing by one key a node.

The runs alternate (AgentFlow, LangGraph+SQLite, LangGraph bare, ...) in one process after
one warm-up run each (compiling is excluded), and medians are compared.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

from benchmarks._common import Report, main_for, median

NODES = 100
RUNS = 11
TARGET_RATIO = 1.0


def workflow_yaml(nodes: int = NODES) -> str:
    lines = [
        "apiVersion: agentflow/v1",
        "kind: Workflow",
        "metadata:",
        "  name: bench-chain",
        "spec:",
        "  nodes:",
    ]
    for index in range(nodes):
        lines.append(f"    n{index:03d}:")
        lines.append("      type: transform")
        lines.append('      expr: "`1`"')
        if index:
            lines.append(f"      needs: n{index - 1:03d}")
    return "\n".join(lines) + "\n"


def _merge(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    return {**(left or {}), **(right or {})}


class ChainState(TypedDict, total=False):
    results: Annotated[dict[str, Any], _merge]
    status: Annotated[dict[str, str], _merge]


def langgraph_chain(checkpointer: Any, nodes: int = NODES) -> Any:
    from langgraph.graph import START, StateGraph

    builder: Any = StateGraph(ChainState)
    previous = START
    for index in range(nodes):
        name = f"n{index:03d}"
        update = {"results": {name: 1}, "status": {name: "done"}}
        builder.add_node(name, lambda state, update=update: update)
        builder.add_edge(previous, name)
        previous = name
    return builder.compile(checkpointer=checkpointer)


def _sqlite_saver(path: Path, synchronous: str | None = None) -> tuple[Any, sqlite3.Connection]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()  # WAL; synchronous stays SQLite's default (FULL) unless set here
    if synchronous:
        conn.execute(f"PRAGMA synchronous={synchronous}")
    return saver, conn


def run(runs: int = RUNS) -> Report:
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings

    report = Report("node_overhead")
    with tempfile.TemporaryDirectory(prefix="agentflow-bench-") as tmp:
        saver, conn = _sqlite_saver(Path(tmp) / "langgraph.db")
        saver_normal, conn_normal = _sqlite_saver(Path(tmp) / "langgraph-normal.db", "NORMAL")
        graphs = {
            "langgraph_sqlite": langgraph_chain(saver),
            "langgraph_sqlite_normal": langgraph_chain(saver_normal),
            "langgraph_bare": langgraph_chain(None),
        }

        def langgraph_run(name: str) -> tuple[float, float]:
            config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 4 * NODES}
            kwargs = {} if name == "langgraph_bare" else {"durability": "sync"}
            started, cpu = time.perf_counter(), time.process_time()
            graphs[name].invoke({"results": {}, "status": {}}, config, **kwargs)
            return time.perf_counter() - started, time.process_time() - cpu

        with asyncio.Runner() as runner:
            # The normal path: default settings (synchronous=NORMAL), and FULL for reference.
            flows = {
                "agentflow": AgentFlow.open(Settings(home=Path(tmp) / "home")),
                "agentflow_full": AgentFlow.open(Settings(home=Path(tmp) / "home-full", sqlite_synchronous="FULL")),
            }
            versions = {name: flow.save_workflow(workflow_yaml()) for name, flow in flows.items()}

            async def agentflow_run(name: str) -> tuple[float, float]:
                flow = flows[name]
                started, cpu = time.perf_counter(), time.process_time()
                record = flow.submit(versions[name], {})
                status = await flow.executor.run(record.id)
                elapsed = time.perf_counter() - started, time.process_time() - cpu
                if status != "succeeded":
                    raise RuntimeError(f"the AgentFlow run ended {status}")
                steps = len(flow.store.node_runs(record.id))
                if steps != NODES:
                    raise RuntimeError(f"the AgentFlow run recorded {steps} node runs, not {NODES}")
                return elapsed

            order = ["agentflow", "langgraph_sqlite", "langgraph_bare", "agentflow_full", "langgraph_sqlite_normal"]
            times: dict[str, list[float]] = {name: [] for name in order}
            cpu_times: dict[str, list[float]] = {name: [] for name in order}

            def once(name: str) -> tuple[float, float]:
                return runner.run(agentflow_run(name)) if name in flows else langgraph_run(name)

            for name in order:  # warm-up: compile the workflow, open connections
                once(name)
            for _ in range(runs):
                for name in order:
                    wall, cpu = once(name)
                    times[name].append(wall)
                    cpu_times[name].append(cpu)
            for flow in flows.values():
                flow.close()
        conn.close()
        conn_normal.close()

    ms = {name: median(values) * 1000 / NODES for name, values in times.items()}
    pairwise = [a / b for a, b in zip(times["agentflow"], times["langgraph_sqlite"], strict=True)]
    best = min(times["agentflow"]) / min(times["langgraph_sqlite"])
    cpu_ratio = median(cpu_times["agentflow"]) / median(cpu_times["langgraph_sqlite"])
    ratio = ms["agentflow"] / ms["langgraph_sqlite"]
    report.add("AgentFlow (durable, SQLite, default NORMAL)", ms["agentflow"], "ms/node")
    report.add("LangGraph + SqliteSaver, durability=sync", ms["langgraph_sqlite"], "ms/node")
    report.add("LangGraph, no checkpointer", ms["langgraph_bare"], "ms/node", note="reference")
    report.add("AgentFlow, AGENTFLOW_SQLITE_SYNCHRONOUS=FULL", ms["agentflow_full"], "ms/node", note="reference")
    report.add(
        "LangGraph + SqliteSaver, synchronous=NORMAL", ms["langgraph_sqlite_normal"], "ms/node", note="reference"
    )
    report.add(
        "ratio AgentFlow / LangGraph+SqliteSaver",
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
        # CPU time of the whole process (the writer thread included): less sensitive to other
        # processes on the machine, but blind to time spent waiting for fsync.
        "cpu_ms_per_node": {name: round(median(values) * 1000 / NODES, 4) for name, values in cpu_times.items()},
        "ratio_pairwise_median": round(median(pairwise), 3),
        "ratio_best_of_runs": round(best, 3),
        "ratio_full_vs_full": round(ms["agentflow_full"] / ms["langgraph_sqlite"], 3),
        "ratio_normal_vs_normal": round(ms["agentflow"] / ms["langgraph_sqlite_normal"], 3),
        "seconds_per_run": {name: [round(v, 5) for v in values] for name, values in times.items()},
    }
    return report


if __name__ == "__main__":
    main_for(run)
