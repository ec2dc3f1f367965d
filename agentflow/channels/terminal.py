"""`agentflow chat`: the conversation engine in a terminal, same commands, same sessions.

The terminal is also a `Channel` (`TerminalChannel`): what it says is a line `agentflow> ...`,
approvals are shown with their typed form, and a typed `approve 12` / `reject 12 why` goes
through the `ChannelRouter` like a decision typed on any other medium. The person at the
terminal is the operator: the channel serves them without an allow-list.
"""

from __future__ import annotations

import asyncio
import sys
from typing import IO

from agentflow.channels.base import ApprovalPrompt, Inbound, split_text
from agentflow.channels.router import TYPED_DECISION, ChannelRouter
from agentflow.chat.engine import ConversationEngine, Progress, Reply
from agentflow.cli_grants import person
from agentflow.runtime import AgentFlow

GOODBYE = ("/quit", "/exit")
CHAT = "terminal"
"""The terminal's one chat."""
SPEAKER = "agentflow> "


class TerminalChannel:
    name = "terminal"
    max_text = 100_000

    def __init__(self, stdout: IO[str] = sys.stdout) -> None:
        self.stdout = stdout

    def allowed(self, user: str) -> bool:
        return True  # whoever runs `agentflow chat` already holds the data directory

    async def send(self, chat: str, text: str) -> None:
        # One write per message, so that a reader of the stream sees each message whole.
        self.stdout.write(f"{SPEAKER}{text}\n")
        self.stdout.flush()

    async def ask_approval(self, chat: str, prompt: ApprovalPrompt) -> None:
        text = (
            f"{prompt.workflow} (run {prompt.run_id[:12]}) waits for you at {prompt.node_id}: {prompt.message}\n"
            f"type: approve {prompt.approval_id} / reject {prompt.approval_id} [why]"
        )
        for part in split_text(text, self.max_text):
            await self.send(chat, part)


def render(reply: Reply, *, previous_version: int | None) -> tuple[str, str | None]:
    """The reply for a terminal: text, then what changed in the workflow; and the hint of what to do next."""
    parts = [reply.text]
    if reply.version is not None and reply.version != previous_version and reply.diff:
        parts.append(f"── draft {reply.version} (valid) ── diff:\n{reply.diff.rstrip()}")
    if reply.valid is False and reply.errors:
        parts.append("── not valid:\n" + "\n".join(f"  {error}" for error in reply.errors))
    return "\n".join(parts), ("next: " + "  ".join(reply.actions)) if reply.actions else None


async def chat_loop(
    flow: AgentFlow,
    engine: ConversationEngine,
    session_id: str,
    *,
    stdin: IO[str] = sys.stdin,
    stdout: IO[str] = sys.stdout,
    channel: TerminalChannel | None = None,
) -> None:
    """Read lines until end of input or /quit; `channel` (default: one on `stdout`) is where answers go."""
    terminal = channel or TerminalChannel(stdout)
    router = ChannelRouter(flow, engine)
    # The person at this terminal is who grants and approves from it (as with `agentflow grant`).
    who = person()

    def say(text: str) -> None:
        print(text, file=stdout, flush=True)

    history = engine.history.messages(session_id, limit=6)
    if history:
        say(f"(session {session_id}: last messages)")
        for message in history:
            say(f"{'you' if message.role == 'user' else 'agentflow'}> {message.content}")
    else:
        say("AgentFlow chat. Describe a workflow, or type /help. /quit to leave.")
        if engine.default_model is None:
            say(engine.not_configured())
    version = engine.snapshot(session_id).version
    while True:
        print("you> ", end="", file=stdout, flush=True)
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in GOODBYE:
            break
        if TYPED_DECISION.match(text) and not text.startswith("/"):  # `/approve RUN` stays the chat command
            # Recorded as decided by `terminal:alice`, from `cli:alice`.
            user = who.removeprefix("cli:")
            await router.handle(terminal, Inbound(channel=terminal.name, chat=CHAT, user=user, text=text))
            continue
        async for item in engine.stream(session_id, text, channel="terminal", person=who):
            if isinstance(item, Progress):
                say(f"  … {item.text}")
            else:
                body, hint = render(item, previous_version=version)
                await router.send(terminal, CHAT, body)
                if hint:
                    say(hint)
                version = item.version
