"""The REST API under `/api`: workflows, runs, approvals. JSON in and out; errors as `{"detail": ...}`.

Reads go straight to the store (indexed SQLite reads take well under a
millisecond); validation and writes, which wait for a commit, run in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.events import RunStatus
from agentflow.engine.inputs import InputError
from agentflow.progress import run_summary
from agentflow.runtime import AgentFlow
from agentflow.spec.errors import SpecErrors
from agentflow.store.base import RunRecord, WorkflowVersion
from agentflow.trust.capabilities import Capabilities, summary
from agentflow.trust.grants import NeedsGrantError, Review

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
MAX_COMMENT_CHARS = 10_000

# Declares the bearer scheme in the OpenAPI document; `auth.AuthMiddleware` enforces it.
_bearer = HTTPBearer(auto_error=False, description="AGENTFLOW_API_TOKEN, or the token printed at start-up")
router = APIRouter(dependencies=[Security(_bearer)])


# -- request bodies -----------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SaveWorkflow(_Body):
    source: str = Field(description="the workflow YAML (apiVersion agentflow/v1)")


class StartRun(_Body):
    workflow: str = Field(description="the workflow's name")
    version: str | None = Field(default=None, description="a stored version; the latest when omitted")
    inputs: dict[str, Any] = Field(default_factory=dict)


class Decision(_Body):
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


# -- responses ------------------------------------------------------------------------


class WorkflowSummary(BaseModel):
    name: str
    version: str
    created_at: float
    path: str | None

    @classmethod
    def of(cls, stored: WorkflowVersion) -> WorkflowSummary:
        return cls(name=stored.name, version=stored.version, created_at=stored.created_at, path=stored.path)


class CapabilitySet(BaseModel):
    tools: list[str]
    egress: list[str]
    secrets: list[str]
    text: str = Field(description="one readable line, e.g. 'tool http_request; egress to hooks.slack.com'")


class VersionReview(BaseModel):
    capabilities: CapabilitySet = Field(description="what this version may use: derived from its YAML")
    needs_review: bool = Field(description="true when it needs more than its workflow's grant: it cannot run yet")
    missing: CapabilitySet = Field(description="what a person must grant before it runs")


class WorkflowDetail(WorkflowSummary):
    source: str
    review: VersionReview

    @classmethod
    def of(cls, stored: WorkflowVersion, review: Review) -> WorkflowDetail:  # type: ignore[override]
        return cls(**WorkflowSummary.of(stored).model_dump(), source=stored.source, review=_review(review))


class GrantEntry(BaseModel):
    granted_at: float
    granted_by: str
    version: str | None
    capabilities: CapabilitySet
    note: str | None


class GrantRequest(_Body):
    version: str | None = Field(default=None, description="the version to grant; the latest when omitted")


def _capabilities(capabilities: Capabilities) -> CapabilitySet:
    return CapabilitySet(**summary(capabilities))


def _review(review: Review) -> VersionReview:
    return VersionReview(
        capabilities=_capabilities(review.wanted),
        needs_review=review.needs_review,
        missing=_capabilities(review.missing),
    )


class SpecProblem(BaseModel):
    line: int
    column: int
    message: str


class SpecProblems(BaseModel):
    detail: str
    errors: list[SpecProblem]


class NodeRow(BaseModel):
    id: str
    type: str
    status: str
    attempts: int
    latency_ms: float
    tokens: int
    cost_usd: float
    error: str | None


class PendingApproval(BaseModel):
    node_id: str
    message: str
    requested_at: float


class RunSummary(BaseModel):
    run_id: str
    workflow: str
    version: str
    status: str
    trigger: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    error: str | None
    tokens: int
    cost_usd: float
    steps: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    executed_by: str | None = Field(
        default=None, description="the process that executed the run last: host:pid:id (a worker with Postgres)"
    )

    @classmethod
    def of(cls, run: RunRecord) -> RunSummary:
        return cls(**run_summary(run, None))


class RunDetail(RunSummary):
    cancel_requested: bool
    nodes: list[NodeRow]
    approval: PendingApproval | None = Field(description="what the run waits for, when waiting_approval")


class EventPage(BaseModel):
    events: list[dict[str, Any]]
    last_id: int = Field(description="pass as ?after= to get only newer events")


# -- dependencies ---------------------------------------------------------------------


def _person(flow: AgentFlow) -> str:
    """Every API credential (the token, a login session) is the operator's: a person."""
    return f"api:{flow.settings.user}"


