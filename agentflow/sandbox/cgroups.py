"""A per-job cgroup (v1: memory, pids, cpu, cpuacct): the limits rlimits cannot express, and how the job ended.

rlimits are per process; a cgroup bounds the whole tree: resident memory (an OOM kill, which the job's Result
reports as killed="memory"), the number of processes (fork fails), CPU rate (one core) and, read back from
cpuacct, the CPU seconds of every process together. Only used where the v1 tree is writable (root on a v1 host);
elsewhere the backends rely on rlimits alone (docs/sandbox.md says what that loses).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agentflow.sandbox.base import Limits

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
PARENT = "agentflow"
CPU_PERIOD_US = 100_000
CPUS = 1
"""A job gets at most one core's worth of CPU time per period."""


@dataclass
class JobCgroup:
    groups: dict[str, Path]
    """controller -> this job's directory (cpu and cpuacct may share one)."""

    @classmethod
    def create(cls, limits: Limits) -> JobCgroup | None:
        """A fresh group with the job's limits, or None when this host's v1 tree is absent or not writable."""
        mounts = {name: ROOT / name for name in CONTROLLERS}
        if not all(path.is_dir() and os.access(path, os.W_OK) for path in mounts.values()):
            return None
        name = uuid.uuid4().hex
        groups = {controller: path.resolve() / PARENT / name for controller, path in mounts.items()}
        cgroup = cls(groups)
        try:
            for path in set(groups.values()):
                path.mkdir(parents=True)
            cgroup._write("memory", "memory.limit_in_bytes", limits.memory_mb * 1024 * 1024)
            if (groups["memory"] / "memory.memsw.limit_in_bytes").exists():
                cgroup._write("memory", "memory.memsw.limit_in_bytes", limits.memory_mb * 1024 * 1024)
            cgroup._write("pids", "pids.max", limits.pids)
            cgroup._write("cpu", "cpu.cfs_period_us", CPU_PERIOD_US)
            cgroup._write("cpu", "cpu.cfs_quota_us", CPU_PERIOD_US * CPUS)
        except OSError:
            cgroup.remove()
            return None
        return cgroup

    def _write(self, controller: str, name: str, value: int) -> None:
        (self.groups[controller] / name).write_text(f"{value}\n")

    def add(self, pid: int) -> None:
        """Move `pid` (before it runs the job's command) into every controller's group."""
        for path in set(self.groups.values()):
            (path / "cgroup.procs").write_text(f"{pid}\n")

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(line) for line in (self.groups["pids"] / "cgroup.procs").read_text().split()]
        return []

    def oom_killed(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            for line in (self.groups["memory"] / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
        return False

    def cpu_seconds(self) -> float:
        with contextlib.suppress(OSError, ValueError):
            return int((self.groups["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        return 0.0

    def kill_all(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, patience_s: float = 5.0) -> None:
        """Kill what is left and delete the groups; a killed process leaves its group a moment after it dies."""
        deadline = time.monotonic() + patience_s
        for path in set(self.groups.values()):
            while path.exists():
                self.kill_all()
                try:
                    path.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
