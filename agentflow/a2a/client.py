"""Calling an A2A agent: `call_agent(url, text, ...)` through a2a-sdk's client, every request egress-guarded.

The card is read first (the URL may be the card itself or the agent's base URL: then
`/.well-known/agent-card.json`, else the 0.3 name `/.well-known/agent.json`). An agent whose card says
it streams is called with SendStreamingMessage, and `on_update(state, text)` is awaited for each status
and artifact update; otherwise SendMessage, then GetTask with a backoff until the task ends or needs
input. A completed task is the reply; `input-required` is returned as such (the caller decides what
comes next); a failed, rejected or cancelled task, like any refusal, is a non-transient `A2ACallError`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.errors import AgentCardResolutionError
from a2a.helpers.proto_helpers import get_data_parts, get_text_parts, new_data_part, new_text_part
from a2a.types import (
    AgentCard,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.errors import A2AError

from agentflow.a2a.tasks import FINAL_STATES, state_name
from agentflow.a2a.transport import GuardedTransport
from agentflow.trust.egress import EgressDenied, EgressPolicy

CARD_PATHS = (".well-known/agent-card.json", ".well-known/agent.json")
FIRST_POLL_S = 0.1
MAX_POLL_S = 2.0
OnUpdate = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class A2AReply:
    task_id: str
    state: str
    """`completed`, or `input-required` (the agent waits for more: an approval, an answer)."""
    text: str
    data: Any | None


class A2ACallError(Exception):
    """A call that did not produce a reply; `transient` when trying again later may succeed."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


async def call_agent(
    url: str,
    text: str,
    *,
    data: dict[str, Any] | None = None,
    timeout: float,
    policy: EgressPolicy,
    headers: Mapping[str, str] | None = None,
    on_update: OnUpdate | None = None,
) -> A2AReply:
    """Send `text` (and `data` as a data part) to the agent at `url` and wait for its reply."""
    transport = GuardedTransport(policy)
    async with httpx.AsyncClient(
        transport=transport, headers=dict(headers or {}), timeout=timeout, follow_redirects=False, trust_env=False
    ) as http:
        try:
            async with asyncio.timeout(timeout):
                card = await _card(http, url)
                client = ClientFactory(ClientConfig(httpx_client=http, streaming=card.capabilities.streaming)).create(
                    card
                )
                try:
                    task = await _exchange(client, _message(text, data), on_update)
                finally:
                    await client.close()
        except TimeoutError:
            raise A2ACallError(
                f"the agent at {url} did not answer within {timeout:g} s; try again, or allow it more time",
                transient=True,
            ) from None
        except A2ACallError:
            raise
        except (A2AError, httpx.HTTPError, EgressDenied) as exc:
            raise _failure(url, exc) from None
    return _reply(url, task)


async def _card(http: httpx.AsyncClient, url: str) -> AgentCard:
    if url.rstrip("/").endswith(".json"):
        return await A2ACardResolver(http, url, agent_card_path="").get_agent_card(relative_card_path="/")
    resolver = A2ACardResolver(http, url)
    try:
        return await resolver.get_agent_card(relative_card_path=CARD_PATHS[0])
    except AgentCardResolutionError as exc:
        if exc.status_code != 404:
            raise
    try:
        return await resolver.get_agent_card(relative_card_path=CARD_PATHS[1])
    except AgentCardResolutionError as exc:
        if exc.status_code == 404:
            raise A2ACallError(
                f"no agent card at {url} (tried {', '.join(CARD_PATHS)}); give the agent's base URL or its card's URL",
                transient=False,
            ) from None
        raise


def _message(text: str, data: dict[str, Any] | None) -> Message:
    parts: list[Part] = [new_text_part(text)] if text else []
    if data is not None:
        parts.append(new_data_part(data))
    return Message(message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=parts)


