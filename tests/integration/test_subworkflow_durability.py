"""A parent SIGKILLed while its sub-workflow runs: on resume it finds that child and finishes it, never a second."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agentflow.engine.nodes.base import Attempt
from agentflow.engine.nodes.workflow import child_run_id
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import prompts, workflow
from tests.integration.test_durability import cli, cli_env, result

pytestmark = pytest.mark.slow

INNER = workflow(
    "inner",
    """
    inputs: {topic: string}
    nodes:
      a: {type: llm, prompt: "step a {{ inputs.topic }}"}
      b: {type: llm, prompt: "step b after {{ a }}", needs: [a]}
    outputs: {last: "{{ b }}"}
    """,
)

OUTER = workflow(
    "outer",
    """
    nodes:
      start: {type: llm, prompt: "step start"}
      child:
        type: workflow
        workflow: inner
        needs: [start]
        inputs: {topic: "{{ start }}"}
      finish: {type: llm, prompt: "step finish after {{ child.last }}", needs: [child]}
    outputs: {result: "{{ finish }}"}
    """,
)


def test_sigkill_while_the_child_runs_resumes_that_child(tmp_path: Path, fake_llm: FakeLLM) -> None:
    in_flight = threading.Event()
    blocked: list[str] = []
    armed: list[bool] = []  # the standalone run that stores the child workflow is not blocked

    def respond(body: dict[str, Any]) -> Text:
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("step b") and armed and not blocked:
            blocked.append(prompt)
            in_flight.set()
            return Text("never delivered", latency=60)  # the parent's process dies while its child waits here
        return Text(f"done({prompt.split()[1]})")

    fake_llm.responder = respond
    home = tmp_path / "data"
    (tmp_path / "inner.yaml").write_text(INNER)
    (tmp_path / "outer.yaml").write_text(OUTER)
    stored = cli(home, fake_llm, "run", str(tmp_path / "inner.yaml"), "-i", "topic=x", "--json")
    assert stored.returncode == 0, stored.stderr  # stores (and grants) the child workflow
    before = len(fake_llm.requests)
    armed.append(True)

    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow.cli", "run", str(tmp_path / "outer.yaml"), "--json"],
        env=cli_env(home, fake_llm),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert in_flight.wait(60), "the child never reached node b"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL

    flow = AgentFlow.open(Settings(home=home))
    [parent] = flow.store.list_runs(workflow="outer")
    [child] = [run for run in flow.store.list_runs(workflow="inner") if run.parent]
    assert (parent.status, child.status) == ("running", "running")  # nobody could record anything else
    assert child.id == child_run_id(parent.id, "child", Attempt())
    flow.close()

    resumed = cli(home, fake_llm, "resume", parent.id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    outcome = result(resumed)
    assert outcome["status"] == "succeeded"
    assert outcome["outputs"] == {"result": "done(finish)"}

    flow = AgentFlow.open(Settings(home=home))
    try:
        children = [run for run in flow.store.list_runs(workflow="inner") if run.parent]
        assert [(run.id, run.status) for run in children] == [(child.id, "succeeded")]  # no second child
        assert children[0].outputs == {"last": "done(b)"}
        assert flow.store.get_run(parent.id).status == "succeeded"  # type: ignore[union-attr]
    finally:
        flow.close()
    sent = [prompt.split()[1] for prompt in prompts(fake_llm.requests[before:])]
    # start and the child's a completed before the kill and never ran again; b was in flight and ran again.
    assert sent == ["start", "a", "b", "b", "finish"]
