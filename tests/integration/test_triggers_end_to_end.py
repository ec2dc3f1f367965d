"""The issue's "done when", through the real server: one deployed workflow started by a signed webhook,
a cron schedule, a Telegram message and a WhatsApp message; a step approved with a Telegram button
and the result answered in the chat it came from; forged, replayed and oversized deliveries run nothing.

The server is the app `agentflow serve` starts (API, executor, scheduler, channels), with Telegram
and Twilio pointed at the fakes of tests/fakes/ (their real client libraries speak to them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from twilio.request_validator import RequestValidator

from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.triggers.schedules import Scheduler
from tests.e2e.server import fake_settings, serve
from tests.fakes import telegram as tg
from tests.fakes import twilio as tw
from tests.fakes.openai_server import FakeLLM

pytestmark = pytest.mark.slow

PERSON = 1001  # on both allow-lists
NUMBER = "+33612345678"
TRIAGE = """\
apiVersion: agentflow/v1
kind: Workflow
metadata: {name: triage}
spec:
  inputs: {ticket: string}
  nodes:
    label: {type: transform, expr: "join('', ['ticket: ', inputs.ticket])"}
    check: {type: approval, needs: [label], message: "Send {{ label }}?"}
    done: {type: transform, needs: [check], expr: label}
  outputs: {result: "{{ done }}"}
  triggers:
    - webhook: {}
    - schedule: {cron: "0 9 * * *", timezone: Europe/Paris, inputs: {ticket: daily digest}}
    - telegram: {command: /triage}
    - whatsapp: {command: /triage}
"""


@pytest.fixture
def fakes() -> Iterator[tuple[tg.FakeTelegram, tw.FakeTwilio]]:
    with tg.FakeTelegram() as telegram, tw.FakeTwilio() as twilio:
        yield telegram, twilio


@pytest.fixture
def settings(home: Path, fake_llm: FakeLLM, fakes: tuple[tg.FakeTelegram, tw.FakeTwilio]) -> Settings:
    telegram, twilio = fakes
    return replace(
        fake_settings(home, fake_llm),
        telegram_token=telegram.token,
        telegram_api=telegram.base_url,
        telegram_allow=(str(PERSON),),
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_api=twilio.url,
        whatsapp_from=tw.SENDER,
        whatsapp_allow=(NUMBER,),
    )


def event(client: httpx.Client, run_id: str, kind: str) -> dict[str, Any]:
    """The run's first event of `kind`, read from its live stream (replayed from the start, then live)."""
    with client.stream("GET", f"/api/runs/{run_id}/stream", timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                found: dict[str, Any] = json.loads(line.removeprefix("data:"))
                if found.get("type") == kind:
                    return found
    raise AssertionError(f"run {run_id} ended without a {kind} event")


def twilio_text(twilio: tw.FakeTwilio, to: str, contains: str) -> str:
    """The first message WhatsApp delivered to `to` containing `contains`, once there is one."""
    twilio.wait(lambda fake: any(contains in text for text in fake.texts(to)), timeout=30, what=f"'{contains}' to {to}")
    return next(text for text in twilio.texts(to) if contains in text)


def signed(secret: str, body: str, delivery_id: str) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery_id, now, body),
    }


