"""The A2A request handler: every JSON-RPC method of a served workflow, done with its runs.

SendMessage starts a run (or, on an `input-required` task, decides its approval) and waits until the
run ends or waits for a person, unless the caller asked to return at once; SendStreamingMessage and
SubscribeToTask follow the run's committed events (the live feed the Runs tab reads); GetTask reads
the run; CancelTask cancels it; ListTasks lists the workflow's runs. Nothing is kept in memory: a task
is its run, in the store, wherever and whenever it executes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.server.request_handlers import RequestHandler
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.errors import (
    ExtendedAgentCardNotConfiguredError,
    InvalidParamsError,
    InvalidRequestError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
)

from agentflow.a2a.tasks import (
    BadMessage,
    artifact_event,
    decision,
    message_inputs,
    run_task,
    status_event,
    working_event,
)
from agentflow.engine.budget import BudgetExceededError
from agentflow.engine.events import TERMINAL_STATUSES
from agentflow.engine.feed import batches
from agentflow.engine.inputs import InputError
from agentflow.runtime import AgentFlow
from agentflow.store.base import RunRecord, WorkflowVersion
from agentflow.trust.grants import NeedsGrantError

SETTLED = TERMINAL_STATUSES | {"waiting_approval"}
"""Where a blocking SendMessage stops waiting: the run ended, or it waits for a person."""
CANCEL_WAIT_S = 10.0
LIST_LIMIT = 100


class RunRequestHandler(RequestHandler):
    """Serves the deployed workflows of one AgentFlow; the workflow of a call is `context.state["workflow"]`."""

    def __init__(self, flow: Callable[[], AgentFlow]) -> None:
        self._flow = flow

    @property
    def flow(self) -> AgentFlow:
        return self._flow()

    # -- lookups ----------------------------------------------------------------------

    def deployed(self, context: ServerCallContext) -> WorkflowVersion:
        name = str(context.state.get("workflow", ""))
        found = self.flow.deployments.deployed(name)
        if found is None:
            raise TaskNotFoundError(f"workflow '{name}' is not deployed; deploy it with `agentflow deploy {name}`")
        return found.stored

    async def run_of(self, task_id: str, context: ServerCallContext) -> RunRecord:
        name = str(context.state.get("workflow", ""))
        run = await asyncio.to_thread(self.flow.store.get_run, task_id)
        if run is None or run.workflow != name:
            raise TaskNotFoundError(f"no task '{task_id}' for the agent '{name}'")
        return run

    async def task_of(self, run: RunRecord) -> Task:
        return run_task(run, await self._approval_message(run))

    async def _approval_message(self, run: RunRecord) -> str | None:
        if run.status != "waiting_approval":
            return None
        pending = await asyncio.to_thread(self.flow.store.pending_approval, run.id)
        return pending.message if pending is not None else None

    # -- messages ---------------------------------------------------------------------

    async def on_message_send(self, params: SendMessageRequest, context: ServerCallContext) -> Task | Message:
        run = await self._accept(params.message, context)
        if not params.configuration.return_immediately:
            run = await self._settle(run.id)
        return await self.task_of(run)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        run = await self._accept(params.message, context)
        yield await self.task_of(run)
        async for event in self._follow(run):
            yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        run = await self.run_of(params.id, context)
        yield await self.task_of(run)
        if run.status not in SETTLED:
            async for event in self._follow(run):
                yield event

    async def _accept(self, message: Message, context: ServerCallContext) -> RunRecord:
        """Start a run for a new message; decide the approval of the task a follow-up names."""
        if message.task_id:
            return await self._follow_up(message, context)
        stored = self.deployed(context)
        flow = self.flow
        workflow = flow.engine.compiled(stored.name, stored.version).workflow
        try:
            inputs = message_inputs(workflow, message)
        except BadMessage as exc:
            raise InvalidParamsError(str(exc)) from None
        reply_to = {"a2a_context": message.context_id} if message.context_id else None

        def submit() -> RunRecord:
            run = flow.executor.prepare(stored.name, stored.version, inputs, trigger="a2a", reply_to=reply_to)
            flow.store.create_run(run)
            flow.executor.wake()
            return run

        try:
            return await asyncio.to_thread(submit)
        except InputError as exc:
            raise InvalidParamsError(f"bad inputs for '{stored.name}': {exc}") from None
        except (NeedsGrantError, BudgetExceededError) as exc:
            raise InvalidRequestError(str(exc)) from None

    async def _follow_up(self, message: Message, context: ServerCallContext) -> RunRecord:
        run = await self.run_of(message.task_id, context)
        if run.status != "waiting_approval":
            raise InvalidParamsError(
                f"task {run.id} is {run.status}, not waiting for input; send a new message (no taskId) to start "
                "another run"
            )
        try:
            approved, comment = decision(message)
        except BadMessage as exc:
            raise InvalidParamsError(str(exc)) from None
        flow = self.flow
        decided = await asyncio.to_thread(
            flow.store.decide_approval,
            run.id,
            approved=approved,
            comment=comment,
            decided_by=f"a2a:{flow.settings.user}",
        )
        if decided is None:
            raise InvalidParamsError(f"task {run.id} has no pending approval any more; someone decided it already")
        flow.executor.wake()
        return await self.run_of(run.id, context)

    async def _settle(self, run_id: str) -> RunRecord:
        return await self.flow.executor.wait_for(run_id, statuses=SETTLED)

    async def _follow(self, run: RunRecord) -> AsyncGenerator[Event]:
        """`working` updates from the run's committed events, then its outputs and the state it settled in."""
        store = self.flow.store
        follower = cast(
            AsyncGenerator[list[dict[str, Any]]], batches(self.flow.feed, run_id=run.id, until_finished=True)
        )
        settling = asyncio.ensure_future(self._settle(run.id))
        upcoming = asyncio.ensure_future(anext(follower))
        seen = 0
        try:
            while True:
                await asyncio.wait((upcoming, settling), return_when=asyncio.FIRST_COMPLETED)
                if not upcoming.done():
                    break  # it waits for a person (no run_finished comes), or it ended between two batches
                try:
                    batch = upcoming.result()
                except StopAsyncIteration:
                    break
                for event in batch:
                    seen = max(seen, int(event.get("id") or 0))
                    if (text := _progress(event)) is not None:
                        yield working_event(run, text)
                upcoming = asyncio.ensure_future(anext(follower))
            settled = await settling
        finally:
            for pending in (upcoming, settling):
                pending.cancel()
            await asyncio.gather(upcoming, settling, return_exceptions=True)
            await follower.aclose()
        # What was committed before the run settled and the feed had not handed over yet.
        for event in await asyncio.to_thread(store.events, run.id, after=seen):
            if (text := _progress(event)) is not None:
                yield working_event(run, text)
        if settled.status == "succeeded":
            yield artifact_event(settled)
        yield status_event(settled, await self._approval_message(settled))

    # -- tasks ------------------------------------------------------------------------

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        return await self.task_of(await self.run_of(params.id, context))

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task | None:
        run = await self.run_of(params.id, context)
        flow = self.flow
        if not await asyncio.to_thread(flow.store.request_cancel, run.id):
            raise TaskNotCancelableError(f"task {run.id} is {run.status}; only a queued, waiting or running one is")
        flow.bus.changed(run.id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CANCEL_WAIT_S):
                run = await flow.executor.wait_for(run.id)
        return await self.task_of(run)

    async def on_list_tasks(self, params: ListTasksRequest, context: ServerCallContext) -> ListTasksResponse:
        name = self.deployed(context).name
        limit = min(params.page_size or LIST_LIMIT, LIST_LIMIT)
        runs = await asyncio.to_thread(self.flow.store.list_runs, limit=limit, workflow=name)
        tasks = [await self.task_of(run) for run in runs]
        if params.context_id:
            tasks = [task for task in tasks if task.context_id == params.context_id]
        return ListTasksResponse(tasks=tasks, page_size=limit, total_size=len(tasks))

    # -- not offered ----------------------------------------------------------------------

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError(_NO_PUSH)

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise PushNotificationNotSupportedError(_NO_PUSH)

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise PushNotificationNotSupportedError(_NO_PUSH)

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise PushNotificationNotSupportedError(_NO_PUSH)

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError("AgentFlow serves only the public card")


_NO_PUSH = "push notifications are not offered; stream the task (SendStreamingMessage, SubscribeToTask) or poll GetTask"


def _progress(event: dict[str, Any]) -> str | None:
    """A line for a status update, for the events a caller cares about."""
    kind = event.get("type")
    if kind == "run_started":
        return "resumed" if event.get("resumed") else "started"
    if kind == "node_started":
        return f"running {event.get('node_id')} ({event.get('node_type')})"
    if kind == "node_finished" and event.get("status") == "failed":
        return f"{event.get('node_id')} failed: {event.get('error')}"
    if kind == "approval_decided":
        verdict = "approved" if event.get("approved") else "rejected"
        return f"{event.get('node_id')} {verdict}" + (f": {event['comment']}" if event.get("comment") else "")
    return None
