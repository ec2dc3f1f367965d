"""The MLflow UI under /mlflow (agentflow/web/mlflow_mount.py): config, auth, Host and path attacks, trace links.

The module-scoped app runs with auth on and starts one real MLflow server (a
child process) for every test here that needs one; the browser side is in
tests/e2e/test_mlflow_ui.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Mount
from starlette.types import Message

from agentflow.observability.tracer import RunTrace, SpanRecord, TraceSettings
from agentflow.settings import Settings
from agentflow.store.base import RunRecord, TraceState
from agentflow.web.auth import derive_api_token
from agentflow.web.mlflow_mount import MlflowMount, MlflowTarget, _child_env, _request_headers, host_allowed
from agentflow.web.server import create_app
from agentflow.web.ui.mlflow import where
from agentflow.web.ui.runs import _trace_line

pytestmark = [pytest.mark.slow, pytest.mark.store_agnostic]  # starts MLflow's server

PASSWORD = "correct horse battery staple"
TOKEN = derive_api_token(PASSWORD, "admin")
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ORIGIN = "http://127.0.0.1:7860"
SEARCH = "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=10"


def mount_of(app: FastAPI) -> MlflowMount:
    [mount] = [route.app for route in app.routes if isinstance(route, Mount) and isinstance(route.app, MlflowMount)]
    return mount


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow-mount") / "data"


@pytest.fixture(scope="module")
def app(home: Path) -> Iterator[FastAPI]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield create_app(Settings(home=home, password=PASSWORD))  # on 127.0.0.1, with auth on


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url=ORIGIN) as test_client:
        yield test_client


# -- configuration ----------------------------------------------------------------------------


def test_traces_default_to_sqlite_in_the_data_directory(tmp_path: Path) -> None:
    target = MlflowTarget.from_settings(Settings(home=tmp_path / "data"), environ={})
    assert target.tracking_uri == f"sqlite:///{(tmp_path / 'data').resolve() / 'mlflow.db'}"
    assert target.tracking_uri == TraceSettings.from_env(tmp_path / "data", {}).tracking_uri  # where traces go
    assert (target.external_url, target.embed_url) == (None, "/mlflow/")
    assert target.artifacts == (tmp_path / "data").resolve() / "mlflow-artifacts"
    assert target.frame_ancestors == "'self'"
    assert "Traces are stored in `sqlite:///" in where(target)


def test_on_a_space_huggingface_may_frame_the_ui(tmp_path: Path) -> None:
    target = MlflowTarget.from_settings(Settings(home=tmp_path), environ={"SPACE_ID": "ada/agentflow"})
    assert target.frame_ancestors == "'self' https://huggingface.co"


def test_an_http_tracking_uri_is_embedded_and_nothing_runs_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com:5000")
    app = create_app(Settings(home=tmp_path / "data"))
    target = mount_of(app).target
    assert target.embed_url == "https://mlflow.example.com:5000/"
    assert "shown below from that server" in where(target)
    with TestClient(app, base_url=ORIGIN) as client:
        moved = client.get("/mlflow/static-files/x.js?v=1", follow_redirects=False)
        assert (moved.status_code, moved.headers["location"]) == (
            307,
            "https://mlflow.example.com:5000/static-files/x.js?v=1",
        )
        assert not mount_of(app).server.running


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:7860", "127.0.0.1:43117", "[::1]:7860", "LOCALHOST:7860", "ada-agentflow.hf.space",
     "a.b.hf.space", "agentflow.lan:8080", "team.example.com"],
)  # fmt: skip
def test_hosts_that_name_this_app(host: str) -> None:
    target = MlflowTarget.from_settings(
        Settings(host="agentflow.lan", password="x"), environ={"AGENTFLOW_ALLOWED_HOSTS": "*.example.com, other.lan"}
    )
    assert host_allowed(host, target.allowed_hosts)


@pytest.mark.parametrize(
    "host",
    ["evil.example", "", "hf.space", ".hf.space", "x.hf.space.evil.example", "evil.example/.hf.space",
     "evil.example:80@x.hf.space", "localhost.evil.example", "127.0.0.1.nip.io", "localhost:7860 evil", "0.0.0.0"],
)  # fmt: skip
def test_foreign_or_malformed_hosts(host: str) -> None:
    target = MlflowTarget.from_settings(Settings(host="0.0.0.0", password="x"), environ={})
    assert not host_allowed(host, target.allowed_hosts)


def test_the_child_gets_mlflow_settings_and_none_of_the_app_secrets(tmp_path: Path) -> None:
    environ = {
        "PATH": "/usr/bin",
        "AGENTFLOW_PASSWORD": "pw",
        "AGENTFLOW_HOME": "data",
        "OPENAI_API_KEY": "sk-canary",
        "MLFLOW_TRACKING_TOKEN": "canary",
        "GITHUB_TOKEN": "canary",
    }
    env = _child_env(MlflowTarget.from_settings(Settings(home=tmp_path), environ={}), environ)
    assert "canary" not in str(env) and "pw" not in env.values()
    assert env["PATH"] == "/usr/bin"
    assert env["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "NONE"
    assert "*.hf.space:*" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    # The private names `mlflow server` uses (read from the installed source: importing it takes seconds).
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.origin is not None
    server = Path(spec.origin).parent / "server"
    constants = (server / "constants.py").read_text() + (server / "handlers.py").read_text()
    for name in ("_MLFLOW_SERVER_FILE_STORE", "_MLFLOW_SERVER_SERVE_ARTIFACTS", "_MLFLOW_SERVER_ARTIFACT_ROOT",
                 "_MLFLOW_SERVER_ARTIFACT_DESTINATION", "_MLFLOW_STATIC_PREFIX"):  # fmt: skip
        assert f'"{name}"' in constants, f"MLflow renamed {name}: update _child_env"
        assert name in env


def test_credentials_and_forwarding_headers_stay_in_the_app() -> None:
    scope = {
        "headers": [
            (b"host", b"LocalHost:7860"),
            (b"authorization", b"Bearer secret"),
            (b"cookie", b"access-token-abc=session; mlflow-pref=1; access-token-unsecure-abc=session"),
            (b"origin", b"http://localhost:7860"),
            (b"x-forwarded-for", b"127.0.0.1"),
            (b"forwarded", b"for=127.0.0.1"),
            (b"connection", b"keep-alive, x-private"),
            (b"x-private", b"1"),
            (b"accept", b"application/json"),
        ]
    }
    assert _request_headers(scope) == [
        (b"accept", b"application/json"),
        (b"host", b"localhost:7860"),
        (b"cookie", b"mlflow-pref=1"),
    ]


def test_the_runs_tab_says_where_a_runs_trace_is() -> None:
    running = RunRecord(id="r1", workflow="shout", version="v1", status="running", trigger="api", inputs={})
    finished = dataclasses.replace(running, status="succeeded", finished_at=time.time())
    trace_id = "tr-" + "0" * 32
    assert "when the run finishes" in _trace_line(running, None)
    assert "trace not exported yet" in _trace_line(finished, None)
    assert "trace not exported yet" in _trace_line(
        finished, TraceState("r", None, "pending", "ConnectionError: down", 1, 0.0)
    )
    failed = _trace_line(finished, TraceState("r", None, "failed", "MlflowException: <bad>", 1, 0.0))
    assert "export to MLflow failed: MlflowException: &lt;bad&gt;" in failed
    link = _trace_line(finished, TraceState("r", trace_id, "exported", None, 1, 0.0))
    assert f'href="/mlflow/-/traces/{trace_id}"' in link and 'target="_blank"' in link


# -- the running server, auth on ------------------------------------------------------------


def test_anonymous_requests_are_refused(client: TestClient) -> None:
    browser = client.get("/mlflow/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert (browser.status_code, browser.headers["location"]) == (303, "/")  # to the login form
    assert client.get(SEARCH).status_code == 401
    assert client.post("/mlflow/ajax-api/2.0/mlflow/experiments/create", json={"name": "x"}).status_code == 401
    assert client.get("/mlflow", follow_redirects=False).status_code == 401
    assert client.get("/mlflow/static-files/static/js/../../index.html").status_code in (400, 401)


def test_with_the_token_the_ui_and_its_api_answer(client: TestClient, app: FastAPI) -> None:
    started = time.perf_counter()
    page = client.get("/mlflow/", headers=BEARER)
    print(f"first request (starts MLflow): {time.perf_counter() - started:.1f} s")
    assert page.status_code == 200
    assert "static-files/static/js/main." in page.text
    assert page.headers["content-security-policy"] == "frame-ancestors 'self'"
    assert "x-frame-options" not in page.headers
    assert mount_of(app).server.running
    experiments = client.get(SEARCH, headers=BEARER)
    assert experiments.status_code == 200
    assert "Default" in [experiment["name"] for experiment in experiments.json()["experiments"]]
    assert client.get("/mlflow", headers=BEARER, follow_redirects=False).headers["location"] == "/mlflow/"


def test_writes_must_come_from_the_app_itself(client: TestClient) -> None:
    create = "/mlflow/ajax-api/2.0/mlflow/experiments/create"
    space = {**BEARER, "Host": "ada-agentflow.hf.space"}
    same = client.post(
        create, json={"name": "same-origin"}, headers={**space, "Origin": "https://ada-agentflow.hf.space"}
    )
    assert same.status_code == 200, same.text  # MLflow alone refuses every origin but localhost
    cross = client.post(
        create,
        json={"name": "cross-site"},
        headers={**space, "Origin": "https://evil.hf.space", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    names = [experiment["name"] for experiment in client.get(SEARCH, headers=BEARER).json()["experiments"]]
    assert "same-origin" in names and "cross-site" not in names


def test_a_foreign_host_is_refused_and_a_space_host_is_served(client: TestClient) -> None:
    foreign = client.get("/mlflow/", headers={**BEARER, "Host": "evil.example"})
    assert foreign.status_code == 403
    assert "AGENTFLOW_ALLOWED_HOSTS" in foreign.text
    assert client.get(SEARCH, headers={**BEARER, "Host": "evil.example:7860"}).status_code == 403
    assert client.get("/mlflow/", headers={**BEARER, "Host": "ada-agentflow.hf.space"}).status_code == 200


async def raw_get(app: FastAPI, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as given, with the token (HTTP clients would normalise the dot segments away)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:7860"), (b"authorization", BEARER["Authorization"].encode())],
        "server": ("127.0.0.1", 7860), "client": ("127.0.0.1", 1234),
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


@pytest.mark.parametrize(
    "path",
    ["/mlflow/static-files/../../../../../../etc/passwd", "/mlflow/static-files/%2e%2e/%2e%2e/etc/passwd",
     "/mlflow/static-files/%252e%252e/%252e%252e/etc/passwd", "/mlflow/..%2f..%2f..%2fetc/passwd",
     "/mlflow/static-files/..\\..\\etc\\passwd", "/mlflow/./index.html"],
)  # fmt: skip
async def test_paths_that_try_to_escape_get_no_file(app: FastAPI, client: TestClient, path: str) -> None:
    status, body = await raw_get(app, path)
    assert status in (400, 403, 404)
    assert b"root:" not in body


def test_a_trace_link_opens_the_trace_page_of_its_experiment(client: TestClient, home: Path) -> None:
    from agentflow.observability.mlflow_tracer import MlflowTracer

    tracer = MlflowTracer(TraceSettings.from_env(home, {}))
    now = time.time()
    span = SpanRecord("run", None, "shout", "CHAIN", now, now + 0.01, inputs={"text": "hi"}, outputs={"result": "hi!"})
    [trace_id] = tracer.export([RunTrace("run-1", "shout", "v1", "succeeded", [span])])
    assert isinstance(trace_id, str)
    experiment_id = tracer.experiment_id("shout")

    opened = client.get(f"/mlflow/-/traces/{trace_id}", headers=BEARER, follow_redirects=False)
    assert opened.status_code == 303
    assert opened.headers["location"] == (
        f"/mlflow/#/experiments/{experiment_id}/traces?selectedEvaluationId={trace_id}&traceId={trace_id}"
    )
    assert client.get("/mlflow/-/traces/tr-00000000000000000000000000000000", headers=BEARER).status_code == 404
    assert client.get(f"/mlflow/-/traces/{trace_id}", follow_redirects=False).status_code == 401


def test_the_server_stops_with_the_app(home: Path) -> None:
    app = create_app(Settings(home=home.parent / "other"))
    with TestClient(app, base_url=ORIGIN) as client:
        assert client.get("/mlflow/health").status_code == 200
        pid = mount_of(app).server.pid
        assert pid is not None
    assert not mount_of(app).server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