def test_a_deployed_workflow_starts_from_the_world_and_answers_where_it_came_from(
    settings: Settings, fakes: tuple[tg.FakeTelegram, tw.FakeTwilio]
) -> None:
    telegram, twilio = fakes
    with serve(settings, ui=False) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/api/workflows", json={"source": TRIAGE}).status_code == 201
        deployed = client.post("/api/workflows/triage/deploy", json={})
        assert deployed.status_code == 201, deployed.text
        secret = deployed.json()["secrets"]["webhook"]
        assert {item["kind"] for item in deployed.json()["triggers"]} == {"webhook", "schedule", "telegram", "whatsapp"}

        def approve_by_api(run_id: str) -> dict[str, Any]:
            event(client, run_id, "approval_requested")
            assert client.post(f"/api/runs/{run_id}/approve", json={}).status_code == 202
            finished = event(client, run_id, "run_finished")
            assert finished["status"] == "succeeded", finished
            return finished

        # 1. A signed webhook.
        body = json.dumps({"ticket": "from a webhook"})
        hooked = client.post("/api/hooks/triage", content=body, headers=signed(secret, body, "d-1"))
        assert hooked.status_code == 202, hooked.text
        assert approve_by_api(hooked.json()["run_id"])["outputs"] == {"result": "ticket: from a webhook"}
        # Forged, replayed and oversized deliveries run nothing.
        forged = client.post(
            "/api/hooks/triage", content=body.replace("web", "Web"), headers=signed(secret, body, "d-2")
        )
        replayed = client.post("/api/hooks/triage", content=body, headers=signed(secret, body, "d-1"))
        oversized = client.post(
            "/api/hooks/triage", content=b" " * (10 * 1024 * 1024), headers=signed(secret, "", "d-3")
        )
        assert (forged.status_code, replayed.status_code, oversized.status_code) == (403, 202, 413)
        assert replayed.json()["run_id"] == hooked.json()["run_id"]

        # 2. The cron schedule: its fire, claimed by a scheduler in another process (its clock at the fire
        # time), is executed by the server.
        other = AgentFlow.open(settings)
        try:
            [schedule] = other.store.schedules("triage")
            assert schedule.next_fire_at is not None and schedule.next_fire_at > time.time()
            [fired] = Scheduler(other).tick(now=schedule.next_fire_at + 1)
        finally:
            other.close()
        assert approve_by_api(fired)["outputs"] == {"result": "ticket: daily digest"}

        # 3. Telegram: the command starts the deployed version; the approval comes as buttons in the chat,
        # pressed twice, decided once; the result arrives in that chat.
        telegram.push_message(PERSON, "/triage the printer is on fire")
        prompt = telegram.wait(
            lambda fake: next((sent for sent in fake.sent_to(PERSON) if sent.approvals), None), what="the buttons"
        )
        [approval_id] = prompt.approvals
        first = telegram.push_callback(PERSON, f"a:{approval_id}:y", prompt.message_id)
        second = telegram.push_callback(PERSON, f"a:{approval_id}:y", prompt.message_id)
        # Updates are handled concurrently: either press may be the one that decides, and the other is told so.
        answers = sorted(telegram.wait_answered(press).text for press in (first, second))
        assert "already decided" in answers[0] and answers[1].startswith("Approved"), answers
        result = telegram.wait(
            lambda fake: next((sent for sent in fake.sent_to(PERSON) if "finished" in sent.text), None),
            what="the result in Telegram",
        )
        assert "ticket: the printer is on fire" in result.text

        # 4. WhatsApp: signed by Twilio for the server's URL; approved by typing; answered in WhatsApp.
        def whatsapp(text: str) -> httpx.Response:
            form = {"From": f"whatsapp:{NUMBER}", "To": tw.SENDER, "Body": text, "MessageSid": f"SM{time.time_ns()}"}
            form |= {"AccountSid": twilio.account_sid, "NumMedia": "0"}
            signature = RequestValidator(twilio.auth_token).compute_signature(f"{url}/channels/whatsapp", form)
            return client.post("/channels/whatsapp", data=form, headers={"X-Twilio-Signature": signature})

        assert whatsapp("/triage the sink leaks").status_code == 200
        asked = twilio_text(twilio, f"whatsapp:{NUMBER}", "approve ")
        approval = asked.split("approve ", 1)[1].split()[0].strip("*`")
        assert whatsapp(f"approve {approval}").status_code == 200
        assert "ticket: the sink leaks" in twilio_text(twilio, f"whatsapp:{NUMBER}", "finished")

        runs = client.get("/api/runs", params={"workflow": "triage"}).json()
        assert sorted(run["trigger"] for run in runs) == ["schedule", "telegram", "webhook", "whatsapp"]
        assert all(run["status"] == "succeeded" for run in runs)
    flow = AgentFlow.open(settings)
    try:  # who decided: the person on each channel, as the channel names them
        telegram_decision = flow.store.approval(approval_id)
        whatsapp_decision = flow.store.approval(int(approval))
        assert telegram_decision is not None and telegram_decision.decided_by == f"telegram:{PERSON}"
        assert whatsapp_decision is not None and whatsapp_decision.decided_by == f"whatsapp:{NUMBER}"
    finally:
        flow.close()
