"""The MLflow UI and API under `/mlflow`, on the app's own port (a Hugging Face Space exposes only one).

MLflow's server runs as a child process, started by the first request under
`/mlflow` and stopped with the app: uvicorn serving `mlflow.server.fastapi_app`
(what `mlflow server --static-prefix /mlflow` runs) on a Unix socket in a private
directory, behind the streaming reverse proxy below. Not mounted in-process:
MLflow's server picks its store from environment variables once per process (and
sets the global tracking URI), costs ~7 s of imports and ~300 MB, and would do its
SQLAlchemy work under our GIL. Over the socket MLflow sees no client address, so
what it reserves to "localhost" callers (the assistant's tools) stays off.

The proxy refuses foreign Host headers (DNS rebinding) and cross-site writes,
keeps the app's credentials and client-supplied forwarding headers to itself, and
swaps MLflow's `X-Frame-Options` for a CSP `frame-ancestors` letting this app's
page (and huggingface.co, on a Space) frame the UI. Authentication is the app's:
`install` puts `/mlflow` under the access policy (auth.py).

`/mlflow/-/traces/<trace_id>` redirects to the UI's page of one trace. When
MLFLOW_TRACKING_URI is an http(s) URL, nothing runs here: the tab embeds that
server, and `/mlflow/...` redirects to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from agentflow.observability.tracer import TraceSettings
from agentflow.settings import Settings
from agentflow.web.auth import AccessPolicy

log = logging.getLogger(__name__)

PREFIX = "/mlflow"
START_TIMEOUT = 90.0  # a cold start imports MLflow (~7 s) and may create or migrate its database
RETRY_AFTER = 10.0  # after a failed start, answer 503 at once for this long instead of trying again
HF_SPACE_HOSTS = "*.hf.space"
_CHILD = """\
import os, sys, threading
import uvicorn
def orphaned():
    sys.stdin.buffer.read()  # returns when the app's end of the pipe closes: the app is gone
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()
uvicorn.run("mlflow.server.fastapi_app:app", uds=sys.argv[1], proxy_headers=False, access_log=False,
            log_level="warning", timeout_graceful_shutdown=2)
"""
_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::(?P<port>[0-9]{1,5}))?")
_LABELS = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_TRACE_PATH = re.compile(rf"{PREFIX}/-/traces/(?P<trace_id>[A-Za-z0-9_-]{{1,128}})")
_EXPERIMENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers"}
    | {"transfer-encoding", "upgrade"}
)
# The app's credentials stay here; forwarding headers from the client could make MLflow trust a spoofed address.
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "authorization", "cookie", "origin", "forwarded", "x-real-ip"}
_NOT_RETURNED = _HOP_BY_HOP | {"x-frame-options", "date", "server"}
_APP_COOKIES = "access-token"  # Gradio's login session cookies: access-token-<id>, access-token-unsecure-<id>


class MlflowUnavailable(RuntimeError):
    """MLflow's server could not be started or reached; the message says what to do."""


@dataclass(frozen=True, slots=True)
class MlflowTarget:
    """Where traces are stored and which MLflow UI the app shows."""

    tracking_uri: str
    external_url: str | None
    """MLFLOW_TRACKING_URI when it is an http(s) MLflow server: embedded as is, nothing runs here."""
    artifacts: Path
    allowed_hosts: tuple[str, ...]
    """Host names (no port) the UI may be reached by; `*.example` matches any subdomain of example."""
    frame_ancestors: str

    @property
    def embed_url(self) -> str:
        return self.external_url or PREFIX + "/"

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> MlflowTarget:
        env = os.environ if environ is None else environ
        tracking_uri = TraceSettings.from_env(settings.home, env).tracking_uri  # the exporter's store
        external = tracking_uri.rstrip("/") + "/" if urlsplit(tracking_uri).scheme in ("http", "https") else None
        hosts = ["localhost", "127.0.0.1", "[::1]", HF_SPACE_HOSTS]
        bound = settings.host.strip().lower()
        if bound not in ("", "0.0.0.0", "::", "[::]"):
            hosts.append(f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound)
        hosts += [name.strip().lower() for name in env.get("AGENTFLOW_ALLOWED_HOSTS", "").split(",") if name.strip()]
        # On a Space, huggingface.co frames the app, so it is an ancestor of the MLflow frame too.
        on_space = bool(env.get("SPACE_ID") or env.get("SPACE_HOST"))
        ancestors = "'self' https://huggingface.co" if on_space else "'self'"
        return cls(
            tracking_uri=tracking_uri,
            external_url=external,
            artifacts=settings.home.resolve() / "mlflow-artifacts",
            allowed_hosts=tuple(dict.fromkeys(hosts)),
            frame_ancestors=ancestors,
        )


