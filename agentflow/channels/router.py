"""What a chat message means: one bot, many workflows, and the assistant for everything else.

For each `Inbound` from an allow-listed person (others are ignored, and logged once):

1. `approve 12` / `reject 12 [why]` decides that approval, exactly once, as that person;
2. a message matching a deployed workflow's trigger for this channel (`command: /triage`, or
   `pattern:`) starts a run of the deployed version, with the rest of the text as its input; the
   run answers in this chat when it ends or waits for approval (`notifier.py`);
3. anything else is a turn with the assistant (the conversation engine), in this chat's session:
   the same sessions, commands and drafts as the web chat.

A message the medium delivers twice (same key) is handled once: a run's key is its message's key,
and a turn's key is recorded before the turn.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentflow.channels.base import ApprovalPrompt, Channel, Inbound, split_text
from agentflow.triggers.dispatch import Refused, start
from agentflow.versions import label

if TYPE_CHECKING:
    from agentflow.chat.engine import ConversationEngine
    from agentflow.runtime import AgentFlow
    from agentflow.spec.models import ChatTrigger
    from agentflow.triggers.deployments import Deployed

log = logging.getLogger("agentflow.channels")

TYPED_DECISION = re.compile(r"^\s*/?(approve|reject)\s+#?(\d{1,12})\b[\s:,-]*(.*)$", re.IGNORECASE | re.DOTALL)
ASSISTANT_UNAVAILABLE = (
    "The assistant is not available here; workflows with a command still run (try /help in the web app)."
)


@dataclass(frozen=True, slots=True)
class Route:
    deployed: Deployed
    trigger: str
    config: ChatTrigger
    text: str  # what the workflow's input receives


def route(deployed: list[Deployed], channel: str, text: str) -> Route | None:
    """The deployed workflow a message starts, if any: commands first, then patterns, by workflow name."""
    words = text.strip().split(maxsplit=1)
    first = words[0].split("@", 1)[0].lower() if words else ""  # /triage@my_bot in Telegram groups
    rest = words[1] if len(words) > 1 else ""
    patterns: list[Route] = []
    for item in sorted(deployed, key=lambda found: found.name):
        for name, config in item.chat_triggers(channel):
            if config.command is not None and first == config.command:
                return Route(item, name, config, rest)
            if config.pattern is not None and re.search(config.pattern, text):
                patterns.append(Route(item, name, config, text))
    return patterns[0] if patterns else None


class ChannelRouter:
    def __init__(self, flow: AgentFlow, conversation: ConversationEngine | None = None) -> None:
        self.flow = flow
        self.conversation = conversation
        self._refused_users: set[str] = set()

    async def handle(self, channel: Channel, message: Inbound) -> str:
        """Handle one message; what was done: ignored, duplicate, decided, started, assistant, refused."""
        if not channel.allowed(message.user):
            if message.person not in self._refused_users:
                self._refused_users.add(message.person)
                log.warning(
                    "ignored a %s message from %s (%s): not on the allow-list; add the id to AGENTFLOW_%s_ALLOW",
                    channel.name,
                    message.user,
                    message.name or "no name",
                    channel.name.upper(),
                )
            return "ignored"
        decision = TYPED_DECISION.match(message.text)
        if decision is not None:
            if message.key and not await asyncio.to_thread(
                self.flow.store.first_sighting, f"{channel.name}:{message.chat}", message.key
            ):
                return "duplicate"
            verb, number, comment = decision.groups()
            answer = await self.decide(
                channel, message.user, int(number), approved=verb.lower() == "approve", comment=comment
            )
            await self.send(channel, message.chat, answer)
            return "decided"
        deployed = await asyncio.to_thread(self.flow.deployments.all_deployed)
        found = route(deployed, channel.name, message.text)
        if found is not None:
            return await self._start(channel, message, found)
        return await self._converse(channel, message)

    async def _start(self, channel: Channel, message: Inbound, found: Route) -> str:
        workflow = found.deployed.workflow
        target = found.config.input or next(iter(workflow.spec.inputs), None)
        inputs = {target: found.text} if target is not None else {}
        key = message.key or f"{message.chat}:{message.text}"
        reply_to = {"channel": channel.name, "chat": message.chat, "user": message.user}
        try:
            started = await start(
                self.flow,
                found.deployed,
                found.trigger,
                channel=channel.name,
                scope=f"{channel.name}:{message.chat}",
                key=key,
                inputs=inputs,
                reply_to=reply_to,
                wake=False,  # "Started" first: a quick run's answer must not overtake it
            )
        except Refused as exc:
            await self.send(channel, message.chat, f"Not started: {exc.reason}")
            return "refused"
        if not started.created:
            return "duplicate"
        try:
            await self.send(
                channel,
                message.chat,
                f"Started {found.deployed.name} {label(found.deployed.stored)} (run {started.run_id[:12]}). "
                "I will answer here when it ends or needs you.",
            )
        finally:
            self.flow.executor.wake()
        return "started"

    async def _converse(self, channel: Channel, message: Inbound) -> str:
        if message.key and not await asyncio.to_thread(
            self.flow.store.first_sighting, f"{channel.name}:{message.chat}", message.key
        ):
            return "duplicate"
        if self.conversation is None:
            await self.send(channel, message.chat, ASSISTANT_UNAVAILABLE)
            return "assistant"
        session = f"{channel.name}-{message.chat}".replace(":", "-").replace("+", "")
        reply = await self.conversation.handle(session, message.text, channel=channel.name, person=message.person)
        text = reply.text
        if reply.diff and reply.valid is not False and reply.draft is not None:
            text += f"\n\nDraft {reply.draft} (valid). /show prints it; /run runs it; /save NAME keeps it."
        if reply.errors:
            text += "\n\nNot valid yet:\n" + "\n".join(f"- {error}" for error in reply.errors[:10])
        await self.send(channel, message.chat, text)
        return "assistant"

    async def decide(
        self, channel: Channel, user: str, approval_id: int, *, approved: bool, comment: str | None = None
    ) -> str:
        """Decide an approval as this person, exactly once; the answer to show them."""
        if not channel.allowed(user):
            return "You are not on this channel's allow-list: you cannot decide approvals."
        store = self.flow.store
        approval = await asyncio.to_thread(store.approval, approval_id)
        if approval is None:
            return f"There is no approval #{approval_id}."
        decided = await asyncio.to_thread(
            store.decide_approval,
            approval.run_id,
            approved=approved,
            comment=(comment or "").strip() or None,
            approval_id=approval_id,
            decided_by=f"{channel.name}:{user}",
        )
        if decided is None:
            now = await asyncio.to_thread(store.approval, approval_id)
            status = now.status if now is not None else "gone"
            who = f" by {now.decided_by}" if now is not None and now.decided_by else ""
            return f"Approval #{approval_id} was already decided: {status}{who}."
        self.flow.executor.wake()
        verb = "Approved" if approved else "Rejected"
        return f"{verb} #{approval_id} ({approval.node_id} of run {approval.run_id[:12]}); the run continues."

    async def send(self, channel: Channel, chat: str, text: str) -> None:
        for part in split_text(text, channel.max_text):
            await channel.send(chat, part)

    async def ask(self, channel: Channel, chat: str, prompt: ApprovalPrompt) -> None:
        """Show an approval; its message is cut to fit, the rest being in the app's run console."""
        limit = max(channel.max_text - 200, 100)
        message = prompt.message if len(prompt.message) <= limit else prompt.message[: limit - 1] + "…"
        await channel.ask_approval(
            chat, ApprovalPrompt(prompt.approval_id, prompt.run_id, prompt.workflow, prompt.node_id, message)
        )
