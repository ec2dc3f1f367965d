"""The Python SDK (`agentflow.client`) against a real server process: every method, typed errors, resumable streams."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow.client import (
    AgentFlowClient,
    AgentFlowError,
    AuthenticationError,
    ConflictError,
    GrantNeededError,
    InvalidRequestError,
    NotFoundError,
    ServerUnreachableError,
)
from agentflow.settings import Settings
from agentflow.store import open_store
from agentflow.store.base import RunRecord, Store
from agentflow.web.models import RunDetail, RunSummary, StoredEvent, WorkflowDetail
from tests.fakes.openai_server import FakeLLM, Text
from tests.integration.helpers import workflow
from tests.integration.server_process import ServerProcess, server_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = (EXAMPLES / "hello.yaml").read_text()
APPROVAL = (EXAMPLES / "approval.yaml").read_text()
DRAFT = workflow(
    "draft",
    """
    inputs: {topic: {type: string}}
    nodes:
      write: {type: llm, prompt: "Write about {{ inputs.topic }}"}
      check: {type: approval, needs: [write], message: "Publish? {{ write }}"}
    outputs: {text: "{{ write }}"}
    """,
)
# Needs a tool and a host nobody granted; saved behind the API's back, it waits for a person. Never run here.
FETCH = workflow(
    "fetch",
    """
    nodes:
      get: {type: tool, tool: http_request, args: {method: GET, url: "https://example.com/status"}}
    """,
)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_llm_server: FakeLLM) -> Iterator[ServerProcess]:
    with server_process(tmp_path_factory.mktemp("server") / "data", fake_llm_server) as running:
        yield running


@pytest.fixture
def client(server: ServerProcess, fake_llm: FakeLLM) -> Iterator[AgentFlowClient]:
    with AgentFlowClient(server.url, server.token) as connected:
        yield connected


@pytest.fixture
def store(server: ServerProcess) -> Iterator[Store]:
    """The server's own database, opened from the test for states the API cannot create."""
    opened = open_store(Settings(home=server.home))
    yield opened
    opened.close()


def finish(client: AgentFlowClient, run_id: str) -> list[StoredEvent]:
    """Follow a run to its end (approving every step it waits at); the events streamed."""
    events = []
    for event in client.runs.stream(run_id):
        events.append(event)
        if event.type == "approval_requested":
            client.runs.approve(run_id)
    return events


# -- workflows ------------------------------------------------------------------------


def test_workflows_save_list_get_versions(client: AgentFlowClient) -> None:
    first = client.workflows.save(HELLO)
    second = client.workflows.save(HELLO.replace("Hello, ", "Hi, "))

    assert isinstance(first, WorkflowDetail)
    assert (first.name, second.name) == ("hello", "hello") and first.version != second.version
    assert not second.review.needs_review
    listed = {summary.name: summary.version for summary in client.workflows.list()}
    assert listed["hello"] == second.version
    assert client.workflows.get("hello").source == HELLO.replace("Hello, ", "Hi, ")
    assert client.workflows.get("hello", first.version).source == HELLO
    versions = [summary.version for summary in client.workflows.versions("hello")]
    assert versions[:2] == [second.version, first.version]


def test_a_version_needing_a_grant_is_refused_until_granted(client: AgentFlowClient, store: Store) -> None:
    store.save_workflow("fetch", FETCH)
    assert client.workflows.get("fetch").review.needs_review

    with pytest.raises(GrantNeededError) as refused:
        client.runs.create("fetch")

    assert refused.value.status == 403
    assert str(refused.value) == refused.value.detail and "fetch" in str(refused.value)
    missing = refused.value.missing
    assert missing is not None and missing.tools == ["http_request"] and missing.egress == ["example.com"]
    granted = client.workflows.grant("fetch")
    assert not granted.review.needs_review
    [entry] = client.workflows.grants("fetch")
    assert entry.granted_by.startswith("api:") and "http_request" in entry.capabilities.tools


# -- runs -----------------------------------------------------------------------------


