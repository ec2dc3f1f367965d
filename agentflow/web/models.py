"""The API's request and response bodies: pydantic models shared by the server (agentflow/web/api.py)
and the Python SDK (agentflow/client.py), so both sides agree on every field.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agentflow.progress import run_summary
from agentflow.store.base import Delivery, Deployment, RunRecord, WorkflowVersion
from agentflow.triggers.deployments import TriggerInfo
from agentflow.trust.capabilities import Capabilities, summary

if TYPE_CHECKING:
    from agentflow.trust.grants import Review

MAX_COMMENT_CHARS = 10_000


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


class AnalyseRequest(_Body):
    model: str | None = Field(
        default=None, min_length=1, description="the model to ask; default AGENTFLOW_ANALYSE_MODEL, else the chat's"
    )


class SpanPointer(BaseModel):
    node_id: str
    event: str = Field(description="the event type it points at: node_finished, llm_call, tool_call, ...")
    why: str


class RunAnalysis(BaseModel):
    """A model's reading of a run's trace (docs/analyse.md)."""

    run_id: str
    model: str
    summary: str
    root_cause: str
    spans: list[SpanPointer]
    suggestions: list[str]
    tokens: int
    cost_usd: float = Field(description="what the analysis cost, in the ledger as source 'analyse'")


class ReplayRequest(_Body):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_node: str = Field(alias="from", description="the node the new run starts at (docs/replay.md)")
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="edits of the forked state: {'inputs.NAME': value} or {'NODE' | 'NODE.field': value} for a node "
        "upstream of `from`",
    )


# -- responses ------------------------------------------------------------------------


class WorkflowSummary(BaseModel):
    name: str
    version: str = Field(description="the version's id: a hash of its YAML")
    created_at: float
    path: str | None
    number: int | None = Field(
        default=None, description="what people call it: v1, v2, … per workflow in the order first saved"
    )

    @classmethod
    def of(cls, stored: WorkflowVersion) -> WorkflowSummary:
        return cls(
            name=stored.name,
            version=stored.version,
            created_at=stored.created_at,
            path=stored.path,
            number=stored.number or None,
        )


class CapabilitySet(BaseModel):
    tools: list[str]
    egress: list[str]
    secrets: list[str]
    channels: list[str] = Field(default_factory=list, description="webhook, telegram, whatsapp: who may start it")
    code: bool = Field(False, description="runs code in the sandbox (a code node, the python or shell tool)")
    remote_agents: list[str] = Field(default_factory=list, description="registered A2A agents it calls by name")
    remote_skills: list[str] = Field(default_factory=list, description="skills it calls on any registered agent")
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
        return cls(**WorkflowSummary.of(stored).model_dump(), source=stored.source, review=version_review(review))


class GrantEntry(BaseModel):
    granted_at: float
    granted_by: str
    version: str | None
    capabilities: CapabilitySet
    note: str | None


class GrantRequest(_Body):
    version: str | None = Field(default=None, description="the version to grant; the latest when omitted")


def capability_set(capabilities: Capabilities) -> CapabilitySet:
    return CapabilitySet(**summary(capabilities))


def version_review(review: Review) -> VersionReview:
    return VersionReview(
        capabilities=capability_set(review.wanted),
        needs_review=review.needs_review,
        missing=capability_set(review.missing),
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


class ReusedWork(BaseModel):
    nodes: list[str] = Field(description="the nodes whose results the replay took from its source")
    calls: int = Field(description="model calls not made again")
    tool_calls: int
    tokens: int
    cost_usd: float


class ReplayedRun(RunSummary):
    replay_of: dict[str, str] = Field(description="{run_id, node_id}: the run replayed and the node it starts at")
    reused: ReusedWork
    message: str = Field(description="replayed from NODE: reused N node results (... not spent again)")


class RunDetail(RunSummary):
    cancel_requested: bool
    nodes: list[NodeRow]
    approval: PendingApproval | None = Field(description="what the run waits for, when waiting_approval")


class EventPage(BaseModel):
    events: list[dict[str, Any]]
    last_id: int = Field(description="pass as ?after= to get only newer events")


class StoredEvent(BaseModel):
    """One recorded run event, as the SSE streams carry it: the common fields typed, the others kept as sent
    (`node_id`, `status`, `model`, ... per `type`; see agentflow/engine/events.py)."""

    model_config = ConfigDict(extra="allow")

    id: int = Field(description="increasing across all runs: resume a stream after it (Last-Event-ID, ?after=)")
    run_id: str
    type: str = Field(description="run_started, node_started, node_finished, llm_call, tool_call, run_finished, ...")
    at: float


# -- deployments and triggers -------------------------------------------------------------


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, description="v2, a version id or a prefix of one; default: the current")
    note: str | None = Field(default=None, max_length=500)


class DeploymentEntry(BaseModel):
    workflow: str
    version: str | None = Field(description="the version id deployed; null for an undeploy")
    action: str = Field(description="deploy, rollback or undeploy")
    deployed_by: str
    deployed_at: float
    note: str | None = None

    @classmethod
    def of(cls, deployment: Deployment) -> DeploymentEntry:
        return cls(
            workflow=deployment.workflow,
            version=deployment.version,
            action=deployment.action,
            deployed_by=deployment.deployed_by,
            deployed_at=deployment.deployed_at,
            note=deployment.note,
        )


class TriggerEntry(BaseModel):
    workflow: str
    name: str
    kind: str = Field(description="webhook, schedule, telegram or whatsapp")
    version: str
    version_label: str
    detail: str = Field(description="what fires it, in words")
    next_fire_at: float | None = Field(default=None, description="a schedule's next fire time (unix seconds)")
    path: str | None = Field(default=None, description="a webhook's path: POST signed deliveries here")

    @classmethod
    def of(cls, info: TriggerInfo) -> TriggerEntry:
        return cls(**asdict(info))


class DeployResponse(BaseModel):
    deployment: DeploymentEntry
    summary: str
    secrets: dict[str, str] = Field(
        description="new webhook signing secrets by trigger: shown once, here (rotate with .../secret)"
    )
    triggers: list[TriggerEntry]


class DeploymentStatus(BaseModel):
    current: DeploymentEntry | None
    history: list[DeploymentEntry]
    triggers: list[TriggerEntry]


class DeliveryEntry(BaseModel):
    workflow: str
    trigger: str
    channel: str
    outcome: str = Field(description="accepted, duplicate or refused")
    key: str | None
    detail: str | None
    run_id: str | None
    at: float

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryEntry:
        return cls(**{name: getattr(delivery, name) for name in cls.model_fields})


class HookSecretEntry(BaseModel):
    workflow: str
    trigger: str
    secret: str = Field(description="the new signing secret (whsec_...): shown once")
    previous_valid_until: float = Field(description="the previous secret keeps working until then (unix seconds)")


class ToolEntry(BaseModel):
    name: str = Field(description="what a workflow names: calculator, langchain/wikipedia, mcp/files/read")
    description: str
    source: str = Field(description="builtin, the package it comes from, langchain, mcp:<server>")
    parameters: dict[str, Any] = Field(description="the arguments' JSON Schema")
    pure: bool = Field(description="computes only: using it needs no grant")
    network: bool
    hosts: list[str] = Field(description="fixed hosts it reaches, part of a workflow's egress when it uses it")
    code: bool = Field(description="runs code in the sandbox")
    secret_arguments: list[str] = Field(description="arguments that name a secret (never hold one)")
    capability: str = Field(description="what a person grants when a workflow uses it, in words")


class SandboxStatus(BaseModel):
    setting: str = Field(description="AGENTFLOW_SANDBOX: auto, docker, gvisor or bwrap")
    uses: str | None = Field(description="the backend code runs in; null when none is available (code refuses)")
    problem: str | None = Field(description="why code cannot run, with what to install")
    backends: dict[str, str | None] = Field(description="each backend: null when available, else why not")
