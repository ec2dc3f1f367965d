"""SIGKILL between a webhook's commit and its response: the sender's retry gets the same run, which ends once.

A real server process answers a delivery in wait mode, so it has recorded the run and is waiting for
its result (its model call held by the fake) when it is killed. The restarted server takes the
orphaned run over; the retried delivery — same `webhook-id`, freshly signed, as senders retry — is
answered with that run, and no second run exists.
"""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.server_process import server_process

pytestmark = pytest.mark.slow

SUMMARY = """\
apiVersion: agentflow/v1
kind: Workflow
metadata: {name: summary}
spec:
  inputs: {text: string}
  nodes:
    summarize: {type: llm, model: openai/test-model, prompt: "Summarize: {{ inputs.text }}"}
  outputs: {summary: "{{ summarize }}"}
  triggers:
    - webhook: {}
"""
BODY = '{"text": "a long story"}'


def signed(secret: str, delivery_id: str) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(delivery_id, now, BODY),
        "content-type": "application/json",
    }


def test_a_retry_after_sigkill_gets_the_same_run(tmp_path: Path, fake_llm: FakeLLM) -> None:
    in_flight = threading.Event()
    calls: list[str] = []

    def respond(body: dict[str, Any]) -> Text:
        calls.append(body["messages"][-1]["content"])
        if len(calls) == 1:
            in_flight.set()
            return Text("never delivered", latency=120)  # the server dies while waiting for this
        return Text("a short story")

    fake_llm.responder = respond
    home = tmp_path / "data"
    with server_process(home, fake_llm) as server:
        auth = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
            assert client.post("/api/workflows", json={"source": SUMMARY}).status_code == 201
            secret = client.post("/api/workflows/summary/deploy", json={}).json()["secrets"]["webhook"]
        answers: list[Any] = []

        def deliver() -> None:
            try:
                answers.append(
                    httpx.post(
                        f"{server.url}/api/hooks/summary",
                        content=BODY,
                        headers=signed(secret, "delivery-42"),
                        params={"wait": 120},
                        timeout=150,
                    )
                )
            except httpx.HTTPError as exc:  # the connection dies with the server
                answers.append(exc)

        sender = threading.Thread(target=deliver)
        sender.start()
        assert in_flight.wait(60), "the run never reached its model call"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=30)
        sender.join(timeout=60)
        [lost] = answers
        assert isinstance(lost, httpx.HTTPError)  # the sender never got an answer: it retries

    with server_process(home, fake_llm) as server:
        auth = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as client:
            retried = client.post(
                "/api/hooks/summary", content=BODY, headers=signed(secret, "delivery-42"), params={"wait": 60}
            )
            assert retried.status_code == 200, retried.text
            answer = retried.json()
            assert answer["duplicate"] is True
            assert (answer["status"], answer["outputs"]) == ("succeeded", {"summary": "a short story"})
            runs = client.get("/api/runs", params={"workflow": "summary"}).json()
            assert [run["run_id"] for run in runs] == [answer["run_id"]]
            outcomes = [item["outcome"] for item in client.get("/api/workflows/summary/deliveries").json()]
            assert sorted(outcomes) == ["accepted", "duplicate"]
    assert len(calls) == 2  # the killed call, and the one after the take-over: nothing else ran twice
