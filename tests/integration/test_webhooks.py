"""Signed webhooks against the real server: every SECURITY.md row for webhooks, idempotency, deployments.

Deliveries are signed with the `standardwebhooks` reference library, as a sender would; the server
is the real app (API, executor) on a real SQLite store, served by uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from agentflow.settings import Settings
from tests.e2e.server import fake_settings, serve
from tests.fakes.openai_server import FakeLLM

pytestmark = pytest.mark.slow

TRIAGE = """\
apiVersion: agentflow/v1
kind: Workflow
metadata: {name: triage}
spec:
  inputs:
    ticket: {type: string}
    priority: {type: integer, default: 3}
  nodes:
    echo: {type: transform, expr: "{ticket: inputs.ticket, priority: inputs.priority}"}
  outputs:
    ticket: "{{ echo.ticket }}"
    priority: "{{ echo.priority }}"
  triggers:
    - webhook:
        inputs: {ticket: issue.title, priority: issue.priority}
        rate: RATE
"""


def workflow(rate: int = 600, *, ticket_default: str | None = None) -> str:
    text = TRIAGE.replace("RATE", str(rate))
    if ticket_default is not None:
        text = text.replace("ticket: {type: string}", f"ticket: {{type: string, default: {ticket_default}}}")
    return text


@pytest.fixture
def settings(home: Path, fake_llm: FakeLLM) -> Settings:
    return fake_settings(home, fake_llm)


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    with serve(settings, ui=False) as url:
        yield url


def save_and_deploy(client: httpx.Client, source: str, name: str = "triage") -> dict[str, Any]:
    saved = client.post("/api/workflows", json={"source": source})
    assert saved.status_code == 201, saved.text
    deployed = client.post(f"/api/workflows/{name}/deploy", json={})
    assert deployed.status_code == 201, deployed.text
    result: dict[str, Any] = deployed.json()
    return result


def signed(secret: str, body: str, *, delivery_id: str = "msg_1", at: datetime | None = None) -> dict[str, str]:
    stamp = at or datetime.now(tz=UTC)
    signature = Webhook(secret).sign(delivery_id, stamp, body)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


BODY = json.dumps({"issue": {"title": "the printer is on fire", "priority": 1}})


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as http:
        yield http


@pytest.fixture
def secret(client: httpx.Client) -> str:
    deployed = save_and_deploy(client, workflow())
    assert list(deployed["secrets"]) == ["webhook"]
    assert [trigger["path"] for trigger in deployed["triggers"]] == ["/api/hooks/triage/webhook"]
    value: str = deployed["secrets"]["webhook"]
    assert value.startswith("whsec_")
    return value


def runs(client: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.get("/api/runs", params={"workflow": "triage", "limit": 1000}).json()
    return found


def deliveries(client: httpx.Client, *, at_least: int = 0) -> list[dict[str, Any]]:
    """The delivery log, once it holds `at_least` entries: refusals are logged after the answer (queued, so a
    flood of forgeries never slows the server), and an accepted delivery's entry is committed with its run."""
    deadline = time.monotonic() + 20
    while True:
        found: list[dict[str, Any]] = client.get("/api/workflows/triage/deliveries", params={"limit": 200}).json()
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # polling the log for the entry to appear


def test_a_signed_delivery_runs_the_deployed_version_with_its_body_mapped(client: httpx.Client, secret: str) -> None:
    answer = client.post("/api/hooks/triage/webhook", content=BODY, headers=signed(secret, BODY), params={"wait": 30})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["status"] == "succeeded"
    assert result["outputs"] == {"ticket": "the printer is on fire", "priority": 1}
    assert result["duplicate"] is False
    [run] = runs(client)
    assert (run["run_id"], run["trigger"]) == (result["run_id"], "webhook")
    [delivery] = deliveries(client)
    assert (delivery["outcome"], delivery["key"], delivery["run_id"]) == ("accepted", "msg_1", result["run_id"])
    # The short path names the only webhook trigger.
    other = client.post("/api/hooks/triage", content=BODY, headers=signed(secret, BODY, delivery_id="msg_2"))
    assert other.status_code == 202 and other.json()["run_id"] != result["run_id"]