def test_create_stream_get_list_events_and_rerun(client: AgentFlowClient) -> None:
    client.workflows.save(HELLO)
    run = client.runs.create("hello", {"name": "Ada"})
    assert isinstance(run, RunSummary) and run.status == "queued"

    streamed = finish(client, run.run_id)

    assert [event.type for event in streamed] == ["run_started", "node_started", "node_finished", "run_finished"]
    assert streamed[-1].model_extra == {
        "status": "succeeded",
        "outputs": {"greeting": "Hello, Ada!"},
        "error": None,
        "tokens": 0,
        "cost_usd": 0.0,
    }
    detail = client.runs.get(run.run_id[:12])  # the short id the UI and the CLI show
    assert isinstance(detail, RunDetail)
    assert (detail.run_id, detail.status, detail.outputs) == (run.run_id, "succeeded", {"greeting": "Hello, Ada!"})
    assert [node.id for node in detail.nodes] == ["greet"]
    page = client.runs.events(run.run_id)
    assert [event["id"] for event in page.events] == [event.id for event in streamed]
    assert page.last_id == streamed[-1].id
    assert client.runs.events(run.run_id, after=streamed[1].id).events == page.events[2:]
    assert run.run_id in [listed.run_id for listed in client.runs.list(status="succeeded", workflow="hello")]
    assert all(listed.status == "succeeded" for listed in client.runs.list(status=("succeeded",)))

    again = client.runs.rerun(run.run_id)
    assert again.run_id != run.run_id and (again.version, again.inputs) == (run.version, run.inputs)
    assert again.trigger == "rerun"


def test_approve_reject_and_cancel_a_waiting_run(client: AgentFlowClient, fake_llm: FakeLLM) -> None:
    fake_llm.default = Text("A short text.")
    client.workflows.save(DRAFT)
    runs = [client.runs.create("draft", {"topic": topic}) for topic in ("a", "b", "c")]
    for run in runs:
        assert wait_for_approval(client, run.run_id).approval is not None
    approved, rejected, cancelled = runs

    assert client.runs.approve(approved.run_id, comment="ship it").approval is None
    assert client.runs.reject(rejected.run_id[:12], comment="no").approval is None
    assert client.runs.cancel(cancelled.run_id).status == "cancelled"

    assert last_event(client, approved.run_id)["status"] == "succeeded"
    assert last_event(client, rejected.run_id)["status"] == "rejected"
    assert client.runs.get(approved.run_id).outputs == {"text": "A short text."}
    with pytest.raises(ConflictError) as not_waiting:
        client.runs.approve(approved.run_id)
    assert "has no pending approval" in str(not_waiting.value) and not_waiting.value.status == 409
    with pytest.raises(ConflictError, match="only queued, waiting_approval or running runs can be cancelled"):
        client.runs.cancel(cancelled.run_id)


def wait_for_approval(client: AgentFlowClient, run_id: str) -> RunDetail:
    """Until the run waits at its approval: the stream says so (it stays open then, so we stop reading)."""
    for event in client.runs.stream(run_id):
        if event.type == "approval_requested":
            break
    detail = client.runs.get(run_id)
    assert detail.status == "waiting_approval", detail
    return detail


def last_event(client: AgentFlowClient, run_id: str) -> dict[str, Any]:
    """The run's `run_finished` event, once it comes (the stream ends with it)."""
    *_, finished = client.runs.stream(run_id)
    assert finished.type == "run_finished"
    return finished.model_dump()


# -- errors ---------------------------------------------------------------------------


