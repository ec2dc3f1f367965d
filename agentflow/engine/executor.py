"""The executor: a persisted queue, bounded concurrency, recovery, cancel.

Queued runs live in the store, so they survive a restart. A run is executed
by whichever process claims it (an atomic status change); the owner
heartbeats, and a run left `running` by a dead owner (same host, pid gone) or
a silent one (lease expired) is taken over and resumed from its checkpoint.
An owner that finds at its heartbeat that a run was taken over stops it
without recording anything (the new owner records the run).

Embedded (`AGENTFLOW_EXECUTOR=local`), this process drains the queue itself;
with workers (`engine/workers.py`) the queue is Procrastinate's and this
class executes the runs a worker is handed. Waiting for a run's end is a
wait on the event bus (this process's events, and other processes' changes
through the store's change feed), never a poll of the store.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from agentflow.engine.events import TERMINAL_STATUSES, RunStatus
from agentflow.engine.inputs import prepare_inputs
from agentflow.engine.pins import check_pins
from agentflow.engine.runner import Engine
from agentflow.spec.models import MapNode, Workflow
from agentflow.store.base import RunRecord

LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 0.5
# A lost notification must not hang a waiter forever: it looks again after this long.
SAFETY_RECHECK_SECONDS = 5.0


def calls_models(workflow: Workflow) -> bool:
    """Whether a run of this workflow can spend money on models."""
    return any(
        node.type in ("llm", "agent") or (isinstance(node, MapNode) and node.node.type in ("llm", "agent"))
        for node in workflow.spec.nodes.values()
    )


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_gone(owner: str | None, heartbeat_at: float | None, *, now: float | None = None) -> bool:
    """True when the process that owned a running run can no longer be working on it."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return heartbeat_at is None or (now or time.time()) - heartbeat_at > LEASE_SECONDS


