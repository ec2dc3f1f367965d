"""The Docker backend: one throwaway container per job, from a locally built image, with no network.

The container's root is read-only; /work and /tmp are size-limited tmpfs (or the job's workspace is bound at
/work); it runs as 65534:65534 without capabilities or new privileges, with memory (swap included), pids and
CPU limits, and logs nothing to the host (log driver "none"). Files, the environment and stdin travel over the
container's attach stream, read by a small bootstrap that unpacks the files and then execs the command, so
nothing is written into the image's layers and nothing sensitive sits in the container's configuration.
The SDK is blocking: every call runs in a thread, and the container is removed on every way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import socket
import struct
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from agentflow.sandbox.base import PACKAGES, WORKDIR, Job, Result, SandboxUnavailable
from agentflow.sandbox.process import Outcome, job_env, mounted_packages, packages_problem, relative_file, tree_bytes

LABEL = "agentflow.sandbox"
BASE_IMAGE = "local/bookworm-slim"
NOBODY = 65534
SIGXCPU_EXIT = 152
SIGKILL_EXIT = 137
WATCH_S = 0.5
"""How often a bound workspace's size is checked while the container runs."""
PING_TIMEOUT_S = 3
API_TIMEOUT_S = 60
DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update -qq \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \\
    && mkdir -p {WORKDIR} {PACKAGES}
"""
# Runs first in the container: reads a JSON header (argv, env) and a tar of the job's files from stdin, unpacks
# regular files only, then execs the command, whose stdin is the rest of the stream (the job's stdin).
BOOTSTRAP = r"""
import io, json, os, struct, tarfile
def take(size):
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            raise SystemExit("agentflow bootstrap: the job's files were cut short")
        data += chunk
    return data