def test_errors_are_typed_and_carry_the_servers_words(client: AgentFlowClient) -> None:
    with pytest.raises(NotFoundError) as no_run:
        client.runs.get("0000000000ff")
    assert no_run.value.status == 404 and str(no_run.value).startswith("no run '0000000000ff'")
    with pytest.raises(NotFoundError, match="no workflow named 'nope'"):
        client.workflows.get("nope")

    broken = workflow(
        "broken",
        """
        nodes:
          greet:
            type: transfrom
            expr: "'hi'"
        """,
    )
    with pytest.raises(InvalidRequestError) as invalid:
        client.workflows.save(broken)
    [problem] = invalid.value.problems
    assert (problem.line, problem.column) == (7, 7)
    assert "did you mean 'transform'" in problem.message
    assert invalid.value.detail == "the workflow is invalid (1 problem(s)); nothing was saved"
    assert str(invalid.value) == f"{invalid.value.detail}\n  7:7: {problem.message}"

    client.workflows.save(APPROVAL)
    with pytest.raises(InvalidRequestError, match="input 'amount' must be number"):
        client.runs.create("approval", {"amount": "lots"})


def test_an_ambiguous_short_id_names_the_runs_it_matches(client: AgentFlowClient, store: Store) -> None:
    client.workflows.save(HELLO)
    stored = store.get_workflow("hello")
    assert stored is not None
    prefix = uuid.uuid4().hex[:8]
    ids = [prefix + uuid.uuid4().hex[8:] for _ in range(2)]
    for run_id in ids:
        store.create_run(RunRecord(id=run_id, workflow="hello", version=stored.version, status="succeeded"))

    with pytest.raises(ConflictError) as ambiguous:
        client.runs.get(prefix)

    assert all(run_id in str(ambiguous.value) for run_id in ids)
    assert client.runs.get(ids[0][:12]).run_id == ids[0]


def test_a_wrong_or_missing_token_is_an_authentication_error(server: ServerProcess) -> None:
    for token in ("not-the-token-of-this-server", None):
        with AgentFlowClient(server.url, token) as client, pytest.raises(AuthenticationError) as refused:
            client.runs.list()
        assert refused.value.status == 401
        assert "Authorization: Bearer" in str(refused.value)


def test_no_server_says_which_url_and_how_to_start_one() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with AgentFlowClient(url) as client:
        for call in (client.runs.list, lambda: next(client.runs.stream("abcd1234"))):
            with pytest.raises(ServerUnreachableError) as unreachable:
                call()
            message = str(unreachable.value)
            assert message.startswith(f"cannot reach the AgentFlow server at {url} (connection refused)")
            assert "agentflow serve" in message and unreachable.value.status is None


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("127.0.0.1:7860", "has no scheme; give it as http://127.0.0.1:7860"),
        ("ftp://127.0.0.1", "must be http:// or https://"),
        ("http://", "must be http:// or https:// with a host"),
    ],
)
def test_a_malformed_server_address_is_refused_at_once(url: str, said: str) -> None:
    with pytest.raises(AgentFlowError, match=re.escape(said)):
        AgentFlowClient(url)


def test_the_api_suffix_of_an_address_is_accepted(server: ServerProcess) -> None:
    with AgentFlowClient(server.url + "/api/", server.token) as client:
        assert isinstance(client.runs.list(limit=1), list)


