"""Answers in the chat a run came from: its result when it ends, its approvals as they are asked.

An observer of the live feed (committed events, whichever process ran the run). For a run with a
`reply_to` on a channel this process serves, `run_finished` becomes a message with the outputs or
the error, and `approval_requested` a message with Approve / Reject (`ChannelRouter.ask`). Each is
sent once even with several server processes: the first to record the event's key sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from agentflow.channels.base import ApprovalPrompt, Channel
from agentflow.engine.feed import follow

if TYPE_CHECKING:
    from agentflow.channels.router import ChannelRouter
    from agentflow.runtime import AgentFlow

log = logging.getLogger("agentflow.channels")

NOTIFIED = ("run_finished", "approval_requested")
MAX_RESULT_CHARS = 20_000
"""A result longer than this is cut (in several messages up to here); the whole of it is in the app."""


def result_text(workflow: str, run_id: str, event: dict[str, Any]) -> str:
    status = event.get("status")
    head = f"{workflow} (run {run_id[:12]})"
    if status == "succeeded":
        outputs = event.get("outputs") or {}
        if len(outputs) == 1:
            [value] = outputs.values()
            body = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
        else:
            body = "\n".join(
                f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
                for key, value in outputs.items()
            )
        text = f"✅ {head} finished.\n\n{body}".rstrip()
    elif status == "rejected":
        text = f"⛔ {head} was rejected: {event.get('error') or 'by a person'}"
    elif status == "cancelled":
        text = f"⏹ {head} was cancelled."
    else:
        text = f"❌ {head} {status}: {event.get('error') or 'no reason recorded'}"
    return (
        text if len(text) <= MAX_RESULT_CHARS else text[: MAX_RESULT_CHARS - 40] + "\n… (cut; the rest is in the app)"
    )


class Notifier:
    def __init__(self, flow: AgentFlow, router: ChannelRouter, channels: dict[str, Channel]) -> None:
        self.flow = flow
        self.router = router
        self.channels = channels
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    async def start(self, *, after: int | None = None) -> None:
        start = await asyncio.to_thread(self.flow.store.last_event_id) if after is None else after
        self._task = asyncio.create_task(self._follow(start), name="agentflow-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self, after: int) -> None:
        def wanted(event: dict[str, Any]) -> bool:
            return event.get("type") in NOTIFIED

        async for event in follow(self.flow.feed, after=after, match=wanted):
            try:
                await self.notify(event)
            except Exception:  # one chat failing (blocked bot, closed window) must not stop the others
                log.exception("could not answer run %s in its chat", event.get("run_id"))

    async def notify(self, event: dict[str, Any]) -> bool:
        """Answer one event in its run's chat; False when the run has none here, or it was answered already."""
        run_id = str(event.get("run_id", ""))
        run = await asyncio.to_thread(self.flow.store.get_run, run_id)
        if run is None or not run.reply_to:
            return False
        channel = self.channels.get(str(run.reply_to.get("channel")))
        chat = run.reply_to.get("chat")
        if channel is None or chat is None:
            return False
        key = f"{event.get('type')}:{event.get('id')}"
        if not await asyncio.to_thread(self.flow.store.first_sighting, f"notify:{run_id}", key):
            return False
        if event.get("type") == "approval_requested":
            pending = await asyncio.to_thread(self.flow.store.pending_approval, run_id)
            if pending is None:
                return False  # decided already (from the app) before we got here
            prompt = ApprovalPrompt(pending.id, run_id, run.workflow, pending.node_id, pending.message)
            await self.router.ask(channel, str(chat), prompt)
        else:
            await self.router.send(channel, str(chat), result_text(run.workflow, run_id, event))
        self.sent += 1
        return True
