"""The one-process server: a FastAPI app hosting the REST API, the Gradio UI and the run executor.

`create_app()` checks the auth settings (refusing an exposed server without a
password), adds routes in order — `/health`, `/api`, the MLflow UI at `/mlflow`,
then Gradio at `/`, which must come last because it answers every path — and
wraps everything in the auth middleware. The lifespan opens AgentFlow and runs
its executor in the server's event loop, so runs queued from the API or the UI
start right away; at shutdown it also stops MLflow's server if one was started.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fastapi import FastAPI, HTTPException
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentflow.a2a import routes as a2a_routes
from agentflow.channels.hub import ChannelHub
from agentflow.registry import Registry
from agentflow.registry.health import RegistryMonitor
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from agentflow.spec.loader import MAX_FILE_BYTES
from agentflow.store.base import RunRecord, WorkflowVersion
from agentflow.triggers.schedules import Scheduler
from agentflow.web import api, hooks, mlflow_mount, registry_api
from agentflow.web.auth import AccessPolicy, AuthConfig, AuthMiddleware, auth_config

if TYPE_CHECKING:
    import gradio as gr

_ENGINE_LOCK = threading.Lock()
# A workflow is at most MAX_FILE_BYTES; JSON escaping can double it.
MAX_API_BODY_BYTES = 4 * MAX_FILE_BYTES


@dataclass
class AppState:
    """What the API, the UI and the chat share; found on `app.state.agentflow`."""

    settings: Settings
    chat: Any = None  # the conversation engine, filled in by the chat module (or the channels, first)
    channels: ChannelHub | None = None
    scheduler: Scheduler | None = None
    _flow: AgentFlow | None = field(default=None, repr=False)

    @property
    def flow(self) -> AgentFlow:
        if self._flow is None:
            raise RuntimeError(
                "AgentFlow is not open yet: it opens when the server starts; "
                "read `state.flow` inside event handlers, not while building the UI"
            )
        return self._flow

    def conversation(self) -> Any:
        """The server's conversation engine, made on first use: one for the web chat and every channel."""
        with _ENGINE_LOCK:
            if self.chat is None:
                from agentflow.chat.engine import ConversationEngine

                # AGENTFLOW_MODEL, else the first provider detected (docs: DESIGN §4, "LLM selection").
                self.chat = ConversationEngine(self.flow)
            return self.chat

    async def start_run(
        self, version: WorkflowVersion, inputs: dict[str, Any], *, trigger: str = "manual"
    ) -> RunRecord:
        """Queue a run for the background executor; call it from async handlers (it must run on the server's loop)."""
        return await api.submit_run(self.flow, version, inputs, trigger)


def agentflow_version() -> str:
    try:
        return version("agentflow")
    except PackageNotFoundError:
        return "unknown"


