"""Tracing: what exporting every run to MLflow costs, and how fast traces reach MLflow's SQLite store.

(a) Run throughput with tracing on vs off, side by side in one process: three AgentFlow
    instances (each its own data directory): tracing off; `attach_tracing` as the app sets
    it up (MLflow SQLite, exported from a child process); and exporting from a thread of
    this process (AGENTFLOW_TRACE_IN_PROCESS), for reference. Each runs rounds of RUNS
    concurrent runs of a 3-LLM-node chain against the fake OpenAI server (a child process,
    LATENCY s per reply), in turn, after a warm-up round each. The "on" rounds include
    whatever exporting overlaps the runs; the traces still queued when a round's last run
    finishes are drained before the next round (reported as the export lag).
(b) Traces exported per second by `TraceExporter` + `MlflowTracer` in its child process:
    TRACES finished runs (the same workflow) wait in a store; an exporter is started on it
    and timed until its `flush()` returns (reading events, building traces, `log_spans`,
    recording trace ids). Starting the child and creating MLflow's database are excluded.
(c) MLflow's own path on the same kind of trace (root + 3 nodes + 3 LLM spans) with
    `mlflow.start_span` and its default async logging, timed until
    `mlflow.flush_trace_async_logging()` returns: its drain rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._common import Report, main_for, median
from benchmarks._fake_server import serve

RUNS = 200
ROUNDS = 3
WARM_UP = 20
TRACES = 500
FLUENT_TRACES = 100
LATENCY = 0.01
MODEL = "openai/bench"
TARGET_OVERHEAD = 0.10
# The target is >= 100 traces/s where MLflow's own async logging drains ~18/s: on these noisy machines,
# judged as a ratio to MLflow's rate measured in the same run.
TARGET_EXPORTS, MLFLOW_REFERENCE = 100.0, 18.0
MODES = ("off", "process", "thread")

WORKFLOW = f"""\
apiVersion: agentflow/v1
kind: Workflow
metadata:
  name: bench-traced-chain
spec:
  inputs: {{question: string}}
  nodes:
    first: {{type: llm, model: {MODEL}, prompt: "Say something about {{{{ inputs.question }}}}."}}
    second: {{type: llm, model: {MODEL}, prompt: "Answer this: {{{{ first }}}}", needs: first}}
    third: {{type: llm, model: {MODEL}, prompt: "Summarise this: {{{{ second }}}}", needs: second}}
  outputs:
    answer: "{{{{ third }}}}"
