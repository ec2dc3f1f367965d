"""The REST API under `/api`: workflows, runs, approvals. JSON in and out; errors as `{"detail": ...}`.

Reads go straight to the store (indexed SQLite reads take well under a
millisecond); validation and writes, which wait for a commit, run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer

from agentflow import runs_diff
from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.events import EVENT_TYPES, RunStatus
from agentflow.engine.feed import batches
from agentflow.engine.inputs import InputError
from agentflow.progress import run_summary
from agentflow.runtime import AgentFlow
from agentflow.spec.errors import SpecErrors
from agentflow.store.base import RunRecord, WorkflowVersion
from agentflow.triggers.deployments import SECRET_GRACE_SECONDS, DeployError, DeployResult
from agentflow.trust.capabilities import Capabilities
from agentflow.trust.grants import NeedsGrantError
from agentflow.versions import UnknownVersionError, resolve
from agentflow.web.models import (
    AnalyseRequest,
    Decision,
    DeliveryEntry,
    DeploymentEntry,
    DeploymentStatus,
    DeployRequest,
    DeployResponse,
    EventPage,
    GrantEntry,
    GrantRequest,
    HookSecretEntry,
    PendingApproval,
    ReplayedRun,
    ReplayRequest,
    RunAnalysis,
    RunDetail,
    RunSummary,
    SandboxStatus,
    SaveWorkflow,
    SpecProblem,
    SpecProblems,
    StartRun,
    ToolEntry,
    TriggerEntry,
    WorkflowDetail,
    WorkflowSummary,
    capability_set,
)
from agentflow.web.sse import KEEPALIVE_SECONDS, LINGER_SECONDS, sse

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)

# Declares the bearer scheme in the OpenAPI document; `auth.AuthMiddleware` enforces it.
_bearer = HTTPBearer(auto_error=False, description="AGENTFLOW_API_TOKEN, or the token printed at start-up")
router = APIRouter(dependencies=[Security(_bearer)])


# -- dependencies ---------------------------------------------------------------------


def _person(flow: AgentFlow) -> str:
    """Every API credential (the token, a login session) is the operator's: a person."""
    return f"api:{flow.settings.user}"


def _flow(request: Request) -> AgentFlow:
    flow: AgentFlow = request.app.state.agentflow.flow
    return flow


Flow = Annotated[AgentFlow, Depends(_flow)]


def _workflow_or_404(flow: AgentFlow, name: str, version: str | None = None) -> WorkflowVersion:
    """A version by its id, a prefix of it, or its number (`v2`: docs/versions.md); the current one by default."""
    with contextlib.suppress(UnknownVersionError):
        return resolve(flow.store, name, version)
    if version is not None and flow.store.get_workflow(name) is not None:
        raise HTTPException(
            404, f"workflow '{name}' has no version '{version}'; list them with GET /api/workflows/{name}/versions"
        )
    raise HTTPException(404, f"no workflow named '{name}'; list them with GET /api/workflows, save one with POST")


MIN_RUN_PREFIX = 4


def _run_or_404(flow: AgentFlow, run_id: str) -> RunRecord:
    """A run by its id or by a unique prefix of it (the UI and the CLI show the first 12 characters)."""
    run = flow.store.get_run(run_id)
    if run is not None:
        return run
    matches = flow.store.find_run(run_id) if len(run_id) >= MIN_RUN_PREFIX else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(match.id for match in matches)
        raise HTTPException(409, f"'{run_id}' is the start of several runs ({names}); give more characters")
    if len(run_id) < MIN_RUN_PREFIX:
        raise HTTPException(404, f"no run '{run_id}'; give the run id or at least {MIN_RUN_PREFIX} of its characters")
    raise HTTPException(404, f"no run '{run_id}'; list runs with GET /api/runs")


def _found_run(run_id: str, request: Request) -> RunRecord:
    # A sync dependency: FastAPI runs it in a thread, off the loop.
    return _run_or_404(_flow(request), run_id)


FoundRun = Annotated[RunRecord, Depends(_found_run)]


def _detail(flow: AgentFlow, run_id: str) -> RunDetail:
    run = _run_or_404(flow, run_id)
    pending = flow.store.pending_approval(run.id) if run.status == "waiting_approval" else None
    return RunDetail(
        **run_summary(run, flow.store.node_runs(run.id)),
        cancel_requested=run.cancel_requested,
        approval=None
        if pending is None
        else PendingApproval(node_id=pending.node_id, message=pending.message, requested_at=pending.requested_at),
    )


