"""The agent process's enrolment client against the real app on loopback: enrol, heartbeat, leave."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentflow.registry.client import Enrolment, EnrolmentError
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.fakes.agent_card import card, serve_card
from tests.integration.test_registry_api import serve_flow

TTL = 0.6  # heartbeats every 0.2 s: the test waits for them, it does not time them
DEADLINE_S = 20.0


@pytest.fixture
def app(tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path / "data", tracing=False, egress_allow_internal=("127.0.0.1",), agent_ttl_s=TTL)
    flow = AgentFlow.open(settings)
    try:
        yield from serve_flow(flow)
    finally:
        flow.close()


async def until(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_the_client_enrols_heartbeats_and_deregisters_on_exit(app: str) -> None:
    with httpx.Client(base_url=app) as api, serve_card(card("writer")) as served:
        token = api.post("/api/agents/tokens", json={"note": "client test"}).json()["token"]

        def last_seen() -> float:
            [agent] = api.get("/api/agents").json()
            seen: float = agent["last_seen"]
            return seen

        async def scenario() -> None:
            async with Enrolment(app, token=token, card_url=served.url) as enrolment:
                assert enrolment.agent_id is not None and enrolment.heartbeat_s == pytest.approx(TTL / 3)
                enrolled_at = await asyncio.to_thread(last_seen)
                await until(lambda: enrolment.heartbeats >= 2, "two heartbeats")
                assert await asyncio.to_thread(last_seen) > enrolled_at  # they arrived
                assert enrolment.state == "healthy"
            assert await asyncio.to_thread(lambda: api.get("/api/agents").json()) == []

        asyncio.run(scenario())


def test_a_refused_enrolment_raises_with_the_orchestrators_message(app: str) -> None:
    async def scenario() -> None:
        with serve_card(card("writer")) as served:
            async with Enrolment(app, token="aft_wrong", card_url=served.url):
                raise AssertionError("enrolled with a wrong token")

    with pytest.raises(EnrolmentError, match=r"refused \(401\): unknown enrolment token"):
        asyncio.run(scenario())


def test_an_unreachable_orchestrator_is_said(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Enrolment("http://127.0.0.1:9", token="aft_x", card_url="http://127.0.0.1:9/"):
            raise AssertionError("enrolled with nobody")

    with pytest.raises(EnrolmentError, match=re.escape("cannot reach the orchestrator at http://127.0.0.1:9")):
        asyncio.run(scenario())
