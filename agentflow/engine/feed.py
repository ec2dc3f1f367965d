"""The live feed: committed run events, read once per change and fanned out to every reader.

The Runs tab, `/api/runs/{id}/stream`, `/api/events` and `agentflow logs --follow` all read here. The
feed is woken by the event bus (this process's events, and other processes' through the store's
change feed), waits for this process's writes to commit, reads the new rows once — one query per
wake-up however many readers there are — and offers them to each reader's buffer. It never waits
for a reader: a reader that falls behind by more than its buffer is marked `lagged` and catches up
from the store itself (`follow` does), or simply renders the latest state (the UI does). So a slow
browser skips ahead and never slows a run.

Events are delivered in id order. With several writers (workers on Postgres) ids are taken before
commit, so a lower id can commit after a higher one: the feed holds events behind such a gap for up
to `gap_seconds` before giving up on it (an insert rolled back leaves a gap that never fills).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from agentflow.engine.events import TERMINAL_STATUSES, EventBus
from agentflow.engine.executor import until_set
from agentflow.store.base import Store

log = logging.getLogger("agentflow.feed")

Event = dict[str, Any]
Match = Callable[[Event], bool]

PAGE = 1000
GAP_SECONDS = 1.0
# Without a change feed (SQLite), runs another process executes are noticed this often.
RECHECK_SECONDS = 2.0
# After a wake-up, the feed waits this long for more events to read them together: fewer reads, fewer
# and larger writes to every stream, and the engine's writes keep committing in large batches.
LINGER_SECONDS = 0.02


class Subscription:
    """One reader's buffer of matching events; `lagged` once it overflowed (events were dropped here)."""

    def __init__(self, feed: LiveFeed, match: Match | None, limit: int, *, changes: bool = False) -> None:
        self._feed = feed
        self.changes = changes
        self._match = match
        self._limit = limit
        self._events: deque[Event] = deque()
        self._ready = asyncio.Event()
        self.lagged = False
        self.closed = False

    def offer(self, event: Event) -> None:
        if self._match is not None and not self._match(event):
            return
        self._events.append(event)
        if len(self._events) > self._limit:
            self._events.popleft()
            self.lagged = True
        self._ready.set()

    async def next(self, timeout: float | None = None) -> list[Event]:
        """The events buffered since the last call, waiting for at least one (or `timeout`: then [])."""
        if not self._events:
            if timeout is None:
                await self._ready.wait()
            else:
                await until_set(self._ready, timeout)
        self._ready.clear()
        taken = list(self._events)
        self._events.clear()
        return taken

    def take_lag(self) -> bool:
        """Whether events were dropped since the last call (and reset the flag)."""
        lagged, self.lagged = self.lagged, False
        return lagged

    def close(self) -> None:
        """Stop receiving; a reader waiting in `next` wakes up (with what was buffered, or nothing)."""
        if not self.closed:
            self.closed = True
            self._feed._subscriptions.discard(self)
            self._ready.set()


