"""Schedules on a real SQLite store: next fire times kept across restarts, one run per fire time
whatever the number of processes, misfire policies after a downtime, and the server's own loop.

Time is the schedulers' injected clock (`Scheduler.tick(now=...)`), never a sleep.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.triggers.deployments import DeployError
from agentflow.triggers.schedules import GRACE_SECONDS, Scheduler, fires_between, next_fire

PARIS = ZoneInfo("Europe/Paris")


def at(text: str, zone: ZoneInfo = PARIS) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def digest(cron: str = "*/15 * * * *", *, misfire: str = "once", catch_up: int = 10, zone: str = "Europe/Paris") -> str:
    return f"""\
apiVersion: agentflow/v1
kind: Workflow
metadata: {{name: digest}}
spec:
  inputs:
    topic: {{type: string}}
  nodes:
    echo: {{type: transform, expr: inputs.topic}}
  outputs: {{topic: "{{{{ echo }}}}"}}
  triggers:
    - schedule: {{cron: "{cron}", timezone: {zone}, inputs: {{topic: news}}, misfire: {misfire}, catch_up: {catch_up}}}
"""


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(home=home, tracing=False)


@pytest.fixture
def flow(settings: Settings) -> Iterator[AgentFlow]:
    opened = AgentFlow.open(settings)
    yield opened
    opened.close()


def deploy(flow: AgentFlow, source: str, *, now: float) -> None:
    stored = flow.save_workflow(source)
    flow.grant_version(stored, by="test")
    flow.deployments.clock = lambda: now
    flow.deployments.deploy("digest", by="test")


def test_cron_times_are_read_in_the_schedule_zone() -> None:
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    winter = next_fire("0 9 * * *", "Europe/Paris", at("2026-12-01T12:00:00"))
    assert dt.datetime.fromtimestamp(winter, dt.UTC).isoformat() == "2026-12-02T08:00:00+00:00"
    summer = next_fire("0 9 * * *", "Europe/Paris", at("2026-07-01T12:00:00"))
    assert dt.datetime.fromtimestamp(summer, dt.UTC).isoformat() == "2026-07-02T07:00:00+00:00"
    # A year of a per-minute schedule missed is read backwards: only the newest few are looked at.
    newest = fires_between("* * * * *", "UTC", at("2025-01-01T00:00:00"), at("2026-01-01T00:00:30"), limit=3)
    assert [dt.datetime.fromtimestamp(t, PARIS).strftime("%H:%M") for t in newest] == ["23:58", "23:59", "00:00"]


def test_a_fire_runs_once_on_time_and_the_schedule_moves_on(flow: AgentFlow) -> None:
    start = at("2026-12-01T10:01:00")
    deploy(flow, digest(), now=start)
    [schedule] = flow.store.schedules("digest")
    assert schedule.next_fire_at == at("2026-12-01T10:15:00")
    scheduler = Scheduler(flow)
    assert scheduler.tick(now=start + 60) == []  # not due yet
    [run_id] = scheduler.tick(now=at("2026-12-01T10:15:02"))
    assert scheduler.tick(now=at("2026-12-01T10:15:03")) == []
    run = flow.store.get_run(run_id)
    assert run is not None and (run.trigger, run.inputs) == ("schedule", {"topic": "news"})
    [schedule] = flow.store.schedules("digest")
    assert (schedule.last_fire_at, schedule.next_fire_at) == (at("2026-12-01T10:15:00"), at("2026-12-01T10:30:00"))
    [delivery] = flow.store.deliveries("digest")
    assert (delivery.channel, delivery.outcome, delivery.run_id) == ("schedule", "accepted", run_id)
    assert delivery.key == "2026-12-01T09:15:00+00:00"


def test_several_processes_fire_each_time_exactly_once(settings: Settings, flow: AgentFlow) -> None:
    start = at("2026-12-01T10:01:00")
    deploy(flow, digest(), now=start)
    others = [AgentFlow.open(settings) for _ in range(3)]
    try:
        schedulers = [Scheduler(each) for each in [flow, *others]]
        due = at("2026-12-01T10:15:01")
        barrier = threading.Barrier(len(schedulers))
        started: list[list[str]] = [[] for _ in schedulers]

        def fire(index: int) -> None:
            barrier.wait()
            started[index] = schedulers[index].tick(now=due)

        threads = [threading.Thread(target=fire, args=(index,)) for index in range(len(schedulers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(len(ids) for ids in started) == [0, 0, 0, 1]
        assert len(flow.store.list_runs(workflow="digest")) == 1
    finally:
        for other in others:
            other.close()


def downtime(settings: Settings, source: str) -> tuple[list[str], AgentFlow]:
    """Deploy at 10:01, stop; start again at 13:07 (12 times of */15 missed); one scheduler pass."""
    first = AgentFlow.open(settings)
    deploy(first, source, now=at("2026-12-01T10:01:00"))
    first.close()
    again = AgentFlow.open(settings)
    return Scheduler(again).tick(now=at("2026-12-01T13:07:00")), again


def test_missed_times_run_once_after_a_restart_by_default(settings: Settings) -> None:
    started, flow = downtime(settings, digest())
    try:
        assert len(started) == 1
        [delivery] = flow.store.deliveries("digest")
        assert delivery.key == "2026-12-01T12:00:00+00:00"  # the newest missed time: 13:00 in Paris
        assert "missed" in (delivery.detail or "")
        [schedule] = flow.store.schedules("digest")
        assert schedule.next_fire_at == at("2026-12-01T13:15:00")
        assert Scheduler(flow).tick(now=at("2026-12-01T13:08:00")) == []
    finally:
        flow.close()


def test_missed_times_are_skipped_with_skip(settings: Settings) -> None:
    started, flow = downtime(settings, digest(misfire="skip"))
    try:
        assert started == []
        flow.store.flush_sync()  # a refusal is queued for the log
        [refused] = flow.store.deliveries("digest")
        assert refused.outcome == "refused" and "skipped" in (refused.detail or "")
        assert flow.store.schedules("digest")[0].next_fire_at == at("2026-12-01T13:15:00")
    finally:
        flow.close()


def test_each_missed_time_runs_with_all_up_to_catch_up(settings: Settings) -> None:
    started, flow = downtime(settings, digest(misfire="all", catch_up=5))
    try:
        assert len(started) == 5
        keys = sorted(item.key or "" for item in flow.store.deliveries("digest"))
        assert keys == [
            f"2026-12-01T{hour}+00:00" for hour in ("11:00:00", "11:15:00", "11:30:00", "11:45:00", "12:00:00")
        ]
    finally:
        flow.close()


def test_a_fire_within_the_grace_is_on_time_not_missed(flow: AgentFlow) -> None:
    deploy(flow, digest(misfire="skip"), now=at("2026-12-01T10:01:00"))
    [run_id] = Scheduler(flow).tick(now=at("2026-12-01T10:15:00") + GRACE_SECONDS - 1)
    assert flow.store.get_run(run_id) is not None


def test_redeploying_keeps_the_next_fire_and_undeploying_stops_it(flow: AgentFlow) -> None:
    deploy(flow, digest(), now=at("2026-12-01T10:01:00"))
    before = flow.store.schedules("digest")[0]
    edited = digest().replace(
        "echo: {type: transform, expr: inputs.topic}", "echo: {type: transform, expr: 'inputs.topic'}"
    )
    deploy(flow, edited, now=at("2026-12-01T10:05:00"))
    after = flow.store.schedules("digest")[0]
    assert after.next_fire_at == before.next_fire_at and after.version != before.version
    deploy(flow, digest(cron="0 * * * *"), now=at("2026-12-01T10:06:00"))
    assert flow.store.schedules("digest")[0].next_fire_at == at("2026-12-01T11:00:00")
    flow.deployments.undeploy("digest", by="test")
    assert flow.store.schedules("digest") == []
    assert Scheduler(flow).tick(now=at("2026-12-02T00:00:00")) == []
    with pytest.raises(DeployError, match="not deployed"):
        flow.deployments.undeploy("digest", by="test")


def test_the_server_loop_fires_a_due_schedule(settings: Settings, flow: AgentFlow) -> None:
    deploy(flow, digest(cron="* * * * *"), now=at("2026-12-01T10:01:00"))  # long overdue: fires at once

    async def serve_once() -> str:
        await flow.executor.start()
        scheduler = Scheduler(flow)
        await scheduler.start()
        changed = asyncio.Event()
        unwatch = flow.bus.watch(lambda *_: changed.set())
        try:
            while True:  # woken by the run's events, not by sleeping
                runs = flow.store.list_runs(workflow="digest")
                if runs:
                    run = await flow.executor.wait_for(runs[0].id)
                    return run.status
                await asyncio.wait_for(changed.wait(), 30)
                changed.clear()
        finally:
            unwatch()
            await scheduler.stop()
            await flow.executor.stop()

    assert asyncio.run(serve_once()) == "succeeded"
