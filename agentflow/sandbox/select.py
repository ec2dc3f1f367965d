"""Which sandbox runs code here: the operator's choice (AGENTFLOW_SANDBOX), or the strongest one that works.

Fail-closed: with no backend available, `open_sandbox` raises SandboxUnavailable and code does not run.
"""

from __future__ import annotations

import threading
from pathlib import Path

from agentflow.sandbox.base import Sandbox, SandboxUnavailable
from agentflow.settings import Settings

ORDER = ("docker", "gvisor", "bwrap")
"""The `auto` preference: a container with its own image, then gVisor's user-space kernel, then namespaces."""
NOTHING = (
    "no sandbox to run code in: install bubblewrap (apt-get install bubblewrap), gVisor (runsc) or start Docker "
    "and run `agentflow sandbox build`; code never runs unisolated"
)

_opened: dict[tuple[str, str, Path | None], Sandbox] = {}
_lock = threading.Lock()


def backend(name: str, settings: Settings) -> Sandbox:
    """A fresh backend object by name (not checked for availability)."""
    if name == "docker":
        from agentflow.sandbox.docker import DockerSandbox

        return DockerSandbox(image=settings.sandbox_image, packages=settings.sandbox_packages)
    if name == "gvisor":
        from agentflow.sandbox.gvisor import GVisorSandbox

        return GVisorSandbox(packages=settings.sandbox_packages)
    if name == "bwrap":
        from agentflow.sandbox.bwrap import BubblewrapSandbox

        return BubblewrapSandbox(packages=settings.sandbox_packages)
    raise ValueError(f"unknown sandbox {name!r}: use one of auto, {', '.join(ORDER)} (AGENTFLOW_SANDBOX)")


def open_sandbox(settings: Settings) -> Sandbox:
    """The sandbox for these settings, probed once per process; SandboxUnavailable says what to install."""
    key = (settings.sandbox, settings.sandbox_image, settings.sandbox_packages)
    with _lock:
        if key not in _opened:
            _opened[key] = _choose(settings)
        return _opened[key]


def _choose(settings: Settings) -> Sandbox:
    if settings.sandbox != "auto":
        chosen = backend(settings.sandbox, settings)
        why = chosen.unavailable()
        if why:
            raise SandboxUnavailable(f"AGENTFLOW_SANDBOX={settings.sandbox} cannot run here: {why}")
        return chosen
    for name in ORDER:
        candidate = backend(name, settings)
        if candidate.unavailable() is None:
            return candidate
    raise SandboxUnavailable(NOTHING)


def available_backends(settings: Settings) -> dict[str, str | None]:
    """Every backend and why it cannot run here (None: it can), for a status view."""
    return {name: backend(name, settings).unavailable() for name in ORDER}
