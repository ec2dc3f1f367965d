"""`agentflow chat`: the conversation engine in a terminal, same commands, same sessions."""

from __future__ import annotations

import asyncio
import sys
from typing import IO

from agentflow.chat.engine import ConversationEngine, Progress, Reply
from agentflow.cli_grants import person
from agentflow.runtime import AgentFlow

GOODBYE = ("/quit", "/exit")


def render(reply: Reply, *, previous_version: int | None) -> str:
    """The reply for a terminal: text, then what changed in the workflow."""
    parts = [reply.text]
    if reply.version is not None and reply.version != previous_version and reply.diff:
        parts.append(f"── draft {reply.version} (valid) ── diff:\n{reply.diff.rstrip()}")
    if reply.valid is False and reply.errors:
        parts.append("── not valid:\n" + "\n".join(f"  {error}" for error in reply.errors))
    if reply.actions:
        parts.append("next: " + "  ".join(reply.actions))
    return "\n".join(parts)


async def chat_loop(
    flow: AgentFlow,
    engine: ConversationEngine,
    session_id: str,
    *,
    stdin: IO[str] = sys.stdin,
    stdout: IO[str] = sys.stdout,
) -> None:
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
        # The person at this terminal is who grants and approves from it (as with `agentflow grant`).
        async for item in engine.stream(session_id, text, channel="terminal", person=person()):
            if isinstance(item, Progress):
                say(f"  … {item.text}")
            else:
                say("agentflow> " + render(item, previous_version=version))
                version = item.version
