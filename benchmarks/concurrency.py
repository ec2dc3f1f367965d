"""Concurrency: 200 runs at once of a 3-LLM-node chain, AgentFlow vs bare LangGraph + LiteLLM.

Both sides call the same fake OpenAI-compatible server (tests/fakes/openai_server.py), whose
every reply takes 0.05 s, so the ideal wall time is 3 x 0.05 = 0.15 s. AgentFlow submits the
200 runs durably, then `asyncio.gather`s `executor.run` for all of them (the timing includes
the submits); the baseline `ainvoke`s a 3-node LangGraph graph 200 times with no
checkpointer, each node calling `litellm.acompletion` directly. Rounds alternate in one
process after a warm-up round each (3 rounds; 2 when those took over a minute on a loaded
machine); medians are compared.

The fake server (benchmarks/_fake_server.py: the app of tests/fakes/openai_server.py with a
120 s keep-alive) runs in a separate PROCESS. Measured both ways once, 2 rounds each, load
average ~5 on 2 cores: with the server in a thread of this process, AgentFlow 11.1 s vs bare
9.2 s (1.21x); in a child process, 14.0 s vs 9.7 s (1.45x). In a thread, the server's own
request handling (~0.6 ms of CPU per request, measured from the child's CPU time) runs in the
measured interpreter and competes for its GIL: the same fixed cost is added to both sides,
which slows both and compresses the ratio towards 1. A separate process keeps the measured
interpreter doing only client work, so it is the fairer setting; `--server thread` measures
the other way. (With the fake's own 5 s keep-alive, 49-60% of AgentFlow runs failed with
"Server disconnected" in thread mode, and 45% in process mode under cProfile, always on a
later node reusing a pooled connection: see _fake_server.py.)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from benchmarks._common import Report, main_for, median
from benchmarks._fake_server import serve

RUNS = 200
ROUNDS = 3
MIN_ROUNDS = 2
BUDGET_S = 60.0
WARM_UP = 20
LATENCY = 0.05
NODES = 3
MODEL = "openai/bench"
TARGET_RATIO = 1.3

WORKFLOW = f"""\
apiVersion: agentflow/v1
kind: Workflow
metadata:
  name: bench-llm-chain
spec:
  nodes:
    first:
      type: llm
      model: {MODEL}
      prompt: "Say something."
    second:
      type: llm
      model: {MODEL}
      prompt: "Answer this: {{{{ first }}}}"
      needs: first
    third:
      type: llm
      model: {MODEL}
      prompt: "Summarise this: {{{{ second }}}}"
      needs: second
  outputs:
    answer: "{{{{ third }}}}"
