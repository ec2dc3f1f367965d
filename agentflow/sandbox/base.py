"""The sandbox contract: run one command in isolation, with limits, and say how it ended.

Every backend (Docker, gVisor, bubblewrap) implements `Sandbox` and passes the same contract suite
(`tests/integration/test_sandbox_contract.py`). Code written by a model or a user reaches the host only
through here: no network, no host files, an empty environment, bounded CPU, memory, processes, wall time,
output and disk. There is no in-process fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

WORKDIR = "/work"
"""The job's working directory inside the sandbox: its only writable place (besides a small /tmp)."""
PACKAGES = "/opt/agentflow/packages"
"""Where the operator's package set (AGENTFLOW_SANDBOX_PACKAGES) is mounted read-only; on PYTHONPATH."""


class SandboxUnavailable(RuntimeError):
    """No isolation this installation can use: code does not run (the message says how to get one)."""


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int = 256
    cpu_s: float = 10.0
    """CPU seconds over all the job's threads and processes."""
    wall_s: float = 30.0
    pids: int = 64
    output_bytes: int = 1_000_000
    """For stdout and for stderr, each; more is dropped and the job is stopped."""
    disk_mb: int = 64
    """The size of the writable workspace (and /tmp)."""


@dataclass(frozen=True, slots=True)
class Job:
    argv: tuple[str, ...]
    """Run inside the sandbox with PATH=/usr/local/bin:/usr/bin:/bin; `python3` is the sandbox's interpreter."""
    stdin: bytes = b""
    limits: Limits = field(default_factory=Limits)
    files: Mapping[str, bytes] = field(default_factory=dict)
    """Written into WORKDIR before the command starts (relative paths), e.g. the script to run."""
    workspace: Path | None = None
    """A host directory mounted read-write at WORKDIR instead of a fresh, empty one (kept after the job)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The job's whole environment besides PATH, HOME=/work, LANG and PYTHONPATH: nothing is inherited."""


@dataclass(frozen=True, slots=True)
class Result:
    exit_code: int | None
    """The command's exit status; None when the sandbox stopped it (see `killed`)."""
    stdout: bytes
    stderr: bytes
    killed: str | None = None
    """Why the sandbox stopped the job: "wall" (time), "cpu", "memory", "output", "pids"; None: it exited."""
    truncated: bool = False
    """stdout or stderr went over `Limits.output_bytes` and was cut there."""
    duration_ms: float = 0.0
    backend: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed is None


@runtime_checkable
class Sandbox(Protocol):
    name: str
    """docker, gvisor or bwrap."""

    def unavailable(self) -> str | None:
        """Why this backend cannot run here (with what to install or start), or None when it can."""
        ...

    async def run(self, job: Job) -> Result:
        """Run `job` to its end or its limits; the process tree and every resource it made are gone on return,
        also when the caller is cancelled."""
        ...


DEFAULT_MAXIMA: Mapping[str, float] = {
    "memory": 2048,
    "cpu": 300,
    "wall": 3600,
    "pids": 512,
    "output": 10_000_000,
    "disk": 1024,
}
"""The largest limits a workflow may ask for unless the operator sets others (AGENTFLOW_SANDBOX_MAX)."""


def merged_limits(
    asked: Mapping[str, float], maxima: Mapping[str, float] | None = None, defaults: Limits | None = None
) -> Limits:
    """A node's limits (`memory`, `cpu`, `wall`, `pids`, `output`, `disk`) over the defaults, capped by the
    operator's maxima; ValueError names the limit that goes over."""
    base = defaults or Limits()
    maxima = {**DEFAULT_MAXIMA, **(maxima or {})}
    values = {
        "memory": float(base.memory_mb),
        "cpu": base.cpu_s,
        "wall": base.wall_s,
        "pids": float(base.pids),
        "output": float(base.output_bytes),
        "disk": float(base.disk_mb),
    }
    for key, value in asked.items():
        ceiling = maxima.get(key)
        if ceiling is not None and value > ceiling:
            raise ValueError(
                f"limit {key}={value:g} is over the operator's maximum {ceiling:g} (AGENTFLOW_SANDBOX_MAX)"
            )
        values[key] = value
    return Limits(
        memory_mb=int(values["memory"]),
        cpu_s=values["cpu"],
        wall_s=values["wall"],
        pids=int(values["pids"]),
        output_bytes=int(values["output"]),
        disk_mb=int(values["disk"]),
    )
