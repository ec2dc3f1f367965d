"""The REST API end to end: FastAPI app, lifespan, background executor and SQLite, no model needed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agentflow.settings import Settings
from agentflow.web.server import MAX_API_BODY_BYTES, create_app
from tests.integration.helpers import workflow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = (EXAMPLES / "hello.yaml").read_text()
APPROVAL = (EXAMPLES / "approval.yaml").read_text()
TERMINAL = {"succeeded", "failed", "cancelled", "budget_exceeded", "rejected"}
POLL_TIMEOUT_S = 30.0


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(home=tmp_path / "data"))
    with TestClient(app) as test_client:  # runs the lifespan: AgentFlow and its executor
        yield test_client


def save(client: TestClient, source: str) -> dict[str, Any]:
    response = client.post("/api/workflows", json={"source": source})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def start(client: TestClient, workflow_name: str, /, **inputs: Any) -> dict[str, Any]:
    response = client.post("/api/runs", json={"workflow": workflow_name, "inputs": inputs})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(client: TestClient, run_id: str, statuses: set[str]) -> dict[str, Any]:
    """Poll the run until the background executor brings it to one of `statuses`."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        run: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run stayed {run['status']}: {run}"
        time.sleep(0.02)


def test_health_is_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "0.1.0", "runs_active": 0}


def test_save_list_and_get_workflow_versions(client: TestClient) -> None:
    first = save(client, HELLO)
    second = save(client, HELLO.replace("Hello, ", "Hi, "))
    assert (first["name"], second["name"]) == ("hello", "hello")
    assert first["version"] != second["version"]

    [latest] = client.get("/api/workflows").json()
    assert (latest["name"], latest["version"]) == ("hello", second["version"])
    assert "source" not in latest

    detail = client.get("/api/workflows/hello").json()
    assert detail["version"] == second["version"]
    assert "Hi, " in detail["source"]

    versions = client.get("/api/workflows/hello/versions").json()
    assert [version["version"] for version in versions] == [second["version"], first["version"]]

    old = client.get(f"/api/workflows/hello/versions/{first['version']}").json()
    assert old["source"] == HELLO


def test_invalid_workflow_is_422_with_line_numbers_and_nothing_is_saved(client: TestClient) -> None:
    source = workflow(
        "broken",
        """
        nodes:
          greet:
            type: transfrom
            expr: "'hi'"
        """,
    )
    response = client.post("/api/workflows", json={"source": source})
    assert response.status_code == 422
    body = response.json()
    assert "nothing was saved" in body["detail"]
    [error] = body["errors"]
    assert (error["line"], error["column"]) == (7, 7)
    assert "did you mean 'transform'" in error["message"]
    assert client.get("/api/workflows").json() == []
    assert client.get("/api/workflows/broken").status_code == 404


