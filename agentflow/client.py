"""The Python SDK: drive a running AgentFlow server through its REST API and server-sent events.

    from agentflow.client import AgentFlowClient

    with AgentFlowClient("http://127.0.0.1:7860", token="...") as client:
        client.workflows.save(open("examples/approval.yaml").read())
        run = client.runs.create("approval", {"amount": 120})
        for event in client.runs.stream(run.run_id):  # until the run waits or ends
            print(event.type, event.model_extra)
            if event.type == "approval_requested":
                client.runs.approve(run.run_id, comment="ok")

Answers are the API's own models (`agentflow.web.models`); every refusal is an `AgentFlowError` whose
message is the server's `detail`, with a subclass per kind (not found, needs a grant, conflict, ...).
Run ids may be shortened to the 12-character prefix the UI and the CLI show.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.web.models import (
    CapabilitySet,
    DeliveryEntry,
    DeploymentEntry,
    DeploymentStatus,
    DeployResponse,
    EventPage,
    GrantEntry,
    HookSecretEntry,
    ReplayedRun,
    RunDetail,
    RunSummary,
    SandboxStatus,
    SpecProblem,
    StoredEvent,
    ToolEntry,
    TriggerEntry,
    WorkflowDetail,
    WorkflowSummary,
)

__all__ = [
    "AgentFlowClient",
    "AgentFlowError",
    "AuthenticationError",
    "BudgetSpentError",
    "ConflictError",
    "ForbiddenError",
    "GrantNeededError",
    "InvalidRequestError",
    "NotFoundError",
    "ServerUnreachableError",
]

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
# A stream waiting for a person is kept alive by the server's comments; silence this long means a dead link.
STREAM_READ_TIMEOUT_S = 60.0
# A dropped stream is reconnected until the server has been unreachable this long.
RECONNECT_FOR_S = 30.0
START_HINT = "is it running? start it with `agentflow serve` (or `make run` in a checkout)"


# -- errors ---------------------------------------------------------------------------


class AgentFlowError(Exception):
    """The server refused a request (`status`, `detail`: its reason), or could not be reached (`status` None)."""

    def __init__(self, detail: str, *, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.body: dict[str, Any] = body or {}


class ServerUnreachableError(AgentFlowError):
    """No answer: nothing listens at the URL, the name does not resolve, or the server timed out."""


class AuthenticationError(AgentFlowError):
    """401: no token, or not the server's token."""


class ForbiddenError(AgentFlowError):
    """403: understood and refused."""


class GrantNeededError(ForbiddenError):
    """403: the workflow version needs more than a person granted; `missing` is what to grant."""

    @property
    def missing(self) -> CapabilitySet | None:
        missing = self.body.get("missing")
        return CapabilitySet.model_validate(missing) if isinstance(missing, dict) else None


class NotFoundError(AgentFlowError):
    """404: no such workflow, version or run."""


class ConflictError(AgentFlowError):
    """409: the request contradicts the run's state (nothing to approve, already finished), or a short id
    matches several runs (the message names them)."""


class InvalidRequestError(AgentFlowError):
    """422: invalid workflow YAML (`problems`, each with line and column) or invalid inputs."""

    def __init__(self, detail: str, *, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(detail, status=status, body=body)
        lines = [f"{problem.line}:{problem.column}: {problem.message}" for problem in self.problems]
        self.args = ("\n  ".join([detail, *lines]),)

    @property
    def problems(self) -> list[SpecProblem]:
        return [SpecProblem.model_validate(error) for error in self.body.get("errors") or () if isinstance(error, dict)]


class BudgetSpentError(AgentFlowError):
    """429: a daily budget is spent; runs are refused until it resets or is raised."""


_ERRORS: dict[int, type[AgentFlowError]] = {
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidRequestError,
    429: BudgetSpentError,
}


def _refusal(response: httpx.Response) -> AgentFlowError:
    """The typed error for a 4xx/5xx answer (its body already read)."""
    request = response.request
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        text = detail if isinstance(detail, str) else str(detail)
    else:
        body = {}
        text = (
            f"{request.method} {request.url} answered {response.status_code} {response.reason_phrase} "
            "without an AgentFlow error: is this the address of an AgentFlow server?"
        )
    kind = _ERRORS.get(response.status_code, AgentFlowError)
    if kind is ForbiddenError and "missing" in body:
        kind = GrantNeededError
    return kind(text, status=response.status_code, body=body)


def _unreachable(url: str, exc: httpx.TransportError) -> AgentFlowError:
    if isinstance(exc, httpx.TimeoutException):
        return ServerUnreachableError(f"the AgentFlow server at {url} did not answer in time ({type(exc).__name__})")
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in reason.lower():
        reason = "connection refused"
    return ServerUnreachableError(f"cannot reach the AgentFlow server at {url} ({reason}); {START_HINT}")


def _base_url(url: str) -> httpx.URL:
    """The server's root URL; `http://host:7860/api` is accepted as `http://host:7860`."""
    if "://" not in url:
        example = url.strip().lstrip("/") or "HOST:PORT"
        raise AgentFlowError(f"server address {url!r} has no scheme; give it as http://{example}")
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL as exc:
        raise AgentFlowError(f"server address {url!r} is not a URL ({exc}); give it as http://HOST:PORT") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise AgentFlowError(f"server address {url!r} must be http:// or https:// with a host, e.g. http://HOST:PORT")
    path = parsed.path.rstrip("/").removesuffix("/api")
    return parsed.copy_with(path=path + "/", query=None, fragment=None)


def _segment(value: str) -> str:
    return quote(value, safe="")


# -- server-sent events ---------------------------------------------------------------


@dataclass(slots=True)
class _Message:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)


