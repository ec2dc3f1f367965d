"""Workers on Postgres: real `agentflow worker` processes taking runs from the Procrastinate queue.

The test process plays the app: it records runs (queued in the same
transaction), decides approvals and requests cancels, and executes nothing
itself (AGENTFLOW_EXECUTOR=workers). It learns of the workers' progress
through the store's change feed (LISTEN/NOTIFY), never by polling runs.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.store.base import RunRecord, WorkflowVersion
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import PERSON, workflow

pytestmark = pytest.mark.slow

CHAIN = workflow(
    "chain3",
    """
    inputs: {tag: {type: string}}
    nodes:
      a: {type: llm, prompt: "a {{ inputs.tag }}"}
      b: {type: llm, prompt: "b {{ inputs.tag }} after {{ a }}", needs: [a]}
      c: {type: llm, prompt: "c {{ inputs.tag }} after {{ b }}", needs: [b]}
    outputs: {last: "{{ c }}"}
    """,
)
GATE = workflow(
    "gate",
    """
    nodes:
      ask: {type: approval, message: "Ship it?"}
      ship: {type: llm, prompt: "ship", needs: [ask]}
    outputs: {shipped: "{{ ship }}"}
    """,
)
RUN_TIMEOUT = 120.0


class Workers:
    """`agentflow worker` processes on one database; stopped (and their logs kept) at the end."""

    def __init__(self, url: str, home: Path, fake: FakeLLM) -> None:
        self.url = url
        self.env = {
            **os.environ,
            "AGENTFLOW_HOME": str(home),
            "AGENTFLOW_DATABASE_URL": url,
            "AGENTFLOW_EXECUTOR": "workers",
            "AGENTFLOW_WORKER_HEARTBEAT": "1",
            "AGENTFLOW_MAX_CONCURRENT_RUNS": "4",
            "AGENTFLOW_TRACING": "0",
            "AGENTFLOW_MODEL": "openai/test-model",
            "AGENTFLOW_API_BASE": fake.base_url,
            "AGENTFLOW_API_KEY": "test-key",
            "AGENTFLOW_LLM_RETRIES": "2",  # a dropped keep-alive connection is retried, as in production
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        self.processes: list[subprocess.Popen[str]] = []
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, count: int) -> None:
        for _ in range(count):
            log = (self.logs / f"worker-{len(self.processes)}.log").open("w")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "agentflow.cli", "worker"],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        self.wait_until_registered(len(self.processes))

    def registered(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT COUNT(*) FROM procrastinate_workers").fetchone()
        return int(row[0]) if row else 0

    def wait_until_registered(self, count: int) -> None:
        """Until `count` workers have registered with the queue (an observable state), or one died."""
        done = threading.Event()
        while self.registered() < count:
            dead = [p for p in self.processes if p.poll() is not None and p.returncode != -signal.SIGKILL]
            assert not dead, f"a worker exited: {self.output()}"
            done.wait(0.1)

    def by_owner(self, owner: str) -> subprocess.Popen[str]:
        pid = int(owner.split(":")[1])
        [process] = [p for p in self.processes if p.pid == pid]
        return process

    def output(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(self.logs.iterdir()))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@pytest.fixture
def app(postgres_url: str, tmp_path: Path, fake_llm: FakeLLM) -> Iterator[AgentFlow]:
    """The app's side: records runs for the workers, runs none itself."""
    settings = Settings(
        home=tmp_path / "app",
        model="openai/test-model",
        api_base=fake_llm.base_url,
        api_key="test-key",
        llm_retries=0,
        database_url=postgres_url,
        executor="workers",
    )
    flow = AgentFlow.open(settings)
    yield flow
    flow.close()


@pytest.fixture
def workers(postgres_url: str, tmp_path: Path, fake_llm: FakeLLM) -> Iterator[Workers]:
    group = Workers(postgres_url, tmp_path / "workers", fake_llm)
    yield group
    group.stop()


def saved(flow: AgentFlow, source: str) -> WorkflowVersion:
    version = flow.save_workflow(source)
    flow.grant_version(version, by=PERSON)
    return version


async def settled(flow: AgentFlow, run_ids: list[str], workers: Workers) -> list[RunRecord]:
    async def one(run_id: str) -> RunRecord:
        return await flow.executor.wait_for(run_id)

    try:
        return await asyncio.wait_for(asyncio.gather(*(one(run_id) for run_id in run_ids)), RUN_TIMEOUT)
    except TimeoutError:
        statuses = collections.Counter(run.status for run in flow.store.list_runs(limit=1000))
        raise AssertionError(f"runs did not finish: {dict(statuses)}\n{workers.output()}") from None


