"""`remote` nodes against real A2A agents (tests/fakes/a2a_agent.py on loopback) in the real registry.

Agents are added the way an operator adds them (`Registry.add_url`: the card fetched over HTTP); an
agent's state is set by its `last_seen` in the store, the timestamp states follow from.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agentflow.registry import Agent, Registry
from agentflow.runtime import AgentFlow
from agentflow.store.base import AgentRecord
from agentflow.trust.grants import NeedsGrantError
from agentflow.web.ui.console import render
from tests.conftest import fake_settings
from tests.fakes.a2a_agent import FakeAgent, fake_agent
from tests.fakes.openai_server import FakeLLM
from tests.integration.helpers import PERSON, node_statuses, run_source, workflow

BY_NAME = workflow(
    "ask-by-name",
    """
    inputs: {who: string}
    nodes:
      ask:
        type: remote
        agent: fake-agent
        input: "hello {{ inputs.who }}"
        data: {who: "{{ inputs.who }}", n: 2}
    outputs: {reply: "{{ ask }}"}
    """,
)


def by_skill(text: str, *, fallback: bool = True, extra: str = "") -> str:
    return workflow(
        "ask-by-skill",
        f"""
        nodes:
          ask: {{type: remote, skill: echo, input: "{text}", fallback: {str(fallback).lower()}{extra}}}
        """,
    )


@pytest.fixture(scope="module")
def first() -> Iterator[FakeAgent]:
    with fake_agent(streaming=True) as agent:
        yield agent


@pytest.fixture(scope="module")
def second() -> Iterator[FakeAgent]:
    with fake_agent(streaming=False) as agent:
        yield agent


def registry_of(flow: AgentFlow) -> Registry:
    registry = flow.engine.services.registry
    assert registry is not None
    return registry


async def add(flow: AgentFlow, url: str, *, latency_ms: float | None = None, age_s: float = 0.0) -> Agent:
    """Register the agent at `url` by URL; `latency_ms` orders it among its peers, `age_s` ages its last contact."""
    registry = registry_of(flow)
    agent = await registry.add_url(url)
    record = registry.store.get_agent(agent.id)
    assert record is not None
    registry.store.save_agent(
        replace(
            record,
            latency_ms=record.latency_ms if latency_ms is None else latency_ms,
            last_seen=time.time() - age_s,
        )
    )
    found = registry.get(agent.id)
    assert found is not None
    return found


def as_unreachable(flow: AgentFlow, agent: Agent, url: str, *, latency_ms: float = 0.1) -> Agent:
    """A healthy registration of `agent`'s card whose endpoint is `url` (a closed port, a silent socket)."""
    registry = registry_of(flow)
    record = registry.store.get_agent(agent.id)
    assert record is not None
    registry.store.save_agent(
        replace(record, id=agent.id + "x", url=url, card_url=url, latency_ms=latency_ms, last_seen=time.time())
    )
    found = registry.get(agent.id + "x")
    assert found is not None and found.state == "healthy"
    return found


def closed_port() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


def events(flow: AgentFlow, run_id: str, kind: str) -> list[dict[str, object]]:
    return [event for event in flow.store.events(run_id) if event["type"] == kind]


async def test_an_agent_called_by_name_answers_with_its_data(flow: AgentFlow, first: FakeAgent) -> None:
    agent = await add(flow, first.url)
    before = len(first.seen)
    run = await run_source(flow, BY_NAME, {"who": "otters"})
    assert run.status == "succeeded", run.error
    # The fake's reply has a data part ({echo, data}): the data is the output, not the text.
    assert run.outputs == {"reply": {"echo": "hello otters", "data": {"who": "otters", "n": 2.0}}}
    assert [seen["text"] for seen in first.seen[before:]] == ["hello otters"]
    called = registry_of(flow).get(agent.id)
    assert called is not None and called.last_seen is not None and agent.last_seen is not None
    assert called.last_seen >= agent.last_seen  # the call was contact, and measured
    assert called.latency_ms != agent.latency_ms


