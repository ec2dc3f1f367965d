"""The bubblewrap backend: Linux namespaces around one process tree, with rlimits and (where writable) a cgroup.

The job sees read-only /usr (and the /bin, /lib symlinks), a few /etc files Python needs, its own /proc and
/dev, a size-limited tmpfs at /work (or the job's workspace bound there) and at /tmp, and nothing else: no
network, no host files, no data dir. Inside a user namespace it is uid 65534 with no capabilities and cannot
make further namespaces (`--disable-userns`); on the host it keeps the service's uid, so the service should run
as an unprivileged user of its own (docs/sandbox.md).

Limits are set before the command runs: `prlimit` wraps bwrap (rlimits are inherited), and the sandbox's
first process is put into a per-job cgroup v1 group while bwrap waits on `--block-fd`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from agentflow.sandbox.base import PACKAGES, WORKDIR, Job, Result
from agentflow.sandbox.cgroups import JobCgroup
from agentflow.sandbox.process import Supervisor, job_env, memfd, mounted_packages, packages_problem, relative_file

NOBODY = 65534
"""The uid and gid the job has inside its user namespace."""
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "mime.types", "python3.11")
"""What Python and the Debian tools need from /etc: never passwd, shadow, the hosts' keys or resolv.conf."""
PASSWD = b"nobody:x:65534:65534:nobody:/work:/usr/sbin/nologin\n"
GROUP = b"nogroup:x:65534:\n"
USR_LINKS = ("bin", "sbin", "lib", "lib64", "lib32", "libx32")