async def submit_run(flow: AgentFlow, stored: WorkflowVersion, inputs: dict[str, Any], trigger: str) -> RunRecord:
    """Queue a run from async code running on the server's event loop (raises InputError)."""
    # Compiling and the durable insert (a commit) wait: both happen in a thread, off the loop.
    return await asyncio.to_thread(flow.submit, stored, inputs, trigger=trigger)


# -- workflows ------------------------------------------------------------------------


@router.get("/workflows", summary="The latest version of every workflow")
async def list_workflows(flow: Flow) -> list[WorkflowSummary]:
    return [WorkflowSummary.of(stored) for stored in flow.store.list_workflows()]


@router.post(
    "/workflows",
    status_code=201,
    summary="Validate and save a workflow as a new version",
    responses={422: {"model": SpecProblems, "description": "the workflow is invalid; nothing was saved"}},
)
async def save_workflow(body: SaveWorkflow, flow: Flow) -> WorkflowDetail:
    """The caller wrote this workflow with a person's credentials: what it needs is granted by them."""

    def save() -> WorkflowDetail:
        stored = flow.save_workflow(body.source)
        flow.grant_version(stored, by=_person(flow), note="saved through the API")
        return WorkflowDetail.of(stored, flow.review(stored))

    return await asyncio.to_thread(save)


@router.get("/workflows/{name}", summary="The latest version of a workflow, with its source and review")
async def get_workflow(name: str, flow: Flow) -> WorkflowDetail:
    stored = _workflow_or_404(flow, name)
    return WorkflowDetail.of(stored, await asyncio.to_thread(flow.review, stored))


@router.post(
    "/workflows/{name}/grant",
    summary="A person grants a version what it needs beyond the workflow's grant (tools, egress, secrets)",
)
async def grant_workflow(name: str, flow: Flow, body: GrantRequest | None = None) -> WorkflowDetail:
    stored = _workflow_or_404(flow, name, body.version if body else None)

    def grant() -> WorkflowDetail:
        flow.grant_version(stored, by=_person(flow), note="granted through the API")
        return WorkflowDetail.of(stored, flow.review(stored))

    return await asyncio.to_thread(grant)


@router.get("/workflows/{name}/grants", summary="Who granted what to a workflow, and when (newest first)")
async def list_grants(name: str, flow: Flow) -> list[GrantEntry]:
    _workflow_or_404(flow, name)
    return [
        GrantEntry(
            granted_at=record.granted_at,
            granted_by=record.granted_by,
            version=record.version,
            capabilities=capability_set(Capabilities.from_dict(record.capabilities)),
            note=record.note,
        )
        for record in flow.store.list_grants(name)
    ]


@router.get("/workflows/{name}/versions", summary="Every stored version of a workflow, newest first")
async def list_versions(name: str, flow: Flow) -> list[WorkflowSummary]:
    versions = flow.store.list_versions(name)
    if not versions:
        _workflow_or_404(flow, name)
    return [WorkflowSummary.of(stored) for stored in versions]


@router.get("/workflows/{name}/versions/{version}", summary="One version of a workflow, with its source and review")
async def get_version(name: str, version: str, flow: Flow) -> WorkflowDetail:
    stored = _workflow_or_404(flow, name, version)
    return WorkflowDetail.of(stored, await asyncio.to_thread(flow.review, stored))


