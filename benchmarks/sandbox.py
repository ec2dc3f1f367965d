"""Code start-to-result overhead: a trivial script (`print(1)`, JSON on stdin) in each available sandbox,
beside a plain `python3 -I -c` subprocess run in the same loop, interleaved, so both see the same machine load.

Reported per backend: p50 and p95 in ms, and the p50 ratio against the plain subprocess.

    python -m benchmarks.sandbox
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from agentflow.sandbox import Job, Sandbox
from agentflow.sandbox.select import ORDER, backend
from agentflow.settings import Settings
from benchmarks._common import Report, main_for

ROUNDS = {"bwrap": 60, "gvisor": 15, "docker": 15}
WARMUP = 3
SCRIPT = "import json, sys; json.load(sys.stdin); print(1)"
STDIN = b'{"n": 1}'
TARGETS = {"bwrap": (50.0, 1.5), "docker": (400.0, None), "gvisor": (None, None)}
"""backend -> (p50 ceiling in ms, ceiling on the ratio to a plain subprocess)."""


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _plain() -> float:
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/python3",
        "-I",
        "-c",
        SCRIPT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _err = await process.communicate(STDIN)
    assert out.strip() == b"1", out
    return (time.perf_counter() - began) * 1000


async def _sandboxed(sandbox: Sandbox) -> float:
    began = time.perf_counter()
    result = await sandbox.run(Job(argv=("python3", "-I", "-c", SCRIPT), stdin=STDIN))
    assert result.ok and result.stdout.strip() == b"1", result
    return (time.perf_counter() - began) * 1000


async def _measure(sandbox: Sandbox, rounds: int) -> tuple[list[float], list[float]]:
    plain: list[float] = []
    boxed: list[float] = []
    for index in range(WARMUP + rounds):
        first, second = await _plain(), await _sandboxed(sandbox)
        if index >= WARMUP:
            plain.append(first)
            boxed.append(second)
    return plain, boxed


def run() -> Report:
    report = Report("sandbox")
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        for name in ORDER:
            sandbox = backend(name, settings)
            why = sandbox.unavailable()
            if why:
                report.add(f"{name}: not available", 0, "", note=why)
                continue
            plain, boxed = asyncio.run(_measure(sandbox, ROUNDS[name]))
            p50, p95, base = _quantile(boxed, 0.5), _quantile(boxed, 0.95), _quantile(plain, 0.5)
            ceiling, ratio_ceiling = TARGETS[name]
            report.add(
                f"{name}: print(1) start to result p50",
                p50,
                "ms",
                target=f"<= {ceiling:g} ms" if ceiling else "",
                ok=p50 <= ceiling if ceiling else None,
            )
            report.add(f"{name}: p95", p95, "ms")
            report.add(
                f"{name}: p50 vs plain python3 -I -c",
                p50 / base,
                "x",
                target=f"<= {ratio_ceiling:g}x" if ratio_ceiling else "",
                ok=p50 / base <= ratio_ceiling if ratio_ceiling else None,
                note=f"plain p50 {base:.1f} ms in the same loop",
            )
            report.details[name] = {"sandboxed_ms": boxed, "plain_ms": plain}
    return report


if __name__ == "__main__":
    main_for(run)