async def test_an_agent_called_by_skill_and_its_updates_become_run_events(flow: AgentFlow, first: FakeAgent) -> None:
    await add(flow, first.url)
    run = await run_source(flow, by_skill("stream me"))
    assert run.status == "succeeded", run.error
    assert run.outputs == {"ask": {"echo": "stream me", "data": None}}
    updates = [(event["state"], event["text"]) for event in events(flow, run.id, "remote_update")]
    assert ("working", "thinking") in updates
    assert ("working", "echo: stream me") in updates
    assert updates[-1][0] == "completed"
    assert {event["agent"] for event in events(flow, run.id, "remote_update")} == {"fake-agent"}
    console = render(flow.store.events(run.id))
    assert "remote · fake-agent · working" in console and "thinking" in console


async def test_an_offline_agent_is_passed_over_for_a_healthy_one(
    flow: AgentFlow, first: FakeAgent, second: FakeAgent
) -> None:
    # The offline one is the faster: only its state keeps it from being chosen.
    offline = await add(flow, first.url, latency_ms=0.1, age_s=3600)
    await add(flow, second.url, latency_ms=500)
    assert offline.state == "offline"
    before = len(first.seen), len(second.seen)
    run = await run_source(flow, by_skill("anyone"))
    assert run.status == "succeeded", run.error
    assert run.outputs == {"ask": {"echo": "anyone", "data": None}}
    assert (len(first.seen), len(second.seen)) == (before[0], before[1] + 1)


async def test_a_refused_connection_falls_back_to_the_next_agent(flow: AgentFlow, second: FakeAgent) -> None:
    agent = await add(flow, second.url, latency_ms=500)
    down = as_unreachable(flow, agent, closed_port())
    run = await run_source(flow, by_skill("next please"))
    assert run.status == "succeeded", run.error
    assert run.outputs == {"ask": {"echo": "next please", "data": None}}
    [passed] = [event for event in events(flow, run.id, "remote_update") if event["state"] == "unreachable"]
    assert passed["agent_id"] == down.id and down.url in str(passed["text"])


async def test_without_fallback_a_refused_connection_fails_the_node(flow: AgentFlow, second: FakeAgent) -> None:
    agent = await add(flow, second.url, latency_ms=500)
    down = as_unreachable(flow, agent, closed_port())
    before = len(second.seen)
    run = await run_source(flow, by_skill("only you", fallback=False))
    assert run.status == "failed"
    assert f"agent 'fake-agent' ({down.id}) at {down.url}: cannot reach" in str(run.error)
    assert "set `fallback: true`" in str(run.error)
    assert len(second.seen) == before


@pytest.mark.parametrize(("age_s", "state"), [(60, "stale"), (3600, "offline")])
async def test_a_stale_or_offline_agent_fails_fast_naming_it(
    flow: AgentFlow, first: FakeAgent, age_s: float, state: str
) -> None:
    agent = await add(flow, first.url, age_s=age_s)
    assert agent.state == state
    before = len(first.seen)
    run = await run_source(flow, BY_NAME, {"who": "anyone"})
    assert run.status == "failed"
    assert f"agent 'fake-agent' ({agent.id}) at {first.url} is {state}: last heard from at " in str(run.error)
    assert "agentflow agents list" in str(run.error)
    assert len(first.seen) == before  # never called


async def test_no_registered_agent_says_how_to_register_one(flow: AgentFlow) -> None:
    source = by_skill("hello", extra=", retry: {attempts: 3, delay: 10ms}")
    run = await run_source(flow, source)
    assert run.status == "failed"
    assert "no registered agent with skill 'echo'" in str(run.error)
    assert "agentflow agents add URL" in str(run.error) and "agentflow agents token" in str(run.error)
    assert node_statuses(flow, run.id) == {"ask": ["failed"]}  # retrying cannot register one


