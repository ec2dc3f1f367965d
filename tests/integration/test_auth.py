"""Promise 9: bound beyond loopback, every route but /health needs a credential (SECURITY.md, "routes")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import Message

from agentflow.settings import Settings, SettingsError
from agentflow.web.auth import GRADIO_LOGIN_PATHS, GRADIO_LOGIN_PREFIXES, derive_api_token, is_loopback
from agentflow.web.server import AppState, create_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
PUBLIC = {"/health"}
# A2A agent cards are public, as discovery needs (docs/a2a.md); the JSON-RPC route beside them takes the token.
PUBLIC |= {"/a2a/x/.well-known/agent-card.json", "/a2a/x/.well-known/agent.json"}
# Public by design, each delivery authenticated by its own signature (tests/integration/test_webhooks.py;
# the channels' routes, in test_telegram.py and test_whatsapp.py, exist only when a channel is configured).
SIGNED = {"/api/hooks/x", "/api/hooks/x/x"}
# Public by design, each request proving itself: enrolment tokens, agent secrets (docs/agents.md).
SIGNED |= {"/api/registry/enrol", "/api/registry/x/heartbeat", "/api/registry/x"}
# Reachable without login by design: Gradio's login form and its static files (see auth.GRADIO_LOGIN_PATHS).
ANONYMOUS_UI = set(GRADIO_LOGIN_PATHS)


def build_ui(state: AppState) -> gr.Blocks:
    with gr.Blocks() as blocks:
        text = gr.Textbox(label="text")
        text.submit(lambda value: value.upper(), text, text, api_name="shout")
    return blocks


def exposed(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"home": tmp_path / "data", "host": "0.0.0.0", "password": PASSWORD}
    return Settings(**(values | overrides))


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(exposed(tmp_path), build_ui=build_ui)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


TOKEN = derive_api_token(PASSWORD, "admin")


def every_route(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, concrete path) for every route, descending into mounted apps, path parameters filled in."""
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, Mount):
            yield from every_route(route.routes, prefix + route.path)
            continue
        path = re.sub(r"\{[^}]+\}", "x", prefix + (context.path or ""))
        for method in sorted(context.methods or {"GET"}):
            yield method, path


def is_anonymous_ui(path: str) -> bool:
    return path in ANONYMOUS_UI or path.startswith(GRADIO_LOGIN_PREFIXES)


# -- when auth is on ------------------------------------------------------------------------


def test_public_bind_without_password_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"AGENTFLOW_HOST=0\.0\.0\.0 .* set AGENTFLOW_PASSWORD"):
        create_app(exposed(tmp_path, password=None))
    assert not (tmp_path / "data").exists()  # refused before opening anything


@pytest.mark.slow
def test_app_py_exits_with_the_reason(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTFLOW_HOME": str(tmp_path / "data"), "AGENTFLOW_HOST": "192.0.2.1"}
    env.pop("AGENTFLOW_PASSWORD", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py")], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "set AGENTFLOW_PASSWORD" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_password(tmp_path: Path, host: str) -> None:
    assert is_loopback(host)
    with TestClient(create_app(exposed(tmp_path, host=host, password=None))) as client:
        assert client.get("/api/workflows").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "127.0.0.1.nip.io"])
def test_other_addresses_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_a_token_without_a_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="set AGENTFLOW_PASSWORD too"):
        create_app(exposed(tmp_path, host="127.0.0.1", password=None, api_token="t" * 32))


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AGENTFLOW_API_TOKEN is shorter"):
        create_app(exposed(tmp_path, api_token="short"))


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"AGENTFLOW_HOST": "0.0.0.0", "AGENTFLOW_PORT": "8080", "AGENTFLOW_PASSWORD": "pw", "AGENTFLOW_USER": "ada"}
    )
    assert (settings.host, settings.port, settings.user, settings.password) == ("0.0.0.0", 8080, "ada", "pw")
    assert "pw" not in repr(settings)
    defaults = Settings.from_env({})
    assert (defaults.host, defaults.port, defaults.user, defaults.password) == ("127.0.0.1", 7860, "admin", None)
    with pytest.raises(SettingsError, match="AGENTFLOW_PORT='http' is not a TCP port"):
        Settings.from_env({"AGENTFLOW_PORT": "http"})