async def test_three_workers_fifty_runs_one_killed_mid_run(app: AgentFlow, workers: Workers, fake_llm: FakeLLM) -> None:
    blocked = threading.Event()
    calls: collections.Counter[tuple[str, str]] = collections.Counter()
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Text:
        node, tag = body["messages"][-1]["content"].split()[:2]
        with lock:
            calls[(tag, node)] += 1
            first_b_of_r0 = (tag, node) == ("r0", "b") and calls[(tag, node)] == 1
        if first_b_of_r0:
            blocked.set()
            return Text("never delivered", latency=60)  # its worker dies while waiting for this
        return Text(f"{node}-{tag}")

    fake_llm.responder = respond
    version = saved(app, CHAIN)
    workers.start(3)
    runs = [app.submit(version, {"tag": f"r{index}"}) for index in range(50)]
    tags = {run.id: f"r{index}" for index, run in enumerate(runs)}

    assert await asyncio.to_thread(blocked.wait, RUN_TIMEOUT), f"r0 never reached b\n{workers.output()}"
    holder = app.store.get_run(runs[0].id)
    assert holder is not None and holder.status == "running" and holder.owner
    victim = workers.by_owner(holder.owner)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)

    finished = await settled(app, [run.id for run in runs], workers)

    assert [run.status for run in finished] == ["succeeded"] * 50, workers.output()
    assert all(run.outputs == {"last": f"c-{tags[run.id]}"} for run in finished)
    resumed = {
        run.id
        for run in finished
        if any(event["type"] == "run_started" and event["resumed"] for event in app.store.events(run.id))
    }
    assert runs[0].id in resumed  # the killed worker's run went on elsewhere
    assert all(run.executed_by and run.executed_by != holder.owner for run in finished if run.id in resumed)
    for run in finished:
        tag = tags[run.id]
        counts = [calls[(tag, node)] for node in ("a", "b", "c")]
        if run.id == runs[0].id:
            assert counts == [1, 2, 1]  # a had completed: never called again; b was in flight
        elif run.id in resumed:
            assert sum(counts) <= 4 and max(counts) <= 2, (tag, counts)  # at most its in-flight call again
        else:
            assert counts == [1, 1, 1], (tag, counts)  # executed once, by one worker
    # No run was executed by two workers at once: each ran at most twice (once more after the kill).
    starts = collections.Counter(
        run.id for run in finished for event in app.store.events(run.id) if event["type"] == "run_started"
    )
    assert max(starts.values()) <= 2 and {run_id for run_id, n in starts.items() if n == 2} == resumed


async def test_cancel_and_approve_reach_the_worker_that_has_the_run(
    app: AgentFlow, workers: Workers, fake_llm: FakeLLM
) -> None:
    stuck = threading.Event()

    def respond(body: dict[str, Any]) -> Text:
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("a stuck"):
            stuck.set()
            return Text("never delivered", latency=60)
        return Text("shipped" if prompt == "ship" else prompt)

    fake_llm.responder = respond
    workers.start(2)
    chain, gate = saved(app, CHAIN), saved(app, GATE)

    doomed = app.submit(chain, {"tag": "stuck"})
    assert await asyncio.to_thread(stuck.wait, RUN_TIMEOUT), workers.output()
    assert app.store.request_cancel(doomed.id)  # from this process; the run is on a worker
    [cancelled] = await settled(app, [doomed.id], workers)
    assert (cancelled.status, cancelled.error) == ("cancelled", "cancelled by request")

    waiting = app.submit(gate, {})
    [paused] = await asyncio.wait_for(
        asyncio.gather(app.executor.wait_for(waiting.id, statuses=frozenset({"waiting_approval"}))), RUN_TIMEOUT
    )
    assert paused.status == "waiting_approval" and paused.owner is None
    decided = app.store.decide_approval(waiting.id, approved=True, comment="go")
    assert decided is not None and decided.status == "approved"
    [done] = await settled(app, [waiting.id], workers)
    assert (done.status, done.outputs) == ("succeeded", {"shipped": "shipped"}), workers.output()
    assert done.executed_by and int(done.executed_by.split(":")[1]) in {p.pid for p in workers.processes}
