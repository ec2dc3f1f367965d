"""AgentFlow's deployed workflows as A2A agents, called by a2a-sdk's own client over loopback HTTP.

The server is the real app (API, executor, auth with a password) served by uvicorn in a thread; the
caller discovers each agent with `A2ACardResolver` and talks to it through the SDK's client factory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_data_parts, get_text_parts, new_data_part, new_text_part
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.errors import A2AError

from agentflow.settings import Settings
from tests.e2e.server import serve

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "a2a-test-token-0123456789abcdef"
PASSWORD = "a2a-test-password"
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(home=tmp_path_factory.mktemp("a2a") / "data", tracing=False, password=PASSWORD, api_token=TOKEN)
    with serve(settings, ui=False) as url:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
            for name in ("hello", "approval"):
                source = (EXAMPLES / f"{name}.yaml").read_text()
                assert api.post("/api/workflows", json={"source": source}).status_code == 201
                assert api.post(f"/api/workflows/{name}/deploy").status_code == 201, name
            undeployed = (EXAMPLES / "branching.yaml").read_text()
            assert api.post("/api/workflows", json={"source": undeployed}).status_code == 201
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=DEADLINE_S) as client:
        yield client


async def card_of(http: httpx.AsyncClient, server: str, name: str, path: str | None = None) -> AgentCard:
    resolver = A2ACardResolver(http, f"{server}/a2a/{name}/")
    return await resolver.get_agent_card(relative_card_path=path) if path else await resolver.get_agent_card()


async def client_for(http: httpx.AsyncClient, server: str, name: str, *, streaming: bool = False) -> Any:
    card = await card_of(http, server, name)
    return ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)


def text_message(text: str, *, task_id: str = "") -> Message:
    return Message(message_id=f"m-{text[:8]}", role=Role.ROLE_USER, parts=[new_text_part(text)], task_id=task_id)


async def send(client: Any, message: Message, *, immediately: bool = False) -> list[StreamResponse]:
    request = SendMessageRequest(
        message=message, configuration=SendMessageConfiguration(return_immediately=immediately)
    )
    return [event async for event in client.send_message(request)]


def outputs(task: Task) -> dict[str, Any]:
    (artifact,) = task.artifacts
    (data,) = get_data_parts(artifact.parts)
    assert isinstance(data, dict)
    return data


async def test_cards_at_both_paths_are_public(server: str) -> None:
    async with httpx.AsyncClient(timeout=DEADLINE_S) as anonymous:
        modern = await card_of(anonymous, server, "hello")
        legacy = await card_of(anonymous, server, "hello", ".well-known/agent.json")
    assert modern == legacy
    assert modern.name == "hello"
    assert modern.description == "Greet someone, with no LLM at all"
    assert modern.version == "v1"
    assert modern.capabilities.streaming
    (interface,) = modern.supported_interfaces
    assert interface.url == f"{server}/a2a/hello/"
    assert interface.protocol_binding == "JSONRPC"
    (skill,) = modern.skills
    assert skill.id == "hello"
    assert "name (string, default 'world')" in skill.description
    assert modern.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"


async def test_a_workflow_that_is_not_deployed_has_no_card(server: str) -> None:
    async with httpx.AsyncClient(timeout=DEADLINE_S) as anonymous:
        response = await anonymous.get(f"{server}/a2a/branching/.well-known/agent-card.json")
    assert response.status_code == 404
    assert "agentflow deploy branching" in response.json()["detail"]


async def test_the_card_is_revalidated_with_its_etag(server: str) -> None:
    async with httpx.AsyncClient(timeout=DEADLINE_S) as anonymous:
        first = await anonymous.get(f"{server}/a2a/hello/.well-known/agent-card.json")
        again = await anonymous.get(
            f"{server}/a2a/hello/.well-known/agent-card.json", headers={"If-None-Match": first.headers["etag"]}
        )
    assert again.status_code == 304


async def test_a_message_runs_the_workflow_to_completion(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "hello")
    (response,) = await send(client, text_message("Ada"))
    task = response.task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert outputs(task) == {"greeting": "Hello, Ada!"}
    assert get_text_parts(task.status.message.parts) == ["Hello, Ada!"]
    again = await client.get_task(GetTaskRequest(id=task.id))
    assert again.status.state == TaskState.TASK_STATE_COMPLETED
    run = (await http.get(f"{server}/api/runs/{task.id}")).json()
    assert (run["status"], run["trigger"]) == ("succeeded", "a2a")


async def test_a_data_part_gives_the_inputs_by_name(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "hello")
    message = Message(message_id="m-data", role=Role.ROLE_USER, parts=[new_data_part({"name": "Grace"})])
    (response,) = await send(client, message)
    assert outputs(response.task) == {"greeting": "Hello, Grace!"}


async def test_streaming_shows_working_then_completed(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "hello", streaming=True)
    events = await send(client, text_message("Lin"))
    states = [event.status_update.status.state for event in events if event.HasField("status_update")]
    assert states[0] == TaskState.TASK_STATE_WORKING
    assert states[-1] == TaskState.TASK_STATE_COMPLETED
    assert set(states[:-1]) == {TaskState.TASK_STATE_WORKING}
    progress = [get_text_parts(event.status_update.status.message.parts) for event in events[:-1]]
    assert ["running greet (transform)"] in progress
    (artifact,) = [event.artifact_update.artifact for event in events if event.HasField("artifact_update")]
    assert get_data_parts(artifact.parts) == [{"greeting": "Hello, Lin!"}]


async def test_an_approval_is_input_required_until_a_person_approves(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "approval")
    (response,) = await send(
        client, Message(message_id="m-1", role=Role.ROLE_USER, parts=[new_data_part({"amount": 80})])
    )
    task = response.task
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    (prompt,) = get_text_parts(task.status.message.parts)
    assert prompt.startswith("Refund 80 EUR to ACME Corp?")
    approved = await http.post(f"{server}/api/runs/{task.id}/approve", json={"comment": "fine"})
    assert approved.status_code == 202
    final = await wait_for_state(client, task.id, TaskState.TASK_STATE_COMPLETED)
    assert outputs(final) == {"refund": {"refunded": 80, "to": "ACME Corp", "note": "fine"}}


async def test_a_follow_up_message_rejects_the_approval(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "approval")
    (response,) = await send(client, text_message("Initech"))
    task = response.task
    assert task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    (decided,) = await send(client, text_message("reject: not this quarter", task_id=task.id))
    assert decided.task.id == task.id
    assert decided.task.status.state == TaskState.TASK_STATE_REJECTED
    run = (await http.get(f"{server}/api/runs/{task.id}")).json()
    assert run["status"] == "rejected"
    with pytest.raises(A2AError, match="is rejected, not waiting for input"):
        await send(client, text_message("approve", task_id=task.id))


async def test_a_follow_up_that_is_not_a_decision_says_what_to_send(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "approval")
    (response,) = await send(client, text_message("Umbrella"))
    with pytest.raises(A2AError, match="reply 'approve' or 'reject'"):
        await send(client, text_message("maybe later", task_id=response.task.id))
    await client.cancel_task(CancelTaskRequest(id=response.task.id))


async def test_cancel_task_cancels_the_run(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "approval")
    (response,) = await send(client, text_message("Hooli"))
    cancelled = await client.cancel_task(CancelTaskRequest(id=response.task.id))
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    run = (await http.get(f"{server}/api/runs/{response.task.id}")).json()
    assert run["status"] == "cancelled"
    with pytest.raises(A2AError, match="only a queued, waiting or running one is"):
        await client.cancel_task(CancelTaskRequest(id=response.task.id))


async def test_bad_inputs_are_a_clear_error(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "hello")
    message = Message(message_id="m-bad", role=Role.ROLE_USER, parts=[new_data_part({"nme": "Ada"})])
    with pytest.raises(A2AError, match="unknown input 'nme'; did you mean 'name'"):
        await send(client, message)
    approval = await client_for(http, server, "approval")
    wrong_type = Message(message_id="m-bad2", role=Role.ROLE_USER, parts=[new_data_part({"amount": "lots"})])
    with pytest.raises(A2AError, match="amount"):
        await send(approval, wrong_type)


async def test_an_unknown_task_is_not_found(server: str, http: httpx.AsyncClient) -> None:
    client = await client_for(http, server, "hello")
    with pytest.raises(A2AError, match="no task 'nope'"):
        await client.get_task(GetTaskRequest(id="nope"))


async def test_json_rpc_without_the_token_is_401(server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
    async with httpx.AsyncClient(timeout=DEADLINE_S) as anonymous:
        response = await anonymous.post(f"{server}/a2a/hello/", json=body, headers={"A2A-Version": "1.0"})
        wrong = await anonymous.post(
            f"{server}/a2a/hello/", json=body, headers={"Authorization": "Bearer not-the-token-at-all"}
        )
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]
    assert wrong.status_code == 401


async def wait_for_state(client: Any, task_id: str, state: TaskState) -> Task:
    """GetTask until the task reaches `state` (the run continues in the server's executor)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        task: Task = await client.get_task(GetTaskRequest(id=task_id))
        if task.status.state == state:
            return task
        assert loop.time() < deadline, f"task {task_id} is {TaskState.Name(task.status.state)}"
        await asyncio.sleep(0.05)