def _messages(lines: Iterator[str]) -> Iterator[_Message]:
    """SSE messages from a stream's lines: comments skipped; an unfinished last message is dropped."""
    message = _Message()
    for line in lines:
        if not line:
            if message.data:
                yield message
            message = _Message()
            continue
        if line.startswith(":"):
            continue  # keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            message.data.append(value)
        elif name == "event":
            message.event = value
        elif name == "id":
            message.id = value


def _event(message: _Message) -> StoredEvent:
    try:
        return StoredEvent.model_validate_json("\n".join(message.data))
    except ValidationError as exc:
        raise AgentFlowError(
            f"the server sent an event this client does not understand ({exc.errors()[0]['msg']}): "
            f"{' '.join(message.data)[:200]}"
        ) from None


# -- the client -----------------------------------------------------------------------


# Module-level: `list` is also a method name in the classes below.
WorkflowList = list[WorkflowSummary]
GrantList = list[GrantEntry]
RunList = list[RunSummary]
_WORKFLOWS = TypeAdapter(WorkflowList)
_GRANTS = TypeAdapter(GrantList)
_RUNS = TypeAdapter(RunList)
_WORKFLOW = TypeAdapter(WorkflowDetail)
_RUN = TypeAdapter(RunSummary)
_RUN_DETAIL = TypeAdapter(RunDetail)
_REPLAYED = TypeAdapter(ReplayedRun)
_EVENTS = TypeAdapter(EventPage)
TriggerList = list[TriggerEntry]
DeliveryList = list[DeliveryEntry]
_DEPLOYED = TypeAdapter(DeployResponse)
_DEPLOYMENT = TypeAdapter(DeploymentEntry)
_DEPLOYMENTS = TypeAdapter(DeploymentStatus)
_TRIGGERS = TypeAdapter(TriggerList)
_DELIVERIES = TypeAdapter(DeliveryList)
_SECRET = TypeAdapter(HookSecretEntry)
ToolList = list[ToolEntry]
_TOOLS = TypeAdapter(ToolList)
_SANDBOX = TypeAdapter(SandboxStatus)


class Tools:
    """`client.tools`: what workflows on this server can call, and where their code runs."""

    def __init__(self, http: _Http) -> None:
        self._http = http

    def list(self) -> ToolList:
        """Every tool: arguments schema, source, and the capability a workflow using it needs."""
        return self._http.call(_TOOLS, "GET", "api/tools")

    def sandbox(self) -> SandboxStatus:
        """The sandbox backends on the server and the one code runs in (`uses` is None: code refuses)."""
        return self._http.call(_SANDBOX, "GET", "api/sandbox")


