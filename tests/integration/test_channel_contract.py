"""The channel contract: the same conversation on every medium, through the medium's own protocol.

Each test runs on the terminal (`agentflow chat`'s loop, typed lines in, `agentflow> ` lines
out), on WhatsApp (signed Twilio webhooks in, the fake Twilio REST API out) and on Telegram (the
fake Bot API, in `tests/fakes/telegram.py`). A medium is one branch of the `medium` fixture; a
test a medium cannot take part in is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from agentflow.channels.base import ApprovalPrompt, split_text
from agentflow.channels.router import ChannelRouter
from agentflow.channels.terminal import CHAT, SPEAKER, TerminalChannel, chat_loop
from agentflow.chat.engine import ConversationEngine
from agentflow.runtime import AgentFlow
from tests.fakes.media import ALLOWED_USER, STRANGER, Medium
from tests.fakes.openai_server import FakeLLM, Text
from tests.fakes.twilio import whatsapp_medium
from tests.integration.helpers import PERSON, prompts, run_source, workflow

MEDIA = ("terminal", "whatsapp", "telegram")
NO_STRANGERS = "the terminal serves the one person at it: there is no allow-list to stay off"
NO_TRIGGERS = "a workflow's chat triggers are telegram or whatsapp: nothing is deployed to the terminal"
NO_REDELIVERY = "the terminal reads each typed line once: nothing delivers it again"


# -- the terminal as a medium: what the person types, what the screen shows ---------------------


class Keyboard:
    """chat_loop's stdin: lines the test types, read from chat_loop's reading thread."""

    def __init__(self) -> None:
        self._lines: deque[str] = deque()
        self._changed = threading.Condition()
        self.typed = 0
        self.taken = 0

    def type(self, line: str) -> int:
        with self._changed:
            self._lines.append(line)
            self.typed += 1
            self._changed.notify_all()
            return self.typed

    def readline(self) -> str:
        with self._changed:
            self._changed.wait_for(lambda: bool(self._lines))
            line = self._lines.popleft()
            self.taken += 1
            self._changed.notify_all()
            return line

    def wait_taken(self, count: int, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.taken >= count, timeout=timeout):
                raise AssertionError(f"chat_loop did not read line {count} within {timeout} s")


class Screen:
    """chat_loop's stdout: every message the channel writes (one write each), and the whole transcript."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.transcript: list[str] = []
        self._changed = asyncio.Event()

    def write(self, data: str) -> int:
        self.transcript.append(data)
        if data.startswith(SPEAKER):
            self.messages.append(data[len(SPEAKER) :].removesuffix("\n"))
            self._changed.set()
        return len(data)

    def flush(self) -> None:
        pass

    async def wait(self, ready: Any, *, timeout: float, what: str) -> None:
        async def until() -> None:
            while not ready():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {what} within {timeout} s; the screen shows {''.join(self.transcript)!r}"
            ) from None


class TerminalMedium:
    def __init__(self, flow: AgentFlow, conversation: ConversationEngine) -> None:
        self.keyboard = Keyboard()
        self.screen = Screen()
        self.channel = TerminalChannel(self.screen)  # type: ignore[arg-type]
        self.chat = CHAT
        self.router = ChannelRouter(flow, conversation)

    async def say(self, text: str, *, user: str = ALLOWED_USER) -> None:
        typed = self.keyboard.type(text + "\n")
        await asyncio.to_thread(self.keyboard.wait_taken, typed, 20.0)

    async def say_again(self) -> None:
        raise NotImplementedError(NO_REDELIVERY)

    async def received(self, count: int, *, timeout: float = 20.0) -> list[str]:
        await self.screen.wait(lambda: len(self.screen.messages) >= count, timeout=timeout, what=f"{count} messages")
        return self.screen.messages[:count]

    def received_now(self) -> list[str]:
        return list(self.screen.messages)

    async def offered(self, *, timeout: float = 20.0) -> list[int]:
        def ids() -> list[int]:
            found = (text.rsplit("type: approve ", 1) for text in self.screen.messages if "type: approve " in text)
            return [int(parts[1].split()[0]) for parts in found]

        await self.screen.wait(lambda: bool(ids()), timeout=timeout, what="approval")
        return ids()

    async def decide(self, approval_id: int, *, approve: bool, user: str = ALLOWED_USER) -> str:
        before = len(self.screen.messages)
        await self.say(f"{'approve' if approve else 'reject'} {approval_id}")

        def answers() -> list[str]:  # the run's own messages may come first
            return [text for text in self.screen.messages[before:] if f"#{approval_id}" in text]

        await self.screen.wait(lambda: bool(answers()), timeout=20, what=f"an answer about #{approval_id}")
        return answers()[0]