def test_yaml_that_runs_code_is_refused(client: TestClient, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    source = f"apiVersion: !!python/object/apply:os.system ['touch {canary}']\nkind: Workflow\n"
    response = client.post("/api/workflows", json={"source": source})
    assert response.status_code == 422
    assert response.json()["errors"][0]["line"] == 1
    assert not canary.exists()


def test_requests_are_checked_strictly(client: TestClient) -> None:
    extra = client.post("/api/workflows", json={"source": HELLO, "path": "/etc/passwd"})
    assert extra.status_code == 422
    assert "remove 'path'" in extra.json()["detail"]
    missing = client.post("/api/runs", json={"inputs": {}})
    assert missing.status_code == 422
    assert "workflow" in missing.json()["detail"]


def test_oversized_body_is_refused_before_parsing(client: TestClient) -> None:
    response = client.post(
        "/api/workflows",
        content=b"x" * (MAX_API_BODY_BYTES + 1),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert "bytes" in response.json()["detail"]


def test_run_is_executed_in_the_background(client: TestClient) -> None:
    save(client, HELLO)
    queued = start(client, "hello", name="Ada")
    assert (queued["status"], queued["trigger"]) == ("queued", "api")

    run = wait_for(client, queued["run_id"], TERMINAL)
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"] == {"greeting": "Hello, Ada!"}
    assert [(node["id"], node["status"]) for node in run["nodes"]] == [("greet", "succeeded")]
    assert run["approval"] is None

    page = client.get(f"/api/runs/{run['run_id']}/events").json()
    types = [event["type"] for event in page["events"]]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert page["last_id"] == page["events"][-1]["id"]
    newer = client.get(f"/api/runs/{run['run_id']}/events", params={"after": page["last_id"]}).json()
    assert newer == {"events": [], "last_id": page["last_id"]}


def test_ui_and_chat_code_can_start_runs_through_the_app_state(client: TestClient) -> None:
    save(client, HELLO)
    state = client.app.state.agentflow  # type: ignore[attr-defined]
    version = state.flow.store.get_workflow("hello")
    assert client.portal is not None
    record = client.portal.call(lambda: state.start_run(version, {"name": "Lin"}))  # on the server's loop
    run = wait_for(client, record.id, TERMINAL)
    assert (run["trigger"], run["outputs"]) == ("manual", {"greeting": "Hello, Lin!"})


def test_start_run_errors_say_what_to_do(client: TestClient) -> None:
    unknown = client.post("/api/runs", json={"workflow": "nope"})
    assert unknown.status_code == 404
    assert "GET /api/workflows" in unknown.json()["detail"]

    save(client, HELLO)
    no_version = client.post("/api/runs", json={"workflow": "hello", "version": "000000000000"})
    assert no_version.status_code == 404
    assert "/api/workflows/hello/versions" in no_version.json()["detail"]

    bad_input = client.post("/api/runs", json={"workflow": "hello", "inputs": {"name": 42}})
    assert bad_input.status_code == 422
    assert "name" in bad_input.json()["detail"]
    assert client.get("/api/runs").json() == []


def test_list_runs_filters(client: TestClient) -> None:
    save(client, HELLO)
    save(client, APPROVAL)
    done = start(client, "hello")
    waiting = start(client, "approval")
    wait_for(client, done["run_id"], TERMINAL)
    wait_for(client, waiting["run_id"], {"waiting_approval"})

    def ids(**params: Any) -> list[str]:
        response = client.get("/api/runs", params=params)
        assert response.status_code == 200, response.text
        return [run["run_id"] for run in response.json()]

    assert ids() == [waiting["run_id"], done["run_id"]]
    assert ids(limit=1) == [waiting["run_id"]]
    assert ids(workflow="hello") == [done["run_id"]]
    assert ids(status="succeeded") == [done["run_id"]]
    assert ids(status="succeeded,waiting_approval") == [waiting["run_id"], done["run_id"]]
    assert ids(status=["running", "waiting_approval"]) == [waiting["run_id"]]

    bad = client.get("/api/runs", params={"status": "finished"})
    assert bad.status_code == 422
    assert "use one of" in bad.json()["detail"]


def test_approval_continues_in_the_background(client: TestClient) -> None:
    save(client, APPROVAL)
    run = wait_for(client, start(client, "approval", amount=80)["run_id"], {"waiting_approval"} | TERMINAL)
    assert run["status"] == "waiting_approval"
    assert run["approval"]["node_id"] == "sign_off"
    assert run["approval"]["message"] == "Refund 80 EUR to ACME Corp?"

    decided = client.post(f"/api/runs/{run['run_id']}/approve", json={"comment": "ok for Q3"})
    assert decided.status_code == 202
    assert decided.json()["status"] in ("queued", "running", "succeeded")

    finished = wait_for(client, run["run_id"], TERMINAL)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["outputs"] == {"refund": {"refunded": 80, "to": "ACME Corp", "note": "ok for Q3"}}

    again = client.post(f"/api/runs/{run['run_id']}/approve")
    assert again.status_code == 409
    assert "no pending approval" in again.json()["detail"]


def test_rejection_ends_the_run(client: TestClient) -> None:
    save(client, APPROVAL)
    run = wait_for(client, start(client, "approval")["run_id"], {"waiting_approval"})
    assert client.post(f"/api/runs/{run['run_id']}/reject").status_code == 202
    finished = wait_for(client, run["run_id"], TERMINAL)
    assert finished["status"] == "rejected"
    assert {node["id"] for node in finished["nodes"]} == {"prepare", "sign_off"}  # `issue` never ran


def test_cancel_a_waiting_run(client: TestClient) -> None:
    save(client, APPROVAL)
    run = wait_for(client, start(client, "approval")["run_id"], {"waiting_approval"})
    cancelled = client.post(f"/api/runs/{run['run_id']}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["approval"] is None

    again = client.post(f"/api/runs/{run['run_id']}/cancel")
    assert again.status_code == 409
    assert "is cancelled" in again.json()["detail"]
    assert client.post(f"/api/runs/{run['run_id']}/approve").status_code == 409


def test_rerun_uses_the_same_version_and_inputs(client: TestClient) -> None:
    first = save(client, HELLO)
    original = wait_for(client, start(client, "hello", name="Grace")["run_id"], TERMINAL)
    save(client, HELLO.replace("Hello, ", "Hi, "))  # a newer version must not be picked up

    response = client.post(f"/api/runs/{original['run_id']}/rerun")
    assert response.status_code == 202
    rerun = response.json()
    assert rerun["run_id"] != original["run_id"]
    assert (rerun["trigger"], rerun["version"]) == ("rerun", first["version"])
    assert rerun["inputs"] == original["inputs"]
    finished = wait_for(client, rerun["run_id"], TERMINAL)
    assert finished["outputs"] == {"greeting": "Hello, Grace!"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/runs/nope"),
        ("GET", "/api/runs/nope/events"),
        ("POST", "/api/runs/nope/approve"),
        ("POST", "/api/runs/nope/reject"),
        ("POST", "/api/runs/nope/cancel"),
        ("POST", "/api/runs/nope/rerun"),
        ("GET", "/api/workflows/nope"),
        ("GET", "/api/workflows/nope/versions"),
        ("GET", "/api/workflows/nope/versions/abc"),
        ("GET", "/api/nowhere"),
        ("DELETE", "/api/runs"),
    ],
)
def test_unknown_things_are_404_json(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


# -- grants ------------------------------------------------------------------------------------------

NOTIFY = workflow(
    "notify",
    """
    permissions: {egress: [hooks.example.com]}
    nodes:
      send: {type: tool, tool: http_request, args: {url: "https://hooks.example.com/{{ inputs.path }}"}}
    inputs: {path: string}
    """,
)


def test_a_version_saved_through_the_api_is_granted_by_its_caller(client: TestClient) -> None:
    saved = save(client, NOTIFY)
    assert saved["review"]["needs_review"] is False
    assert saved["review"]["capabilities"]["text"] == "tool http_request; egress to hooks.example.com"
    [grant] = client.get("/api/workflows/notify/grants").json()
    assert (grant["granted_by"], grant["version"]) == ("api:admin", saved["version"])


def test_a_version_beyond_its_grant_is_refused_until_a_person_grants_it(client: TestClient) -> None:
    flow = client.app.state.agentflow.flow  # type: ignore[attr-defined]
    stored = flow.save_workflow(NOTIFY)  # as the assistant saves: nothing granted
    detail = client.get(f"/api/workflows/notify/versions/{stored.version}").json()
    assert detail["review"]["needs_review"] is True
    assert detail["review"]["missing"]["egress"] == ["hooks.example.com"]

    refused = client.post("/api/runs", json={"workflow": "notify", "inputs": {"path": "x"}})
    assert refused.status_code == 403
    assert "needs a person's grant" in refused.json()["detail"]
    assert refused.json()["missing"]["tools"] == ["http_request"]
    assert client.get("/api/runs").json() == []

    granted = client.post("/api/workflows/notify/grant", json={"version": stored.version})
    assert granted.status_code == 200, granted.text
    assert granted.json()["review"]["needs_review"] is False
    queued = client.post("/api/runs", json={"workflow": "notify", "inputs": {"path": "x"}})
    assert queued.status_code == 202


def test_granting_an_unknown_workflow_is_a_404(client: TestClient) -> None:
    response = client.post("/api/workflows/nope/grant")
    assert response.status_code == 404
    assert "no workflow named 'nope'" in response.json()["detail"]
