"""The agent registry over HTTP: the operator's routes under /api/agents, the agents' under /api/registry.

`/api/agents/...` take the API token like every /api route. `/api/registry/...` are public: each request
proves itself — enrolment with a one-time token, heartbeats and deregistration with the agent's secret.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentflow.registry import Registry, RegistryError, UnknownAgent
from agentflow.registry.cards import CardError
from agentflow.registry.health import HEALTHY
from agentflow.registry.models import agent_json, token_json

_bearer = HTTPBearer(auto_error=False, description="AGENTFLOW_API_TOKEN, or the token printed at start-up")
operator = APIRouter(prefix="/agents", tags=["agents"], dependencies=[Security(_bearer)])
agents = APIRouter(prefix="/registry", tags=["registry"])
PUBLIC_PREFIX = "/registry/"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenRequest(_Body):
    note: str | None = Field(default=None, max_length=200)
    ttl_s: float | None = Field(default=None, gt=0, description="seconds until it expires (default 24 hours)")


class AddAgent(_Body):
    url: str = Field(min_length=1, max_length=2000, description="the agent's card URL, or its base URL")


class EnrolRequest(_Body):
    token: str | None = Field(default=None, max_length=200)
    card_url: str = Field(default="", max_length=2000, description="the agent's card URL, or its base URL")


class HeartbeatRequest(_Body):
    card_version: str | None = Field(default=None, max_length=200)


def _registry(request: Request) -> Registry:
    registry = request.app.state.agentflow.flow.engine.services.registry
    if registry is None:
        raise RegistryError("the agent registry is not open in this process")
    return registry


Found = Annotated[Registry, Depends(_registry)]


def _secret(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


# -- the operator's routes ---------------------------------------------------------------


@operator.post("/tokens", status_code=201, summary="Issue a one-time enrolment token (its value is shown once)")
async def issue_token(body: TokenRequest, registry: Found) -> dict[str, Any]:
    kwargs = {} if body.ttl_s is None else {"ttl_s": body.ttl_s}
    token, value = await asyncio.to_thread(registry.issue_token, note=body.note, **kwargs)
    return {"id": token.id, "token": value, "expires_at": token.expires_at, "note": token.note}


@operator.get("/tokens", summary="Enrolment tokens, newest first (values are never shown again)")
async def list_tokens(registry: Found) -> list[dict[str, Any]]:
    return [token_json(token) for token in await asyncio.to_thread(registry.tokens)]


@operator.delete("/tokens/{token_id}", status_code=204, summary="Revoke an unused enrolment token")
async def revoke_token(token_id: str, registry: Found) -> Response:
    await asyncio.to_thread(registry.revoke_token, token_id)
    return Response(status_code=204)


@operator.post("", status_code=201, summary="Add an agent by its card URL (or base URL); it is then polled")
async def add_agent(body: AddAgent, registry: Found) -> dict[str, Any]:
    return agent_json(await registry.add_url(body.url.strip()))


@operator.get("", summary="Every agent with its state: healthy, stale or offline")
async def list_agents(registry: Found) -> list[dict[str, Any]]:
    return [agent_json(agent) for agent in await asyncio.to_thread(registry.list)]


@operator.get("/{agent_id}", summary="One agent, with its card's history")
async def get_agent(agent_id: str, registry: Found) -> dict[str, Any]:
    agent = await asyncio.to_thread(registry.get, agent_id)
    if agent is None:
        raise UnknownAgent(f"no agent {agent_id}; list them with GET /api/agents")
    history = await asyncio.to_thread(registry.store.card_history, agent_id)
    changes = [
        {"at": item.at, "version": item.version, "skills": item.skills, "change": item.change} for item in history
    ]
    return {**agent_json(agent), "history": changes}


@operator.delete("/{agent_id}", status_code=204, summary="Remove an agent from the registry")
async def remove_agent(agent_id: str, registry: Found) -> Response:
    await asyncio.to_thread(registry.remove, agent_id)
    return Response(status_code=204)


# -- the agents' routes (public: each request authenticates itself) ----------------------------


@agents.post("/enrol", status_code=201, summary="An agent enrols with a one-time token and its card URL")
async def enrol(registry: Found, body: EnrolRequest | None = None) -> dict[str, Any]:
    body = body or EnrolRequest()
    agent, secret = await registry.enrol(body.token, body.card_url.strip())
    return {"agent_id": agent.id, "secret": secret, "ttl_s": registry.ttl_s, "heartbeat_s": registry.heartbeat_s}


@agents.post("/{agent_id}/heartbeat", summary="An enrolled agent is alive (Authorization: Bearer <its secret>)")
async def heartbeat(agent_id: str, request: Request, registry: Found, body: HeartbeatRequest | None = None) -> Any:
    card_version = body.card_version if body is not None else None
    state = await registry.heartbeat(agent_id, _secret(request), card_version=card_version)
    return {"state": state, "ttl_s": registry.ttl_s, "heartbeat_s": registry.heartbeat_s}


@agents.delete("/{agent_id}", status_code=204, summary="An enrolled agent leaves (Authorization: Bearer <its secret>)")
async def deregister(agent_id: str, request: Request, registry: Found) -> Response:
    await asyncio.to_thread(registry.deregister, agent_id, _secret(request))
    return Response(status_code=204)


_HEARTBEAT = re.compile(r"/api/registry/(agt_[0-9a-f]{1,64})/heartbeat")
_MOST_A_FAST_BODY = 512


class HeartbeatFastPath:
    """The registry's hottest request answered before the app's stack: a heartbeat whose agent this process
    checked lately (its secret, its card version) costs no routing, no dependency injection, no thread and
    no database write of its own (`Registry.beat_known`). Any other request — and any heartbeat it cannot
    take: unknown agent, wrong secret, new card, odd body — goes down the stack unchanged, body included,
    to the route above, which checks everything. It wraps the whole app (server.py), before authentication:
    a heartbeat proves itself."""

    def __init__(self, app: ASGIApp, *, registry: Callable[[], Registry | None]) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        found = _HEARTBEAT.fullmatch(scope["path"])
        registry = self.registry() if found else None
        if found is None or registry is None:
            return await self.app(scope, receive, send)
        chunks, body = await _read_some(receive, _MOST_A_FAST_BODY)
        card_version = _card_version(body)
        if card_version is not False and registry.beat_known(
            found.group(1), _bearer_of(scope), card_version=card_version
        ):
            answer = json.dumps({"state": HEALTHY, "ttl_s": registry.ttl_s, "heartbeat_s": registry.heartbeat_s})
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": answer.encode()})
            return None

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        return await self.app(scope, replay, send)


async def _read_some(receive: Receive, limit: int) -> tuple[list[Message], bytes | None]:
    """The request's messages read so far and its whole body, or None when it is longer than `limit`."""
    chunks: list[Message] = []
    size = 0
    while True:
        message = await receive()
        chunks.append(message)
        if message["type"] != "http.request":
            return chunks, None
        size += len(message.get("body", b""))
        if size > limit:
            return chunks, None
        if not message.get("more_body", False):
            return chunks, b"".join(chunk.get("body", b"") for chunk in chunks)


def _card_version(body: bytes | None) -> str | Literal[False] | None:
    """The body's card version (None: none announced); False when the body is not one this path takes."""
    if body is None:
        return False
    if not body.strip():
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    if not isinstance(parsed, dict) or set(parsed) - {"card_version"}:
        return False
    version = parsed.get("card_version")
    return version if version is None or isinstance(version, str) else False


def _bearer_of(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, secret = value.decode("latin-1").partition(" ")
            return secret.strip() if kind.lower() == "bearer" else None
    return None


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, CardError):
        return JSONResponse({"detail": str(exc)}, status_code=400)
    assert isinstance(exc, RegistryError)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


def install(app: FastAPI, *, prefix: str = "/api") -> None:
    """Before `api.install`: its catch-all answers every /api path it does not know."""
    app.include_router(operator, prefix=prefix)
    app.include_router(agents, prefix=prefix)
    app.add_exception_handler(RegistryError, _refused)
    app.add_exception_handler(CardError, _refused)
    app.state.access.allow_public(prefix + PUBLIC_PREFIX)