@asynccontextmanager
async def terminal_medium(flow: AgentFlow, conversation: ConversationEngine) -> AsyncIterator[TerminalMedium]:
    medium = TerminalMedium(flow, conversation)
    loop = chat_loop(
        flow,
        conversation,
        "contract",
        stdin=medium.keyboard,  # type: ignore[arg-type]
        stdout=medium.screen,  # type: ignore[arg-type]
        channel=medium.channel,
    )
    task = asyncio.create_task(loop)
    try:
        yield medium
    finally:
        medium.keyboard.type("")  # end of input: chat_loop returns after the turn in progress
        await asyncio.wait_for(task, 60)


# -- the fixture: one branch per medium -----------------------------------------------------------


@dataclass
class Chat:
    kind: str
    medium: Medium
    chat: str
    """Where the allow-listed person's answers go, in the medium's terms."""
    flow: AgentFlow
    router: ChannelRouter
    """The medium's router (and notifier: runs answer in the chat they came from)."""


@asynccontextmanager
async def open_medium(kind: str, flow: AgentFlow, conversation: ConversationEngine) -> AsyncIterator[Any]:
    if kind == "terminal":
        async with terminal_medium(flow, conversation) as terminal:
            yield terminal
    elif kind == "whatsapp":
        async with whatsapp_medium(flow, conversation) as whatsapp:
            yield whatsapp
    else:
        try:
            from tests.fakes.telegram import telegram_medium  # type: ignore[import-not-found,unused-ignore]
        except ModuleNotFoundError as exc:
            if exc.name != "tests.fakes.telegram":
                raise
            pytest.skip("tests/fakes/telegram.py (telegram_medium, the fake Bot API) is not there yet")
        async with telegram_medium(flow, conversation) as telegram:
            yield telegram


@pytest.fixture(params=MEDIA)
async def chat(request: pytest.FixtureRequest, flow: AgentFlow, fake_llm: FakeLLM) -> AsyncIterator[Chat]:
    conversation = ConversationEngine(flow, run_wait=20)
    await flow.executor.start()
    await flow.feed.start()
    try:
        async with open_medium(request.param, flow, conversation) as medium:
            # In a private Telegram chat, the chat id is the user's id.
            where = getattr(medium, "chat", ALLOWED_USER)
            yield Chat(request.param, medium, where, flow, medium.router)
    finally:
        await flow.feed.stop()
        await flow.executor.stop()


def skip_on(chat: Chat, kind: str, reason: str) -> None:
    if chat.kind == kind:
        pytest.skip(reason)


async def read_until(medium: Medium, found: Callable[[str], bool], *, timeout: float = 20.0) -> list[str]:
    """What the chat has received, once one of the texts is `found` (the order of a run's messages and a
    decision's answer is the medium's: a button's answer is no message at all)."""
    texts = medium.received_now()
    while not any(found(text) for text in texts):
        texts = await medium.received(len(texts) + 1, timeout=timeout)
    return texts


class Ignored(logging.Handler):
    """Set once the router says it ignored someone: what a stranger's message leaves behind."""

    def __init__(self, user: str) -> None:
        super().__init__(logging.WARNING)
        self.user = user
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "not on the allow-list" in message and self.user in message:
            self.seen.set()


def shout(kind: str, *, approval: bool = False) -> str:
    """`/shout TEXT` answers TEXT! (after a person's yes, with `approval`)."""
    nodes = "  shout: {type: transform, expr: \"join('', [inputs.text, '!'])\"}"
    if approval:
        nodes = '  ask: {type: approval, message: "Shout {{ inputs.text }}?"}\n' + nodes[:-1] + ", needs: [ask]}"
    return workflow(
        "shout",
        f"inputs: {{text: string}}\ntriggers:\n  - {kind}: {{command: /shout}}\nnodes:\n{nodes}\n"
        'outputs: {result: "{{ shout }}"}',
    )


def deploy(flow: AgentFlow, source: str) -> None:
    stored = flow.save_workflow(source)
    flow.grant_version(stored, by=PERSON)  # the workflow answers in a chat: a person grants that channel
    flow.deployments.deploy("shout", by=PERSON)


# -- the contract ---------------------------------------------------------------------------------


async def test_an_allowed_person_talks_with_the_assistant(chat: Chat, fake_llm: FakeLLM) -> None:
    fake_llm.enqueue(Text("Hello! Tell me what should happen, and I will write the workflow."))
    await chat.medium.say("hello there")
    assert await chat.medium.received(1) == ["Hello! Tell me what should happen, and I will write the workflow."]
    assert prompts(fake_llm.requests) == ["hello there"]