def host_allowed(host_header: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header (name and optional port) names this app; anything malformed is refused."""
    match = _HOST.fullmatch(host_header.strip().lower())
    if match is None:
        return False
    name = match["name"]
    for pattern in allowed:
        if pattern.startswith("*."):
            subdomain = name.removesuffix(pattern[1:])
            if subdomain != name and _LABELS.fullmatch(subdomain):
                return True
        elif name == pattern:
            return True
    return False


def install(app: FastAPI, settings: Settings, policy: AccessPolicy) -> MlflowMount:
    """Serve MLflow under /mlflow behind the app's auth; call it before the UI is mounted at "/" (which takes all)."""
    mount = MlflowMount(MlflowTarget.from_settings(settings))

    async def add_slash(request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", status_code=307)

    app.add_route(PREFIX, add_slash, include_in_schema=False)
    app.mount(PREFIX, mount, name="mlflow")
    policy.protect_prefix(PREFIX)
    return mount


class MlflowMount:
    """The ASGI app at /mlflow: checks Host and origin, then proxies to MLflow (or redirects to an external one)."""

    def __init__(self, target: MlflowTarget) -> None:
        self.target = target
        self.server = MlflowServer(target)

    async def aclose(self) -> None:
        await self.server.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        response = self._refusal(scope)
        if response is None and (match := _TRACE_PATH.fullmatch(scope["path"])):
            response = await self._open_trace(match["trace_id"])
        if response is None and self.target.external_url is not None:
            response = self._redirect_outside(scope)
        if response is not None:
            await response(scope, receive, send)
            return
        try:
            client = await self.server.client()
        except MlflowUnavailable as exc:
            await PlainTextResponse(str(exc), status_code=503)(scope, receive, send)
            return
        await self._forward(client, scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not host_allowed(host, self.target.allowed_hosts):
            log.warning("refused a request for the MLflow UI with Host %r", host[:100])
            return PlainTextResponse(
                f"Host {host[:100]!r} is not one this AgentFlow answers to (a DNS rebinding attempt, or a new name): "
                "if it is yours, add it to AGENTFLOW_ALLOWED_HOSTS (comma-separated; '*.example.com' for subdomains)",
                status_code=403,
            )
        if scope["method"] in _UNSAFE_METHODS and _cross_site(headers):
            return PlainTextResponse("cross-site request refused; use the MLflow tab of AgentFlow", status_code=403)
        return None

    def _redirect_outside(self, scope: Scope) -> Response:
        rest = quote(scope["path"].removeprefix(PREFIX + "/"))
        query = scope["query_string"].decode("latin-1")
        return RedirectResponse(f"{self.target.embed_url}{rest}" + (f"?{query}" if query else ""), status_code=307)

    async def _open_trace(self, trace_id: str) -> Response:
        """Redirect to the MLflow UI's page of one trace (the UI needs the trace's experiment in the URL)."""
        try:
            if self.target.external_url is None:
                client = await self.server.client()
                url = f"{PREFIX}/api/3.0/mlflow/traces/{trace_id}"
                found = await client.get(url, headers={"host": "localhost"})
            else:
                async with _external_client(self.target.external_url) as client:
                    found = await client.get(f"api/3.0/mlflow/traces/{trace_id}")
        except (MlflowUnavailable, httpx.HTTPError) as exc:
            return PlainTextResponse(f"MLflow did not answer ({exc}); try again in a moment", status_code=503)
        if found.status_code == 404:
            return PlainTextResponse(f"MLflow has no trace {trace_id} (yet): try again later", status_code=404)
        try:
            info = found.raise_for_status().json()["trace"]["trace_info"]
            experiment_id = str(info["trace_location"]["mlflow_experiment"]["experiment_id"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return PlainTextResponse(f"MLflow's answer about trace {trace_id} was unusable: {exc}", status_code=502)
        if not _EXPERIMENT_ID.fullmatch(experiment_id):
            return PlainTextResponse(f"unexpected experiment id {experiment_id[:80]!r}", status_code=502)
        page = f"#/experiments/{experiment_id}/traces?selectedEvaluationId={trace_id}&traceId={trace_id}"
        return RedirectResponse(self.target.embed_url + page, status_code=303)

    async def _forward(self, client: httpx.AsyncClient, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode()
        if scope["query_string"]:
            raw_path += b"?" + scope["query_string"]
        streams = scope["method"] not in ("GET", "HEAD", "OPTIONS")

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return

        request = client.build_request(
            scope["method"],
            client.base_url.copy_with(raw_path=raw_path),
            headers=_request_headers(scope),
            content=body() if streams else None,
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await PlainTextResponse(f"MLflow did not answer: {exc}", status_code=502)(scope, receive, send)
            return
        try:
            headers = [
                (name, value) for name, value in response.headers.raw if name.decode().lower() not in _NOT_RETURNED
            ]
            headers.append((b"content-security-policy", f"frame-ancestors {self.target.frame_ancestors}".encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


def _cross_site(headers: Headers) -> bool:
    """True for a write sent by another site's page (CSRF)."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    return origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


def _request_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The client's headers minus hop-by-hop ones, the app's credentials and spoofable forwarding headers.

    Origin goes too: `_refusal` has checked that a write is same-origin, and MLflow
    itself would refuse every origin but localhost (e.g. the app's `*.hf.space`).
    """
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    listed = {
        token.strip().lower() for name, value in raw if name == b"connection" for token in value.decode().split(",")
    }
    headers = [
        (name, value)
        for name, value in raw
        if (key := name.decode("latin-1").lower()) not in _NOT_FORWARDED
        and key not in listed
        and not key.startswith("x-forwarded-")
    ]
    host = Headers(scope=scope).get("host", "").strip().lower()
    headers.append((b"host", host.encode("latin-1")))
    cookies = [
        cookie
        for name, value in raw
        if name == b"cookie"
        for cookie in value.decode("latin-1").split(";")
        if cookie.strip() and not cookie.strip().startswith(_APP_COOKIES)
    ]
    if cookies:
        headers.append((b"cookie", ";".join(cookies).strip().encode("latin-1")))
    return headers


def _external_client(base_url: str) -> httpx.AsyncClient:
    """A client for an external MLflow server, with the credentials MLflow's own client would use."""
    token, user = os.environ.get("MLFLOW_TRACKING_TOKEN"), os.environ.get("MLFLOW_TRACKING_USERNAME")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    auth = httpx.BasicAuth(user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user and not token else None
    return httpx.AsyncClient(base_url=base_url, headers=headers, auth=auth, timeout=10.0)


class MlflowServer:
    """MLflow's tracking server and UI in a child process listening on a private Unix socket."""

    def __init__(self, target: MlflowTarget) -> None:
        self.target = target
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._failure: tuple[float, str] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None and self._client is not None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def client(self) -> httpx.AsyncClient:
        """A client for the running server; starts it first if needed (raises MlflowUnavailable)."""
        async with self._lock:
            if not self.running:
                await self._start()
            assert self._client is not None
            return self._client

    async def _start(self) -> None:
        if self._failure is not None and time.monotonic() - self._failure[0] < RETRY_AFTER:
            raise MlflowUnavailable(self._failure[1])
        await self.aclose()  # what is left of a server that died
        self._directory = Path(tempfile.mkdtemp(prefix="agentflow-mlflow-"))  # mode 0700: this user only
        socket = self._directory / "mlflow.sock"
        self.target.artifacts.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(socket)],
            stdin=subprocess.PIPE,  # closed when this process dies, which stops the child
            stdout=subprocess.DEVNULL,
            env=_child_env(self.target, os.environ),
        )
        transport = httpx.AsyncHTTPTransport(uds=str(socket))
        timeout = httpx.Timeout(10.0, read=300.0)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://mlflow", timeout=timeout)
        try:
            await self._wait_until_ready(started)
        except MlflowUnavailable as exc:
            self._failure = (time.monotonic(), str(exc))
            await self.aclose()
            raise
        except BaseException:  # cancelled (the request went away, the server stops): leave nothing running
            await self.aclose()
            raise
        self._failure = None
        log.info("MLflow UI started in %.1f s (store %s)", time.monotonic() - started, self.target.tracking_uri)

    async def _wait_until_ready(self, started: float) -> None:
        assert self._process is not None and self._client is not None
        while time.monotonic() - started < START_TIMEOUT:
            if (code := self._process.poll()) is not None:
                raise MlflowUnavailable(
                    f"the MLflow server exited with code {code} while starting (store {self.target.tracking_uri}); "
                    "its error is in AgentFlow's log, e.g. a bad MLFLOW_TRACKING_URI"
                )
            with contextlib.suppress(httpx.TransportError):
                if (await self._client.get(f"{PREFIX}/health", headers={"host": "localhost"})).status_code == 200:
                    return
            await asyncio.sleep(0.1)  # polling the child's health endpoint: it says nothing when it is ready
        raise MlflowUnavailable(f"the MLflow server did not start within {START_TIMEOUT:g} s; see AgentFlow's log")

    async def aclose(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its socket."""
        process, self._process = self._process, None
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    await asyncio.to_thread(process.wait, 10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait)
            if process.stdin is not None:
                process.stdin.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def _child_env(target: MlflowTarget, environ: Mapping[str, str]) -> dict[str, str]:
    """The app's environment minus its secrets, plus MLflow's server configuration."""
    env = {
        name: value
        for name, value in environ.items()
        if not _SECRET_NAME.search(name) and not name.startswith(("AGENTFLOW_", "MLFLOW_TRACKING_", "_MLFLOW_"))
    }
    hosts = [pattern.replace("[", "[[]") for pattern in target.allowed_hosts]  # MLflow matches with fnmatch
    env.update(
        {
            # What `mlflow server` sets for its workers: private names, checked by test_mlflow_mount.py.
            "_MLFLOW_SERVER_FILE_STORE": target.tracking_uri,
            "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
            "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
            "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(target.artifacts),
            "_MLFLOW_STATIC_PREFIX": PREFIX,
            "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join([*target.allowed_hosts, *(f"{host}:*" for host in hosts)]),
            "MLFLOW_SERVER_X_FRAME_OPTIONS": "NONE",  # the proxy sends a CSP frame-ancestors instead
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # offline, LiteLLM's download can hang MLflow's start (FACTS.md)
        }
    )
    return env
