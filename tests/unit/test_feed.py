"""The live feed: one read per wake-up for any number of readers, id order across a commit gap, and
readers that fall behind catching up from the store (nothing lost, nothing repeated)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentflow.engine.events import EventBus
from agentflow.engine.feed import LiveFeed, Subscription, follow
from agentflow.store.base import RunRecord


class CommitLog:
    """The part of the store the feed reads, where a test decides what is committed, in what order."""

    def __init__(self) -> None:
        self.committed: dict[int, dict[str, Any]] = {}
        self.reads = 0
        self.statuses: dict[str, str] = {}

    def commit(self, event_id: int, run_id: str = "run-1", kind: str = "node_finished") -> None:
        self.committed[event_id] = {"id": event_id, "type": kind, "run_id": run_id, "at": float(event_id)}
        self.statuses.setdefault(run_id, "running")
        if kind == "run_finished":
            self.statuses[run_id] = "succeeded"

    def events_after(self, after: int, *, limit: int = 1000) -> list[dict[str, Any]]:
        self.reads += 1
        return [self.committed[key] for key in sorted(self.committed) if key > after][:limit]

    def events(self, run_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        return [event for event in self.events_after(after, limit=10**9) if event["run_id"] == run_id]

    def last_event_id(self) -> int:
        return max(self.committed, default=0)

    def get_run(self, run_id: str) -> RunRecord | None:
        status = self.statuses.get(run_id)
        return None if status is None else RunRecord(id=run_id, workflow="wf", version="v1", status=status)

    async def flush(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store() -> CommitLog:
    return CommitLog()


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def feed(store: CommitLog, clock: Clock) -> AsyncIterator[LiveFeed]:
    live = LiveFeed(store, EventBus(), gap_seconds=1.0, linger_seconds=0, clock=clock)  # type: ignore[arg-type]
    await live.start()
    yield live
    await live.stop()


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [event["id"] for event in events]


async def delivered(subscription: Subscription) -> list[int]:
    return ids(await subscription.next(0))


async def test_every_reader_gets_each_event_once_from_one_read(feed: LiveFeed, store: CommitLog) -> None:
    readers = [await feed.subscribe() for _ in range(50)]
    for event_id in (1, 2, 3):
        store.commit(event_id)
    reads = store.reads
    await feed.caught_up()
    assert store.reads - reads == 1  # one query, however many readers
    assert [await delivered(reader) for reader in readers] == [[1, 2, 3]] * 50
    await feed.caught_up()
    assert [await delivered(reader) for reader in readers] == [[]] * 50


async def test_nobody_reading_means_no_queries(feed: LiveFeed, store: CommitLog) -> None:
    store.commit(1)
    reads = store.reads
    await feed.caught_up()
    assert store.reads == reads
    reader = await feed.subscribe()  # starts from what is committed now
    store.commit(2)
    await feed.caught_up()
    assert await delivered(reader) == [2]


async def test_events_behind_a_gap_wait_for_it_to_fill(feed: LiveFeed, store: CommitLog, clock: Clock) -> None:
    reader = await feed.subscribe()
    store.commit(1)
    store.commit(3)  # 2 took its id first but commits later (another writer)
    await feed.caught_up()
    assert await delivered(reader) == [1]
    store.commit(2)
    await feed.caught_up()
    assert await delivered(reader) == [2, 3]  # in id order


async def test_a_gap_that_never_fills_is_passed_after_a_while(feed: LiveFeed, store: CommitLog, clock: Clock) -> None:
    reader = await feed.subscribe()
    store.commit(1)
    store.commit(3)  # 2 was rolled back: it never commits
    await feed.caught_up()
    assert await delivered(reader) == [1]
    clock.now += 0.5
    await feed.caught_up()
    assert await delivered(reader) == []
    clock.now += 0.6
    await feed.caught_up()
    assert await delivered(reader) == [3]


async def test_a_reader_that_falls_behind_is_marked_and_keeps_the_newest(feed: LiveFeed, store: CommitLog) -> None:
    reader = await feed.subscribe(limit=2)
    for event_id in range(1, 6):
        store.commit(event_id)
    await feed.caught_up()
    assert reader.take_lag()
    assert await delivered(reader) == [4, 5]
    assert not reader.take_lag()


async def test_follow_catches_up_from_the_store_when_it_fell_behind(feed: LiveFeed, store: CommitLog) -> None:
    store.commit(1, kind="run_started")
    seen: list[int] = []

    async def read() -> None:
        async for event in follow(feed, run_id="run-1", until_finished=True):
            assert event is not None
            seen.append(event["id"])

    subscribed = asyncio.Event()
    subscribe = feed.subscribe

    async def subscribe_and_say(*args: Any, **kwargs: Any) -> Subscription:
        subscription = await subscribe(*args, **kwargs)
        subscribed.set()
        return subscription

    feed.subscribe = subscribe_and_say  # type: ignore[method-assign]
    reader = asyncio.create_task(read())
    await subscribed.wait()  # the reader is following live before the flood
    for event_id in range(2, 30_000):  # far more than a reader's buffer
        store.commit(event_id)
    store.commit(30_000, kind="run_finished")
    await feed.caught_up()
    await asyncio.wait_for(reader, 30)
    assert seen == list(range(1, 30_001))


async def test_follow_replays_a_finished_run_and_ends(feed: LiveFeed, store: CommitLog) -> None:
    store.commit(1, kind="run_started")
    store.commit(2, "other-run", "run_started")
    store.commit(3, kind="run_finished")
    replayed = [event async for event in follow(feed, run_id="run-1", until_finished=True)]
    assert ids([event for event in replayed if event is not None]) == [1, 3]
    resumed = [event async for event in follow(feed, run_id="run-1", after=1, until_finished=True)]
    assert ids([event for event in resumed if event is not None]) == [3]


async def test_changes_without_events_reach_the_readers_that_want_them(feed: LiveFeed, store: CommitLog) -> None:
    view = await feed.subscribe(changes=True)
    stream = await feed.subscribe()
    feed.bus.changed("run-9")  # e.g. its trace was exported: no new event
    await feed.caught_up()
    assert await view.next(0) == [{"type": "changed", "run_id": "run-9"}]
    assert await stream.next(0) == []