class _Http:
    """Requests and the translation of failures into AgentFlowError; shared by the namespaces."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.where = str(client.base_url).rstrip("/")  # the server, as people write its address

    def call(self, adapter: TypeAdapter[T], method: str, path: str, **options: Any) -> T:
        try:
            response = self.client.request(method, path, **options)
        except httpx.TransportError as exc:
            raise _unreachable(self.where, exc) from None
        if response.is_error:
            raise _refusal(response)
        try:
            return adapter.validate_json(response.content)
        except ValidationError as exc:
            raise AgentFlowError(
                f"{method} {response.request.url} answered something this client does not understand "
                f"({exc.error_count()} problem(s), e.g. {exc.errors()[0]['msg']}); "
                "is it an AgentFlow server of the same version?",
                status=response.status_code,
            ) from None


class Workflows:
    """`client.workflows`: save, list, read, grant, deploy and its triggers."""

    def __init__(self, http: _Http) -> None:
        self._http = http

    def save(self, source: str) -> WorkflowDetail:
        """Validate and store the YAML as a new version, granted by the token's person (InvalidRequestError)."""
        return self._http.call(_WORKFLOW, "POST", "api/workflows", json={"source": source})

    def list(self) -> WorkflowList:
        """The latest version of every workflow."""
        return self._http.call(_WORKFLOWS, "GET", "api/workflows")

    def get(self, name: str, version: str | None = None) -> WorkflowDetail:
        """A workflow's latest version (or `version`), with its source and review."""
        path = f"api/workflows/{_segment(name)}" + (f"/versions/{_segment(version)}" if version else "")
        return self._http.call(_WORKFLOW, "GET", path)

    def versions(self, name: str) -> WorkflowList:
        """Every stored version, newest first."""
        return self._http.call(_WORKFLOWS, "GET", f"api/workflows/{_segment(name)}/versions")

    def grant(self, name: str, version: str | None = None) -> WorkflowDetail:
        """Grant a version (the latest when omitted) what it needs; the answer's review shows what remains."""
        body = {"version": version} if version else None
        return self._http.call(_WORKFLOW, "POST", f"api/workflows/{_segment(name)}/grant", json=body)

    def grants(self, name: str) -> GrantList:
        """Who granted what to a workflow, newest first."""
        return self._http.call(_GRANTS, "GET", f"api/workflows/{_segment(name)}/grants")

    def deploy(self, name: str, version: str | None = None, *, note: str | None = None) -> DeployResponse:
        """Make a version (the latest when omitted) the one its triggers fire; new webhook secrets come back
        once, in `secrets` (GrantNeededError when the version's grant is missing)."""
        body = {key: value for key, value in (("version", version), ("note", note)) if value is not None}
        return self._http.call(_DEPLOYED, "POST", f"api/workflows/{_segment(name)}/deploy", json=body)

    def rollback(self, name: str) -> DeployResponse:
        """Deploy again the version in force before the current one (ConflictError when there is none)."""
        return self._http.call(_DEPLOYED, "POST", f"api/workflows/{_segment(name)}/rollback")

    def undeploy(self, name: str) -> DeploymentEntry:
        """Stop every trigger of the workflow."""
        return self._http.call(_DEPLOYMENT, "POST", f"api/workflows/{_segment(name)}/undeploy")

    def deployments(self, name: str) -> DeploymentStatus:
        """The deployment in force, its live triggers, and the history."""
        return self._http.call(_DEPLOYMENTS, "GET", f"api/workflows/{_segment(name)}/deployments")

    def deliveries(self, name: str, *, limit: int = 20) -> DeliveryList:
        """The latest deliveries to its triggers: accepted, duplicate, refused (with why), newest first."""
        path = f"api/workflows/{_segment(name)}/deliveries"
        return self._http.call(_DELIVERIES, "GET", path, params={"limit": limit})

    def rotate_secret(self, name: str, trigger: str) -> HookSecretEntry:
        """A new signing secret for a webhook trigger, shown once; the previous one works for 24 hours."""
        path = f"api/workflows/{_segment(name)}/hooks/{_segment(trigger)}/secret"
        return self._http.call(_SECRET, "POST", path)

    def triggers(self, name: str | None = None) -> TriggerList:
        """Every deployed trigger (of one workflow, or all): webhook paths, schedules' next fire times."""
        return self._http.call(_TRIGGERS, "GET", "api/triggers", params={"workflow": name} if name else None)


