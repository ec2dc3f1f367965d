"""A scripted A2A agent on a2a-sdk's own server classes, served by uvicorn on loopback from a thread.

What it does depends on the message text: `fail` fails the task, `ask` asks for input, anything
else is echoed (a working update, then an artifact with the text and
the data part, then completed). `FakeAgent.seen` records every message's text and headers.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from a2a.helpers.proto_helpers import get_data_parts, new_data_part, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from starlette.applications import Starlette

START_TIMEOUT_S = 30.0


@dataclass
class FakeAgent:
    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)


class _Scripted(AgentExecutor):
    def __init__(self, agent: FakeAgent) -> None:
        self.agent = agent

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        text = context.get_user_input()
        self.agent.seen.append({"text": text, "headers": dict(context.call_context.state.get("headers", {}))})
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work(updater.new_agent_message([new_text_part("thinking")]))
        if text == "fail":
            await updater.failed(updater.new_agent_message([new_text_part("scripted failure")]))
            return
        if text == "ask":
            await updater.requires_input(updater.new_agent_message([new_text_part("which one?")]))
            return
        data = get_data_parts(context.message.parts)
        await updater.add_artifact(
            [new_text_part(f"echo: {text}"), new_data_part({"echo": text, "data": data[0] if data else None})],
            name="answer",
            last_chunk=True,
        )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None and context.context_id is not None
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


def card(url: str, *, streaming: bool) -> AgentCard:
    return AgentCard(
        name="fake-agent",
        description="echoes, fails or asks, as scripted",
        version="1.0.0",
        supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="echoes the message", tags=["echo"])],
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


@contextmanager
def fake_agent(*, streaming: bool = True) -> Iterator[FakeAgent]:
    """Serve the scripted agent at `http://127.0.0.1:PORT/` until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    agent = FakeAgent(url=url)
    agent_card = card(url, streaming=streaming)
    handler = DefaultRequestHandler(_Scripted(agent), InMemoryTaskStore(), agent_card)
    app = Starlette(routes=[*create_agent_card_routes(agent_card), *create_jsonrpc_routes(handler, "/")])
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-a2a-agent")
    thread.start()
    if not server.ready.wait(START_TIMEOUT_S):
        raise RuntimeError(f"the fake A2A agent did not start within {START_TIMEOUT_S:g} s")
    try:
        yield agent
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