class BubblewrapSandbox:
    """Runs jobs with `bwrap --unshare-all`; see docs/sandbox.md for what each limit maps to."""

    name = "bwrap"

    def __init__(self, packages: Path | None = None) -> None:
        self.packages = packages
        self._why_not: str | bool | None = False  # False: not probed yet

    def unavailable(self) -> str | None:
        if self._why_not is False:
            self._why_not = self._probe()
        return self._why_not if isinstance(self._why_not, str) else None

    def _probe(self) -> str | None:
        if shutil.which("bwrap") is None:
            return "bubblewrap is not installed: apt-get install bubblewrap"
        if shutil.which("prlimit") is None:
            return "prlimit (util-linux) is not installed: apt-get install util-linux"
        if not Path("/usr/bin/python3").exists():
            return "the sandbox's interpreter /usr/bin/python3 is missing: apt-get install python3"
        if problem := packages_problem(self.packages):
            return problem
        import subprocess

        try:
            done = subprocess.run(
                ["bwrap", *self._namespaces(), *_system_binds(), "--disable-userns", "/usr/bin/true"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap does not start here ({exc})"
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip()
            return f"bwrap cannot create namespaces here ({why}); allow unprivileged user namespaces or run as root"
        return None

    @staticmethod
    def _namespaces() -> list[str]:
        return ["--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]

    async def run(self, job: Job) -> Result:
        started = time.perf_counter()
        limits = job.limits
        cgroup = JobCgroup.create(limits)
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        fds: list[int] = []
        try:
            if job.workspace is not None:
                fds.append(os.open(job.workspace, os.O_RDONLY | os.O_DIRECTORY))
            args, file_fds = self._arguments(job, info_write, block_read, fds[0] if fds else None)
            fds += file_fds
            args_fd = memfd("bwrap-args", b"\0".join(arg.encode() for arg in args) + b"\0")
            fds.append(args_fd)
            argv = [
                _tool("prlimit"),
                *_rlimits(job, cgroup is not None),
                "--",
                _tool("bwrap"),
                "--args",
                str(args_fd),
                "--",
                *job.argv,
            ]
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(info_write, block_read, *fds),
                start_new_session=True,
                env={},  # bwrap's own first process keeps its environment, and the job can read /proc/1/environ
            )
        except BaseException:
            for fd in (info_read, info_write, block_read, block_write, *fds):
                os.close(fd)
            if cgroup is not None:
                cgroup.remove()
            raise
        for fd in (info_write, block_read, *fds):
            os.close(fd)
        supervisor = Supervisor(process, limits, cgroup)
        try:
            await supervisor.start(self._release(info_read, block_write, cgroup))
            outcome = await supervisor.finish(job.stdin, job.workspace)
        finally:
            await supervisor.stop()
            if cgroup is not None:
                await asyncio.shield(asyncio.to_thread(cgroup.remove))
        return outcome.result(self.name, (time.perf_counter() - started) * 1000)

    async def _release(self, info_read: int, block_write: int, cgroup: JobCgroup | None) -> None:
        """Put the sandbox's first process into the job's cgroup, then let bwrap run the command."""
        try:
            info = await asyncio.to_thread(_read_and_close, info_read)
            if cgroup is not None and info:
                cgroup.add(int(json.loads(info)["child-pid"]))
            os.write(block_write, b"1")
        except ProcessLookupError:
            pass  # bwrap failed while setting up: its exit status and message are the job's result
        finally:
            os.close(block_write)

    def _arguments(
        self, job: Job, info_fd: int, block_fd: int, workspace_fd: int | None
    ) -> tuple[list[str], list[int]]:
        limits = job.limits
        disk = str(limits.disk_mb * 1024 * 1024)
        args = [*self._namespaces(), *_system_binds()]
        for name in ETC_FILES:
            if (Path("/etc") / name).exists():
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        file_fds = [memfd("passwd", PASSWD), memfd("group", GROUP)]
        args += ["--file", str(file_fds[0]), "/etc/passwd", "--file", str(file_fds[1]), "/etc/group"]
        args += ["--proc", "/proc", "--dev", "/dev", "--size", disk, "--tmpfs", "/tmp"]
        if workspace_fd is not None:
            args += ["--bind-fd", str(workspace_fd), WORKDIR]
        else:
            args += ["--size", disk, "--tmpfs", WORKDIR]
        for name, content in job.files.items():
            target = relative_file(name)
            for parent in reversed(target.parents[:-1]):
                args += ["--dir", f"{WORKDIR}/{parent}"]
            file_fds.append(memfd("job-file", content))
            args += ["--file", str(file_fds[-1]), f"{WORKDIR}/{target}"]
        if packages := mounted_packages(self.packages):
            args += ["--ro-bind", str(packages), PACKAGES]
        args += ["--chdir", WORKDIR, "--clearenv"]
        for key, value in job_env(job).items():
            args += ["--setenv", key, value]
        args += ["--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL", "--remount-ro", "/"]
        args += ["--disable-userns", "--info-fd", str(info_fd), "--block-fd", str(block_fd)]
        return args, file_fds


def _tool(name: str) -> str:
    return shutil.which(name) or name


def _system_binds() -> list[str]:
    """/usr read-only, and /bin, /lib... as the host has them (symlinks into /usr on a merged-/usr system)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in USR_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _rlimits(job: Job, has_cgroup: bool) -> list[str]:
    limits = job.limits
    memory = limits.memory_mb * 1024 * 1024
    cpu = max(1, math.ceil(limits.cpu_s))
    rlimits = [
        f"--as={memory}",
        f"--cpu={cpu}:{cpu + 1}",
        f"--fsize={limits.disk_mb * 1024 * 1024}",
        "--nofile=256",
        "--core=0",
    ]
    if not has_cgroup:
        # Counted per user over the whole host, so only a fallback for the cgroup's pids.max.
        rlimits.append(f"--nproc={limits.pids + 2}")
    return rlimits


def _read_and_close(fd: int) -> bytes:
    """Everything until bwrap closes its end (the thread owns the fd: a cancelled caller cannot close it under it)."""
    try:
        chunks: Iterator[bytes] = iter(lambda: os.read(fd, 4096), b"")
        return b"".join(chunks)
    finally:
        os.close(fd)