async def _exchange(client: Any, message: Message, on_update: OnUpdate | None) -> Task:
    """The task as it ended or asked for input: followed by its stream, else polled."""
    task = Task()
    async for response in client.send_message(SendMessageRequest(message=message)):
        task = await _apply(task, response, on_update)
    if not task.id:
        raise A2ACallError("the agent answered with neither a task nor a message", transient=False)
    delay = FIRST_POLL_S
    while task.status.state not in FINAL_STATES:
        await asyncio.sleep(delay)  # an agent that does not stream: polled, less often as it takes longer
        delay = min(delay * 2, MAX_POLL_S)
        polled: Task = await client.get_task(GetTaskRequest(id=task.id))
        if on_update is not None and polled.status.state != task.status.state:
            await on_update(state_name(polled.status.state), _message_text(polled.status.message))
        task = polled
    return task


async def _apply(task: Task, response: StreamResponse, on_update: OnUpdate | None) -> Task:
    """One streamed event folded into the task."""
    if response.HasField("task"):
        return response.task
    if response.HasField("message"):
        answered = Task(id=response.message.task_id or response.message.message_id)
        answered.status.state = TaskState.TASK_STATE_COMPLETED  # a direct message is the whole answer
        answered.status.message.CopyFrom(response.message)
        return answered
    if response.HasField("status_update"):
        update = response.status_update
        if not task.id:
            task.id = update.task_id
        task.status.CopyFrom(update.status)
        if on_update is not None:
            await on_update(state_name(update.status.state), _message_text(update.status.message))
    elif response.HasField("artifact_update"):
        update = response.artifact_update
        if not task.id:
            task.id = update.task_id
        task.artifacts.append(update.artifact)
        if on_update is not None:
            await on_update(state_name(task.status.state), "\n".join(get_text_parts(update.artifact.parts)))
    return task


def _reply(url: str, task: Task) -> A2AReply:
    state = state_name(task.status.state)
    said = _message_text(task.status.message)
    if state not in ("completed", "input-required"):
        why = f": {said}" if said else ""
        raise A2ACallError(f"the agent at {url} ended task {task.id} as {state}{why}", transient=False)
    texts = [text for artifact in task.artifacts for text in get_text_parts(artifact.parts)]
    data = [item for artifact in task.artifacts for item in get_data_parts(artifact.parts)]
    return A2AReply(
        task_id=task.id,
        state=state,
        text="\n".join(texts) if texts else said,
        data=data[0] if len(data) == 1 else (data or None),
    )


def _message_text(message: Message) -> str:
    return "\n".join(get_text_parts(message.parts))


def _failure(url: str, exc: BaseException) -> A2ACallError:
    """Why the call failed, for the workflow's author: what happened at which URL, and what to do."""
    cause = _root(exc)
    if isinstance(cause, EgressDenied):
        return A2ACallError(f"the agent at {url}: {cause}", transient=False)
    if isinstance(cause, httpx.HTTPStatusError):
        status = cause.response.status_code
        if status in (401, 403):
            return A2ACallError(
                f"the agent at {url} refused the call (HTTP {status}); give it the credentials it needs "
                "(its card's security schemes say which)",
                transient=False,
            )
        return A2ACallError(f"the agent at {url} answered HTTP {status}", transient=status >= 500 or status == 429)
    if isinstance(cause, httpx.TimeoutException):
        return A2ACallError(f"the agent at {url} timed out ({type(cause).__name__}); try again", transient=True)
    if isinstance(cause, httpx.TransportError):
        return A2ACallError(
            f"cannot reach the agent at {url} ({type(cause).__name__}: {cause}); check that it runs and the URL",
            transient=True,
        )
    if isinstance(exc, AgentCardResolutionError):
        status = exc.status_code or 0
        return A2ACallError(
            f"cannot read the agent card at {url}: {exc.message}", transient=status >= 500 or status == 429
        )
    if isinstance(exc, A2AError):
        return A2ACallError(f"the agent at {url} refused the message: {exc}", transient=False)
    return A2ACallError(f"the call to the agent at {url} failed: {exc}", transient=False)


def _root(exc: BaseException) -> BaseException:
    """The first httpx or egress error behind the SDK's wrappers."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.HTTPError | EgressDenied):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc
