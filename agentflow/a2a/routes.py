"""The A2A routes: each deployed workflow is an agent at `/a2a/{workflow}/`, its card beside it.

- `GET /a2a/{workflow}/.well-known/agent-card.json` (and `agent.json`, the name A2A 0.3 used): the card,
  public, with an ETag (a 304 for a caller that has it);
- `POST /a2a/{workflow}/`: JSON-RPC (SendMessage, SendStreamingMessage, GetTask, CancelTask, ListTasks,
  SubscribeToTask), which needs the API's bearer token when auth is on — checked here, because the
  prefix is public for the cards.

Only deployed workflows are served, at their deployed version: the same rule as every other trigger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from agentflow.a2a.card import A2A_PREFIX, workflow_card
from agentflow.a2a.handler import RunRequestHandler
from agentflow.runtime import AgentFlow
from agentflow.web.auth import AccessPolicy

if TYPE_CHECKING:
    from starlette.applications import Starlette

CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")
MAX_BODY_BYTES = 4 * 1024 * 1024


class _WorkflowContext(DefaultServerCallContextBuilder):
    """The call's workflow, from the path, for the handler."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["workflow"] = request.path_params["workflow"]
        return context


def a2a_routes(flow: Callable[[], AgentFlow], policy: AccessPolicy) -> list[Route]:
    """The routes, for any Starlette or FastAPI app; `flow` gives the open AgentFlow once the app started."""
    dispatcher = JsonRpcDispatcher(RunRequestHandler(flow), context_builder=_WorkflowContext())

    async def card(request: Request) -> Response:
        running = flow()
        name = request.path_params["workflow"]
        deployed = running.deployments.deployed(name)
        if deployed is None:
            return JSONResponse(
                {
                    "detail": f"no agent '{name}': only deployed workflows are served; deploy it with "
                    f"`agentflow deploy {name}`"
                },
                status_code=404,
            )
        base = running.settings.public_url or str(request.base_url)
        served = agent_card_to_dict(
            workflow_card(deployed.workflow, deployed.stored, base_url=base, bearer=policy.enabled)
        )
        etag = 'W/"' + hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest() + '"'
        if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(served, headers={"ETag": etag, "Cache-Control": "no-cache"})

    async def rpc(request: Request) -> Response:
        if policy.enabled and not policy.token_is_valid(request.headers):
            return JSONResponse(
                {
                    "detail": "this agent needs AgentFlow's API token: send 'Authorization: Bearer <token>' "
                    "(AGENTFLOW_API_TOKEN, or the token printed at start-up)"
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="agentflow"'},
            )
        body = await _read_limited(request)
        if body is None:
            return JSONResponse({"detail": f"the request body is over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await dispatcher.handle_requests(_replayed(request, body))

    routes = [Route(f"{A2A_PREFIX}/{{workflow}}/", rpc, methods=["POST"])]
    routes += [Route(f"{A2A_PREFIX}/{{workflow}}{path}", card, methods=["GET"]) for path in CARD_PATHS]
    return routes


def install(app: Starlette, flow: Callable[[], AgentFlow], policy: AccessPolicy) -> None:
    """Serve the deployed workflows over A2A on `app`; call it before anything mounted at "/"."""
    policy.allow_public(A2A_PREFIX)  # the cards are public; the JSON-RPC route checks the token itself
    app.router.routes.extend(a2a_routes(flow, policy))


async def _read_limited(request: Request) -> bytes | None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _replayed(request: Request, body: bytes) -> Request:
    """The request again, its body already read (the dispatcher reads it once more)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await request.receive()  # a disconnect, while a stream is open
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)