"""


def _settings(home: Path, base_url: str, runs: int) -> Any:
    from agentflow.settings import Settings

    return Settings(home=home, max_concurrent_runs=runs, api_base=base_url, api_key="x", llm_retries=0)


def _trace_settings(home: Path) -> Any:
    from agentflow.observability import TraceSettings

    return TraceSettings.from_env(home, environ={})


async def _round(flow: Any, version: Any, runs: int) -> float:
    started = time.perf_counter()
    records = [flow.submit(version, {"question": f"q{index}"}) for index in range(runs)]
    statuses = await asyncio.gather(*(flow.executor.run(record.id) for record in records))
    elapsed = time.perf_counter() - started
    if any(status != "succeeded" for status in statuses):
        raise RuntimeError(f"{sum(status != 'succeeded' for status in statuses)} of {runs} runs did not succeed")
    return elapsed


Seconds = dict[str, list[float]]


def throughput(tmp: Path, base_url: str, rounds: int, runs: int) -> tuple[Seconds, Seconds]:
    """Wall and CPU seconds per round: tracing off, on (MLflow in a child process, the default), on in a thread."""
    from agentflow.observability import ProcessTracer, attach_tracing
    from agentflow.runtime import AgentFlow

    async def main() -> tuple[Seconds, Seconds]:
        flows = {name: AgentFlow.open(_settings(tmp / name, base_url, runs)) for name in MODES}
        exporters = {
            "process": attach_tracing(flows["process"], _trace_settings(tmp / "process")),
            "thread": attach_tracing(flows["thread"], replace(_trace_settings(tmp / "thread"), in_process=True)),
        }
        versions = {name: flow.save_workflow(WORKFLOW) for name, flow in flows.items()}
        times: dict[str, list[float]] = {name: [] for name in (*MODES, "lag")}
        # CPU seconds per round, this process (all threads) and the tracing child, the drain included.
        cpu: dict[str, list[float]] = {name: [] for name in (*MODES, "child")}

        async def drain(exporter: Any) -> float:
            started = time.perf_counter()
            if not await asyncio.to_thread(exporter.flush, 300):
                raise RuntimeError(f"traces not exported: {exporter.status()}")
            return time.perf_counter() - started

        for name in MODES:  # warm-up: imports (mlflow's, in both places), compiling, connections
            await _round(flows[name], versions[name], WARM_UP)
            if name in exporters:
                await drain(exporters[name])
        child = exporters["process"].tracer
        assert isinstance(child, ProcessTracer) and child.pid is not None
        for _ in range(rounds):
            for name in MODES:
                started, child_started = time.process_time(), _cpu_seconds(child.pid)
                times[name].append(await _round(flows[name], versions[name], runs))
                if name in exporters:  # the next round starts with nothing left to export
                    lag = await drain(exporters[name])
                    if name == "process":
                        times["lag"].append(lag)
                        cpu["child"].append(_cpu_seconds(child.pid) - child_started)
                cpu[name].append(time.process_time() - started)
        for exporter in exporters.values():
            status = exporter.status()
            expected = WARM_UP + rounds * runs
            if (status["exported"], status["pending"], status["failed"]) != (expected, 0, 0):
                raise RuntimeError(f"expected {expected} exported traces, got {status}")
            exporter.close()
        for flow in flows.values():
            flow.close()
        return times, cpu

    return asyncio.run(main())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def export_rate(tmp: Path, base_url: str, traces: int) -> tuple[float, float]:
    """(traces/s, seconds) for the default exporter draining a backlog of `traces` finished runs."""
    from agentflow.observability import ProcessTracer, attach_tracing, build_run_trace
    from agentflow.observability.mlflow_tracer import MlflowTracer
    from agentflow.runtime import AgentFlow
    from agentflow.store.base import RunRecord

    home = tmp / "backlog"
    flow = AgentFlow.open(_settings(home, base_url, 100))
    version = flow.save_workflow(WORKFLOW)

    async def fill() -> None:
        for start in range(0, traces, 100):
            await _round(flow, version, min(100, traces - start))

    asyncio.run(fill())
    settings = _trace_settings(home)
    tracer = ProcessTracer(partial(MlflowTracer, settings))
    # Not export work: starting the child, importing mlflow, creating its database and the experiment.
    warm = RunRecord(id="warm-up", workflow="bench-traced-chain", version="-", status="succeeded", created_at=1.0)
    tracer.export([build_run_trace(warm, [])])
    started = time.perf_counter()
    exporter = attach_tracing(flow, settings, tracer=tracer)
    if not exporter.flush(600):
        raise RuntimeError(f"the backlog was not exported: {exporter.status()}")
    elapsed = time.perf_counter() - started
    if exporter.status()["exported"] != traces:
        raise RuntimeError(f"expected {traces} exported traces, got {exporter.status()}")
    exporter.close()
    flow.close()
    return traces / elapsed, elapsed


def fluent_rate(tmp: Path, traces: int) -> tuple[float, float, float]:
    """(traces/s drained, ms per trace on the caller's path, seconds) for `mlflow.start_span` + async logging."""
    from agentflow.observability.mlflow_tracer import import_mlflow

    mlflow = import_mlflow()
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import SpanAttributeKey

    settings = _trace_settings(tmp / "fluent")
    mlflow.set_tracking_uri(settings.tracking_uri)
    # An explicit artifact location: by default a SQLite store writes artifacts to ./mlruns.
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("fluent", settings.artifact_location))
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}

    def one(index: int) -> None:
        with mlflow.start_span("bench-traced-chain", span_type=SpanType.CHAIN) as root:
            root.set_inputs({"question": f"q{index}"})
            for name in ("first", "second", "third"):
                with mlflow.start_span(name, span_type=SpanType.LLM) as node:
                    with mlflow.start_span(MODEL, span_type=SpanType.CHAT_MODEL) as call:
                        call.set_attributes({SpanAttributeKey.CHAT_USAGE: usage, SpanAttributeKey.MODEL: MODEL})
                    node.set_outputs("ok")
            root.set_outputs({"answer": "ok"})

    one(-1)  # warm-up: database creation, experiment
    mlflow.flush_trace_async_logging()
    started = time.perf_counter()
    for index in range(traces):
        one(index)
    created = time.perf_counter() - started
    mlflow.flush_trace_async_logging()
    elapsed = time.perf_counter() - started
    found = mlflow.MlflowClient().search_traces(
        locations=[mlflow.get_experiment_by_name("fluent").experiment_id], max_results=traces + 10
    )
    if len(found) != traces + 1:
        raise RuntimeError(f"MLflow logged {len(found)} of {traces + 1} traces")
    return traces / elapsed, created * 1000 / traces, elapsed


