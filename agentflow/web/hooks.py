"""`POST /api/hooks/WORKFLOW[/TRIGGER]`: signed webhook deliveries that start the deployed version.

Public (no API token): each delivery authenticates itself with its Standard Webhooks signature.
In order, cheapest first, so that floods and forgeries cost little and run nothing:

1. the workflow is deployed and has that webhook trigger (404);
2. the trigger's rate limit (429 with Retry-After; the server keeps answering everything else);
3. the body's size, before it is read or parsed (413);
4. the signature and its timestamp (403);
5. the body is JSON, mapped to the inputs (JMESPath) and checked against the input schema (400/422);
6. the run is recorded under the delivery id, durably, before the answer: 202 with the run, or the
   same run again for a retried delivery. With `wait` (the trigger's, or `?wait=SECONDS`), the
   answer waits that long for the run to end and carries its outputs (200), else 202.

Every refusal is logged in the trigger's deliveries (rate-limit refusals at most once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.spec.expressions import compile_expression
from agentflow.spec.models import WebhookTrigger, parse_duration
from agentflow.triggers.deployments import FRESH_SECONDS
from agentflow.triggers.dispatch import Refused, refuse, start
from agentflow.triggers.ratelimit import RateLimiter
from agentflow.triggers.signing import SignatureError, verify

if TYPE_CHECKING:
    from agentflow.runtime import AgentFlow
    from agentflow.triggers.deployments import Deployed

MAX_WAIT_SECONDS = 300.0
SETTLED = TERMINAL_STATUSES | {"waiting_approval"}
router = APIRouter(tags=["webhooks"])


@dataclass
class HookReceiver:
    """The server's webhook state: rate limits, and when each trigger's rate refusals were last logged."""

    limiter: RateLimiter = field(default_factory=RateLimiter)
    refusals_logged: dict[str, float] = field(default_factory=dict)
    secrets: dict[str, tuple[float, list[str]]] = field(default_factory=dict)
    """Recently read signing secrets by trigger: a rotation elsewhere is seen within FRESH_SECONDS."""

    def secrets_of(self, flow: AgentFlow, workflow: str, trigger: str, config: WebhookTrigger) -> list[str]:
        key = f"{workflow}/{trigger}"
        now = time.monotonic()
        cached = self.secrets.get(key)
        if cached is not None and now - cached[0] < FRESH_SECONDS and cached[1]:
            return cached[1]
        found = _secrets(flow, workflow, trigger, config)
        if len(self.secrets) > 10_000:
            self.secrets.clear()
        self.secrets[key] = (now, found)
        return found


def _flow(request: Request) -> AgentFlow:
    flow: AgentFlow = request.app.state.agentflow.flow
    return flow


def _answer(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _find(flow: AgentFlow, workflow: str, trigger: str | None) -> tuple[Deployed, str, WebhookTrigger]:
    deployed = flow.deployments.deployed(workflow)
    if deployed is None:
        raise Refused(404, f"workflow '{workflow}' is not deployed; deploy it with `agentflow deploy {workflow}`")
    hooks = {name: item.webhook for name, item in deployed.triggers.items() if item.webhook is not None}
    if trigger is None and len(hooks) == 1:
        trigger = next(iter(hooks))
    if trigger is None or trigger not in hooks:
        names = ", ".join(f"/api/hooks/{workflow}/{name}" for name in hooks) or "none"
        raise Refused(
            404, f"the deployed version of '{workflow}' has no webhook trigger '{trigger or ''}'; its hooks: {names}"
        )
    return deployed, trigger, hooks[trigger]


def _secrets(flow: AgentFlow, workflow: str, trigger: str, config: WebhookTrigger) -> list[str]:
    if config.secret:
        from agentflow.spec.expressions import env_references

        names = env_references(config.secret)
        values = flow.engine.services.secrets
        return [values[name] for name in names if name in values]
    return [item.secret for item in flow.store.hook_secrets(workflow, trigger, now=time.time())]


def _inputs(body: bytes, config: WebhookTrigger) -> dict[str, Any]:
    try:
        data = json.loads(body) if body.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Refused(400, f"the body is not JSON ({exc}); send application/json") from None
    if config.inputs:
        found = {name: compile_expression(expression).search(data) for name, expression in config.inputs.items()}
        return {name: value for name, value in found.items() if value is not None}
    if not isinstance(data, dict):
        raise Refused(
            422, "the body must be a JSON object of the workflow's inputs, or the trigger must map it (`inputs:`)"
        )
    return data


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"the body is over {limit} bytes (AGENTFLOW_HOOK_MAX_BYTES)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is over {limit} bytes (AGENTFLOW_HOOK_MAX_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/hooks/{workflow}", summary="A signed delivery to the workflow's only webhook trigger")
async def deliver_default(
    workflow: str,
    request: Request,
    wait: Annotated[
        float | None, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for the result")
    ] = None,
) -> JSONResponse:
    return await _deliver(request, workflow, None, wait)


@router.post(
    "/hooks/{workflow}/{trigger}",
    summary="A signed delivery (Standard Webhooks) that starts a run of the deployed version",
    responses={
        200: {"description": "the run ended within the wait: its outputs"},
        202: {"description": "the run is recorded (or was, for a retried delivery)"},
        403: {"description": "unsigned, a wrong signature or a stale timestamp: nothing runs"},
        413: {"description": "the body is too large: refused before it is read"},
        429: {"description": "over the trigger's rate: retry after Retry-After seconds"},
    },
)
async def deliver(
    workflow: str,
    trigger: str,
    request: Request,
    wait: Annotated[
        float | None, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait for the result")
    ] = None,
) -> JSONResponse:
    return await _deliver(request, workflow, trigger, wait)


async def _deliver(request: Request, workflow: str, trigger: str | None, wait: float | None) -> JSONResponse:
    flow = _flow(request)
    receiver: HookReceiver = request.app.state.hooks
    name = trigger or ""
    try:
        deployed, name, config = _find(flow, workflow, trigger)
        retry_after = receiver.limiter.take(f"{workflow}/{name}", config.rate)
        if retry_after > 0:
            _log_rate_refusal(flow, receiver, workflow, name, config.rate)
            return _answer(
                429,
                f"over this trigger's rate of {config.rate} deliveries a minute; retry later",
                headers={"Retry-After": str(max(1, round(retry_after)))},
            )
        try:
            body = await _read(request, flow.settings.hook_max_bytes)
            try:
                delivery_id = verify(
                    request.headers, body, receiver.secrets_of(flow, workflow, name, config), now=time.time()
                )
            except SignatureError:
                # A secret rotated moments ago in another process: look once more at the store.
                receiver.secrets.pop(f"{workflow}/{name}", None)
                delivery_id = verify(
                    request.headers, body, receiver.secrets_of(flow, workflow, name, config), now=time.time()
                )
        except SignatureError as exc:
            raise Refused(403, str(exc)) from None
        inputs = _inputs(body, config)
        started = await start(
            flow,
            deployed,
            name,
            channel="webhook",
            scope=f"webhook:{workflow}:{name}",
            key=delivery_id,
            inputs=inputs,
        )
    except Refused as exc:
        if not exc.logged:
            refuse(flow, workflow, name or "?", "webhook", exc.status, exc.reason)
        return _answer(exc.status, exc.reason)
    body_out: dict[str, Any] = {
        "run_id": started.run_id,
        "status": "queued",
        "duplicate": not started.created,
        "workflow": workflow,
        "version": started.version,
        "run": f"/api/runs/{started.run_id}",
    }
    seconds = wait if wait is not None else (parse_duration(config.wait) if config.wait is not None else 0.0)
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            run = await asyncio.wait_for(flow.executor.wait_for(started.run_id, statuses=SETTLED), seconds)
            body_out.update(status=run.status, outputs=run.outputs, error=run.error)
            return JSONResponse(body_out, status_code=200)
    if not started.created:
        seen = flow.store.get_run(started.run_id)
        body_out["status"] = seen.status if seen is not None else "unknown"
    return JSONResponse(body_out, status_code=202)


def _log_rate_refusal(flow: AgentFlow, receiver: HookReceiver, workflow: str, trigger: str, rate: int) -> None:
    key = f"{workflow}/{trigger}"
    now = time.monotonic()
    if now - receiver.refusals_logged.get(key, -1e9) < 1.0:
        return
    receiver.refusals_logged[key] = now
    refuse(flow, workflow, trigger, "webhook", 429, f"over the rate of {rate}/min (refusals logged once a second)")


def install(app: FastAPI, *, prefix: str = "/api") -> None:
    app.state.hooks = HookReceiver()
    app.include_router(router, prefix=prefix)
    app.state.access.allow_public(f"{prefix}/hooks")
