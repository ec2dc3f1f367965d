"""Schedules: cron triggers of deployed workflows, fired exactly once per fire time.

Each deployed schedule has its next fire time in the store. The scheduler of every server process
looks at the due ones and *claims* a fire by moving the schedule to its next time and recording its
runs in one transaction (`TriggerStore.claim_fire`): with several processes, one wins and the others
see the schedule already moved. Runs also carry the fire time as their idempotency key.

Times missed while no server ran (misfires) follow the trigger's `misfire` policy: `skip` runs none
of them, `once` (the default) runs one for all of them, `all` runs each, at most `catch_up` (the
newest). A fire at most GRACE_SECONDS late is on time, not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from croniter import croniter

from agentflow.engine.executor import until_set
from agentflow.store.base import Delivery, Schedule, TriggeredRun

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.spec.models import ScheduleTrigger

log = logging.getLogger("agentflow.triggers")

GRACE_SECONDS = 60.0
"""A fire this late (a busy or restarting server) is still on time; later, it is a misfire."""
MAX_SLEEP_SECONDS = 30.0
"""The scheduler looks again at least this often: another process may have deployed a schedule."""


def next_fire(cron: str, timezone: str, after: float) -> float:
    """The first time strictly after `after` (unix seconds) that the cron expression names, read in `timezone`."""
    start = dt.datetime.fromtimestamp(after, ZoneInfo(timezone))
    found = croniter(cron, start).get_next(dt.datetime)
    assert isinstance(found, dt.datetime)
    return found.timestamp()


def fires_between(cron: str, timezone: str, first: float, now: float, *, limit: int) -> list[float]:
    """The fire times from `first` to `now`, both included: the newest `limit` of them, oldest first.
    Read backwards from `now`, so a long downtime costs `limit` steps, not one per missed time."""
    zone = ZoneInfo(timezone)
    # Cron times are whole minutes: from a second after `now`, the previous one may be `now` itself.
    backwards = croniter(cron, dt.datetime.fromtimestamp(now + 1, zone))
    times: list[float] = []
    while len(times) < limit:
        found = backwards.get_prev(dt.datetime)
        assert isinstance(found, dt.datetime)
        if found.timestamp() < first:
            break
        times.append(found.timestamp())
    return times[::-1]


def iso(at: float, timezone: str = "UTC") -> str:
    return dt.datetime.fromtimestamp(at, ZoneInfo(timezone)).isoformat(timespec="seconds")


class Scheduler:
    """Fires due schedules; `tick` does one pass (tests drive it with their own clock)."""

    def __init__(self, flow: AgentFlow, *, clock: Callable[[], float] = time.time) -> None:
        self.flow = flow
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fired = 0

    def poke(self) -> None:
        """Look again now (a schedule was deployed or removed); safe from any thread of the loop's process."""
        loop = self._task.get_loop() if self._task is not None else None
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="agentflow-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # a broken schedule must not stop the others; said, and tried again
                log.exception("the scheduler failed a pass; trying again")
            schedules = await asyncio.to_thread(self.flow.store.schedules)
            due = [item.next_fire_at for item in schedules if item.next_fire_at is not None]
            wait = min([MAX_SLEEP_SECONDS, *(at - self.clock() for at in due)])
            self._wake.clear()
            await until_set(self._wake, max(wait, 0.05))

    def tick(self, now: float | None = None) -> list[str]:
        """Claim and start every due fire; the ids of the runs started here."""
        now = self.clock() if now is None else now
        started: list[str] = []
        for schedule in self.flow.store.schedules():
            if schedule.next_fire_at is None or schedule.next_fire_at > now:
                continue
            started += self._fire(schedule, now)
        if started:
            self.flow.executor.wake()
        return started

    def _fire(self, schedule: Schedule, now: float) -> list[str]:
        deployed = self.flow.deployments.deployed(schedule.workflow)
        trigger = deployed.triggers.get(schedule.trigger) if deployed is not None else None
        if deployed is None or trigger is None or trigger.schedule is None:
            return []  # undeployed meanwhile: its schedules are gone with the next deploy
        config = trigger.schedule
        assert schedule.next_fire_at is not None
        times = fires_between(schedule.cron, schedule.timezone, schedule.next_fire_at, now, limit=config.catch_up)
        following = next_fire(schedule.cron, schedule.timezone, now)
        on_time = [at for at in times if now - at <= GRACE_SECONDS]
        missed = [at for at in times if now - at > GRACE_SECONDS]
        chosen = self._chosen(config, on_time, missed)
        refusals: list[Delivery] = []
        requests = []
        for at in chosen:
            key = iso(at, "UTC")
            late = " (missed, run late)" if at in missed else ""
            try:
                run = self.flow.executor.prepare(
                    schedule.workflow, schedule.version, dict(config.inputs), trigger="schedule"
                )
            except Exception as exc:  # inputs, grant or budget: this fire is refused, the schedule moves on
                refusals.append(_delivery(schedule, "refused", key, str(exc)))
                continue
            delivery = _delivery(schedule, "accepted", key, f"fire time {iso(at, schedule.timezone)}{late}")
            requests.append(
                TriggeredRun(
                    run=run, scope=f"schedule:{schedule.workflow}:{schedule.trigger}", key=key, delivery=delivery
                )
            )
        if not self.flow.store.claim_fire(schedule, next_fire_at=following, runs=requests):
            return []  # another process claimed this fire (and says what became of it)
        if missed and not chosen:
            skipped = f"skipped {len(missed)} missed time(s) (misfire: skip)"
            refusals.append(_delivery(schedule, "refused", iso(missed[-1], schedule.timezone), skipped))
        for refusal in refusals:
            self.flow.store.log_delivery(refusal)
        self.fired += len(requests)
        return [request.run.id for request in requests]

    @staticmethod
    def _chosen(config: ScheduleTrigger, on_time: list[float], missed: list[float]) -> list[float]:
        if not missed:
            return on_time[-1:]
        if config.misfire == "skip":
            return on_time[-1:]
        if config.misfire == "once":
            return [(on_time or missed)[-1]]
        return [*missed, *on_time][-config.catch_up :]


def _delivery(schedule: Schedule, outcome: str, key: str, detail: str) -> Delivery:
    return Delivery(
        workflow=schedule.workflow,
        trigger=schedule.trigger,
        channel="schedule",
        outcome=outcome,
        key=key,
        detail=detail,
    )
