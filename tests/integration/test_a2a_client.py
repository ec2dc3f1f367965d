"""`call_agent` against a real a2a-sdk server (tests/fakes/a2a_agent.py) and against AgentFlow's own agents."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentflow.a2a.client import A2ACallError, A2AReply, call_agent
from agentflow.settings import Settings
from agentflow.trust.egress import EgressPolicy
from tests.e2e.server import serve
from tests.fakes.a2a_agent import FakeAgent, fake_agent

pytestmark = pytest.mark.store_agnostic

OPENED = EgressPolicy(hosts=None, allow_internal=("127.0.0.1",))
CLOSED = EgressPolicy(hosts=None)
TIMEOUT = 30.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def streaming_agent() -> Iterator[FakeAgent]:
    with fake_agent(streaming=True) as agent:
        yield agent


@pytest.fixture(scope="module")
def polled_agent() -> Iterator[FakeAgent]:
    with fake_agent(streaming=False) as agent:
        yield agent


async def test_a_text_reply(polled_agent: FakeAgent) -> None:
    reply = await call_agent(polled_agent.url, "hello", data={"n": 2}, timeout=TIMEOUT, policy=OPENED)
    assert isinstance(reply, A2AReply)
    assert (reply.state, reply.text) == ("completed", "echo: hello")
    assert reply.data == {"echo": "hello", "data": {"n": 2.0}}
    assert reply.task_id


async def test_streamed_updates_reach_on_update(streaming_agent: FakeAgent) -> None:
    updates: list[tuple[str, str]] = []

    async def on_update(state: str, text: str) -> None:
        updates.append((state, text))

    reply = await call_agent(streaming_agent.url, "stream me", timeout=TIMEOUT, policy=OPENED, on_update=on_update)
    assert reply.text == "echo: stream me"
    assert ("working", "thinking") in updates
    assert ("working", "echo: stream me") in updates  # the artifact
    assert updates[-1][0] == "completed"


async def test_headers_are_sent(streaming_agent: FakeAgent) -> None:
    await call_agent(streaming_agent.url, "who", timeout=TIMEOUT, policy=OPENED, headers={"X-Caller": "flow-7"})
    assert streaming_agent.seen[-1]["headers"]["x-caller"] == "flow-7"


async def test_the_card_url_itself_works(polled_agent: FakeAgent) -> None:
    reply = await call_agent(polled_agent.url + ".well-known/agent-card.json", "direct", timeout=TIMEOUT, policy=OPENED)
    assert reply.text == "echo: direct"


async def test_input_required_is_returned(streaming_agent: FakeAgent) -> None:
    reply = await call_agent(streaming_agent.url, "ask", timeout=TIMEOUT, policy=OPENED)
    assert (reply.state, reply.text) == ("input-required", "which one?")


@pytest.mark.parametrize("which", ["streaming", "polled"])
async def test_a_failed_task_is_not_transient(which: str, request: pytest.FixtureRequest) -> None:
    agent: FakeAgent = request.getfixturevalue(f"{which}_agent")
    with pytest.raises(A2ACallError, match="as failed: scripted failure") as caught:
        await call_agent(agent.url, "fail", timeout=TIMEOUT, policy=OPENED)
    assert not caught.value.transient
    assert agent.url in caught.value.message


async def test_connection_refused_is_transient() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(A2ACallError, match="cannot reach the agent") as caught:
        await call_agent(f"http://127.0.0.1:{port}/", "hi", timeout=TIMEOUT, policy=OPENED)
    assert caught.value.transient


async def test_an_internal_address_is_refused_unless_opened(streaming_agent: FakeAgent) -> None:
    with pytest.raises(A2ACallError, match="AGENTFLOW_EGRESS_ALLOW_INTERNAL") as caught:
        await call_agent(streaming_agent.url, "hi", timeout=TIMEOUT, policy=CLOSED)
    assert not caught.value.transient
    assert all(seen["text"] != "hi" for seen in streaming_agent.seen)


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://[::ffff:127.0.0.1]:9/"])
async def test_metadata_and_mapped_loopback_stay_closed(url: str) -> None:
    with pytest.raises(A2ACallError, match="refused"):
        await call_agent(url, "hi", timeout=TIMEOUT, policy=CLOSED)


async def test_a_host_outside_the_grant_is_refused(polled_agent: FakeAgent) -> None:
    granted = EgressPolicy(hosts=frozenset({"agents.example.com"}), allow_internal=("127.0.0.1",))
    with pytest.raises(A2ACallError, match="not in this workflow's granted egress"):
        await call_agent(polled_agent.url, "hi", timeout=TIMEOUT, policy=granted)


async def test_no_card_says_which_paths_were_tried(tmp_path: Path) -> None:
    with (
        serve(Settings(home=tmp_path / "data", tracing=False), ui=False) as url,
        pytest.raises(A2ACallError, match=r"no agent card at .*agent-card\.json, \.well-known/agent\.json"),
    ):
        await call_agent(f"{url}/a2a/missing/", "hi", timeout=TIMEOUT, policy=OPENED)


async def test_calling_an_agentflow_workflow(tmp_path: Path) -> None:
    """One AgentFlow calls another's deployed workflow: the reply is its outputs."""
    with serve(Settings(home=tmp_path / "data", tracing=False), ui=False) as url:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as api:
            assert api.post("/api/workflows", json={"source": (EXAMPLES / "hello.yaml").read_text()}).is_success
            assert api.post("/api/workflows/hello/deploy").is_success
        states: list[str] = []

        async def on_update(state: str, text: str) -> None:
            states.append(state)

        reply = await call_agent(f"{url}/a2a/hello/", "Ada", timeout=TIMEOUT, policy=OPENED, on_update=on_update)
    assert (reply.state, reply.text, reply.data) == ("completed", "Hello, Ada!", {"greeting": "Hello, Ada!"})
    assert states[0] == "working" and states[-1] == "completed"