@router.get(
    "/workflows/{name}/variants",
    summary="How each node's variants compare over recent runs: failures, latency, cost, significance",
)
async def workflow_variants(
    name: str,
    flow: Flow,
    node: str | None = None,
    last: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    from agentflow.variant_runs import VariantsError, node_variants

    _workflow_or_404(flow, name)
    try:
        nodes = await asyncio.to_thread(node_variants, flow.store, name, node=node, last=last)
    except VariantsError as exc:
        raise HTTPException(404, str(exc)) from None
    return {"workflow": name, "nodes": [found.to_dict() for found in nodes]}


# -- runs -----------------------------------------------------------------------------


@router.get("/runs", summary="Recent runs, newest first")
async def list_runs(
    flow: Flow,
    status: Annotated[list[str] | None, Query(description="repeat or comma-separate: ?status=running,queued")] = None,
    workflow: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[RunSummary]:
    statuses = tuple(part.strip() for value in status or () for part in value.split(",") if part.strip())
    unknown = sorted(set(statuses) - set(RUN_STATUSES))
    if unknown:
        raise HTTPException(422, f"unknown status {', '.join(unknown)}; use one of {', '.join(RUN_STATUSES)}")
    runs = await asyncio.to_thread(flow.store.list_runs, limit=limit, statuses=statuses, workflow=workflow)
    return [RunSummary.of(run) for run in runs]


@router.post(
    "/runs",
    status_code=202,
    summary="Queue a run; the background executor starts it",
    responses={403: {"description": "the version needs a person's grant first; nothing was queued"}},
)
async def start_run(body: StartRun, flow: Flow) -> RunSummary:
    stored = _workflow_or_404(flow, body.workflow, body.version)
    return RunSummary.of(await submit_run(flow, stored, body.inputs, "api"))


@router.get("/runs/{run_id}", summary="A run with its per-node table and any pending approval")
async def get_run(run: FoundRun, flow: Flow) -> RunDetail:
    return await asyncio.to_thread(_detail, flow, run.id)


@router.get("/runs/{run_id}/events", summary="A run's event log, oldest first")
async def run_events(run: FoundRun, flow: Flow, after: Annotated[int, Query(ge=0)] = 0) -> EventPage:
    events = await asyncio.to_thread(flow.store.events, run.id, after=after)
    return EventPage(events=events, last_id=events[-1]["id"] if events else after)


@router.get(
    "/runs/{run_id}/diff/{other_id}",
    summary="What changed from one run to another: version and source, inputs, each node, totals, the result",
)
async def diff_runs(run: FoundRun, other_id: str, flow: Flow) -> dict[str, Any]:
    def diff() -> dict[str, Any]:
        return runs_diff.diff_runs(flow.store, run, _run_or_404(flow, other_id)).to_dict()

    return await asyncio.to_thread(diff)


async def _decide(flow: AgentFlow, run: RunRecord, body: Decision | None, *, approved: bool) -> RunDetail:
    comment = body.comment if body else None
    decided = await asyncio.to_thread(
        flow.store.decide_approval, run.id, approved=approved, comment=comment, decided_by=_person(flow)
    )
    if decided is None:
        raise HTTPException(
            409, f"run {run.id} has no pending approval (its status is {run.status}); nothing to decide"
        )
    flow.executor.wake()
    return await asyncio.to_thread(_detail, flow, run.id)


@router.post("/runs/{run_id}/approve", status_code=202, summary="Approve the pending step; the run continues")
async def approve_run(run: FoundRun, flow: Flow, body: Decision | None = None) -> RunDetail:
    return await _decide(flow, run, body, approved=True)


@router.post("/runs/{run_id}/reject", status_code=202, summary="Reject the pending step; the run ends as rejected")
async def reject_run(run: FoundRun, flow: Flow, body: Decision | None = None) -> RunDetail:
    return await _decide(flow, run, body, approved=False)


@router.post("/runs/{run_id}/cancel", status_code=202, summary="Cancel a queued, waiting or running run")
async def cancel_run(run: FoundRun, flow: Flow) -> RunDetail:
    if not await asyncio.to_thread(flow.store.request_cancel, run.id):
        raise HTTPException(
            409, f"run {run.id} is {run.status}; only queued, waiting_approval or running runs can be cancelled"
        )
    flow.bus.changed(run.id)  # an idle run ended here, with no engine event: wake whoever follows it
    return await asyncio.to_thread(_detail, flow, run.id)


@router.post("/runs/{run_id}/rerun", status_code=202, summary="Start a new run: same workflow version and inputs")
async def rerun(run: FoundRun, flow: Flow) -> RunSummary:
    stored = _workflow_or_404(flow, run.workflow, run.version)
    return RunSummary.of(await submit_run(flow, stored, run.inputs, "rerun"))


@router.post("/runs/{run_id}/analyse", summary="Ask a model why a run failed or was slow (docs/analyse.md)")
async def analyse(run: FoundRun, flow: Flow, body: AnalyseRequest | None = None) -> RunAnalysis:
    from agentflow.analyse import AnalyseError, NoModelError, analyse_run

    try:
        analysis = await analyse_run(flow, run, model=body.model if body else None)
    except NoModelError as exc:
        raise HTTPException(409, str(exc)) from None
    except AnalyseError as exc:
        raise HTTPException(502, str(exc)) from None  # the model is upstream of us
    return RunAnalysis.model_validate(analysis.to_dict())


@router.post(
    "/runs/{run_id}/replay",
    status_code=202,
    summary="Start a new run from the state before a node of this run, reusing every result upstream of it",
    responses={409: {"description": "the run is still running"}, 422: {"description": "a bad node or edit"}},
)
async def replay_run(run: FoundRun, body: ReplayRequest, flow: Flow) -> ReplayedRun:
    from agentflow.replay import ReplayConflict, ReplayError, replay

    try:
        new, fork = await replay(flow, run, body.from_node, body.set)
    except ReplayConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except ReplayError as exc:
        raise HTTPException(422, str(exc)) from None
    return ReplayedRun(
        **run_summary(new, None),
        replay_of={"run_id": run.id, "node_id": fork.node_id},
        reused=fork.reused.to_dict(),
        message=fork.reused.line(fork.node_id),
    )


# -- live streams (server-sent events) ----------------------------------------------------

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold events back


def _resume_from(request: Request, after: int | None) -> int | None:
    """Where a stream resumes: the Last-Event-ID a reconnecting EventSource sends, else ?after=."""
    header = request.headers.get("last-event-id", "").strip()
    if header:
        if not header.isdigit():
            raise HTTPException(422, f"Last-Event-ID must be an event id (a number), not '{header[:40]}'")
        return int(header)
    return after


@router.get(
    "/runs/{run_id}/stream",
    summary="A run's events as server-sent events: the stored ones, then live ones until it finishes",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`id`, `event` (its type), `data` (JSON)"}},
)
async def stream_run(
    run: FoundRun,
    request: Request,
    flow: Flow,
    after: Annotated[int | None, Query(ge=0, description="resume after this event id (or send Last-Event-ID)")] = None,
) -> StreamingResponse:
    start = _resume_from(request, after) or 0
    events = batches(
        flow.feed, after=start, run_id=run.id, until_finished=True, idle=KEEPALIVE_SECONDS, linger=LINGER_SECONDS
    )
    return StreamingResponse(sse(events), media_type="text/event-stream", headers=_SSE_HEADERS)


@router.get(
    "/events",
    summary="Every run's events as server-sent events, live; filter by run, workflow and type",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`id`, `event` (its type), `data` (JSON)"}},
)
async def stream_events(
    request: Request,
    flow: Flow,
    run: Annotated[str | None, Query(description="only this run (its id or a unique prefix)")] = None,
    workflow: Annotated[str | None, Query(description="only runs of this workflow")] = None,
    type: Annotated[
        list[str] | None, Query(description="only these event types; repeat or comma-separate: run_started,llm_call")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, description="replay from after this event id (or send Last-Event-ID); default: now")
    ] = None,
) -> StreamingResponse:
    run_id = (await asyncio.to_thread(_run_or_404, flow, run)).id if run else None
    types = {part.strip() for value in type or () for part in value.split(",") if part.strip()}
    unknown = sorted(types - EVENT_TYPES)
    if unknown:
        raise HTTPException(
            422, f"unknown event type {', '.join(unknown)}; use one of {', '.join(sorted(EVENT_TYPES))}"
        )
    feed = flow.feed

    def match(event: dict[str, Any]) -> bool:
        if types and event.get("type") not in types:
            return False
        return workflow is None or feed.workflow_of(event) == workflow

    start = _resume_from(request, after)
    if start is None:
        start = await asyncio.to_thread(flow.store.last_event_id)
    events = batches(feed, after=start, run_id=run_id, match=match, idle=KEEPALIVE_SECONDS, linger=LINGER_SECONDS)
    return StreamingResponse(sse(events), media_type="text/event-stream", headers=_SSE_HEADERS)


# -- deployments and triggers ----------------------------------------------------------


def _deploy_response(flow: AgentFlow, result: DeployResult) -> DeployResponse:
    return DeployResponse(
        deployment=DeploymentEntry.of(result.deployment),
        summary=result.summary(),
        secrets=result.secrets,
        triggers=[TriggerEntry.of(info) for info in flow.deployments.triggers(result.stored.name)],
    )


@router.post(
    "/workflows/{name}/deploy",
    status_code=201,
    summary="Deploy a version: its triggers (webhooks, schedules, chat commands) fire it from now on",
    responses={403: {"description": "the version needs a person's grant first"}, 409: {"description": "cannot deploy"}},
)
async def deploy_workflow(name: str, flow: Flow, body: DeployRequest | None = None) -> DeployResponse:
    body = body or DeployRequest()
    _workflow_or_404(flow, name, body.version)

    def deploy() -> DeployResponse:
        result = flow.deployments.deploy(name, body.version, by=_person(flow), note=body.note)
        return _deploy_response(flow, result)

    return await asyncio.to_thread(deploy)


@router.post("/workflows/{name}/rollback", summary="Deploy again the version in force before the current one")
async def rollback_workflow(name: str, flow: Flow) -> DeployResponse:
    return await asyncio.to_thread(lambda: _deploy_response(flow, flow.deployments.rollback(name, by=_person(flow))))


@router.post("/workflows/{name}/undeploy", summary="Stop every trigger of the workflow")
async def undeploy_workflow(name: str, flow: Flow) -> DeploymentEntry:
    return DeploymentEntry.of(await asyncio.to_thread(flow.deployments.undeploy, name, by=_person(flow)))


@router.get("/workflows/{name}/deployments", summary="The deployment in force, its triggers, and the history")
async def workflow_deployments(name: str, flow: Flow) -> DeploymentStatus:
    _workflow_or_404(flow, name)
    current = flow.store.current_deployment(name)
    return DeploymentStatus(
        current=DeploymentEntry.of(current) if current is not None else None,
        history=[DeploymentEntry.of(item) for item in flow.store.deployment_history(name)],
        triggers=[TriggerEntry.of(info) for info in flow.deployments.triggers(name)],
    )


@router.get("/tools", summary="Every tool workflows can use: arguments schema and the capability it needs")
async def list_tools(flow: Flow) -> list[ToolEntry]:
    return [ToolEntry(**tool.describe()) for tool in flow.engine.services.tools]


@router.get("/sandbox", summary="Where code runs: the sandbox backends on this server and the one in use")
async def sandbox_status(flow: Flow) -> SandboxStatus:
    from agentflow.sandbox import SandboxUnavailable, available_backends, open_sandbox

    backends = await asyncio.to_thread(available_backends, flow.settings)
    try:
        uses: str | None = (await asyncio.to_thread(open_sandbox, flow.settings)).name
        problem = None
    except SandboxUnavailable as exc:
        uses, problem = None, str(exc)
    return SandboxStatus(setting=flow.settings.sandbox, uses=uses, problem=problem, backends=backends)


@router.get("/triggers", summary="Every deployed trigger, with schedules' next fire times and webhooks' paths")
async def list_triggers(flow: Flow, workflow: str | None = None) -> list[TriggerEntry]:
    return [TriggerEntry.of(info) for info in flow.deployments.triggers(workflow)]


@router.get("/workflows/{name}/deliveries", summary="The latest deliveries: accepted, duplicate, refused (with why)")
async def workflow_deliveries(
    name: str, flow: Flow, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> list[DeliveryEntry]:
    return [DeliveryEntry.of(item) for item in flow.store.deliveries(name, limit=limit)]


@router.post(
    "/workflows/{name}/hooks/{trigger}/secret",
    summary="Rotate a webhook trigger's signing secret; the previous one keeps working for 24 hours",
)
async def rotate_hook_secret(name: str, trigger: str, flow: Flow) -> HookSecretEntry:
    found, secret = await asyncio.to_thread(flow.deployments.rotate_secret, name, trigger)
    return HookSecretEntry(
        workflow=name, trigger=found, secret=secret, previous_valid_until=time.time() + SECRET_GRACE_SECONDS
    )


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def no_such_route(path: str, request: Request) -> None:
    # Without this, unknown /api paths would fall through to the UI mounted at "/".
    raise HTTPException(404, f"no API route {request.method} /api/{path}; the routes are listed at /api/docs")


# -- errors ---------------------------------------------------------------------------


async def _spec_errors(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecErrors)
    problems = SpecProblems(
        detail=f"the workflow is invalid ({len(exc.errors)} problem(s)); nothing was saved",
        errors=[SpecProblem(line=error.line, column=error.column, message=error.message) for error in exc.errors],
    )
    return JSONResponse(problems.model_dump(), status_code=422)


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _needs_grant(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NeedsGrantError)
    # 403: understood and refused until a person grants the version (POST /api/workflows/{name}/grant).
    missing = exc.review.missing
    return JSONResponse({"detail": str(exc), "missing": capability_set(missing).model_dump()}, status_code=403)


async def _deploy_error(request: Request, exc: Exception) -> JSONResponse:
    # 409: the request is understood, but the workflow's deployment state does not allow it.
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _budget_spent(request: Request, exc: Exception) -> JSONResponse:
    # 429: the request is fine; the daily budget that allows it is spent until it resets or is raised.
    return JSONResponse({"detail": str(exc)}, status_code=429)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        + (f" (remove '{error['loc'][-1]}')" if error["type"] == "extra_forbidden" else "")
        for error in exc.errors()
    ]
    return JSONResponse({"detail": "invalid request: " + "; ".join(problems)}, status_code=422)


def install(app: FastAPI, *, prefix: str = "/api") -> None:
    """Add the API routes and the handlers turning our errors into JSON answers."""
    app.include_router(router, prefix=prefix)
    app.add_exception_handler(SpecErrors, _spec_errors)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(BudgetExceededError, _budget_spent)
    app.add_exception_handler(NeedsGrantError, _needs_grant)
    app.add_exception_handler(DeployError, _deploy_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
