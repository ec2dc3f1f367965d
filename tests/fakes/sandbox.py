"""The sandbox backends as test parameters, and a loopback listener a sandboxed job must not reach.

A backend this machine cannot run is skipped with its reason, unless AGENTFLOW_TEST_REQUIRE_SANDBOXES names it
(CI sets e.g. `bwrap,docker`): then its unavailability fails the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentflow.sandbox import Sandbox
from agentflow.sandbox.select import backend
from agentflow.settings import Settings

BACKENDS = [
    pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow], id="docker"),
    pytest.param("gvisor", marks=pytest.mark.slow, id="gvisor"),
    pytest.param("bwrap", marks=pytest.mark.slow, id="bwrap"),
]
LABEL = "agentflow.sandbox"


def required() -> set[str]:
    return {name.strip() for name in os.environ.get("AGENTFLOW_TEST_REQUIRE_SANDBOXES", "").split(",") if name.strip()}


def open_backend(name: str, home: Path, packages: Path | None = None) -> Sandbox:
    settings = Settings(home=home, sandbox=name, sandbox_packages=packages)
    sandbox = backend(name, settings)
    why = sandbox.unavailable()
    if why:
        if name in required():
            pytest.fail(f"sandbox {name} is required (AGENTFLOW_TEST_REQUIRE_SANDBOXES) but unavailable: {why}")
        pytest.skip(f"{name}: {why}")
    return sandbox


def marker() -> str:
    """A unique word to put in a sandboxed process's argv and look for on the host."""
    return f"agentflow-marker-{uuid.uuid4().hex}"


def host_processes(word: str) -> list[str]:
    """Host processes whose command line contains `word` (besides pgrep itself)."""
    done = subprocess.run(["pgrep", "-af", word], capture_output=True, text=True, check=False)
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def gvisor_sandboxes() -> list[str]:
    """gVisor sandboxes the backend's runsc state knows (its processes are not host processes)."""
    from agentflow.sandbox.gvisor import STATE_DIR

    done = subprocess.run(
        ["runsc", "--root", str(STATE_DIR), "list", "-quiet"], capture_output=True, text=True, check=False
    )
    return [line for line in done.stdout.split() if line.startswith("agentflow-")]


def started(sandbox: Sandbox, word: str) -> bool:
    """Whether the job carrying `word` is visibly running: a host process, or a gVisor sandbox."""
    return bool(gvisor_sandboxes()) if sandbox.name == "gvisor" else bool(host_processes(word))


def cpu_gap(sandbox: Sandbox, request: pytest.FixtureRequest) -> None:
    """gVisor 20221219 does not enforce RLIMIT_CPU: the job runs to its wall limit (docs/sandbox.md)."""
    if sandbox.name == "gvisor":
        request.applymarker(pytest.mark.xfail(strict=True, reason="gVisor does not enforce RLIMIT_CPU"))


def leftover_containers(word: str) -> list[str]:
    done = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={LABEL}={word}", "--format", "{{.ID}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.split()


@dataclass
class Listener:
    """A TCP port on the host's loopback that records every connection made to it."""

    port: int
    connections: list[tuple[str, int]] = field(default_factory=list)


@contextmanager
def loopback_listener() -> Iterator[Listener]:
    server = socket.create_server(("127.0.0.1", 0))
    listener = Listener(server.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, address = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            listener.connections.append(address)
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join()
        server.close()
