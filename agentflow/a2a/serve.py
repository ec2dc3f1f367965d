"""The minimal agent process: one workflow served over A2A, and nothing else.

Uvicorn, the A2A routes (agentflow/a2a/routes.py), `/health` and a run executor on the SQLite store
in its own home: no Gradio, no MLflow server, no conversation engine. The workflow is saved in that
home, granted (the operator who starts the process is a person and named the file) and deployed; with
`register`, the process enrols with an orchestrator (agentflow/registry/client.py), heartbeats while it
runs and deregisters when it stops (SIGTERM and Ctrl-C end it gracefully).
"""

from __future__ import annotations

import asyncio
import getpass
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentflow.a2a.card import A2A_PREFIX, agent_path
from agentflow.a2a.routes import a2a_routes
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.store.base import WorkflowVersion
from agentflow.versions import UnknownVersionError, resolve, title
from agentflow.web.auth import AccessPolicy, AuthMiddleware, auth_config

MODULES_NOT_NEEDED = (
    "gradio",
    "mlflow.server",
    "agentflow.chat.engine",
    "agentflow.chat.assistant",
    "agentflow.web.ui",
)
"""What an agent process never imports; `agentflow agent serve --check-imports` lists any that are."""


class AgentServeError(Exception):
    """The agent cannot start; the message says what to change."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    workflow: str
    """A workflow file, or the name of a workflow already stored in the home."""
    host: str = "127.0.0.1"
    port: int = 8700
    home: Path | None = None
    register: str | None = None
    token: str | None = None
    public_url: str | None = None


def agent_settings(options: AgentOptions, environ_settings: Settings) -> Settings:
    """The process's settings: its own home and SQLite store, the local executor, no trace export."""
    public_url = options.public_url.rstrip("/") if options.public_url else None
    return replace(
        environ_settings,
        home=options.home or environ_settings.home,
        host=options.host,
        port=options.port,
        public_url=public_url,
        database_url=None,
        executor="local",
        tracing=False,
    )


def publish(flow: AgentFlow, workflow: str) -> WorkflowVersion:
    """Save (from a file), grant and deploy the workflow this process serves; the deployed version."""
    person = f"agent-serve:{getpass.getuser()}"
    if Path(workflow).is_file():
        stored = flow.save_workflow_file(workflow)
    else:
        try:
            stored = resolve(flow.store, workflow, None)
        except UnknownVersionError:
            raise AgentServeError(
                f"'{workflow}' is neither a workflow file nor a workflow stored in {flow.settings.home}; "
                "give the path of a .yaml file"
            ) from None
    flow.grant_version(stored, by=person, note="served by `agentflow agent serve`")
    deployed = flow.deployments.deployed(stored.name)
    if deployed is None or deployed.stored.version != stored.version:
        flow.deployments.deploy(stored.name, stored.version, by=person, note="served by `agentflow agent serve`")
    return stored


def build_app(flow: AgentFlow, stored: WorkflowVersion) -> Starlette:
    """The agent's ASGI app; its lifespan runs the executor."""
    policy = AccessPolicy(auth_config(flow.settings))
    policy.allow_public(A2A_PREFIX)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await flow.executor.start()
        await flow.feed.start()
        try:
            yield
        finally:
            await flow.feed.stop()
            await flow.executor.stop()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "workflow": stored.name, "version": title(stored)})

    return Starlette(
        routes=[Route("/health", health), *a2a_routes(lambda: flow, policy)],
        middleware=[Middleware(AuthMiddleware, policy=policy)],
        lifespan=lifespan,
    )


def not_needed_imported() -> list[str]:
    return sorted(name for name in sys.modules if name in MODULES_NOT_NEEDED or name.startswith("gradio."))


async def serve_agent(options: AgentOptions, *, check_imports: bool = False) -> int:
    """Serve until stopped; with `check_imports`, start, print what was imported that need not be, and stop."""
    if options.register is not None and not options.token:
        raise AgentServeError(
            "--register needs --token: an enrolment token from the orchestrator (agentflow agents token)"
        )
    settings = agent_settings(options, Settings.from_env())
    auth_config(settings)  # refuses an exposed agent without AGENTFLOW_PASSWORD, before anything opens
    sock = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as exc:
        raise AgentServeError(
            f"cannot listen on {options.host}:{options.port} ({exc.strerror}); pick another --port"
        ) from None
    port = sock.getsockname()[1]
    flow = AgentFlow.open(replace(settings, port=port))
    try:
        stored = publish(flow, options.workflow)
        local = f"http://{options.host if ':' not in options.host else f'[{options.host}]'}:{port}"
        base = settings.public_url or local
        card_url = base + agent_path(stored.name)
        server = _Server(uvicorn.Config(build_app(flow, stored), log_level="warning", timeout_graceful_shutdown=5))
        print(f"serving {title(stored)} over A2A at {local}{agent_path(stored.name)}", file=sys.stderr, flush=True)
        # Uvicorn stops gracefully on SIGTERM, then raises it again under the handler found before: a
        # handler that does nothing lets the process end by returning, with exit code 0.
        signal.signal(signal.SIGTERM, lambda number, frame: None)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        ready = asyncio.ensure_future(server.ready.wait())
        await asyncio.wait((serving, ready), return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not server.started:
            await serving
            return 1
        if check_imports:
            found = not_needed_imported()
            server.should_exit = True
            await serving
            print("imported and not needed: " + (", ".join(found) if found else "none"), flush=True)
            return 1 if found else 0
        if options.register is None:
            await serving
            return 0
        await _registered(server, serving, options.register, options.token or "", card_url, str(stored.number))
        return 0
    finally:
        sock.close()
        flow.close()


class _Server(uvicorn.Server):
    """Uvicorn's server, saying when it accepts connections (its lifespan has started)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


async def _registered(
    server: _Server, serving: asyncio.Task[None], orchestrator: str, token: str, card_url: str, version: str
) -> None:
    """Serve while enrolled (the orchestrator reads our card as we enrol, so the server listens first)."""
    from agentflow.registry.client import Enrolment, EnrolmentError

    try:
        async with Enrolment(orchestrator, token=token, card_url=card_url, card_version=version) as enrolment:
            print(f"registered with {orchestrator} as agent {enrolment.agent_id}", file=sys.stderr, flush=True)
            await asyncio.shield(serving)  # SIGTERM ends the server, then leaving deregisters
    except EnrolmentError as exc:
        server.should_exit = True
        await serving
        raise AgentServeError(f"cannot register with {orchestrator}: {exc}") from None