class Runs:
    """`client.runs`: start, read, follow and decide runs."""

    def __init__(self, http: _Http, *, reconnect_for: float) -> None:
        self._http = http
        self._reconnect_for = reconnect_for

    def create(self, workflow: str, inputs: dict[str, Any] | None = None, *, version: str | None = None) -> RunSummary:
        """Queue a run of a workflow's latest version (or `version`); GrantNeededError when it needs a grant."""
        body = {"workflow": workflow, "version": version, "inputs": inputs or {}}
        return self._http.call(_RUN, "POST", "api/runs", json=body)

    def get(self, run_id: str) -> RunDetail:
        """A run with its node table and the approval it waits for."""
        return self._http.call(_RUN_DETAIL, "GET", f"api/runs/{_segment(run_id)}")

    def list(self, *, status: str | tuple[str, ...] = (), workflow: str | None = None, limit: int = 50) -> RunList:
        """Recent runs, newest first, optionally of some statuses or one workflow."""
        statuses = (status,) if isinstance(status, str) else status
        params: dict[str, Any] = {"limit": limit}
        if statuses:
            params["status"] = ",".join(statuses)
        if workflow:
            params["workflow"] = workflow
        return self._http.call(_RUNS, "GET", "api/runs", params=params)

    def events(self, run_id: str, *, after: int = 0) -> EventPage:
        """The run's recorded events after the event id `after`, oldest first."""
        return self._http.call(_EVENTS, "GET", f"api/runs/{_segment(run_id)}/events", params={"after": after})

    def approve(self, run_id: str, *, comment: str | None = None) -> RunDetail:
        """Approve the step the run waits at; the server continues it."""
        return self._decide(run_id, "approve", comment)

    def reject(self, run_id: str, *, comment: str | None = None) -> RunDetail:
        """Reject the step the run waits at; the run ends as rejected."""
        return self._decide(run_id, "reject", comment)

    def cancel(self, run_id: str) -> RunDetail:
        """Cancel a queued, waiting or running run (a running one stops within a second)."""
        return self._http.call(_RUN_DETAIL, "POST", f"api/runs/{_segment(run_id)}/cancel")

    def rerun(self, run_id: str) -> RunSummary:
        """A new run of the same workflow version with the same inputs."""
        return self._http.call(_RUN, "POST", f"api/runs/{_segment(run_id)}/rerun")

    def replay(self, run_id: str, from_node: str, edits: dict[str, Any] | None = None) -> ReplayedRun:
        """A new run from the state before `from_node` in this run, reusing every result upstream of it;
        `edits` {"inputs.NAME" | "NODE" | "NODE.field": value} change that state (docs/replay.md)."""
        body = {"from": from_node, "set": edits or {}}
        return self._http.call(_REPLAYED, "POST", f"api/runs/{_segment(run_id)}/replay", json=body)

    def _decide(self, run_id: str, verb: str, comment: str | None) -> RunDetail:
        body = {"comment": comment} if comment is not None else None
        return self._http.call(_RUN_DETAIL, "POST", f"api/runs/{_segment(run_id)}/{verb}", json=body)

    def stream(self, run_id: str, *, after: int | None = None) -> Iterator[StoredEvent]:
        """The run's events after the event id `after` (default: all), then live ones, ending with `run_finished`.

        A run waiting for approval keeps the stream open. When the connection drops, it reconnects
        with `Last-Event-ID`, so no event is lost or repeated; it gives up (ServerUnreachableError)
        once the server has been unreachable for `reconnect_for` seconds. Break out of the loop to stop early.
        """
        last = after or 0
        path = f"api/runs/{_segment(run_id)}/stream"
        timeout = httpx.Timeout(self._http.client.timeout.connect, read=STREAM_READ_TIMEOUT_S)
        connected = False
        failing_since: float | None = None
        attempt = 0
        while True:
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
            try:
                with self._http.client.stream("GET", path, headers=headers, timeout=timeout) as response:
                    if response.is_error:
                        response.read()
                        raise _refusal(response)
                    connected, failing_since, attempt = True, None, 0
                    for message in _messages(response.iter_lines()):
                        event = _event(message)
                        if event.id <= last:
                            continue  # a server replaying what we have: never repeat it
                        last = event.id
                        yield event
                        if event.type == "run_finished":
                            return
            except httpx.TransportError as exc:
                if not connected:
                    raise _unreachable(self._http.where, exc) from None
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self._reconnect_for:
                    raise _unreachable(self._http.where, exc) from None
            else:
                # Closed without `run_finished`: it ended without one (cancelled while queued), or the
                # connection was cut between messages (a proxy, a restart). Ask the run itself.
                if self.get(run_id).status in TERMINAL_STATUSES:
                    return
            time.sleep(min(0.1 * 2**attempt, 2.0))  # back off between reconnections, not between events
            attempt += 1


class AgentFlowClient:
    """A connection to one AgentFlow server: `client.workflows`, `client.runs` and `client.tools`.

    `url` is the server's address (`http://127.0.0.1:7860`); `token` its API token
    (AGENTFLOW_API_TOKEN, or the one it printed at start-up), sent as `Authorization: Bearer`.
    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        reconnect_for: float = RECONNECT_FOR_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "agentflow-client"}
        if token:
            headers["Authorization"] = f"Bearer {token.strip()}"
        self.url = _base_url(url)
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        http = _Http(self._client)
        self.workflows = Workflows(http)
        self.runs = Runs(http, reconnect_for=reconnect_for)
        self.tools = Tools(http)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AgentFlowClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AgentFlowClient({str(self.url).rstrip('/')!r})"
