"""`ConversationEngine.handle(session, text)`: one chat turn, whatever the channel.

A channel (web, terminal, Telegram, WhatsApp) is a thin adapter: it sends the
person's text here and renders the `Reply`. Slash commands need no model;
anything else goes to the assistant when a model is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from agentflow.chat.assistant import Assistant
from agentflow.chat.commands import run_command
from agentflow.chat.history import ChatHistory
from agentflow.chat.workspace import SETTLED, Turn, Workspace, plain_errors
from agentflow.runtime import AgentFlow
from agentflow.versions import VersionRef


@dataclass(slots=True)
class Reply:
    text: str
    yaml: str | None = None
    valid: bool | None = None
    errors: list[str] = field(default_factory=list)
    diff: str | None = None
    version: int | None = None
    """The current draft's number: the same as `draft`, kept for older clients (docs/versions.md)."""
    run_ids: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    """What the current version needs beyond its workflow's grant: a person's Grant runs it."""
    repaired: int = 0
    elapsed_ms: float = 0.0
    draft: int | None = None
    """The conversation's current draft (draft 3): its edits are drafts until saved or run."""
    saved: VersionRef | None = None
    """The stored version whose text the current draft is ('greeter' v2), once saved or run."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Progress:
    """A streamed step of a turn in progress (e.g. `validating…`)."""

    text: str


CONFIGURE = (
    "The assistant needs a model. Set one of these and restart:\n"
    "- `AGENTFLOW_MODEL=ollama_chat/llama3.2` with Ollama running "
    "(`ollama serve`; OLLAMA_API_BASE if not localhost:11434)\n"
    "- `OPENAI_API_KEY=…` (and optionally `AGENTFLOW_MODEL=openai/gpt-4o-mini`)\n"
    "- `ANTHROPIC_API_KEY=…` or `GEMINI_API_KEY=…`\n"
    "- any OpenAI-compatible server: `AGENTFLOW_API_BASE=http://host:port/v1 AGENTFLOW_MODEL=openai/NAME`\n\n"
    "Everything else works now: type /help, or /new hello then /run."
)


class ConversationEngine:
    def __init__(self, flow: AgentFlow, *, model: str | None = None, run_wait: float = 15.0) -> None:
        self.flow = flow
        self.history = ChatHistory(flow.store)
        self.default_model = model if model is not None else flow.engine.services.default_model()
        self.run_wait = run_wait
        self.assistant = Assistant(self)

    def model_for(self, workspace: Workspace) -> str | None:
        session = self.history.get_session(workspace.session_id)
        return (session.model if session else None) or self.default_model

    def not_configured(self) -> str:
        return CONFIGURE

    async def wait_settled(self, run_id: str) -> str:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flow.executor.wait_for(run_id, statuses=SETTLED), self.run_wait)
        return run_id

    def workspace(self, session_id: str, *, channel: str = "web") -> Workspace:
        self.history.session(session_id, channel=channel)
        return Workspace(self.flow, self.history, session_id)

    async def handle(
        self, session_id: str, text: str, *, channel: str = "web", progress: Any = None, person: str | None = None
    ) -> Reply:
        """One turn. `person` names who typed it (a login, a chat user) for the grants and approvals they give."""
        started = time.perf_counter()
        workspace = self.workspace(session_id, channel=channel)
        self.history.add_message(session_id, "user", text)
        turn = Turn(person=person or f"{channel}:{session_id[:12]}")
        report = progress or (lambda step: None)
        if text.strip().startswith("/"):
            answer = await run_command(self, workspace, text, turn)
        else:
            model = self.model_for(workspace)
            if model is None:
                answer = self.not_configured()
            else:
                try:
                    answer = await self.assistant.respond(workspace, text, turn, model, report)
                except Exception as exc:  # the provider failed: say so, keep the session usable
                    answer = f"The assistant's model failed: {exc}\nSlash commands still work (/help)."
        if turn.repaired and not turn.gave_up:
            answer += (
                f"\n\n_(Validated; {turn.repaired} problem{'s' if turn.repaired > 1 else ''} in my draft fixed first.)_"
            )
        reply = self.snapshot(session_id, turn=turn, text=answer)
        reply.elapsed_ms = (time.perf_counter() - started) * 1000
        self.history.add_message(
            session_id,
            "assistant",
            answer,
            {"version": reply.version, "run_ids": reply.run_ids, "errors": reply.errors},
        )
        return reply

    async def stream(
        self, session_id: str, text: str, *, channel: str = "web", person: str | None = None
    ) -> AsyncIterator[Progress | Reply]:
        """The turn's progress steps as they happen, then the reply."""
        steps: asyncio.Queue[Progress] = asyncio.Queue()
        task = asyncio.create_task(
            self.handle(
                session_id, text, channel=channel, progress=lambda s: steps.put_nowait(Progress(s)), person=person
            )
        )
        while not task.done():
            getter = asyncio.ensure_future(steps.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
            else:
                getter.cancel()
        while not steps.empty():
            yield steps.get_nowait()
        yield task.result()

    def snapshot(self, session_id: str, *, turn: Turn | None = None, text: str = "") -> Reply:
        """The session's current state as a reply (what a UI shows on load)."""
        turn = turn or Turn()
        current = self.history.current(session_id)
        diff = turn.versions[-1].diff if turn.versions else None
        reply = Reply(
            text=text,
            yaml=current.source if current else None,
            valid=(not turn.errors) if current or turn.errors else None,
            errors=turn.errors,
            diff=diff,
            version=current.number if current else None,
            run_ids=list(dict.fromkeys(turn.run_ids)),
            repaired=turn.repaired,
            draft=current.number if current else None,
        )
        workspace = Workspace(self.flow, self.history, session_id)
        stored = workspace.stored() if current else None
        reply.saved = VersionRef.of(stored) if stored is not None else None
        review = workspace.review() if current else None
        reply.review = review.missing.lines() if review is not None else []
        reply.actions = self._actions(reply)
        return reply

    def apply_edit(self, session_id: str, source: str, *, person: str | None = None) -> Reply:
        """A person's hand edit from an editor: a new draft when valid, errors with lines when not.

        What the edit itself adds (a tool, a host, a secret) is granted by that person.
        """
        workspace = self.workspace(session_id)
        turn = Turn(person=person or f"web:{session_id[:12]}")
        proposal = workspace.propose(source, author="user", note="edited by hand", turn=turn, granted_by=turn.person)
        if not proposal.ok:
            turn.errors = plain_errors(proposal.errors)
            reply = self.snapshot(session_id, turn=turn, text="Not saved: the edit is not valid.")
            reply.valid = False
            return reply
        text = f"Applied as draft {turn.versions[-1].number}." if turn.versions else "No changes."
        return self.snapshot(session_id, turn=turn, text=text)

    def check(self, source: str) -> list[str]:
        """Validate without saving (live feedback while typing)."""
        proposal = Workspace(self.flow, self.history, "").validate(source)
        return plain_errors(proposal.errors)

    def _actions(self, reply: Reply) -> list[str]:
        if reply.yaml is None:
            return ["/new", "/examples", "/help"]
        actions = ["/run", "/diff", "/undo"] if reply.valid is not False else ["/undo", "/show"]
        if reply.review:
            actions.insert(0, "/grant")
        actions += [f"/status {run_id[:12]}" for run_id in reply.run_ids[-1:]]
        return actions
