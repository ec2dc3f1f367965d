"""The registry end to end, across real processes on loopback: two `agentflow agent serve` processes (B
and C, the same workflow, so the same skill) enrol with the orchestrator A using one-time tokens and
heartbeat; A's workflow calls the skill through a `remote` node; B is SIGKILLed: the next run falls back
to C at once, and A shows B stale after one TTL, then offline after three — and still runs on C.

A is the whole app served by uvicorn in this process (tests/e2e/server.py), with a 3 s TTL.
"""

from __future__ import annotations

import json
import re
import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow.settings import Settings
from tests.e2e.server import serve
from tests.integration.test_a2a_agent_process import agent_process, wait_for

pytestmark = pytest.mark.slow

TTL_S = 3.0
GREET_REMOTELY = """\
apiVersion: agentflow/v1
kind: Workflow
metadata: {name: greet-remotely, description: Greet through whichever agent has the skill}
spec:
  inputs: {who: string}
  nodes:
    greet: {type: remote, skill: hello, input: "{{ inputs.who }}", timeout: 30s}
  outputs: {reply: "{{ greet }}"}
"""
_REGISTERED = re.compile(r"as agent (agt_[0-9a-f]+)")


def run(api: httpx.Client, who: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the workflow on A until it ends; (the run, its remote_update events)."""
    started = api.post("/api/runs", json={"workflow": "greet-remotely", "inputs": {"who": who}})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    done = wait_for(
        lambda: (found := api.get(f"/api/runs/{run_id}").json())["status"] not in ("queued", "running") and found
    )
    logged = api.get(f"/api/runs/{run_id}/events").json()["events"]
    events = [event for event in logged if event["type"] == "remote_update"]
    return done, events


def state_of(api: httpx.Client, agent_id: str) -> str:
    [found] = [agent for agent in api.get("/api/agents").json() if agent["id"] == agent_id]
    state: str = found["state"]
    return state


def test_agents_enrol_serve_a_remote_node_expire_when_killed_and_the_node_falls_back(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "a", tracing=False, egress_allow_internal=("127.0.0.1",), agent_ttl_s=TTL_S)
    with (
        serve(settings, ui=False) as orchestrator,
        httpx.Client(base_url=orchestrator, timeout=30) as api,
        ExitStack() as agents,
    ):
        processes = {}
        for name in ("b", "c"):
            token = api.post("/api/agents/tokens", json={"note": name}).json()["token"]
            url, process, log = agents.enter_context(
                agent_process(tmp_path / name, "--register", orchestrator, "--token", token)
            )
            found = wait_for(lambda log=log: next((m for line in log if (m := _REGISTERED.search(line))), None))
            processes[found.group(1)] = (url, process)
        assert wait_for(lambda: sorted(a["state"] for a in api.get("/api/agents").json()) == ["healthy", "healthy"])
        assert api.post("/api/workflows", json={"source": GREET_REMOTELY}).status_code == 201

        # A calls the skill: the first healthy agent answers.
        first, events = run(api, "Ada")
        assert first["status"] == "succeeded", first.get("error")
        assert "Hello, Ada!" in json.dumps(first["outputs"])
        [answered] = {event["agent_id"] for event in events if event["state"] == "completed"}
        other = next(agent_id for agent_id in processes if agent_id != answered)

        # SIGKILL the agent that answered: no goodbye, it just stops heartbeating.
        _, killed = processes[answered]
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        fallback, events = run(api, "Grace")
        assert fallback["status"] == "succeeded", fallback.get("error")
        assert "Hello, Grace!" in json.dumps(fallback["outputs"])
        assert {event["agent_id"] for event in events if event["state"] == "completed"} == {other}

        # A sees it go stale after one TTL without a heartbeat, then offline after three.
        assert wait_for(lambda: state_of(api, answered) == "stale", deadline_s=4 * TTL_S)
        assert wait_for(lambda: state_of(api, answered) == "offline", deadline_s=6 * TTL_S)
        assert state_of(api, other) == "healthy"  # C kept heartbeating all along

        # Healthy agents come first: C answers, and the offline agent is not even tried.
        last, events = run(api, "Linus")
        assert last["status"] == "succeeded", last.get("error")
        assert {event["agent_id"] for event in events} == {other}
