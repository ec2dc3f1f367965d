"""Runs as A2A tasks, and A2A messages as run inputs: the pure mapping, no I/O.

A task is a run: its id is the run id, so a task lives as long as the run is stored and survives a
restart. Run statuses map onto task states; an approval waiting for a decision is `input-required`
with the approval's message; a succeeded run carries one artifact, `outputs`, with its outputs as data.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from a2a.helpers.proto_helpers import get_data_parts, get_text_parts, new_data_part, new_text_part
from a2a.types import (
    Artifact,
    Message,
    Part,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf.timestamp_pb2 import Timestamp

from agentflow.a2a.card import how_to_call, single_text_input
from agentflow.spec.models import Workflow
from agentflow.store.base import RunRecord

OUTPUTS_ARTIFACT = "outputs"

STATES: dict[str, TaskState] = {
    "queued": TaskState.TASK_STATE_SUBMITTED,
    "running": TaskState.TASK_STATE_WORKING,
    "waiting_approval": TaskState.TASK_STATE_INPUT_REQUIRED,
    "succeeded": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "budget_exceeded": TaskState.TASK_STATE_FAILED,
    "rejected": TaskState.TASK_STATE_REJECTED,
    "cancelled": TaskState.TASK_STATE_CANCELED,
}
FINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_REJECTED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_INPUT_REQUIRED,
    }
)
"""States after which a stream ends (`input-required` too: the task waits for a person or a follow-up)."""

_DECISION = re.compile(r"^\s*(approve|approved|yes|reject|rejected|no)\b[\s:,.-]*(.*)$", re.IGNORECASE | re.DOTALL)


class BadMessage(ValueError):
    """A message that cannot become a run's inputs or a decision; the text says what to send instead."""


def state_name(state: TaskState) -> str:
    """`input-required`, as the protocol and callers write states."""
    return TaskState.Name(state).removeprefix("TASK_STATE_").lower().replace("_", "-")


def task_state(run: RunRecord) -> TaskState:
    return STATES.get(run.status, TaskState.TASK_STATE_WORKING)


def agent_message(text: str, *, task_id: str, context_id: str) -> Message:
    return Message(
        message_id=uuid.uuid4().hex,
        role=Role.ROLE_AGENT,
        parts=[new_text_part(text)],
        task_id=task_id,
        context_id=context_id,
    )


def status_text(run: RunRecord, approval_message: str | None) -> str | None:
    """What a person reading the task should see about its state, when there is something to say."""
    if run.status == "waiting_approval":
        prompt = approval_message or "a person must approve the next step"
        return f"{prompt} (reply 'approve' or 'reject', with an optional comment)"
    if run.status in ("failed", "budget_exceeded"):
        return run.error or f"the run ended as {run.status}"
    if run.status == "rejected":
        return run.error or "a person rejected the approval step"
    if run.status == "cancelled":
        return "the run was cancelled"
    if run.status == "succeeded":
        return outputs_text(run.outputs)
    return None


def outputs_text(outputs: dict[str, Any] | None) -> str:
    """The outputs as text: a single string output as is, anything else as JSON."""
    if not outputs:
        return ""
    if len(outputs) == 1:
        (value,) = outputs.values()
        if isinstance(value, str):
            return value
    return json.dumps(outputs, ensure_ascii=False, default=str)


def outputs_artifact(run: RunRecord) -> Artifact:
    parts: list[Part] = [new_data_part(_plain(run.outputs or {}))]
    text = outputs_text(run.outputs)
    if text and len(run.outputs or {}) == 1 and isinstance(next(iter((run.outputs or {}).values())), str):
        parts.insert(0, new_text_part(text))
    return Artifact(
        artifact_id=f"{run.id}-outputs", name=OUTPUTS_ARTIFACT, description="the run's outputs", parts=parts
    )


def run_status(run: RunRecord, approval_message: str | None, *, context_id: str) -> TaskStatus:
    status = TaskStatus(state=task_state(run))
    stamp = Timestamp()
    stamp.FromMilliseconds(int(1000 * (run.finished_at or run.started_at or run.created_at)))
    status.timestamp.CopyFrom(stamp)
    text = status_text(run, approval_message)
    if text is not None:
        status.message.CopyFrom(agent_message(text, task_id=run.id, context_id=context_id))
    return status


