"""The streaming API against a real server: `/api/runs/{id}/stream` and `/api/events` as server-sent events.

A run that waits for approval keeps its stream open while a person decides; a client that drops the
connection and reconnects with `Last-Event-ID` gets every later event once, none lost or repeated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.store.base import RunRecord
from agentflow.web.server import create_app
from tests.e2e.server import serve

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APPROVAL = (EXAMPLES / "approval.yaml").read_text()
HELLO = (EXAMPLES / "hello.yaml").read_text()
TIMEOUT = httpx.Timeout(30.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(Settings(home=tmp_path_factory.mktemp("stream") / "data", tracing=False)) as url:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
            for source in (APPROVAL, HELLO):
                assert client.post("/api/workflows", json={"source": source}).status_code == 201
        yield url


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=TIMEOUT) as client:
        yield client


def start(api: httpx.Client, workflow: str, **inputs: Any) -> str:
    response = api.post("/api/runs", json={"workflow": workflow, "inputs": inputs})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream body as it arrives: one dict per message (comments and retry skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def read_until(stream: Iterator[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    seen = []
    for message in stream:
        seen.append(message)
        if message["event"] == kind:
            return seen
    raise AssertionError(f"the stream ended before a {kind} event: {[m['event'] for m in seen]}")


def test_a_run_streams_live_through_its_approval_to_the_end(api: httpx.Client) -> None:
    run_id = start(api, "approval", amount=7)
    with api.stream("GET", f"/api/runs/{run_id}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = messages(response)
        waiting = read_until(stream, "approval_requested")
        assert waiting[0]["event"] == "run_started"
        assert "Refund 7 EUR" in waiting[-1]["data"]["message"]
        # The run waits for a person; the stream stays open while they decide.
        assert api.post(f"/api/runs/{run_id}/approve", json={"comment": "fine"}).status_code == 202
        rest = list(stream)  # the server closes the stream after run_finished
    streamed = waiting + rest
    assert [m["event"] for m in rest][-1] == "run_finished"
    assert rest[-1]["data"]["status"] == "succeeded"
    assert any(m["event"] == "approval_decided" and m["data"]["comment"] == "fine" for m in rest)
    ids = [m["id"] for m in streamed]
    assert ids == sorted(set(ids))
    stored = api.get(f"/api/runs/{run_id}/events").json()["events"]
    assert [m["data"] for m in streamed] == stored  # exactly the stored log, in order


def test_reconnecting_with_last_event_id_loses_and_repeats_nothing(api: httpx.Client) -> None:
    run_id = start(api, "approval")
    with api.stream("GET", f"/api/runs/{run_id}/stream") as response:
        first = read_until(messages(response), "node_finished")  # then the client drops the connection
    assert api.post(f"/api/runs/{run_id}/approve").status_code == 202
    headers = {"Last-Event-ID": str(first[-1]["id"])}
    with api.stream("GET", f"/api/runs/{run_id}/stream", headers=headers) as response:
        second = list(messages(response))
    stored = api.get(f"/api/runs/{run_id}/events").json()["events"]
    assert [m["data"] for m in first + second] == stored
    assert second[-1]["event"] == "run_finished"


def test_a_finished_run_replays_and_closes(api: httpx.Client) -> None:
    run_id = start(api, "hello", name="Ada")
    with api.stream("GET", f"/api/runs/{run_id}/stream") as response:
        assert read_until(messages(response), "run_finished")[-1]["data"]["status"] == "succeeded"
    with api.stream("GET", f"/api/runs/{run_id}/stream", params={"after": 0}) as response:
        replayed = list(messages(response))
    assert replayed[0]["event"] == "run_started" and replayed[-1]["event"] == "run_finished"


def test_cancelling_a_waiting_run_ends_its_stream(api: httpx.Client) -> None:
    run_id = start(api, "approval")
    with api.stream("GET", f"/api/runs/{run_id}/stream") as response:
        stream = messages(response)
        read_until(stream, "approval_requested")
        assert api.post(f"/api/runs/{run_id[:12]}/cancel").status_code == 202
        rest = list(stream)
    assert rest[-1]["event"] == "run_finished"
    assert rest[-1]["data"]["status"] == "cancelled"


def test_the_events_stream_filters_by_workflow_and_type(api: httpx.Client) -> None:
    params = {"workflow": "approval", "type": "run_started,approval_requested"}
    with api.stream("GET", "/api/events", params=params) as response:
        assert response.status_code == 200
        start(api, "hello", name="not this one")
        run_id = start(api, "approval")
        seen = read_until(messages(response), "approval_requested")
    assert [(m["event"], m["data"]["run_id"]) for m in seen] == [
        ("run_started", run_id),
        ("approval_requested", run_id),
    ]
    # Replaying from an id gives the same events again, then live ones.
    with api.stream("GET", "/api/events", params={**params, "after": seen[0]["id"] - 1}) as response:
        again = read_until(messages(response), "approval_requested")
    assert again == seen
    api.post(f"/api/runs/{run_id}/cancel")


def test_the_events_stream_follows_one_run_by_a_short_id(api: httpx.Client) -> None:
    run_id = start(api, "approval")
    with api.stream("GET", "/api/events", params={"run": run_id[:12], "after": 0}) as response:
        seen = read_until(messages(response), "approval_requested")
    assert {m["data"]["run_id"] for m in seen} == {run_id}
    api.post(f"/api/runs/{run_id}/cancel")


@pytest.mark.parametrize(
    ("path", "headers", "detail"),
    [
        ("/api/events?type=nope", {}, "unknown event type nope; use one of"),
        ("/api/events", {"Last-Event-ID": "yesterday"}, "Last-Event-ID must be an event id"),
        ("/api/runs/zzzz-none/stream", {}, "no run 'zzzz-none'"),
        ("/api/events?run=abc", {}, "at least 4 of its characters"),
    ],
)
def test_bad_stream_requests_say_what_is_wrong(
    api: httpx.Client, path: str, headers: dict[str, str], detail: str
) -> None:
    response = api.get(path, headers=headers)
    assert response.status_code in (404, 422)
    assert detail in response.json()["detail"]


def test_runs_are_found_by_a_unique_prefix_and_an_ambiguous_one_is_refused(tmp_path: Path) -> None:
    flow = AgentFlow.open(Settings(home=tmp_path / "data"))
    try:
        for run_id in ("abcd1111-one", "abcd2222-two"):
            flow.store.create_run(
                RunRecord(id=run_id, workflow="wf", version="v1", created_at=1.0, status="waiting_approval")
            )
        with TestClient(create_app(flow=flow)) as client:
            assert client.get("/api/runs/abcd1111").json()["run_id"] == "abcd1111-one"
            assert client.get("/api/runs/abcd2222-two/events").status_code == 200
            ambiguous = client.get("/api/runs/abcd")
            assert ambiguous.status_code == 409
            assert "abcd1111-one" in ambiguous.json()["detail"] and "give more characters" in ambiguous.json()["detail"]
            assert client.post("/api/runs/abcd2/cancel").json()["status"] == "cancelled"
    finally:
        flow.close()