"""


class ChainState(TypedDict, total=False):
    first: str
    second: str
    third: str


def bare_graph(base_url: str) -> Any:
    import litellm
    from langgraph.graph import START, StateGraph

    def node(name: str, prompt: str, source: str | None) -> Any:
        async def call(state: ChainState) -> dict[str, str]:
            text = prompt + (state.get(source, "") if source else "")  # type: ignore[misc]
            response = await litellm.acompletion(
                model=MODEL, api_base=base_url, api_key="x", messages=[{"role": "user", "content": text}]
            )
            return {name: response.choices[0].message.content}

        return call

    builder: Any = StateGraph(ChainState)
    builder.add_node("first", node("first", "Say something.", None))
    builder.add_node("second", node("second", "Answer this: ", "first"))
    builder.add_node("third", node("third", "Summarise this: ", "second"))
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", "third")
    return builder.compile()


def run(server_mode: str = "process", rounds: int = ROUNDS, runs: int = RUNS) -> Report:
    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings

    report = Report("concurrency")
    with tempfile.TemporaryDirectory(prefix="agentflow-bench-") as tmp, serve(server_mode, LATENCY) as base_url:
        graph = bare_graph(base_url)
        settings = Settings(home=Path(tmp), max_concurrent_runs=runs, api_base=base_url, api_key="x", llm_retries=0)

        async def main() -> dict[str, Any]:
            flow = AgentFlow.open(settings)
            version = flow.save_workflow(WORKFLOW)

            async def agentflow_round(runs: int = runs) -> tuple[float, float, float]:
                started, cpu = time.perf_counter(), time.process_time()
                records = [flow.submit(version, {}) for _ in range(runs)]
                submitted = time.perf_counter()
                statuses = await asyncio.gather(*(flow.executor.run(record.id) for record in records))
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                failed = [record.id for record, status in zip(records, statuses, strict=True) if status != "succeeded"]
                if failed:
                    example = flow.store.get_run(failed[0])
                    error = example.error if example else "?"
                    raise RuntimeError(f"{len(failed)} of {runs} AgentFlow runs did not succeed, e.g.: {error}")
                finished = flow.store.list_runs(statuses=("succeeded",), limit=100_000)
                if not {record.id for record in records} <= {run.id for run in finished}:
                    raise RuntimeError("some AgentFlow runs are not recorded as succeeded in the store")
                return elapsed, cpu, submitted - started

            async def bare_round(runs: int = runs) -> tuple[float, float]:
                started, cpu = time.perf_counter(), time.process_time()
                results = await asyncio.gather(*(graph.ainvoke({}) for _ in range(runs)))
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                if not all(result.get("third") == "ok" for result in results):
                    raise RuntimeError("a bare LangGraph run did not finish")
                return elapsed, cpu

            await agentflow_round(WARM_UP)  # warm-up: litellm import, compile, connections
            await bare_round(WARM_UP)
            names = ("agentflow", "bare", "submit", "agentflow_cpu", "bare_cpu")
            times: dict[str, list[float]] = {name: [] for name in names}
            began = time.perf_counter()
            for index in range(rounds):
                if index >= MIN_ROUNDS and time.perf_counter() - began > BUDGET_S:
                    break  # a heavily loaded machine: keep `python -m benchmarks` near 3 minutes
                elapsed, cpu, submit = await agentflow_round()
                times["agentflow"].append(elapsed)
                times["agentflow_cpu"].append(cpu)
                times["submit"].append(submit)
                elapsed, cpu = await bare_round()
                times["bare"].append(elapsed)
                times["bare_cpu"].append(cpu)
            flow.close()
            return times

        times = asyncio.run(main())

    ideal = NODES * LATENCY
    agentflow, bare = median(times["agentflow"]), median(times["bare"])
    ratio = agentflow / bare
    pairwise = [a / b for a, b in zip(times["agentflow"], times["bare"], strict=True)]
    report.add(f"AgentFlow, {runs} durable runs", agentflow, "s", note=f"submits {median(times['submit']):.2f} s")
    report.add(f"LangGraph + LiteLLM, {runs} runs, no checkpointer", bare, "s")
    report.add("ideal (3 x 0.05 s)", ideal, "s")
    report.add("AgentFlow / ideal", agentflow / ideal, "x", note="reference")
    report.add(
        "ratio AgentFlow / bare",
        ratio,
        "x",
        target=f"<= {TARGET_RATIO:.1f}x",
        ok=ratio <= TARGET_RATIO,
        note=(
            f"pairwise median {median(pairwise):.2f}x, best-of {min(times['agentflow']) / min(times['bare']):.2f}x, "
            f"CPU {median(times['agentflow_cpu']) / median(times['bare_cpu']):.2f}x"
        ),
    )
    report.details = {
        "runs": runs,
        "rounds": len(times["agentflow"]),
        "fake_server": server_mode,
        "latency_s": LATENCY,
        "all_agentflow_runs_succeeded": True,
        # CPU time of this process per round (the writer thread included; the server is not).
        "cpu_ms_per_llm_call": {
            "agentflow": round(median(times["agentflow_cpu"]) * 1000 / (runs * NODES), 3),
            "bare": round(median(times["bare_cpu"]) * 1000 / (runs * NODES), 3),
        },
        "seconds_per_round": {name: [round(v, 4) for v in values] for name, values in times.items()},
    }
    return report


def _cli() -> Report:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.concurrency")
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    return run(args.server, args.rounds)


if __name__ == "__main__":
    main_for(_cli)
