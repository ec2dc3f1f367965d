"""`agentflow worker` on Postgres: runs taken from the Procrastinate queue, on any number of hosts.

The store enqueues a job `agentflow.run` (lock = the run id) in the same
transaction that records a queued run or a decided approval. A worker:

- takes jobs from the `runs` queue (LISTEN/NOTIFY wakes it; no polling
  delay), at most AGENTFLOW_MAX_CONCURRENT_RUNS at a time;
- claims the run in the store before executing it (an atomic status change),
  so a duplicate delivery (Procrastinate is at-least-once) executes nothing;
- heartbeats to Procrastinate and, for its runs, to the store; it stops a
  run it no longer owns (another worker took it over);
- recovers from dead workers: a job whose worker has not heartbeated for
  3 x AGENTFLOW_WORKER_HEARTBEAT is retried, and the worker that takes it
  resumes the run from its last checkpoint (completed nodes never run again);
- stops a run when a cancel is requested anywhere (the request is in the
  store and NOTIFYed; the owner's watch loop sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.store.postgres import QUEUE, RUN_TASK

if TYPE_CHECKING:
    import procrastinate

    from agentflow.runtime import AgentFlow

log = logging.getLogger("agentflow.worker")


def queue_app(url: str) -> procrastinate.App:
    """The Procrastinate app over the store's database (its schema is migration q001_queue)."""
    import procrastinate

    connector = procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=4)
    return procrastinate.App(connector=connector)


class Worker:
    def __init__(self, flow: AgentFlow, *, concurrency: int | None = None) -> None:
        assert flow.settings.database_url is not None, "workers need AGENTFLOW_DATABASE_URL"
        self.flow = flow
        self.executor = flow.executor
        self.heartbeat = flow.settings.worker_heartbeat_s
        self.concurrency = concurrency or flow.settings.max_concurrent_runs
        self.app = queue_app(flow.settings.database_url)
        self.executed: list[str] = []  # run ids this worker executed (for tests and the log)
        self.app.task(name=RUN_TASK, queue=QUEUE, pass_context=True)(self._job)

    async def _job(self, context: Any, run_id: str) -> None:
        """One delivery of a run: execute it if it is ours to execute, else nothing."""
        store = self.flow.store
        run = await asyncio.to_thread(store.get_run, run_id)
        if run is None or run.status in TERMINAL_STATUSES or run.status == "waiting_approval":
            return  # cancelled while queued, a duplicate delivery, or waiting for a person
        retried = context.job.attempts > 0
        if run.status == "queued":
            work = self.executor.run(run_id)
        elif run.status == "running" and retried:
            # Procrastinate retried the job because the worker holding it went silent: resume here.
            work = self.executor.take_over(run_id, force=True)
        else:
            return  # running on a live worker: a duplicate delivery
        # The run gets a task of its own: a cancel request cancels it, not Procrastinate's job task
        # (which Procrastinate reads as the worker shutting down).
        task = asyncio.create_task(work, name=f"agentflow-run:{run_id}")
        try:
            status = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()  # the worker is stopping: the run stops too, and resumes on another worker
            raise
        if status is not None:
            self.executed.append(run_id)
            log.info("run %s: %s", run_id, status)

    async def _recover(self) -> None:
        """Retry the jobs of workers that stopped heartbeating (a SIGKILL, a lost host)."""
        manager = self.app.job_manager
        silent = 3 * self.heartbeat
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                for job in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=silent):
                    with contextlib.suppress(Exception):  # another worker retried it first
                        await manager.retry_job(job)
                        log.warning("job %s (run %s) was on a silent worker: retried", job.id, job.task_kwargs)
                await manager.prune_stalled_workers(seconds_since_heartbeat=silent)
            except Exception as exc:  # the database restarting must not end the worker
                log.warning("recovery check failed: %s", exc)

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Work until cancelled (Ctrl-C, SIGTERM)."""
        # Import the model client before taking jobs: importing it blocks the loop for seconds,
        # which would stop the heartbeats, and other workers would take this one for dead.
        from agentflow.llm.client import _litellm

        await asyncio.to_thread(_litellm)
        await self.executor.start(drain=False)
        recover = asyncio.create_task(self._recover(), name="agentflow-recover")
        try:
            async with self.app.open_async():
                worker = asyncio.create_task(
                    self.app.run_worker_async(
                        queues=[QUEUE],
                        concurrency=self.concurrency,
                        update_heartbeat_interval=self.heartbeat,
                        stalled_worker_timeout=3 * self.heartbeat,
                        delete_jobs="successful",
                        install_signal_handlers=False,
                        name=self.executor.owner,
                    ),
                    name="agentflow-worker",
                )
                if ready is not None:
                    ready.set()
                await worker
        finally:
            recover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recover
            await self.executor.stop()