def create_app(
    settings: Settings | None = None,
    *,
    build_ui: Callable[[AppState], gr.Blocks] | None = None,
    flow: AgentFlow | None = None,
) -> FastAPI:
    """The whole app. Pass `flow` to serve an already open AgentFlow (tests); it is then not closed here."""
    settings = settings or (flow.settings if flow is not None else Settings.from_env())
    config = auth_config(settings)  # raises SettingsError before anything starts
    state = AppState(settings=settings, _flow=flow)
    policy = AccessPolicy(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = state._flow is None
        if owned:
            state._flow = AgentFlow.open(settings, tracing=settings.tracing)
        running = state.flow
        _announce_token(config)
        await running.executor.start()
        await running.feed.start()
        scheduler = state.scheduler = Scheduler(running)
        running.deployments.listeners.append(scheduler.poke)
        await scheduler.start()
        monitor = RegistryMonitor(running.engine.services.registry) if running.engine.services.registry else None
        if monitor is not None:
            await monitor.start()
        if channels.channels:
            await channels.start(running, state.conversation())
        try:
            yield
        finally:
            if monitor is not None:
                await monitor.stop()
            await channels.stop()
            await scheduler.stop()
            running.deployments.listeners.remove(scheduler.poke)
            await running.feed.stop()
            await mlflow_ui.aclose()
            await running.executor.stop()
            if owned:
                running.close()
                state._flow = None

    app = _App(
        title="AgentFlow",
        version=agentflow_version(),
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        swagger_ui_oauth2_redirect_url="/api/docs/oauth2-redirect",
        redoc_url=None,
    )
    app.state.agentflow = state
    app.state.access = policy  # later mounts call app.state.access.protect_prefix("/mlflow")

    @app.get("/health", tags=["health"], summary="Liveness; always public")
    async def health() -> dict[str, Any]:
        running = state.flow.store.list_runs(statuses=("running",), limit=100_000)
        return {"status": "ok", "version": agentflow_version(), "runs_active": len(running)}

    hooks.install(app)  # before the API: its catch-all answers every other /api path
    registry_api.install(app)  # before the API too
    api.install(app)
    channels = state.channels = ChannelHub(settings)
    channels.install(app)
    a2a_routes.install(app, lambda: state.flow, policy)  # deployed workflows as A2A agents, before the UI
    mlflow_ui = mlflow_mount.install(app, settings, policy)  # before the UI: Gradio at "/" answers every path
    if build_ui is not None:
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before the builder imports gradio
        _mount_ui(app, build_ui(state), config, policy)
    app.add_middleware(BodyLimit, prefix="/api", limit=MAX_API_BODY_BYTES, exempt=("/api/hooks",))
    app.add_middleware(AuthMiddleware, policy=policy)  # added last: runs first (after the heartbeats' fast path)
    return app


class _App(FastAPI):
    """FastAPI whose outermost layer answers the agents' heartbeats (registry_api.HeartbeatFastPath): at a
    thousand agents they are most of the requests, and a known agent's needs nothing of the stack below."""

    def build_middleware_stack(self) -> ASGIApp:
        return registry_api.HeartbeatFastPath(super().build_middleware_stack(), registry=self._registry)

    def _registry(self) -> Registry | None:
        running = self.state.agentflow._flow
        return None if running is None else running.engine.services.registry


def _mount_ui(app: FastAPI, blocks: gr.Blocks, config: AuthConfig, policy: AccessPolicy) -> None:
    import gradio as gr
    from gradio.routes import App as GradioApp

    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=(config.user, config.password) if config.enabled and config.password else None,
        ssr_mode=False,  # would start a Node server
        mcp_server=False,
        run_history=False,  # would offer to upload every call to the Hugging Face Hub
        footer_links=["api", "settings"],
    )
    mounted = [route.app for route in app.routes if isinstance(route, Mount) and isinstance(route.app, GradioApp)]
    policy.sessions.attach(mounted[-1])


def _announce_token(config: AuthConfig) -> None:
    if config.enabled and config.token_derived:
        # Printed, not logged: it is a credential, and logs are often shipped elsewhere.
        print(
            f"AgentFlow API token (derived from AGENTFLOW_PASSWORD; set AGENTFLOW_API_TOKEN to choose your own):\n"
            f"  Authorization: Bearer {config.api_token}",
            file=sys.stderr,
            flush=True,
        )


class BodyLimit:
    """Answer 413 to request bodies over `limit` bytes under `prefix`, before any of them is parsed."""

    def __init__(self, app: ASGIApp, *, prefix: str, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.prefix = prefix
        self.limit = limit
        self.exempt = exempt  # prefixes with a limit of their own (webhooks: AGENTFLOW_HOOK_MAX_BYTES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not (path == self.prefix or path.startswith(self.prefix + "/"))
            or any(path.startswith(prefix + "/") for prefix in self.exempt)
        ):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # A streamed body without Content-Length: the route's JSON handler answers 413.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counted_receive, send)

    def _detail(self) -> str:
        return f"the request body is over {self.limit} bytes; a workflow may be at most {MAX_FILE_BYTES} bytes"

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": self._detail()}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