def run_task(run: RunRecord, approval_message: str | None = None) -> Task:
    """The task a run is: its id, state, the approval prompt or error, the outputs artifact once it succeeded."""
    context_id = context_of(run)
    task = Task(id=run.id, context_id=context_id, status=run_status(run, approval_message, context_id=context_id))
    task.metadata.update({"workflow": run.workflow, "version": run.version, "run_status": run.status})
    if run.status == "succeeded":
        task.artifacts.append(outputs_artifact(run))
    return task


def status_event(run: RunRecord, approval_message: str | None = None) -> TaskStatusUpdateEvent:
    context_id = context_of(run)
    status = run_status(run, approval_message, context_id=context_id)
    return TaskStatusUpdateEvent(task_id=run.id, context_id=context_id, status=status)


def working_event(run: RunRecord, text: str) -> TaskStatusUpdateEvent:
    """Progress of a run that is still going: `working`, with what it is doing."""
    context_id = context_of(run)
    status = TaskStatus(
        state=TaskState.TASK_STATE_WORKING, message=agent_message(text, task_id=run.id, context_id=context_id)
    )
    return TaskStatusUpdateEvent(task_id=run.id, context_id=context_id, status=status)


def artifact_event(run: RunRecord) -> TaskArtifactUpdateEvent:
    return TaskArtifactUpdateEvent(
        task_id=run.id, context_id=context_of(run), artifact=outputs_artifact(run), last_chunk=True
    )


def context_of(run: RunRecord) -> str:
    """The conversation the task belongs to: the caller's context id when it sent one, else the run id."""
    reply_to = run.reply_to or {}
    context_id = reply_to.get("a2a_context")
    return str(context_id) if context_id else run.id


def message_inputs(workflow: Workflow, message: Message) -> dict[str, Any]:
    """A message as the run's inputs: a data part whose keys are inputs, or text for the single string input."""
    data = [item for item in get_data_parts(message.parts) if item is not None]
    text = "\n".join(part for part in get_text_parts(message.parts) if part.strip())
    if data:
        if len(data) > 1 or not isinstance(data[0], dict):
            raise BadMessage(
                f"send one data part holding an object whose keys are the inputs of '{workflow.name}'; "
                + how_to_call(workflow)
            )
        inputs = {key: _whole_numbers(value) for key, value in data[0].items()}
        target = single_text_input(workflow)
        if text and target is not None and target not in inputs:
            inputs[target] = text
        return inputs
    if not workflow.spec.inputs:
        return {}
    target = single_text_input(workflow)
    if target is None:
        raise BadMessage(f"workflow '{workflow.name}' cannot take its inputs from text alone. " + how_to_call(workflow))
    if not text:
        required = workflow.spec.inputs[target].is_required
        if required:
            raise BadMessage(
                f"the message is empty; workflow '{workflow.name}' needs {target}. " + how_to_call(workflow)
            )
        return {}
    return {target: text}


def decision(message: Message) -> tuple[bool, str | None]:
    """A follow-up on an `input-required` task: (approved, comment); data {approved, comment} or text."""
    for item in get_data_parts(message.parts):
        if isinstance(item, dict) and isinstance(item.get("approved"), bool):
            comment = item.get("comment")
            return item["approved"], str(comment) if comment else None
    text = "\n".join(get_text_parts(message.parts))
    found = _DECISION.match(text)
    if found is None:
        raise BadMessage(
            "this task waits for an approval: reply 'approve' or 'reject', optionally followed by a comment "
            '(\'approve: ok for Q3\'), or a data part {"approved": true, "comment": "..."}'
        )
    approved = found.group(1).lower() in ("approve", "approved", "yes")
    return approved, found.group(2).strip() or None


def _whole_numbers(value: Any) -> Any:
    """Numbers as they were sent: a protobuf Struct holds every number as a double (80 arrives as 80.0)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value


def _plain(value: Any) -> Any:
    """JSON-compatible data (a protobuf Struct holds only JSON values)."""
    return json.loads(json.dumps(value, default=str))