head = json.loads(take(struct.unpack(">I", take(4))[0]))
archive = take(struct.unpack(">Q", take(8))[0])
with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    for member in tar.getmembers():
        if member.isreg():
            path = os.path.join("/work", member.name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as out:
                out.write(tar.extractfile(member).read())
os.execvpe(head["argv"][0], head["argv"], head["env"])
"""


class DockerSandbox:
    """Runs each job in a fresh container of `image`; see docs/sandbox.md."""

    name = "docker"

    def __init__(self, image: str = "agentflow-sandbox:latest", packages: Path | None = None) -> None:
        self.image = image
        self.packages = packages
        self.instance = uuid.uuid4().hex
        """Every container this object starts carries the label agentflow.sandbox=<instance>."""
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            import docker

            self._client = docker.from_env(timeout=API_TIMEOUT_S)
        return self._client

    def unavailable(self) -> str | None:
        try:
            import docker
            import docker.errors
        except ImportError:
            return "the docker package is not installed: pip install docker"
        try:
            client = docker.from_env(timeout=PING_TIMEOUT_S)
            client.ping()
        except Exception as exc:  # the SDK raises several kinds for "no daemon"
            return f"no Docker engine answers ({type(exc).__name__}): start dockerd or set DOCKER_HOST"
        try:
            client.images.get(self.image)
        except docker.errors.ImageNotFound:
            return f"the sandbox image {self.image} is missing: run `agentflow sandbox build`"
        except docker.errors.APIError as exc:
            return f"the Docker engine cannot inspect {self.image}: {exc}"
        finally:
            client.close()
        if problem := packages_problem(self.packages):
            return problem
        return None

    async def run(self, job: Job) -> Result:
        started = time.perf_counter()
        payload = _payload(job)
        container = await asyncio.to_thread(self._create, job)
        try:
            outcome = await asyncio.to_thread(_drive, container, job, payload)
        finally:
            await asyncio.shield(asyncio.to_thread(_remove, container))
        return outcome.result(self.name, (time.perf_counter() - started) * 1000)

    def _create(self, job: Job) -> Any:
        from docker.types import LogConfig, Ulimit

        limits = job.limits
        disk = f"{limits.disk_mb}m"
        owned = f"rw,nosuid,nodev,size={disk},uid={NOBODY},gid={NOBODY}"
        tmpfs = {"/tmp": owned}
        volumes: dict[str, dict[str, str]] = {}
        if job.workspace is None:
            tmpfs[WORKDIR] = owned
        else:
            hand_to_nobody(job.workspace)
            volumes[str(job.workspace.resolve())] = {"bind": WORKDIR, "mode": "rw"}
        if packages := mounted_packages(self.packages):
            volumes[str(packages)] = {"bind": PACKAGES, "mode": "ro"}
        cpu = max(1, math.ceil(limits.cpu_s))
        api = self.client().api
        host_config = api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs=tmpfs,
            binds=volumes,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=limits.pids,
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            nano_cpus=1_000_000_000,
            ulimits=[
                Ulimit(name="cpu", soft=cpu, hard=cpu + 1),
                Ulimit(name="nofile", soft=256, hard=256),
                Ulimit(name="core", soft=0, hard=0),
            ],
            log_config=LogConfig(type="none"),
        )
        # The low-level call: with stdin open and not detached it sets StdinOnce, so the job sees EOF after its stdin.
        created = api.create_container(
            self.image,
            command=["python3", "-I", "-S", "-c", BOOTSTRAP],
            stdin_open=True,
            tty=False,
            user=f"{NOBODY}:{NOBODY}",
            working_dir=WORKDIR,
            environment={},
            labels={LABEL: self.instance},
            network_disabled=True,
            host_config=host_config,
        )
        return self.client().containers.get(created["Id"])


def _payload(job: Job) -> bytes:
    """The bootstrap's input: header, files, then the job's stdin (also validates names and env up front)."""
    head = json.dumps({"argv": list(job.argv), "env": job_env(job)}).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in job.files.items():
            info = tarfile.TarInfo(str(relative_file(name)))
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    archive = buffer.getvalue()
    return struct.pack(">I", len(head)) + head + struct.pack(">Q", len(archive)) + archive + job.stdin


def _drive(container: Any, job: Job, payload: bytes) -> Outcome:
    """Start the container, feed it, read its output (capped) and wait for it (bounded): blocking, in a thread."""
    import requests

    limits = job.limits
    attached = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw: socket.socket = attached._sock
    container.start()
    state: dict[str, Any] = {"killed": None, "truncated": False}
    streams = {1: bytearray(), 2: bytearray()}

    def kill() -> None:
        with contextlib.suppress(Exception):
            container.kill()

    def stop_for(reason: str) -> None:
        if state["killed"] is not None:
            return
        state["killed"] = reason
        # From its own thread: the engine answers a kill only once the output stream is drained, and the
        # thread that asks may be the one reading it.
        threading.Thread(target=kill, daemon=True).start()

    def feed() -> None:
        with contextlib.suppress(OSError):
            raw.sendall(payload)
            raw.shutdown(socket.SHUT_WR)

    def read() -> None:
        for stream, data in _frames(raw):
            kept = streams.get(stream)
            if kept is None:
                continue
            room = limits.output_bytes - len(kept)
            kept += data[: max(room, 0)]
            if len(data) > room:
                state["truncated"] = True
                stop_for("output")

    workers = [threading.Thread(target=feed, daemon=True), threading.Thread(target=read, daemon=True)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + limits.wall_s
    exit_code: int | None = None
    while exit_code is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stop_for("wall")
            with contextlib.suppress(Exception):
                container.wait(timeout=30)
            break
        try:
            exit_code = int(container.wait(timeout=min(remaining, WATCH_S)).get("StatusCode", -1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            if job.workspace is not None and tree_bytes(job.workspace) > limits.disk_mb * 2**20:
                stop_for("disk")
    workers[1].join(timeout=30)
    with contextlib.suppress(OSError):
        raw.close()
    killed: str | None = state["killed"]
    if killed is None and job.workspace is not None and tree_bytes(job.workspace) > limits.disk_mb * 2**20:
        killed = "disk"  # written faster than the watch could see: still a failed job
    if killed is None:
        container.reload()
        if container.attrs.get("State", {}).get("OOMKilled"):
            killed = "memory"
        elif exit_code in (SIGXCPU_EXIT, SIGKILL_EXIT):
            # The command is the container's pid 1: nothing inside can SIGKILL it, and it ignores SIGXCPU,
            # so a non-OOM SIGKILL is RLIMIT_CPU's hard limit.
            killed = "cpu"
    return Outcome(exit_code, bytes(streams[1]), bytes(streams[2]), killed, bool(state["truncated"]))


def _frames(raw: socket.socket) -> Any:
    """Docker's multiplexed attach stream: 8-byte headers (stream id, length), then the data."""
    buffer = b""
    while True:
        try:
            chunk = raw.recv(65536)
        except OSError:
            return
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 8:
            stream, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
            if len(buffer) < 8 + size:
                break
            yield stream, buffer[8 : 8 + size]
            buffer = buffer[8 + size :]


def _remove(container: Any) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)


def hand_to_nobody(workspace: Path) -> None:
    """Let uid 65534 write the job's workspace: chown it, never following a symlink a job left there."""
    if os.geteuid() != 0:
        workspace.chmod(0o777)  # the engine maps no users: the container's nobody needs the mode bits
        return
    os.chown(workspace, NOBODY, NOBODY, follow_symlinks=False)
    for _dir, dirs, files, dir_fd in os.fwalk(workspace):
        for name in [*dirs, *files]:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid != NOBODY:
                    os.chown(name, NOBODY, NOBODY, dir_fd=dir_fd, follow_symlinks=False)


def build_image(settings: Any) -> str:
    """Build `settings.sandbox_image` from the local base image (no registry needed); returns its id."""
    import docker
    import docker.errors

    client = docker.from_env(timeout=600)
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        raise SandboxUnavailable(
            f"the base image {BASE_IMAGE} is missing: run `make docker-engine` (scripts/docker-engine.sh)"
        ) from None
    image, _log = client.images.build(
        fileobj=io.BytesIO(DOCKERFILE.encode()),
        tag=settings.sandbox_image,
        network_mode="host",
        rm=True,
        forcerm=True,
        pull=False,
    )
    return str(image.id)