async def test_a_stranger_is_ignored(chat: Chat, fake_llm: FakeLLM) -> None:
    skip_on(chat, "terminal", NO_STRANGERS)
    ignored = Ignored(STRANGER)
    logger = logging.getLogger("agentflow.channels")
    logger.addHandler(ignored)
    try:
        await chat.medium.say("run everything", user=STRANGER)
        assert await asyncio.to_thread(ignored.seen.wait, 20), "the router never said it ignored the stranger"
    finally:
        logger.removeHandler(ignored)
    assert fake_llm.requests == [] and chat.medium.received_now() == []
    fake_llm.enqueue(Text("Hi."))
    await chat.medium.say("and me?")
    assert await chat.medium.received(1) == ["Hi."]
    assert prompts(fake_llm.requests) == ["and me?"]


async def test_a_long_reply_arrives_in_parts(chat: Chat, fake_llm: FakeLLM) -> None:
    limit = chat.medium.channel.max_text
    words: list[str] = []
    index = 0
    while sum(len(word) + 1 for word in words) < limit * 5 // 2:
        index += 1
        words.append(f"word{index}" + ("\n\n" if index % 40 == 0 else ""))
    reply = " ".join(words).strip()
    fake_llm.enqueue(Text(reply))
    await chat.medium.say("tell me everything")
    parts = await chat.medium.received(len(split_text(reply, limit)))
    assert len(parts) >= 3
    assert all(0 < len(part) <= limit for part in parts)
    assert " ".join(parts).split() == reply.split()  # nothing lost, nothing added, in order


async def test_a_deployed_command_runs_and_answers_in_the_same_chat(chat: Chat, fake_llm: FakeLLM) -> None:
    skip_on(chat, "terminal", NO_TRIGGERS)
    deploy(chat.flow, shout(chat.kind))
    await chat.medium.say("/shout hello")
    started, result = await chat.medium.received(2)
    assert started.startswith("Started shout v1 (run ")
    assert "finished" in result and result.endswith("hello!")
    [run] = chat.flow.store.list_runs(workflow="shout")
    assert run.inputs == {"text": "hello"} and run.status == "succeeded"
    assert run.reply_to is not None and run.reply_to["channel"] == chat.kind and run.reply_to["chat"] == chat.chat
    assert fake_llm.requests == []  # a command is not a turn with the assistant


async def test_an_approval_is_decided_once(chat: Chat) -> None:
    run = await run_source(chat.flow, workflow("pay", 'nodes:\n  ask: {type: approval, message: "Pay 10 EUR?"}'))
    assert run.status == "waiting_approval"
    pending = chat.flow.store.pending_approval(run.id)
    assert pending is not None
    prompt = ApprovalPrompt(pending.id, run.id, run.workflow, pending.node_id, pending.message)
    await chat.router.ask(chat.medium.channel, chat.chat, prompt)
    assert pending.id in await chat.medium.offered()
    assert "Pay 10 EUR?" in chat.medium.received_now()[-1]

    first = await chat.medium.decide(pending.id, approve=True)
    assert f"Approved #{pending.id}" in first
    second = await chat.medium.decide(pending.id, approve=False)
    assert "already decided" in second and "approved" in second

    decided = chat.flow.store.approval(pending.id)
    assert decided is not None and decided.status == "approved"
    assert decided.decided_by is not None and decided.decided_by.startswith(f"{chat.medium.channel.name}:")
    finished = await chat.flow.executor.wait_for(run.id)
    assert finished.status == "succeeded"


async def test_a_run_started_in_the_chat_asks_there_and_answers_there(chat: Chat) -> None:
    skip_on(chat, "terminal", NO_TRIGGERS)
    deploy(chat.flow, shout(chat.kind, approval=True))
    await chat.medium.say("/shout careful")
    [approval_id] = await chat.medium.offered()
    assert "Shout careful?" in chat.medium.received_now()[-1]
    assert f"Approved #{approval_id}" in await chat.medium.decide(approval_id, approve=True)
    texts = await read_until(chat.medium, lambda text: "finished" in text)
    assert next(text for text in texts if "finished" in text).endswith("careful!")
    [run] = chat.flow.store.list_runs(workflow="shout")
    assert run.status == "succeeded"


async def test_the_same_message_delivered_twice_is_handled_once(chat: Chat, fake_llm: FakeLLM) -> None:
    skip_on(chat, "terminal", NO_REDELIVERY)
    fake_llm.responder = lambda body: Text("echo: " + body["messages"][-1]["content"])
    await chat.medium.say("first")
    assert await chat.medium.received(1) == ["echo: first"]
    await chat.medium.say_again()
    await chat.medium.say("second")
    assert await chat.medium.received(2) == ["echo: first", "echo: second"]
    assert prompts(fake_llm.requests) == ["first", "second"]

    deploy(chat.flow, shout(chat.kind))
    await chat.medium.say("/shout once")
    await chat.medium.say_again()
    await chat.medium.say("third")
    await read_until(chat.medium, lambda text: text.endswith("once!"))
    texts = await read_until(chat.medium, lambda text: text == "echo: third")
    assert sum(text.startswith("Started shout") for text in texts) == 1
    assert len(chat.flow.store.list_runs(workflow="shout")) == 1
