"""Runs survive SIGKILL, restarts and other processes: real subprocesses, one SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import prompts, workflow

pytestmark = pytest.mark.slow


def cli(home: Path, fake: FakeLLM, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow.cli", *args],
        env=cli_env(home, fake),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(home: Path, fake: FakeLLM) -> dict[str, str]:
    return {
        **os.environ,
        "AGENTFLOW_HOME": str(home),
        "AGENTFLOW_MODEL": "openai/test-model",
        "AGENTFLOW_API_BASE": fake.base_url,
        "AGENTFLOW_API_KEY": "test-key",
        "AGENTFLOW_LLM_RETRIES": "0",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


def result(completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert completed.stdout.strip(), completed.stderr
    return json.loads(completed.stdout)


CHAIN = workflow(
    "chain",
    """
    nodes:
      a: {type: llm, prompt: step a}
      b: {type: llm, prompt: "step b after {{ a }}", needs: [a]}
      c: {type: llm, prompt: "step c after {{ b }}", needs: [b]}
    outputs: {last: "{{ c }}"}
    """,
)


def test_sigkill_mid_run_then_resume_reruns_nothing_that_completed(tmp_path: Path, fake_llm: FakeLLM) -> None:
    in_flight = threading.Event()
    seen_b = []

    def respond(body: dict[str, Any]) -> Text:
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("step b") and not seen_b:
            seen_b.append(prompt)
            in_flight.set()
            return Text("never delivered", latency=60)  # the process dies while waiting for this
        return Text(f"done({prompt.split()[1]})")

    fake_llm.responder = respond
    path = tmp_path / "chain.yaml"
    path.write_text(CHAIN)
    home = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow.cli", "run", str(path), "--json"],
        env=cli_env(home, fake_llm),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert in_flight.wait(60), "the run never reached node b"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL

    flow = AgentFlow.open(Settings(home=home))
    [run] = flow.store.list_runs()
    assert run.status == "running"  # the dead process could not record anything else
    flow.close()

    resumed = cli(home, fake_llm, "resume", run.id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    outcome = result(resumed)
    assert outcome["status"] == "succeeded"
    assert outcome["outputs"] == {"last": "done(c)"}
    sent = [prompt.split()[1] for prompt in prompts(fake_llm.requests)]
    # a completed before the kill and never ran again; b was in flight and ran again.
    assert sent == ["a", "b", "b", "c"]


def test_approval_in_a_separate_process_continues_the_run(tmp_path: Path, fake_llm: FakeLLM) -> None:
    fake_llm.responder = lambda body: Text("shipped: " + body["messages"][-1]["content"])
    path = tmp_path / "gate.yaml"
    path.write_text(
        workflow(
            "gate",
            """
            inputs: {item: string}
            nodes:
              prep: {type: transform, expr: "inputs.item"}
              gate: {type: approval, needs: [prep], message: "Ship {{ prep }}?"}
              ship: {type: llm, needs: [gate], prompt: "{{ prep }} ({{ gate.comment }})"}
            outputs: {result: "{{ ship }}"}
            """,
        )
    )
    home = tmp_path / "data"
    first = cli(home, fake_llm, "run", str(path), "-i", "item=parcel", "--json")
    assert first.returncode == 3, first.stderr
    waiting = result(first)
    assert waiting["status"] == "waiting_approval"
    assert fake_llm.count() == 0

    human = cli(home, fake_llm, "runs", "show", waiting["run_id"][:8])
    assert "Ship parcel?" in human.stdout and f"agentflow approve {waiting['run_id']}" in human.stdout

    approved = cli(home, fake_llm, "approve", waiting["run_id"], "--comment", "go", "--json")
    assert approved.returncode == 0, approved.stderr
    done = result(approved)
    assert done["status"] == "succeeded"
    assert done["outputs"] == {"result": "shipped: parcel (go)"}

    again = cli(home, fake_llm, "approve", waiting["run_id"])
    assert again.returncode == 2
    assert "no pending approval" in again.stderr
    assert fake_llm.count() == 1  # one approval, exactly one continuation


def test_rejection_ends_the_run(tmp_path: Path, fake_llm: FakeLLM) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text(
        workflow(
            "gate",
            """
            nodes:
              gate: {type: approval, message: "Deploy?"}
              deploy: {type: llm, needs: [gate], prompt: deploy}
            """,
        )
    )
    home = tmp_path / "data"
    waiting = result(cli(home, fake_llm, "run", str(path), "--json"))
    rejected = cli(home, fake_llm, "approve", waiting["run_id"], "--reject", "--comment", "not today", "--json")
    assert rejected.returncode == 5
    outcome = result(rejected)
    assert outcome["status"] == "rejected"
    assert "not today" in outcome["error"]
    assert fake_llm.count() == 0


async def test_queued_runs_survive_a_restart(home: Path, fake_llm: FakeLLM) -> None:
    settings = Settings(home=home, model="openai/test-model", api_base=fake_llm.base_url, api_key="k", llm_retries=0)
    first = AgentFlow.open(settings)
    version = first.save_workflow(CHAIN)
    queued = first.submit(version, {})
    first.close()

    second = AgentFlow.open(settings)
    await second.executor.start()
    try:
        finished = await second.executor.wait_for(queued.id)
    finally:
        await second.executor.stop()
        second.close()
    assert finished.status == "succeeded"
    assert fake_llm.count() == 3


async def test_a_run_left_running_by_a_dead_process_is_taken_over(home: Path, fake_llm: FakeLLM) -> None:
    settings = Settings(home=home, model="openai/test-model", api_base=fake_llm.base_url, api_key="k", llm_retries=0)
    flow = AgentFlow.open(settings)
    version = flow.save_workflow(CHAIN)
    run = flow.submit(version, {})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    assert flow.store.claim_run(run.id, f"{socket.gethostname()}:{dead.stdout.strip()}:gone", statuses=("queued",))
    await flow.executor.start()
    try:
        finished = await flow.executor.wait_for(run.id)
    finally:
        await flow.executor.stop()
        flow.close()
    assert finished.status == "succeeded"


async def test_cancel_from_the_store_stops_a_running_run(flow: AgentFlow, fake_llm: FakeLLM) -> None:
    in_flight = threading.Event()

    def respond(body: dict[str, Any]) -> Text:
        in_flight.set()
        return Text("slow", latency=30)

    fake_llm.responder = respond
    version = flow.save_workflow(CHAIN)
    run = flow.submit(version, {})
    await flow.executor.start()
    try:
        import asyncio

        assert await asyncio.to_thread(in_flight.wait, 30)
        assert flow.store.request_cancel(run.id)
        finished = await flow.executor.wait_for(run.id)
    finally:
        await flow.executor.stop()
    assert finished.status == "cancelled"
    assert fake_llm.count() == 1


def test_cancel_from_another_process_stops_a_foreground_run(tmp_path: Path, fake_llm: FakeLLM) -> None:
    in_flight = threading.Event()

    def respond(body: dict[str, Any]) -> Text:
        in_flight.set()
        return Text("too late", latency=60)

    fake_llm.responder = respond
    path = tmp_path / "chain.yaml"
    path.write_text(CHAIN)
    home = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow.cli", "run", str(path), "--json"],
        env=cli_env(home, fake_llm),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert in_flight.wait(60), "the run never called the model"
        flow = AgentFlow.open(Settings(home=home))
        [run] = flow.store.list_runs()
        flow.close()
        cancelled = cli(home, fake_llm, "cancel", run.id)
        assert cancelled.returncode == 0, cancelled.stderr
        stdout, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 5
    assert json.loads(stdout)["status"] == "cancelled"
