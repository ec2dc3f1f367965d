"""`python -m benchmarks [name ...]`: run the benchmarks, print one table, write results.json.

python -m benchmarks                      # all of them, ~2-3 minutes
python -m benchmarks cold_start           # some of them
python -m benchmarks.node_overhead        # one, alone (merges its entry into results.json)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import traceback
from collections.abc import Callable

from benchmarks import _common
from benchmarks._common import RESULTS, Report, environment, format_table


def _load() -> dict[str, Callable[[], Report]]:
    from benchmarks import (
        chat,
        cold_start,
        concurrency,
        hostile_yaml,
        live_ops,
        memory,
        node_overhead,
        postgres_overhead,
        queue_latency,
        registry,
        sandbox,
        tracing,
        webhooks,
        worker_throughput,
    )

    # Cold start first: it times fresh subprocesses, before this process grows.
    return {
        "cold_start": cold_start.run,
        "node_overhead": node_overhead.run,
        "hostile_yaml": hostile_yaml.run,
        "concurrency": concurrency.run,
        "tracing": tracing.run,
        "chat": chat.run,
        # On Postgres (127.0.0.1:5432, a fresh database each); worker_throughput starts worker processes.
        "postgres_overhead": postgres_overhead.run,
        "queue_latency": queue_latency.run,
        "worker_throughput": worker_throughput.run,
        "live_ops": live_ops.run,
        "webhooks": webhooks.run,
        "sandbox": sandbox.run,
        "memory": memory.run,
        "registry": registry.run,
    }


def main() -> None:
    benchmarks = _load()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[*benchmarks, []], metavar="name", help=", ".join(benchmarks))
    args = parser.parse_args()
    chosen = args.names or list(benchmarks)
    reports: list[Report] = []
    errors: dict[str, str] = {}
    load_before = os.getloadavg()
    started = time.perf_counter()
    for name in chosen:
        print(f"running {name}...", flush=True)
        began = time.perf_counter()
        try:
            report = benchmarks[name]()
        except Exception:  # one broken benchmark must not hide the others
            errors[name] = traceback.format_exc()
            print(errors[name])
            report = Report(name)
            report.add("ERROR (see above)", 0, "", ok=False)
        report.seconds = time.perf_counter() - began
        print(f"  done in {report.seconds:.1f} s", flush=True)
        reports.append(report)
    total = time.perf_counter() - started
    print()
    print(format_table(reports))
    missed = [f"{r.name}: {row.metric.strip()}" for r in reports for row in r.rows if row.ok is False]
    load_after = os.getloadavg()
    print(
        f"\n{len(missed)} target(s) missed in {total:.0f} s; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores: above ~2 means noise)"
    )
    for line in missed:
        print(f"  MISS {line}")
    data = {
        "environment": {**environment(), "loadavg_before": load_before, "loadavg_after": load_after},
        "total_seconds": round(total, 1),
        "benchmarks": {report.name: report.to_json() for report in reports},
        "errors": errors,
    }
    if set(chosen) != set(benchmarks) and RESULTS.exists():  # a partial run keeps the other entries
        with contextlib.suppress(ValueError):
            data["benchmarks"] = {**json.loads(RESULTS.read_text()).get("benchmarks", {}), **data["benchmarks"]}
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(_common.ROOT)}")


if __name__ == "__main__":
    main()