async def test_a_failed_task_fails_the_node_without_fallback(
    flow: AgentFlow, first: FakeAgent, second: FakeAgent
) -> None:
    await add(flow, first.url, latency_ms=0.1)
    await add(flow, second.url, latency_ms=500)
    before = len(second.seen)
    run = await run_source(flow, by_skill("fail"))
    assert run.status == "failed"
    assert "as failed: scripted failure" in str(run.error)
    assert len(second.seen) == before  # the agent answered: another one would not be asked the same


async def test_input_required_fails_with_the_agents_question(flow: AgentFlow, first: FakeAgent) -> None:
    await add(flow, first.url)
    run = await run_source(flow, by_skill("ask"))
    assert run.status == "failed"
    assert "agent 'fake-agent'" in str(run.error) and "asks for input: which one?" in str(run.error)


async def test_a_silent_agent_times_out(flow: AgentFlow, first: FakeAgent, silent: str) -> None:
    agent = await add(flow, first.url, latency_ms=500)
    down = as_unreachable(flow, agent, silent)
    run = await run_source(flow, by_skill("are you there", fallback=False, extra=", timeout: 1s"))
    assert run.status == "failed"
    # The node's timeout bounds the call, not the attempt: the node names the agent that did not answer.
    assert f"agent 'fake-agent' ({down.id}) at {down.url}: the agent at {down.url} did not answer within 1 s" in str(
        run.error
    ), run.error


async def test_a_silent_agent_is_passed_over_when_the_node_sets_a_timeout(
    flow: AgentFlow, second: FakeAgent, silent: str
) -> None:
    agent = await add(flow, second.url, latency_ms=500)
    down = as_unreachable(flow, agent, silent)  # the faster, so called first
    before = len(second.seen)
    run = await run_source(flow, by_skill("still there", extra=", timeout: 1s"))
    assert run.status == "succeeded", run.error
    assert run.outputs == {"ask": {"echo": "still there", "data": None}}
    assert len(second.seen) == before + 1
    [passed] = [event for event in events(flow, run.id, "remote_update") if event["state"] == "unreachable"]
    assert passed["agent_id"] == down.id and "did not answer within 1 s" in str(passed["text"])
    assert node_statuses(flow, run.id) == {"ask": ["succeeded"]}  # one attempt: the fallback was within it


async def test_calling_an_agent_or_a_skill_is_a_capability_a_person_grants(flow: AgentFlow) -> None:
    granted = flow.save_workflow(by_skill("hi"))
    assert flow.review(granted).missing.lines() == ["remote skill echo"]
    flow.grant_version(granted, by=PERSON)
    assert not flow.review(granted).needs_review
    wider = flow.save_workflow(
        workflow(
            "ask-by-skill",
            """
            nodes:
              ask: {type: remote, skill: echo, input: hi}
              also: {type: remote, agent: translator, input: hi}
            """,
        )
    )
    review = flow.review(wider)
    assert review.needs_review and review.missing.lines() == ["remote agent translator"]
    with pytest.raises(NeedsGrantError):
        flow.submit(wider, {})


async def test_internal_addresses_stay_closed_unless_the_operator_opened_them(
    tmp_path: Path, fake_llm: FakeLLM, first: FakeAgent
) -> None:
    # Registered while loopback was open (say, by another process); this one's operator never opened it.
    closed = AgentFlow.open(fake_settings(tmp_path, fake_llm, open_loopback=False))
    try:
        now = time.time()
        skills = [{"id": "echo", "name": "echo", "description": "", "tags": []}]
        record = AgentRecord(
            id="agt_loopback",
            name="fake-agent",
            url=first.url,
            card_url=first.url,
            card={},
            source="url",
            created_at=now,
            skills=skills,
            last_seen=now,
        )
        registry_of(closed).store.save_agent(record)
        before = len(first.seen)
        run = await run_source(closed, by_skill("let me in"))
        assert run.status == "failed"
        assert "agent 'fake-agent' (agt_loopback)" in str(run.error) and "127.0.0.1" in str(run.error)
        assert "AGENTFLOW_EGRESS_ALLOW_INTERNAL" in str(run.error)
        assert len(first.seen) == before
    finally:
        closed.close()