class LiveFeed:
    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        gap_seconds: float = GAP_SECONDS,
        linger_seconds: float = LINGER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.bus = bus
        self.recheck_seconds = recheck_seconds
        self.gap_seconds = gap_seconds
        self.linger_seconds = linger_seconds
        self._clock = clock
        self._subscriptions: set[Subscription] = set()
        self._cursor = 0
        self._held: dict[int, Event] = {}  # read past a gap, waiting for it to fill
        self._gap_since: float | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._unwatch: Callable[[], None] | None = None
        self._workflows: dict[str, str] = {}
        self._stale = True  # the cursor is not kept while nobody reads
        self._touched: set[str] = set()  # runs the bus said changed since the last read
        self._passes = 0
        self._reading = False
        self._passed = asyncio.Condition()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._unwatch = self.bus.watch(self._on_change)
        self._task = asyncio.create_task(self._run(), name="agentflow-feed")

    async def stop(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _on_change(self, run_id: str, remote: bool) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if remote:
            loop.call_soon_threadsafe(self._touch, run_id)
        else:
            self._touch(run_id)

    def _touch(self, run_id: str) -> None:
        self._touched.add(run_id)
        self._wake.set()

    # -- readers -----------------------------------------------------------------------------

    async def subscribe(
        self, match: Match | None = None, *, limit: int = 10_000, changes: bool = False
    ) -> Subscription:
        """A buffer of the matching events committed from now on (read older ones from the store).

        With `changes`, also `{"type": "changed", "run_id": …}` (no id) when a run changed without a
        new event (its trace was exported, another process cancelled it): a view redraws on these.
        """
        async with self._lock:  # not between a read and its delivery: no event falls between the two
            if self._stale:  # nobody was reading: start from what is committed now
                self._cursor = await asyncio.to_thread(self.store.last_event_id)
                self._held.clear()
                self._stale = False
            subscription = Subscription(self, match, limit, changes=changes)
            self._subscriptions.add(subscription)
        return subscription

    @property
    def cursor(self) -> int:
        """The id of the last event delivered to readers."""
        return self._cursor

    def workflow_of(self, event: Event) -> str | None:
        """The workflow of an event's run (events other than run_started do not carry it)."""
        run_id = event.get("run_id", "")
        if "workflow" in event and event.get("type") == "run_started":
            self._workflows[run_id] = event["workflow"]
        if run_id not in self._workflows:
            run = self.store.get_run(run_id)
            if run is None:
                return None
            self._workflows[run_id] = run.workflow
        return self._workflows[run_id]

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            timeout = self.gap_seconds / 4 if self._held else self.recheck_seconds
            await until_set(self._wake, timeout)
            self._wake.clear()
            self._reading = True
            if not self._subscriptions:
                self._stale = True  # no query per event while nobody reads
                self._touched.clear()
            else:
                if self.linger_seconds:
                    await asyncio.sleep(self.linger_seconds)
                try:
                    await self._read()
                except Exception:  # a failed read (database restarting) is retried at the next wake-up
                    log.exception("the live feed could not read new events; retrying")
            async with self._passed:
                self._reading = False
                self._passes += 1
                self._passed.notify_all()

    async def caught_up(self) -> None:
        """Until the feed has read the store once more (and delivered what it may) after this call."""
        async with self._passed:
            target = self._passes + (2 if self._reading else 1)  # a pass under way may have read too early
            self._wake.set()
            await self._passed.wait_for(lambda: self._passes >= target)

    async def _read(self) -> None:
        await self.store.flush()  # this process's events are queued before the bus wakes us
        touched, self._touched = self._touched, set()
        async with self._lock:
            for run_id in touched:
                for subscription in tuple(self._subscriptions):
                    if subscription.changes:
                        subscription.offer({"type": "changed", "run_id": run_id})
            after = self._cursor  # from the last delivered: a gap behind held events may have filled
            while True:
                rows = await asyncio.to_thread(self.store.events_after, after, limit=PAGE)
                for row in rows:
                    self._held[row["id"]] = row
                if len(rows) < PAGE:
                    break
                after = rows[-1]["id"]
            self._release()

    def _release(self) -> None:
        """Deliver held events in id order, up to a gap younger than `gap_seconds`."""
        while self._held:
            following = self._cursor + 1
            if following not in self._held:
                now = self._clock()
                if self._gap_since is None:
                    self._gap_since = now
                if now - self._gap_since < self.gap_seconds:
                    return
                following = min(self._held)  # the gap never filled: move past it
            self._gap_since = None
            event = self._held.pop(following)
            self._cursor = following
            if event.get("type") == "run_finished":
                self._workflows.pop(event.get("run_id", ""), None)
            for subscription in tuple(self._subscriptions):
                subscription.offer(event)


async def follow(
    feed: LiveFeed,
    *,
    after: int = 0,
    run_id: str | None = None,
    match: Match | None = None,
    until_finished: bool = False,
) -> AsyncIterator[Event]:
    """Stored events after `after`, then live ones, in order, none lost or repeated (see `batches`)."""
    async for batch in batches(feed, after=after, run_id=run_id, match=match, until_finished=until_finished):
        for event in batch:
            yield event


async def batches(
    feed: LiveFeed,
    *,
    after: int = 0,
    run_id: str | None = None,
    match: Match | None = None,
    until_finished: bool = False,
    idle: float | None = None,
    linger: float = 0.0,
) -> AsyncIterator[list[Event]]:
    """Stored events after `after`, then live ones, in order, none lost or repeated, as they come:
    a stream writes each batch at once rather than one event at a time.

    For one run (`run_id`) with `until_finished`, it ends after the run's `run_finished` event (at
    once when the run had already finished). A reader that falls behind the feed reads from the
    store again where it stopped. With `idle`, an empty batch comes after that many seconds without
    an event (a stream sends its keep-alive then). With `linger`, a live batch waits that long for
    more events, so a busy run makes fewer, larger writes to each reader.
    """
    store = feed.store

    def wanted(event: Event) -> bool:
        if run_id is not None and event.get("run_id") != run_id:
            return False
        return match is None or match(event)

    async def stored(since: int) -> list[Event]:
        if run_id is not None:
            return await asyncio.to_thread(store.events, run_id, after=since)
        found: list[Event] = []
        while True:
            page = await asyncio.to_thread(store.events_after, since, limit=PAGE)
            found.extend(page)
            if len(page) < PAGE:
                return found
            since = page[-1]["id"]

    def fresh(events: list[Event], last: int) -> tuple[list[Event], int, bool]:
        """The events after `last` a reader wants, up to the end of its run; the new last id; whether it ended."""
        kept: list[Event] = []
        for event in events:
            if event["id"] <= last:
                continue
            last = event["id"]
            if wanted(event):
                kept.append(event)
                if until_finished and event.get("type") == "run_finished":
                    return kept, last, True
        return kept, last, False

    subscription = await feed.subscribe(wanted)
    try:
        last = after
        finished = False
        while True:
            batch, last, ended = fresh(await stored(last), last)
            if batch:
                yield batch
            if ended or finished:
                return  # (finished: a run cancelled before it started ends without a run_finished event)
            if not until_finished or run_id is None:
                break
            run = await asyncio.to_thread(store.get_run, run_id)
            if run is None:
                return
            if run.status not in TERMINAL_STATUSES:
                break
            finished = True  # read once more: its last events may have committed after the read above
        while True:
            live = await subscription.next(idle)
            if not live and not subscription.lagged:
                yield []
                continue
            if linger:
                await asyncio.sleep(linger)
                live += await subscription.next(0)
            if subscription.take_lag():
                live = await stored(last)  # the dropped ones are in the store
            batch, last, ended = fresh(live, last)
            if batch:
                yield batch
            if ended:
                return
    finally:
        subscription.close()
