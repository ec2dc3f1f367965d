"""Agent states from timestamps, and the background task that polls URL-added agents and drops expired ones.

A state is never stored: it follows from when an agent was last heard from, so every process reading the
store agrees. Silent for one TTL: stale; for three: offline; for the retention period: removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.registry.service import Registry

log = logging.getLogger("agentflow.registry")

HEALTHY, STALE, OFFLINE = "healthy", "stale", "offline"
STATES = (HEALTHY, STALE, OFFLINE)
OFFLINE_AFTER_TTLS = 3


def state_at(last_seen: float, now: float, ttl_s: float) -> str:
    """healthy within one TTL of `last_seen`, stale within three, offline after."""
    silent = now - last_seen
    if silent <= ttl_s:
        return HEALTHY
    if silent <= OFFLINE_AFTER_TTLS * ttl_s:
        return STALE
    return OFFLINE


def heartbeat_interval(ttl_s: float) -> float:
    """How often an agent says it is alive (and a URL-added one is polled): three times per TTL."""
    return ttl_s / 3


class RegistryMonitor:
    """Polls URL-added agents every TTL/3 and removes agents past retention, until stopped (the server runs one)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="agentflow-registry")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.registry.write_beats()  # nothing heard is lost with the process

    async def _loop(self) -> None:
        interval = heartbeat_interval(self.registry.ttl_s)
        while not self._stop.is_set():
            try:
                await self.registry.sweep()
                await self.registry.poll_due()
            except Exception:  # a database hiccup must not end the monitor; the next round tries again
                log.exception("the agent registry's sweep failed; trying again in %.0f s", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
