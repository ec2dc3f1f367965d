"""Supervising a sandboxed process tree from the host: stdin in, capped stdout/stderr out, limits, a clean end.

Shared by the backends that start a local process (bubblewrap, gVisor): the process runs in its own session,
so killing its group (and its cgroup, when there is one) ends everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agentflow.sandbox.base import PACKAGES, WORKDIR, Job, Limits, Result
from agentflow.sandbox.cgroups import JobCgroup

BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": WORKDIR, "LANG": "C.UTF-8", "PYTHONPATH": PACKAGES}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SIGXCPU_EXIT = 128 + signal.SIGXCPU
SIGKILL_EXIT = 128 + signal.SIGKILL
WATCH_S = 0.1
"""How often the total CPU time (and a bound workspace's size) is checked."""
CHUNK = 65536


def job_env(job: Job) -> dict[str, str]:
    """The job's whole environment: PATH, HOME, LANG, PYTHONPATH and what the job names, nothing inherited."""
    for key, value in job.env.items():
        if not _ENV_NAME.fullmatch(key) or "\0" in value:
            raise ValueError(f"environment variable {key!r} must be a name like MY_VAR with a value without NUL")
    return {**BASE_ENV, **job.env}


def packages_problem(packages: Path | None) -> str | None:
    """Why the operator's package directory cannot be mounted; a directory that does not exist yet is fine."""
    if packages is not None and packages.exists() and not packages.is_dir():
        return f"AGENTFLOW_SANDBOX_PACKAGES={packages} is not a directory: point it at one or unset the variable"
    return None


def mounted_packages(packages: Path | None) -> Path | None:
    """The package directory to mount read-only at PACKAGES: only when it exists."""
    return packages.resolve() if packages is not None and packages.is_dir() else None


def relative_file(name: str) -> PurePosixPath:
    """A job file's path inside WORKDIR; ValueError for anything that could land outside it."""
    path = PurePosixPath(name)
    if not name or "\0" in name or path.is_absolute() or ".." in path.parts or str(path) in ("", "."):
        raise ValueError(f"job file {name!r} must be a relative path inside {WORKDIR} (no leading /, no '..')")
    return path


def memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding `data`, read from its start: bytes handed over without touching disk."""
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def tree_bytes(root: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


@dataclass
class Outcome:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    killed: str | None
    truncated: bool

    def result(self, backend: str, duration_ms: float) -> Result:
        return Result(
            exit_code=None if self.killed else self.exit_code,
            stdout=self.stdout,
            stderr=self.stderr,
            killed=self.killed,
            truncated=self.truncated,
            duration_ms=duration_ms,
            backend=backend,
        )


class Supervisor:
    """Drives one started process (its own session leader) to its end or its limits."""

    def __init__(self, process: asyncio.subprocess.Process, limits: Limits, cgroup: JobCgroup | None) -> None:
        self.process = process
        self.limits = limits
        self.cgroup = cgroup
        self.killed: str | None = None
        self.truncated = False

    async def start(self, release: Awaitable[None]) -> None:
        """Wait for the backend's go-ahead step (e.g. moving the process into its cgroup); a process that died
        before it is not an error here: `finish` reports its exit."""
        with contextlib.suppress(BrokenPipeError):
            await asyncio.wait_for(release, timeout=max(self.limits.wall_s, 10.0))

    async def finish(self, stdin: bytes, workspace: Path | None = None) -> Outcome:
        process = self.process
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        feeding = asyncio.ensure_future(self._feed(process.stdin, stdin))
        reading = asyncio.gather(self._drain(process.stdout), self._drain(process.stderr))
        watching = asyncio.ensure_future(self._watch(workspace))
        ending = asyncio.gather(reading, process.wait())
        try:
            await asyncio.wait_for(asyncio.shield(ending), timeout=self.limits.wall_s)
        except TimeoutError:
            self.stop_for("wall")
        (stdout, stderr), exit_code = await ending
        if workspace is not None and await asyncio.to_thread(tree_bytes, workspace) > self.limits.disk_mb * 2**20:
            self.killed = self.killed or "disk"  # written faster than the watch could see: still a failed job
        feeding.cancel()
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(feeding, watching)
        return Outcome(exit_code, stdout, stderr, self.killed or self._killed_by_kernel(exit_code), self.truncated)

    def _killed_by_kernel(self, exit_code: int) -> str | None:
        """The kills the sandbox's own limits made (not a program that signalled itself)."""
        if exit_code not in (SIGXCPU_EXIT, SIGKILL_EXIT):
            return None
        if self.cgroup is not None:
            if self.cgroup.oom_killed():
                return "memory"
            if self.cgroup.cpu_seconds() >= self.limits.cpu_s * 0.95 or exit_code == SIGXCPU_EXIT:
                return "cpu"
            return None
        return "cpu" if exit_code == SIGXCPU_EXIT else None

    async def _feed(self, pipe: asyncio.StreamWriter, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if data:
                pipe.write(data)
                await pipe.drain()
            pipe.close()
            await pipe.wait_closed()

    async def _drain(self, stream: asyncio.StreamReader) -> bytes:
        kept = bytearray()
        cap = self.limits.output_bytes
        while chunk := await stream.read(CHUNK):
            if len(kept) + len(chunk) > cap:
                kept += chunk[: cap - len(kept)]
                self.truncated = True
                self.stop_for("output")
                continue  # keep reading (and dropping) until the killed tree closes the pipe
            kept += chunk
        return bytes(kept)

    async def _watch(self, workspace: Path | None) -> None:
        """Stop the job when all its processes together used up their CPU time, or it overfilled its workspace."""
        disk = self.limits.disk_mb * 1024 * 1024
        ticks = 0
        while self.process.returncode is None:
            await asyncio.sleep(WATCH_S)
            ticks += 1
            if self.cgroup is not None and self.cgroup.cpu_seconds() > self.limits.cpu_s:
                self.stop_for("cpu")
            if workspace is not None and ticks % 5 == 0 and await asyncio.to_thread(tree_bytes, workspace) > disk:
                self.stop_for("disk")

    def stop_for(self, reason: str) -> None:
        if self.killed is None and self.process.returncode is None:
            self.killed = reason
        self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all()

    async def stop(self) -> None:
        """Make sure nothing is left running: also when the caller was cancelled mid-run."""
        if self.process.returncode is None:
            self.kill()
            await asyncio.shield(self.process.wait())