async def until_set(event: asyncio.Event, timeout: float) -> None:
    """Until `event` is set or `timeout` passes. Unlike `asyncio.wait_for` on Python 3.11, a cancel
    arriving as the event is set is never swallowed (that left `Executor.stop` waiting forever)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((waiter,), timeout=timeout)
    finally:
        waiter.cancel()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class Executor:
    def __init__(self, engine: Engine, *, concurrency: int = 8, heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.engine = engine
        self.store = engine.store
        self.owner = new_owner()
        self.heartbeat_seconds = heartbeat_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[RunStatus]] = {}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._unwatch: Callable[[], None] | None = None
        # Sub-workflows' runs are started and seen through by the executor that runs their parent.
        engine.services.runs = self

    # -- submitting -----------------------------------------------------------------

    def submit(
        self,
        name: str,
        version: str,
        inputs: dict[str, Any],
        *,
        trigger: str = "manual",
        overrides: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Validate inputs and queue a run durably; raises InputError or NeedsGrantError before anything is recorded.

        `overrides`: a replay's start, pinned outputs or chosen variants (RunRecord.overrides)."""
        run = self.prepare(name, version, inputs, trigger=trigger)
        check_pins(self.engine.compiled(name, version).workflow, overrides)  # a PinError is an InputError
        run.overrides = overrides or None
        self.store.create_run(run)
        self.wake()
        return run

    def prepare(
        self,
        name: str,
        version: str,
        inputs: dict[str, Any],
        *,
        trigger: str = "manual",
        reply_to: dict[str, Any] | None = None,
    ) -> RunRecord:
        """The run `submit` would queue, checked but not recorded (triggers record it with their key)."""
        compiled = self.engine.compiled(name, version)
        workflow = compiled.workflow
        # A version beyond its workflow's grant never runs, from anywhere: nothing is recorded.
        self.engine.services.grants.require(workflow, version)
        ledger = self.engine.services.ledger
        if ledger is not None and calls_models(workflow):
            # A spent daily budget refuses the run before anything is recorded.
            ledger.check(workflow.name, workflow.spec.budget.daily_usd)
        return RunRecord(
            id=uuid.uuid4().hex,
            workflow=name,
            version=version,
            trigger=trigger,
            inputs=prepare_inputs(workflow, inputs),
            created_at=time.time(),
            reply_to=reply_to,
        )

    def wake(self) -> None:
        """Look at the queue now rather than at the next poll; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    # -- running ----------------------------------------------------------------------

    async def run(self, run_id: str, *, statuses: tuple[str, ...] = ("queued",)) -> RunStatus | None:
        """Claim a run and execute it here; None when another process has it."""
        before = await asyncio.to_thread(self.store.get_run, run_id)
        if not await asyncio.to_thread(self.store.claim_run, run_id, self.owner, statuses=statuses):
            return None
        return await self._execute(run_id, fresh=before is not None and before.started_at is None)

    async def take_over(self, run_id: str, *, force: bool = False) -> RunStatus | None:
        """Resume a run whose owner died, from its last checkpoint.

        `force`: the queue already established that the owner is gone (its worker stopped heartbeating).
        """
        run = await asyncio.to_thread(self.store.get_run, run_id)
        if run is None or run.status != "running" or run.owner == self.owner:
            return None
        if not force and not owner_is_gone(run.owner, run.heartbeat_at):
            return None
        if not await asyncio.to_thread(self.store.take_over_run, run_id, self.owner, previous_owner=run.owner):
            return None
        return await self._execute(run_id)

    async def run_child(self, run_id: str, *, parent_id: str) -> RunRecord:
        """See a sub-workflow's run to its end for the `workflow` node of run `parent_id`; its final record.

        Here, the child runs in this process when it can be claimed (queued) or taken over (its owner died
        with the parent): it shares the parent's slot, so nesting cannot exhaust the slots. Otherwise (a
        worker has it, it waits for an approval) this waits for its end. Cancelling the parent cancels it;
        a parent taken over by another process leaves it to that process.
        """
        distributed = self.engine.services.settings.distributed
        run = await asyncio.to_thread(self.store.get_run, run_id)
        if run is None:
            raise LookupError(f"sub-workflow run {run_id} is not in the store")
        mine = False
        if not distributed and run.status == "queued":
            mine = await asyncio.to_thread(self.store.claim_run, run_id, self.owner, statuses=("queued",))
        elif not distributed and run.status == "running" and owner_is_gone(run.owner, run.heartbeat_at):
            mine = await asyncio.to_thread(self.store.take_over_run, run_id, self.owner, previous_owner=run.owner)
        if mine:
            child = asyncio.create_task(self._execute(run_id, fresh=run.started_at is None, slot=False))
            try:
                await asyncio.shield(child)
            except asyncio.CancelledError:
                if parent_id in self.engine.abandoned:
                    self.abandon(run_id)
                else:
                    child.cancel()
                await asyncio.gather(child, return_exceptions=True)
                raise
        return await self.wait_for(run_id)

    async def _execute(self, run_id: str, *, fresh: bool = False, slot: bool = True) -> RunStatus:
        run = await asyncio.to_thread(self.store.get_run, run_id)
        assert run is not None
        decision = None
        approval = await asyncio.to_thread(self.store.decided_approval, run_id)
        if approval is not None:
            decision = {
                "approved": approval.status == "approved",
                "comment": approval.comment,
                "message": approval.message,
            }
        task = asyncio.current_task()
        assert task is not None
        self._tasks[run_id] = task
        try:
            if not slot:
                return await self.engine.execute(run, decision=decision, fresh=fresh)
            async with self._slots:
                return await self.engine.execute(run, decision=decision, fresh=fresh)
        finally:
            self._tasks.pop(run_id, None)

    def cancel_local(self, run_id: str) -> bool:
        task = self._tasks.get(run_id)
        if task is None:
            return False
        task.cancel()
        return True

    def abandon(self, run_id: str) -> None:
        """Stop a run another process took over, recording nothing: it is theirs now."""
        if run_id in self._tasks:
            self.engine.abandoned.add(run_id)
            self.cancel_local(run_id)

    # -- the background loops ---------------------------------------------------------

    async def start(self, *, drain: bool = True) -> None:
        """Heartbeats and cancel requests for our runs; with `drain`, also recover orphans and run the queue.

        With workers (AGENTFLOW_EXECUTOR=workers) the queue is theirs: this process never drains it.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._unwatch = self.engine.bus.watch(self._on_change)
        self._loops = [asyncio.create_task(self._watch(), name="agentflow-watch")]
        if drain and not self.engine.services.settings.distributed:
            self._loops.append(asyncio.create_task(self._drain(), name="agentflow-queue"))

    def _on_change(self, run_id: str, remote: bool) -> None:
        # Another process changing a run we hold may be a cancel request: look now.
        loop = self._loop
        if remote and run_id in self._tasks and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed.set)

    async def stop(self) -> None:
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        for loop in self._loops:
            loop.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        pending = [*self._loops, *self._tasks.values()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._loops = []
        await self.store.flush()

    async def _drain(self) -> None:
        background: set[asyncio.Task[Any]] = set()
        orphans_checked = -POLL_SECONDS
        while True:
            # Orphans (runs whose process died) at each poll, not at each wake-up: a burst of submits
            # wakes this loop for every run, and the running runs are many then.
            if time.monotonic() - orphans_checked >= POLL_SECONDS:
                orphans_checked = time.monotonic()
                for run in await asyncio.to_thread(self.store.list_runs, statuses=("running",), limit=1000):
                    if run.id not in self._tasks and owner_is_gone(run.owner, run.heartbeat_at):
                        self._spawn(background, self.take_over(run.id))
            queued = await asyncio.to_thread(self.store.list_runs, statuses=("queued",), limit=100)
            for run in sorted(queued, key=lambda record: record.created_at):
                if run.id not in self._tasks:
                    self._spawn(background, self.run(run.id))
            self._wake.clear()
            await until_set(self._wake, POLL_SECONDS)

    def _spawn(self, background: set[asyncio.Task[Any]], work: Any) -> None:
        task = asyncio.create_task(work)
        background.add(task)
        task.add_done_callback(background.discard)

    async def _watch(self) -> None:
        """Cancel requests from other processes, and heartbeats for the runs we hold."""
        last_beat = 0.0
        while True:
            if self._tasks:
                for run_id in await asyncio.to_thread(self.store.cancel_requests, self.owner):
                    self.cancel_local(run_id)
                if time.monotonic() - last_beat > self.heartbeat_seconds:
                    for run_id in await asyncio.to_thread(self.store.heartbeat, list(self._tasks), self.owner):
                        self.abandon(run_id)
                    last_beat = time.monotonic()
            self._changed.clear()
            await until_set(self._changed, POLL_SECONDS)

    async def wait_for(self, run_id: str, *, statuses: frozenset[str] = TERMINAL_STATUSES) -> RunRecord:
        """Wait until a run reaches one of `statuses`, wherever it runs: woken by the event bus."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def on_change(changed_id: str, remote: bool) -> None:
            if changed_id != run_id or loop.is_closed():
                return
            if not remote and _on_loop(loop):
                changed.set()  # this process's own events, emitted on this loop: no wake-up needed
            else:
                loop.call_soon_threadsafe(changed.set)

        unwatch = self.engine.bus.watch(on_change)
        try:
            while True:
                changed.clear()
                await self.store.flush()  # this process's events are queued before they are committed
                run = await asyncio.to_thread(self.store.get_run, run_id)
                if run is not None and run.status in statuses:
                    return run
                await until_set(changed, SAFETY_RECHECK_SECONDS)
        finally:
            unwatch()
