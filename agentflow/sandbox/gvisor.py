"""The gVisor backend: `runsc run` on a bundle of our own, so the job talks to gVisor's user-space kernel.

`runsc do` would show the job the host's root (through an overlay); instead each job gets an OCI bundle with
an empty read-only root, read-only /usr (and its /bin, /lib symlinks), tmpfs /work and /tmp, no network
(`--network=none`), uid 65534 without capabilities, rlimits, and memory and pids limits. Files and stdin
travel over stdin to the same bootstrap the Docker backend uses. Gaps against bubblewrap: see docs/sandbox.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agentflow.sandbox.base import PACKAGES, WORKDIR, Job, Result
from agentflow.sandbox.docker import BOOTSTRAP, NOBODY, _payload
from agentflow.sandbox.process import BASE_ENV, Supervisor, mounted_packages, packages_problem

STATE_DIR = Path(tempfile.gettempdir()) / "agentflow-runsc"
USR_LINKS = ("bin", "sbin", "lib", "lib64")
PROBE_TIMEOUT_S = 30
SENTRY_PIDS = 128


class GVisorSandbox:
    """Runs each job as a fresh gVisor sandbox; see docs/sandbox.md."""

    name = "gvisor"

    def __init__(self, packages: Path | None = None) -> None:
        self.packages = packages
        self._why_not: str | bool | None = False

    def unavailable(self) -> str | None:
        if self._why_not is False:
            self._why_not = self._probe()
        return self._why_not if isinstance(self._why_not, str) else None

    def _probe(self) -> str | None:
        if shutil.which("runsc") is None:
            return "runsc not installed: apt-get install runsc (gVisor)"
        if not Path("/usr/bin/python3").exists():
            return "the sandbox's interpreter /usr/bin/python3 is missing: apt-get install python3"
        if problem := packages_problem(self.packages):
            return problem
        with tempfile.TemporaryDirectory(prefix="agentflow-runsc-probe-") as bundle:
            _write_bundle(Path(bundle), ["/usr/bin/true"], {}, job=None, packages=None)
            argv = [*_runsc(), "run", "--bundle", bundle, f"agentflow-probe-{uuid.uuid4().hex[:12]}"]
            try:
                done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"runsc cannot start a sandbox here ({exc})"
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            return f"runsc cannot start a sandbox here ({why[0]}); it needs root and a kernel gVisor supports"
        return None

    async def run(self, job: Job) -> Result:
        started = time.perf_counter()
        payload = _payload(job)
        container_id = f"agentflow-{uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory(prefix="agentflow-runsc-") as bundle:
            argv = ["python3", "-I", "-S", "-c", BOOTSTRAP]
            _write_bundle(Path(bundle), argv, {"PATH": BASE_ENV["PATH"]}, job=job, packages=self.packages)
            process = await asyncio.create_subprocess_exec(
                *_runsc(),
                "run",
                "--bundle",
                bundle,
                container_id,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
            supervisor = Supervisor(process, job.limits, cgroup=None)
            try:
                outcome = await supervisor.finish(payload, job.workspace)
            finally:
                await supervisor.stop()
                await asyncio.shield(asyncio.to_thread(_delete, container_id))
        return outcome.result(self.name, (time.perf_counter() - started) * 1000)


def _runsc() -> list[str]:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    return ["runsc", "--root", str(STATE_DIR), "--network=none"]


def _delete(container_id: str) -> None:
    """Kill and delete the sandbox: its processes outlive a killed `runsc run`."""
    for command in (["kill", container_id, "KILL"], ["delete", "--force", container_id]):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([*_runsc(), *command], capture_output=True, timeout=30, check=False)


def _write_bundle(
    bundle: Path, argv: list[str], env: dict[str, str], *, job: Job | None, packages: Path | None
) -> None:
    rootfs = bundle / "rootfs"
    rootfs.mkdir()
    for name in USR_LINKS:
        host = Path("/") / name
        if host.is_symlink():
            (rootfs / name).symlink_to(host.readlink())
    for name in ("usr", "proc", "dev", "tmp", "work", "etc"):
        (rootfs / name).mkdir()
    mounts: list[dict[str, Any]] = [
        {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
    ]
    for name in ("ld.so.cache", "localtime"):
        if (Path("/etc") / name).exists():
            mounts.append(
                {"destination": f"/etc/{name}", "type": "bind", "source": f"/etc/{name}", "options": ["rbind", "ro"]}
            )
    rlimits: list[dict[str, Any]] = []
    resources: dict[str, Any] = {}
    if job is not None:
        limits = job.limits
        disk = f"size={limits.disk_mb * 1024 * 1024}"
        owned = [disk, f"uid={NOBODY}", f"gid={NOBODY}", "mode=0700"]
        mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": owned})
        if job.workspace is None:
            mounts.append({"destination": WORKDIR, "type": "tmpfs", "source": "tmpfs", "options": owned})
        else:
            from agentflow.sandbox.docker import hand_to_nobody

            hand_to_nobody(job.workspace)
            mounts.append(
                {
                    "destination": WORKDIR,
                    "type": "bind",
                    "source": str(job.workspace.resolve()),
                    "options": ["rbind", "rw"],
                }
            )
        if packages := mounted_packages(packages):
            (rootfs / "opt" / "agentflow" / "packages").mkdir(parents=True)
            mounts.append(
                {"destination": PACKAGES, "type": "bind", "source": str(packages.resolve()), "options": ["rbind", "ro"]}
            )
        cpu = max(1, math.ceil(limits.cpu_s))
        rlimits = [
            {"type": "RLIMIT_CPU", "soft": cpu, "hard": cpu + 1},
            {"type": "RLIMIT_AS", "soft": limits.memory_mb * 2**20, "hard": limits.memory_mb * 2**20},
            {"type": "RLIMIT_FSIZE", "soft": limits.disk_mb * 2**20, "hard": limits.disk_mb * 2**20},
            {"type": "RLIMIT_NOFILE", "soft": 256, "hard": 256},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        ]
        # The sandbox's cgroup also holds gVisor's own threads (the Go runtime of its kernel): pids gets headroom.
        resources = {"memory": {"limit": limits.memory_mb * 2**20}, "pids": {"limit": limits.pids + SENTRY_PIDS}}
    config = {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": NOBODY, "gid": NOBODY},
            "args": argv,
            "env": [f"{key}={value}" for key, value in env.items()],
            "cwd": WORKDIR,
            "capabilities": {"bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []},
            "rlimits": rlimits,
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "sandbox",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
            "resources": resources,
        },
    }
    (bundle / "config.json").write_text(json.dumps(config))