def run(rounds: int = ROUNDS, runs: int = RUNS, traces: int = TRACES, fluent: int = FLUENT_TRACES) -> Report:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    report = Report("tracing")
    with tempfile.TemporaryDirectory(prefix="agentflow-bench-") as tmp, serve("process", LATENCY) as base_url:
        times, cpu = throughput(Path(tmp), base_url, rounds, runs)
        exported, export_seconds = export_rate(Path(tmp), base_url, traces)
        drained, caller_ms, fluent_seconds = fluent_rate(Path(tmp), fluent)
    off, on, thread = (runs / median(times[name]) for name in MODES)
    overhead, thread_overhead = 1 - on / off, 1 - thread / off
    pairwise = median([1 - off_s / on_s for off_s, on_s in zip(times["off"], times["process"], strict=True)])
    report.add(f"runs/s, tracing off ({runs} concurrent 3-LLM-node runs)", off, "runs/s")
    report.add("runs/s, tracing on (MLflow SQLite, child process)", on, "runs/s")
    report.add(
        "throughput lost to tracing",
        overhead * 100,
        "%",
        target=f"<= {TARGET_OVERHEAD:.0%}",
        ok=overhead <= TARGET_OVERHEAD,
        note=f"pairwise median {pairwise:.1%}",
    )
    report.add("  lost when exporting from a thread instead", thread_overhead * 100, "%", note="reference")
    per_run = {name: median(cpu[name]) * 1000 / runs for name in (*MODES, "child")}
    report.add(
        "CPU per run in the app process, tracing off",
        per_run["off"],
        "ms",
        note=f"on: {per_run['process']:.1f} ms, in a thread: {per_run['thread']:.1f} ms",
    )
    report.add("CPU per trace in the tracing child process", per_run["child"], "ms", note="MLflow's store")
    report.add("export lag after a round's last run", median(times["lag"]), "s", note=f"{runs} traces per round")
    ratio = exported / drained
    report.add(f"traces exported/s, TraceExporter, backlog of {traces}", exported, "traces/s")
    report.add(
        f"traces/s, mlflow.start_span + async logging ({fluent})",
        drained,
        "traces/s",
        note=f"{caller_ms:.1f} ms per trace on the caller's path",
    )
    target_ratio = TARGET_EXPORTS / MLFLOW_REFERENCE
    report.add(
        "exporter / MLflow's async logging",
        ratio,
        "x",
        target=f">= {target_ratio:.1f}x",
        ok=ratio >= target_ratio,
        note=f">= {TARGET_EXPORTS:.0f}/s where MLflow drains {MLFLOW_REFERENCE:.0f}/s",
    )
    report.details = {
        "runs": runs,
        "rounds": rounds,
        "latency_s": LATENCY,
        "seconds_per_round": {name: [round(value, 3) for value in values] for name, values in times.items()},
        "cpu_seconds_per_round": {name: [round(value, 3) for value in values] for name, values in cpu.items()},
        "export_seconds": round(export_seconds, 2),
        "fluent_seconds": round(fluent_seconds, 2),
    }
    return report


def _cli() -> Report:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--traces", type=int, default=TRACES)
    args = parser.parse_args()
    return run(args.rounds, args.runs, args.traces)


if __name__ == "__main__":
    main_for(_cli)
