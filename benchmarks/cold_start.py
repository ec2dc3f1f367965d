"""Cold start: `agentflow --help` and `agentflow validate examples/hello.yaml` as fresh processes.

Each command runs 10 times, alternating with the baseline `python -c pass` (the interpreter's
own start-up), and medians are compared. A second pass runs each command under
`python -X importtime` and lists the heavy modules it imported: litellm, langgraph, gradio
and mlflow take seconds to import and must stay off these paths.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import ROOT, Report, main_for, median

RUNS = 10
TARGET_S = 0.5
HEAVY = ("litellm", "langgraph", "langchain_core", "gradio", "mlflow", "openai")
MUST_BE_ABSENT = ("litellm", "langgraph", "gradio", "mlflow")


def _agentflow() -> list[str]:
    script = Path(sys.executable).parent / "agentflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agentflow.cli"]


def commands() -> dict[str, list[str]]:
    agentflow = _agentflow()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "agentflow --help": [*agentflow, "--help"],
        "agentflow validate examples/hello.yaml": [*agentflow, "validate", "examples/hello.yaml"],
    }


def _env() -> dict[str, str]:
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(command: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of `command`."""
    cpu = _cpu_of_children()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed, _cpu_of_children() - cpu


def imports(command: list[str]) -> tuple[set[str], list[tuple[str, float]], list[tuple[str, float]]]:
    """Top-level packages a command imports, its slowest imports (cumulative s) and costliest modules (self s).

    `-X importtime` roughly doubles import times: compare these with each other, not with the timings.
    """
    if command[0] != sys.executable:  # a console script: run it with our interpreter to pass -X
        command = [sys.executable, *command]
    done = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    packages: set[str] = set()
    slowest: list[tuple[str, float]] = []
    costliest: list[tuple[str, float]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        packages.add(name.split(".")[0])
        costliest.append((name, int(own) / 1e6))
        if not line.split("|")[2].startswith("  "):  # imported at the top level, not by another module
            slowest.append((name, int(cumulative) / 1e6))
    slowest.sort(key=lambda item: -item[1])
    costliest.sort(key=lambda item: -item[1])
    return packages, slowest[:5], costliest[:8]


def run(runs: int = RUNS) -> Report:
    report = Report("cold_start")
    timed = commands()
    times: dict[str, list[float]] = {name: [] for name in timed}
    cpu_times: dict[str, list[float]] = {name: [] for name in timed}
    for command in timed.values():  # warm the OS file cache
        _time(command)
    for _ in range(runs):
        for name, command in timed.items():
            wall, cpu = _time(command)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    baseline = median(times["python -c pass"])
    report.add("python -c pass", baseline, "s", note=f"baseline; CPU {median(cpu_times['python -c pass']):.3f} s")
    details: dict[str, object] = {
        "runs": runs,
        "seconds": {k: [round(v, 4) for v in vs] for k, vs in times.items()},
        # user + system CPU of the child: less sensitive than wall time to other load on the machine
        "cpu_seconds_median": {k: round(median(vs), 4) for k, vs in cpu_times.items()},
    }
    for name, command in timed.items():
        if name == "python -c pass":
            continue
        seconds = median(times[name])
        packages, slowest, costliest = imports(command)
        heavy = sorted(package for package in HEAVY if package in packages)
        forbidden = [package for package in MUST_BE_ABSENT if package in packages]
        report.add(
            name,
            seconds,
            "s",
            target=f"< {TARGET_S} s",
            ok=seconds < TARGET_S,
            note=f"+{seconds - baseline:.2f} s over baseline; CPU {median(cpu_times[name]):.3f} s",
        )
        report.add(
            f"  heavy modules imported by `{name.split(' ', 1)[1]}`",
            len(forbidden),
            "forbidden",
            target="none of " + "/".join(MUST_BE_ABSENT),
            ok=not forbidden,
            note=", ".join(heavy) or "none",
        )
        details[name] = {
            "heavy_modules": heavy,
            "importtime_top_level_cumulative_s": {module: round(s, 4) for module, s in slowest},
            "importtime_costliest_modules_self_s": {module: round(s, 4) for module, s in costliest},
        }
    report.details = details
    return report


if __name__ == "__main__":
    main_for(run)