# -- streams --------------------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy to the server that can cut a connection in the middle of an SSE message.

    `cut_inside(marker)`: the next time the server sends `marker`, only its first half goes through
    and the connection is closed, as a dropped network would. Records what each connection carried.
    """

    def __init__(self, target: str) -> None:
        address = httpx.URL(target)
        self.target = (address.host, address.port or 80)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.carried: list[bytearray] = []  # server -> client bytes, per connection
        self._marker: bytes | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="cutting-proxy").start()

    def cut_inside(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def close(self) -> None:
        _close(self.listener)  # shut down first: a close alone leaves the thread in accept() listening
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            carried = bytearray()
            with self._lock:
                self.carried.append(carried)
                self._sockets += [downstream, upstream]
            threading.Thread(target=self._pump, args=(downstream, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, carried), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, carried: bytearray | None) -> None:
        try:
            while chunk := source.recv(65536):
                if carried is None:
                    sink.sendall(chunk)
                    continue
                before = len(carried)
                carried += chunk
                with self._lock:
                    marker = self._marker
                    at = carried.find(marker, max(before - len(marker), 0)) if marker else -1
                    if at >= 0:
                        self._marker = None
                if at < 0:
                    sink.sendall(chunk)
                    continue
                sink.sendall(chunk[: max(at + len(marker or b"") // 2 - before, 0)])
                del carried[at + len(marker or b"") // 2 :]
                break
        except OSError:
            pass
        _close(source)
        _close(sink)

    def complete_messages(self) -> list[list[int]]:
        """Per connection, the ids of the SSE messages it carried whole."""
        pattern = re.compile(rb"id: (\d+)\nevent: [a-z_]+\ndata: [^\n]*\n\n")
        return [[int(found.group(1)) for found in pattern.finditer(bytes(carried))] for carried in self.carried]


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[CuttingProxy]:
    cutting = CuttingProxy(server.url)
    yield cutting
    cutting.close()


def test_a_stream_cut_mid_message_resumes_without_losing_or_repeating_an_event(
    client: AgentFlowClient, server: ServerProcess, proxy: CuttingProxy
) -> None:
    client.workflows.save(APPROVAL)
    run = client.runs.create("approval")
    proxy.cut_inside(b"event: approval_requested")  # in the replay of the stored events
    streamed: list[StoredEvent] = []
    with AgentFlowClient(proxy.url, server.token) as through_proxy:
        for event in through_proxy.runs.stream(run.run_id):
            streamed.append(event)
            if event.type == "approval_requested":
                proxy.cut_inside(b"event: run_finished")  # now in the live part
                client.runs.approve(run.run_id, comment="ok")

    stored = client.runs.events(run.run_id).events
    assert [event.model_dump() for event in streamed] == stored
    assert streamed[-1].type == "run_finished" and client.runs.get(run.run_id).status == "succeeded"
    # On the wire: three connections, each message whole exactly once; the two cut ones came again.
    per_connection = proxy.complete_messages()
    assert len(per_connection) == 3
    wired = [event_id for connection in per_connection for event_id in connection]
    assert wired == [event["id"] for event in stored]
    assert per_connection[1][0] == next(event["id"] for event in stored if event["type"] == "approval_requested")
    assert per_connection[2] == [stored[-1]["id"]]


def test_a_stream_can_be_left_and_resumed_after_the_last_event_seen(client: AgentFlowClient) -> None:
    client.workflows.save(APPROVAL)
    run = client.runs.create("approval")
    seen = []
    for event in client.runs.stream(run.run_id):
        seen.append(event)
        if event.type == "node_finished":
            break  # closes the response
    client.runs.approve(wait_for_approval(client, run.run_id).run_id)

    rest = list(client.runs.stream(run.run_id, after=seen[-1].id))

    assert [event.model_dump() for event in seen + rest] == client.runs.events(run.run_id).events
    assert list(client.runs.stream(run.run_id, after=rest[-1].id)) == []  # finished: nothing more, and it ends


def test_a_stream_gives_up_once_the_server_stays_unreachable(server: ServerProcess, proxy: CuttingProxy) -> None:
    with AgentFlowClient(server.url, server.token) as client:
        client.workflows.save(APPROVAL)
        run = client.runs.create("approval")
    with AgentFlowClient(proxy.url, server.token, reconnect_for=0.5) as through_proxy:
        stream = through_proxy.runs.stream(run.run_id)
        assert next(stream).type == "run_started"
        proxy.close()  # connections cut, and nothing listens any more
        with pytest.raises(ServerUnreachableError, match=f"cannot reach the AgentFlow server at {proxy.url}"):
            list(stream)


def test_tools_and_the_sandbox_through_the_sdk(client: AgentFlowClient) -> None:
    tools = {tool.name: tool for tool in client.tools.list()}
    assert tools["calculator"].pure and tools["calculator"].capability == "nothing (computes only)"
    assert tools["shell"].code and tools["shell"].parameters["required"] == ["command"]
    sandbox = client.tools.sandbox()
    assert sandbox.setting == "auto"
    assert set(sandbox.backends) == {"docker", "gvisor", "bwrap"}
    assert (sandbox.uses is None) == (sandbox.problem is not None)