def _flow(request: Request) -> AgentFlow:
    flow: AgentFlow = request.app.state.agentflow.flow
    return flow


Flow = Annotated[AgentFlow, Depends(_flow)]


def _workflow_or_404(flow: AgentFlow, name: str, version: str | None = None) -> WorkflowVersion:
    stored = flow.store.get_workflow(name, version)
    if stored is not None:
        return stored
    if version is not None and flow.store.get_workflow(name) is not None:
        raise HTTPException(
            404, f"workflow '{name}' has no version '{version}'; list them with GET /api/workflows/{name}/versions"
        )
    raise HTTPException(404, f"no workflow named '{name}'; list them with GET /api/workflows, save one with POST")


def _run_or_404(flow: AgentFlow, run_id: str) -> RunRecord:
    run = flow.store.get_run(run_id)
    if run is None:
        raise HTTPException(404, f"no run '{run_id}'; list runs with GET /api/runs")
    return run


def _detail(flow: AgentFlow, run_id: str) -> RunDetail:
    run = _run_or_404(flow, run_id)
    pending = flow.store.pending_approval(run_id) if run.status == "waiting_approval" else None
    return RunDetail(
        **run_summary(run, flow.store.node_runs(run_id)),
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
            capabilities=_capabilities(Capabilities.from_dict(record.capabilities)),
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
async def get_run(run_id: str, flow: Flow) -> RunDetail:
    return await asyncio.to_thread(_detail, flow, run_id)


@router.get("/runs/{run_id}/events", summary="A run's event log, oldest first")
async def run_events(run_id: str, flow: Flow, after: Annotated[int, Query(ge=0)] = 0) -> EventPage:
    await asyncio.to_thread(_run_or_404, flow, run_id)
    events = await asyncio.to_thread(flow.store.events, run_id, after=after)
    return EventPage(events=events, last_id=events[-1]["id"] if events else after)


async def _decide(flow: AgentFlow, run_id: str, body: Decision | None, *, approved: bool) -> RunDetail:
    run = _run_or_404(flow, run_id)
    comment = body.comment if body else None
    decided = await asyncio.to_thread(flow.store.decide_approval, run_id, approved=approved, comment=comment)
    if decided is None:
        raise HTTPException(
            409, f"run {run_id} has no pending approval (its status is {run.status}); nothing to decide"
        )
    flow.executor.wake()
    return _detail(flow, run_id)


@router.post("/runs/{run_id}/approve", status_code=202, summary="Approve the pending step; the run continues")
async def approve_run(run_id: str, flow: Flow, body: Decision | None = None) -> RunDetail:
    return await _decide(flow, run_id, body, approved=True)


@router.post("/runs/{run_id}/reject", status_code=202, summary="Reject the pending step; the run ends as rejected")
async def reject_run(run_id: str, flow: Flow, body: Decision | None = None) -> RunDetail:
    return await _decide(flow, run_id, body, approved=False)


@router.post("/runs/{run_id}/cancel", status_code=202, summary="Cancel a queued, waiting or running run")
async def cancel_run(run_id: str, flow: Flow) -> RunDetail:
    run = _run_or_404(flow, run_id)
    if not await asyncio.to_thread(flow.store.request_cancel, run_id):
        raise HTTPException(
            409, f"run {run_id} is {run.status}; only queued, waiting_approval or running runs can be cancelled"
        )
    return _detail(flow, run_id)


@router.post("/runs/{run_id}/rerun", status_code=202, summary="Start a new run: same workflow version and inputs")
async def rerun(run_id: str, flow: Flow) -> RunSummary:
    run = _run_or_404(flow, run_id)
    stored = _workflow_or_404(flow, run.workflow, run.version)
    return RunSummary.of(await submit_run(flow, stored, run.inputs, "rerun"))


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
    return JSONResponse({"detail": str(exc), "missing": _capabilities(missing).model_dump()}, status_code=403)


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
    app.add_exception_handler(RequestValidationError, _invalid_request)