def test_a_retried_delivery_returns_the_first_run_and_runs_nothing_new(client: httpx.Client, secret: str) -> None:
    headers = signed(secret, BODY, delivery_id="msg_retry")
    first = client.post("/api/hooks/triage/webhook", content=BODY, headers=headers)
    again = client.post("/api/hooks/triage/webhook", content=BODY, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["run_id"] == first.json()["run_id"]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert len(runs(client)) == 1
    assert sorted(item["outcome"] for item in deliveries(client)) == ["accepted", "duplicate"]


@pytest.mark.parametrize(
    "forgery",
    ["unsigned", "one byte changed", "wrong secret", "timestamp +330 s", "timestamp -330 s", "no v1 signature"],
)
def test_a_forged_or_replayed_delivery_is_refused_and_runs_nothing(
    client: httpx.Client, secret: str, forgery: str
) -> None:
    body, headers = BODY, signed(secret, BODY)
    if forgery == "unsigned":
        headers = {"content-type": "application/json"}
    elif forgery == "one byte changed":
        body = BODY.replace("fire", "fira")
    elif forgery == "wrong secret":
        headers = signed("whsec_" + "QUJD" * 8, BODY)
    elif forgery.startswith("timestamp"):
        offset = 330 if "+" in forgery else -330  # past the 300 s tolerance, with margin for whole-second stamps
        headers = signed(secret, BODY, at=datetime.now(tz=UTC) + timedelta(seconds=offset))
    else:
        headers = {**headers, "webhook-signature": headers["webhook-signature"].replace("v1,", "v2,")}
    answer = client.post("/api/hooks/triage/webhook", content=body, headers=headers)
    assert answer.status_code == 403, answer.text
    assert runs(client) == []
    [delivery] = deliveries(client, at_least=1)
    assert delivery["outcome"] == "refused" and delivery["detail"].startswith("403 ")


def test_a_body_over_the_cap_is_refused_before_it_is_read(client: httpx.Client, secret: str) -> None:
    huge = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    declared = client.post("/api/hooks/triage/webhook", content=huge, headers=signed(secret, "{}"))
    assert declared.status_code == 413
    assert "AGENTFLOW_HOOK_MAX_BYTES" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(20):
            yield b" " * (1024 * 1024)

    streamed = client.post("/api/hooks/triage/webhook", content=chunks(), headers=signed(secret, "{}"))
    assert streamed.status_code == 413
    assert runs(client) == []


def test_inputs_are_checked_against_the_schema(client: httpx.Client, secret: str) -> None:
    body = json.dumps({"issue": {"priority": "high"}})
    answer = client.post("/api/hooks/triage/webhook", content=body, headers=signed(secret, body))
    assert answer.status_code == 422
    assert "ticket" in answer.json()["detail"]
    not_json = "ticket=1"
    answer = client.post(
        "/api/hooks/triage/webhook", content=not_json, headers=signed(secret, not_json, delivery_id="m2")
    )
    assert answer.status_code == 400 and "not JSON" in answer.json()["detail"]
    assert runs(client) == []
    logged = deliveries(client, at_least=2)
    assert sorted(item["detail"][:3] for item in logged) == ["400", "422"], [item["detail"] for item in logged]


def test_a_burst_over_the_rate_gets_429_and_the_server_keeps_answering(client: httpx.Client, server: str) -> None:
    deployed = save_and_deploy(client, workflow(rate=100))
    secret = deployed["secrets"]["webhook"]

    async def burst() -> tuple[list[int], int]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as http:

            async def one(n: int) -> int:
                headers = signed(secret, BODY, delivery_id=f"burst-{n}")
                return (await http.post("/api/hooks/triage/webhook", content=BODY, headers=headers)).status_code

            requests = [asyncio.create_task(one(n)) for n in range(1000)]
            health = await http.get("/health")  # in the middle of the burst
            return list(await asyncio.gather(*requests)), health.status_code

    began = time.monotonic()
    codes, health = asyncio.run(burst())
    elapsed = time.monotonic() - began
    assert health == 200
    assert set(codes) <= {202, 429}
    # The bucket: 100 at once, then 100 a minute as the burst goes on.
    assert 100 <= codes.count(202) <= 100 + int(elapsed * 100 / 60) + 1
    assert codes.count(429) == 1000 - codes.count(202)
    refused = client.post("/api/hooks/triage/webhook", content=BODY, headers=signed(secret, BODY, delivery_id="late"))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert len(runs(client)) == codes.count(202)
    logged = deliveries(client, at_least=codes.count(202) + 1)  # every accepted one, and the refusals' line
    rate_lines = [item for item in logged if item["detail"] and item["detail"].startswith("429")]
    assert 1 <= len(rate_lines) < 50  # logged once a second, not once per refusal


def test_triggers_fire_the_deployed_version_not_a_newer_draft(client: httpx.Client, secret: str) -> None:
    newer = workflow(ticket_default="anything").replace("priority: inputs.priority}", "priority: `99`}")
    assert client.post("/api/workflows", json={"source": newer}).status_code == 201
    answer = client.post("/api/hooks/triage/webhook", content=BODY, headers=signed(secret, BODY), params={"wait": 30})
    assert answer.json()["outputs"]["priority"] == 1  # v1's expression, not v2's
    status = client.get("/api/workflows/triage/deployments").json()
    assert status["current"]["version"] == answer.json()["version"]
    # Deploying v2 switches the hook to it; the secret stays; rollback goes back to v1.
    v2 = client.post("/api/workflows/triage/deploy", json={"version": "v2"})
    assert v2.status_code == 201 and v2.json()["secrets"] == {}
    answer = client.post(
        "/api/hooks/triage/webhook", content=BODY, headers=signed(secret, BODY, delivery_id="m2"), params={"wait": 30}
    )
    assert answer.json()["outputs"]["priority"] == 99
    back = client.post("/api/workflows/triage/rollback")
    assert back.status_code == 200 and back.json()["deployment"]["action"] == "rollback"
    history = client.get("/api/workflows/triage/deployments").json()["history"]
    assert [item["action"] for item in history] == ["rollback", "deploy", "deploy"]
    assert all(item["deployed_by"] == "api:admin" for item in history)
    # Undeployed: the hook answers 404 and runs nothing.
    assert client.post("/api/workflows/triage/undeploy").status_code == 200
    gone = client.post("/api/hooks/triage/webhook", content=BODY, headers=signed(secret, BODY, delivery_id="m3"))
    assert gone.status_code == 404 and "not deployed" in gone.json()["detail"]
    assert client.get("/api/triggers").json() == []


def test_a_rotated_secret_works_and_the_old_one_keeps_working_for_a_while(client: httpx.Client, secret: str) -> None:
    rotated = client.post("/api/workflows/triage/hooks/webhook/secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != secret and rotated.json()["previous_valid_until"] > time.time() + 23 * 3600
    for n, key in enumerate((secret, new)):
        answer = client.post("/api/hooks/triage/webhook", content=BODY, headers=signed(key, BODY, delivery_id=f"r{n}"))
        assert answer.status_code == 202, answer.text


def test_deploying_needs_the_grant_and_unknown_hooks_are_404(client: httpx.Client, settings: Settings) -> None:
    # Saved from a file by the CLI path (no person's grant): the version's channel is not granted yet.
    from agentflow.runtime import AgentFlow

    flow = AgentFlow.open(settings)
    try:
        flow.save_workflow(workflow())
    finally:
        flow.close()
    refused = client.post("/api/workflows/triage/deploy", json={})
    assert refused.status_code == 403
    assert "started by signed webhooks" in refused.json()["detail"]
    assert client.post("/api/hooks/triage/webhook", content=BODY).status_code == 404
    assert client.post("/api/hooks/nothing/webhook", content=BODY).status_code == 404
    assert client.post("/api/workflows/nothing/deploy", json={}).status_code == 404