def test_health_is_public(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_every_non_public_route_refuses_anonymous_requests(app: FastAPI, client: TestClient) -> None:
    checked = 0
    for method, path in every_route(app.routes):
        if path in PUBLIC or path in SIGNED or is_anonymous_ui(path):
            continue
        response = client.request(method, path, follow_redirects=False)
        assert response.status_code in (401, 403), f"{method} {path} answered {response.status_code} anonymously"
        checked += 1
    assert checked > 60  # the API and Gradio's own routes were all enumerated


def test_every_api_route_needs_the_bearer_token(app: FastAPI, client: TestClient) -> None:
    api_routes = [(method, path) for method, path in every_route(app.routes) if path.startswith("/api/")]
    assert len(api_routes) >= 16  # the streams included
    for method, path in api_routes:
        if path in ("/api/docs", "/api/openapi.json", "/api/docs/oauth2-redirect"):
            continue  # opened by a browser: the login session or the token
        if path in SIGNED:
            continue
        anonymous = client.request(method, path)
        assert anonymous.status_code == 401, f"{method} {path}"
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in anonymous.json()["detail"]
        assert client.request(method, path, headers=bearer("x" * 64)).status_code == 401, f"{method} {path}"
        # A live stream never ends: ask it something invalid, which only an authorized caller is told.
        probe = path + "?after=-1" if path == "/api/events" else path
        authorized = client.request(method, probe, headers=bearer(TOKEN))
        assert authorized.status_code not in (401, 403), f"{method} {path}"
    for path in ("/api/workflows", "/api/runs", "/api/openapi.json"):
        assert client.get(path, headers=bearer(TOKEN)).status_code == 200, path


def test_malformed_authorization_headers_are_refused(client: TestClient) -> None:
    for header in (
        TOKEN,
        f"Basic {TOKEN}",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN} {TOKEN}",
        "Bearer",
        "Bearer é",
    ):
        raw = [(b"authorization", header.encode("latin-1"))]
        assert client.get("/api/runs", headers=raw).status_code == 401, header


def test_a_configured_token_replaces_the_derived_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chosen = "a-token-chosen-by-the-operator"
    with TestClient(create_app(exposed(tmp_path, api_token=chosen))) as client:
        assert client.get("/api/runs", headers=bearer(chosen)).status_code == 200
        assert client.get("/api/runs", headers=bearer(TOKEN)).status_code == 401
    printed = capsys.readouterr()
    assert chosen not in printed.out + printed.err


def test_the_derived_token_is_printed_once_at_start_up(app: FastAPI, capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(app):
        pass
    printed = capsys.readouterr()
    assert printed.err.count(TOKEN) == 1
    assert PASSWORD not in printed.out + printed.err


async def raw_status(app: FastAPI, path: str) -> int:
    """Send `path` exactly as given (HTTP clients would normalise the dot segments away)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status: int = sent[0]["status"]
    return status


@pytest.mark.parametrize(
    "path", ["/health/../api/runs", "/assets/../../data/agentflow.db", "/assets/./x", "/assets/%2e%2e/x", "/a/%2F/b"]
)
async def test_paths_that_try_to_escape_are_refused(app: FastAPI, path: str) -> None:
    assert await raw_status(app, path) == 400


# -- the Gradio login session ---------------------------------------------------------------


def mount_beside_ui(app: FastAPI, prefix: str) -> None:
    """Stand-in for a later mount such as MLflow: it must come before the UI, which answers every path."""

    async def echo(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"{request.method} ok")

    app.router.routes.insert(0, Mount(prefix, routes=[Route("/{rest:path}", echo, methods=["GET", "POST"])]))
    app.state.access.protect_prefix(prefix)


def log_in(client: TestClient, password: str = PASSWORD) -> int:
    return client.post("/login", data={"username": "admin", "password": password}).status_code


def test_the_login_page_is_reachable_and_the_ui_is_not(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert client.get("/config").status_code == 401
    assert client.post("/gradio_api/call/shout", json={"data": ["hi"]}).status_code == 401


def test_a_gradio_session_opens_protected_mounts(app: FastAPI) -> None:
    mount_beside_ui(app, "/mlflow")
    with TestClient(app) as client:
        assert client.get("/mlflow/").status_code == 401
        browser = client.get("/mlflow/", headers={"Accept": "text/html"}, follow_redirects=False)
        assert (browser.status_code, browser.headers["location"]) == (303, "/")
        assert client.get("/mlflow/", headers=bearer(TOKEN)).text == "GET ok"

        assert log_in(client, "wrong password") == 400
        assert client.get("/mlflow/").status_code == 401

        assert log_in(client) == 200
        assert client.get("/mlflow/experiments").text == "GET ok"
        assert client.get("/config").status_code == 200
        assert client.get("/api/runs").status_code == 401  # the API takes the token, never the cookie

        same_site = client.post("/mlflow/x", headers={"Origin": "http://testserver"})
        assert same_site.text == "POST ok"
        cross_site = client.post("/mlflow/x", headers={"Origin": "https://evil.example"})
        assert cross_site.status_code == 403

        client.get("/logout", follow_redirects=False)
        assert client.get("/mlflow/").status_code == 401


def test_a_forged_session_cookie_is_refused(app: FastAPI) -> None:
    mount_beside_ui(app, "/mlflow")
    with TestClient(app) as client:
        assert log_in(client) == 200
        [name] = [name for name in client.cookies if name.startswith("access-token-unsecure-")]
        token = client.cookies[name]
        client.cookies.clear()
        client.cookies.set(name, "not-a-session")
        assert client.get("/mlflow/").status_code == 401
        client.cookies.clear()
        client.cookies.set("access-token-unsecure-another-app", token)  # a real token under another app's name
        assert client.get("/mlflow/").status_code == 401
        client.cookies.clear()
        client.cookies.set(name, token)
        assert client.get("/mlflow/").status_code == 200
