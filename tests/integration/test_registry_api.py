"""The agent registry over real HTTP: the app served by uvicorn on loopback, agents' cards served beside it.

Time is the registry's injectable clock: ageing to stale, offline and removal needs no sleeping.
Loopback (127.0.0.1) is opened to the egress guard, as an operator running agents on this host would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from agentflow.registry import Registry
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.web.server import create_app
from tests.fakes.agent_card import CardServer, card, serve_card

TTL = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


def serve_flow(flow: AgentFlow) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(create_app(flow=flow), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="registry-app")
    thread.start()
    assert server.ready.wait(timeout=30), "the app did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def flow(tmp_path: Path, clock: Clock) -> Iterator[AgentFlow]:
    settings = Settings(home=tmp_path / "data", tracing=False, egress_allow_internal=("127.0.0.1",), agent_ttl_s=TTL)
    opened = AgentFlow.open(settings)
    assert opened.engine.services.registry is not None
    opened.engine.services.registry.clock = clock
    yield opened
    opened.close()


@pytest.fixture
def registry(flow: AgentFlow) -> Registry:
    assert flow.engine.services.registry is not None
    return flow.engine.services.registry


@pytest.fixture
def app(flow: AgentFlow) -> Iterator[str]:
    yield from serve_flow(flow)


@pytest.fixture
def api(app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app, timeout=30) as client:
        yield client


@pytest.fixture
def writer() -> Iterator[CardServer]:
    with serve_card(card("writer")) as served:
        yield served


def issue(api: httpx.Client, **body: Any) -> str:
    answer = api.post("/api/agents/tokens", json=body)
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


def enrol(api: httpx.Client, served: CardServer, token: str | None) -> httpx.Response:
    return api.post("/api/registry/enrol", json={"token": token, "card_url": served.url + "/"})


def enrolled(api: httpx.Client, served: CardServer) -> dict[str, Any]:
    answer = enrol(api, served, issue(api))
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def beat(api: httpx.Client, agent_id: str, secret: str, **body: Any) -> httpx.Response:
    return api.post(f"/api/registry/{agent_id}/heartbeat", json=body, headers={"Authorization": f"Bearer {secret}"})


# -- agent-initiated ---------------------------------------------------------------------------


def test_an_agent_enrols_with_a_token_heartbeats_and_is_healthy(api: httpx.Client, writer: CardServer) -> None:
    answer = enrolled(api, writer)
    assert answer["ttl_s"] == TTL and answer["heartbeat_s"] == TTL / 3
    assert answer["secret"].startswith("afs_") and answer["agent_id"].startswith("agt_")
    beaten = beat(api, answer["agent_id"], answer["secret"])
    assert beaten.status_code == 200, beaten.text
    assert beaten.json() == {"state": "healthy", "ttl_s": TTL, "heartbeat_s": TTL / 3}
    [listed] = api.get("/api/agents").json()
    assert listed["id"] == answer["agent_id"]
    assert (listed["name"], listed["source"], listed["state"]) == ("writer", "registered", "healthy")
    assert listed["url"] == writer.url + "/a2a"  # the card's relative endpoint, against the card's URL
    assert listed["card_url"] == writer.url + "/.well-known/agent-card.json"
    assert listed["skills"] == [
        {"id": "summarise", "name": "Summarise", "description": "short summaries", "tags": ["text"]}
    ]
    assert "secret" not in listed and "secret_hash" not in listed


def test_tokens_and_secrets_are_stored_hashed(flow: AgentFlow, api: httpx.Client, writer: CardServer) -> None:
    token = issue(api, note="laptop")
    answer = enrol(api, writer, token).json()
    [stored] = flow.store.enrolment_tokens()
    assert token not in repr(stored) and stored.token_hash != token and stored.used_by == answer["agent_id"]
    record = flow.store.get_agent(answer["agent_id"])
    assert record is not None and record.secret_hash and answer["secret"] not in repr(record)


@pytest.mark.parametrize("token", [None, "", "aft_not-a-token"])
def test_enrolment_without_a_valid_token_is_401(api: httpx.Client, writer: CardServer, token: str | None) -> None:
    answer = enrol(api, writer, token)
    assert answer.status_code == 401
    assert "token" in answer.json()["detail"] and "agentflow agents token" in answer.json()["detail"]
    assert api.get("/api/agents").json() == []


def test_a_used_token_is_401_and_says_it_was_used(api: httpx.Client, writer: CardServer) -> None:
    token = issue(api)
    assert enrol(api, writer, token).status_code == 201
    again = enrol(api, writer, token)
    assert again.status_code == 401 and "already used" in again.json()["detail"]
    assert len(api.get("/api/agents").json()) == 1


def test_revoked_and_expired_tokens_are_401_and_say_which(api: httpx.Client, writer: CardServer, clock: Clock) -> None:
    revoked = api.post("/api/agents/tokens", json={"note": "old"}).json()
    assert api.delete(f"/api/agents/tokens/{revoked['id']}").status_code == 204
    answer = enrol(api, writer, revoked["token"])
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]
    expiring = issue(api, ttl_s=60)
    clock.advance(61)
    answer = enrol(api, writer, expiring)
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]
    listed = api.get("/api/agents/tokens").json()
    assert {item["id"] for item in listed} >= {revoked["id"]} and all("token" not in item for item in listed)
    assert api.delete(f"/api/agents/tokens/{revoked['id']}").status_code == 400  # revoked already
    assert api.delete("/api/agents/tokens/tok_nope").status_code == 404


def test_a_spoofed_id_and_a_wrong_secret_get_the_same_403(api: httpx.Client, writer: CardServer) -> None:
    answer = enrolled(api, writer)
    assert beat(api, answer["agent_id"], answer["secret"]).status_code == 200  # known here: the fast path
    spoofed = beat(api, "agt_0000000000000000", answer["secret"])
    wrong = beat(api, answer["agent_id"], "afs_guess")
    missing = api.post(f"/api/registry/{answer['agent_id']}/heartbeat", json={})
    assert spoofed.status_code == wrong.status_code == missing.status_code == 403
    assert spoofed.json() == wrong.json() == missing.json()
    leave = api.delete(f"/api/registry/{answer['agent_id']}", headers={"Authorization": "Bearer afs_guess"})
    assert leave.status_code == 403 and leave.json() == wrong.json()
    assert len(api.get("/api/agents").json()) == 1


@pytest.mark.parametrize(
    ("card_url", "named"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::ffff:127.0.0.1]:9/agent-card.json", "::ffff:127.0.0.1"),
        ("http://10.1.2.3/", "10.1.2.3"),
    ],
)
def test_card_urls_at_internal_addresses_are_refused(api: httpx.Client, card_url: str, named: str) -> None:
    token = issue(api)
    answer = api.post("/api/registry/enrol", json={"token": token, "card_url": card_url})
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert named in detail and "AGENTFLOW_EGRESS_ALLOW_INTERNAL" in detail
    added = api.post("/api/agents", json={"url": card_url})
    assert added.status_code == 400 and named in added.json()["detail"]
    assert api.get("/api/agents").json() == []
    # The refusal did not spend the token.
    assert [item["used_at"] for item in api.get("/api/agents/tokens").json()] == [None]


def test_an_endpoint_at_an_internal_address_is_refused(api: httpx.Client) -> None:
    with serve_card(card("sneaky", url="http://169.254.169.254/a2a")) as served:
        answer = enrol(api, served, issue(api))
    assert answer.status_code == 400 and "endpoint" in answer.json()["detail"]
    assert "169.254.169.254" in answer.json()["detail"]


def test_an_enrolment_without_a_card_url_says_so(api: httpx.Client) -> None:
    answer = api.post("/api/registry/enrol", json={"token": issue(api)})
    assert answer.status_code == 400 and "card_url" in answer.json()["detail"]
    assert [item["used_at"] for item in api.get("/api/agents/tokens").json()] == [None]


def test_an_unreachable_or_bogus_card_is_400_naming_the_url(api: httpx.Client, writer: CardServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    answer = api.post("/api/registry/enrol", json={"token": issue(api), "card_url": f"http://127.0.0.1:{port}/"})
    assert answer.status_code == 400 and f"127.0.0.1:{port}" in answer.json()["detail"]
    writer.card = {"not": "a card"}
    answer = enrol(api, writer, issue(api))
    assert answer.status_code == 400 and "no 'name'" in answer.json()["detail"]


def test_states_age_from_heartbeats_and_silent_agents_are_removed(
    api: httpx.Client, writer: CardServer, clock: Clock, registry: Registry
) -> None:
    answer = enrolled(api, writer)
    agent_id = answer["agent_id"]

    def state() -> str:
        found: str = api.get(f"/api/agents/{agent_id}").json()["state"]
        return found

    clock.advance(TTL)
    assert state() == "healthy"
    clock.advance(1)
    assert state() == "stale"
    assert beat(api, agent_id, answer["secret"]).json()["state"] == "healthy"  # a heartbeat revives it
    clock.advance(3 * TTL)
    assert state() == "stale"
    clock.advance(1)
    assert state() == "offline"
    assert asyncio.run(registry.sweep()) == []  # offline, but kept for the retention period
    clock.advance(registry.retention_s)
    assert asyncio.run(registry.sweep()) == [agent_id]
    assert api.get(f"/api/agents/{agent_id}").status_code == 404
    assert beat(api, agent_id, answer["secret"]).status_code == 403


def test_heartbeats_of_a_known_agent_are_written_together(
    api: httpx.Client, writer: CardServer, clock: Clock, flow: AgentFlow, registry: Registry
) -> None:
    answer = enrolled(api, writer)
    agent_id, secret = answer["agent_id"], answer["secret"]
    for _ in range(3):
        clock.advance(5)
        assert beat(api, agent_id, secret).json() == {"state": "healthy", "ttl_s": TTL, "heartbeat_s": TTL / 3}
    assert api.get(f"/api/agents/{agent_id}").json()["last_seen"] == clock.now  # read here: current at once
    asyncio.run(registry.write_beats())
    stored = flow.store.get_agent(agent_id)
    assert stored is not None and stored.last_seen == clock.now


def test_a_known_agent_removed_elsewhere_is_refused_once_its_heartbeats_are_written(
    api: httpx.Client, writer: CardServer, flow: AgentFlow, registry: Registry
) -> None:
    answer = enrolled(api, writer)
    agent_id, secret = answer["agent_id"], answer["secret"]
    assert beat(api, agent_id, secret).status_code == 200
    assert flow.store.delete_agent(agent_id)  # as another process would: this one still knows the agent
    beat(api, agent_id, secret)
    asyncio.run(registry.write_beats())  # the write finds it gone
    assert beat(api, agent_id, secret).status_code == 403


def test_a_graceful_shutdown_deregisters(api: httpx.Client, writer: CardServer) -> None:
    answer = enrolled(api, writer)
    leave = api.delete(f"/api/registry/{answer['agent_id']}", headers={"Authorization": f"Bearer {answer['secret']}"})
    assert leave.status_code == 204
    assert api.get("/api/agents").json() == []


def test_a_new_card_version_in_a_heartbeat_refetches_the_card(api: httpx.Client, writer: CardServer) -> None:
    answer = enrolled(api, writer)
    writer.card = card("writer", version="2.0.0", skills=[{"id": "translate", "name": "Translate", "tags": []}])
    assert beat(api, answer["agent_id"], answer["secret"], card_version="2.0.0").status_code == 200
    found = api.get(f"/api/agents/{answer['agent_id']}").json()
    assert found["version"] == "2.0.0" and [skill["id"] for skill in found["skills"]] == ["translate"]
    assert [item["version"] for item in found["history"]] == ["1.0.0", "2.0.0"]
    change = found["history"][-1]["change"]
    assert "1.0.0 -> 2.0.0" in change and "added: translate" in change and "removed: summarise" in change


def test_enrolling_again_replaces_the_earlier_registration(api: httpx.Client, writer: CardServer) -> None:
    first = enrolled(api, writer)
    second = enrolled(api, writer)
    assert [agent["id"] for agent in api.get("/api/agents").json()] == [second["agent_id"]]
    assert beat(api, first["agent_id"], first["secret"]).status_code == 403


# -- orchestrator-initiated --------------------------------------------------------------------


def test_an_agent_added_by_url_is_polled_with_its_etag_and_card_changes_are_recorded(
    api: httpx.Client, writer: CardServer, clock: Clock, registry: Registry
) -> None:
    added = api.post("/api/agents", json={"url": writer.url})
    assert added.status_code == 201, added.text
    agent = added.json()
    assert (agent["source"], agent["state"], agent["name"]) == ("url", "healthy", "writer")
    etag = writer.etag
    clock.advance(TTL / 3)
    asyncio.run(registry.poll_due())
    assert writer.requests[-1] == ("/.well-known/agent-card.json", etag, 304)
    seen = api.get(f"/api/agents/{agent['id']}").json()
    assert seen["last_seen"] == clock.now and seen["state"] == "healthy" and len(seen["history"]) == 1

    writer.card = card("writer", version="1.1.0")
    clock.advance(TTL / 3)
    asyncio.run(registry.poll_due())
    assert writer.requests[-1][2] == 200
    seen = api.get(f"/api/agents/{agent['id']}").json()
    assert seen["version"] == "1.1.0" and seen["history"][-1]["change"] == "version 1.0.0 -> 1.1.0"

    writer.down = True  # failed polls age it as missed heartbeats do
    for _ in range(3):
        clock.advance(TTL / 3)
        asyncio.run(registry.poll_due())
    clock.advance(1)
    assert api.get(f"/api/agents/{agent['id']}").json()["state"] == "stale"
    for _ in range(6):
        clock.advance(TTL / 3)
        asyncio.run(registry.poll_due())
    assert api.get(f"/api/agents/{agent['id']}").json()["state"] == "offline"
    writer.down = False
    clock.advance(TTL / 3)
    asyncio.run(registry.poll_due())
    assert api.get(f"/api/agents/{agent['id']}").json()["state"] == "healthy"


def test_adding_the_same_url_twice_and_removing(api: httpx.Client, writer: CardServer) -> None:
    agent = api.post("/api/agents", json={"url": writer.url}).json()
    again = api.post("/api/agents", json={"url": writer.url + "/.well-known/agent-card.json"})
    assert again.status_code == 400 and agent["id"] in again.json()["detail"]
    assert api.delete(f"/api/agents/{agent['id']}").status_code == 204
    assert api.delete(f"/api/agents/{agent['id']}").status_code == 404
    assert api.post("/api/agents", json={"url": writer.url, "extra": 1}).status_code == 422


def test_a_legacy_card_path_is_found(api: httpx.Client) -> None:
    legacy = card("old-timer")
    legacy.pop("supportedInterfaces")
    legacy["url"] = "http://127.0.0.1:1/rpc"
    with serve_card(legacy) as served:
        served.answer = _legacy(served)  # type: ignore[method-assign]
        agent = api.post("/api/agents", json={"url": served.url}).json()
    assert agent["card_url"].endswith("/.well-known/agent.json") and agent["url"] == "http://127.0.0.1:1/rpc"


def _legacy(served: CardServer) -> Any:
    original = CardServer.answer

    def answer(path: str, if_none_match: str | None) -> tuple[int, bytes, dict[str, str]]:
        if path == "/.well-known/agent.json":
            return original(served, "/.well-known/agent-card.json", if_none_match)
        return 404, b"", {}

    return answer


def test_the_operator_routes_need_the_api_token(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "data",
        tracing=False,
        password="a long enough password",
        api_token="t0ken-for-the-registry-tests",
    )
    flow = AgentFlow.open(settings)
    try:
        for url in serve_flow(flow):
            with httpx.Client(base_url=url) as client:
                assert client.get("/api/agents").status_code == 401
                assert client.post("/api/agents/tokens", json={}).status_code == 401
                authed = client.post(
                    "/api/agents/tokens", json={}, headers={"Authorization": "Bearer t0ken-for-the-registry-tests"}
                )
                assert authed.status_code == 201
                # The agents' side is public, and refuses by itself.
                assert client.post("/api/registry/enrol", json={"card_url": "http://x/"}).status_code == 401
                assert client.post("/api/registry/agt_x/heartbeat", json={}).status_code == 403
                assert client.post("/api/registry/enrol").status_code == 401  # no body at all
                assert client.delete("/api/registry/agt_x").status_code == 403
    finally:
        flow.close()
