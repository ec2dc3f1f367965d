"""A scripted, OpenAI-compatible chat-completions server for tests.

In-process: ``with FakeLLM() as fake: ...`` serves on ``fake.base_url`` from a background
thread. As a separate process (for crash tests where the fake must outlive the process
under test)::

    python -m tests.fakes.openai_server --port 0 --script script.json   # prints "READY <port>"

then ``GET /_requests`` lists what it received and ``POST /_enqueue`` adds replies.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

Usage = tuple[int, int]


@dataclass(frozen=True)
class Text:
    text: str
    _: KW_ONLY
    latency: float = 0.0
    usage: Usage | None = None


@dataclass(frozen=True)
class ToolCalls:
    calls: list[tuple[str, dict[str, Any]]]
    _: KW_ONLY
    latency: float = 0.0
    usage: Usage | None = None


@dataclass(frozen=True)
class Json:
    data: Any
    _: KW_ONLY
    latency: float = 0.0
    usage: Usage | None = None


@dataclass(frozen=True)
class Error:
    status: int = 500
    message: str = "fake provider error"
    _: KW_ONLY
    latency: float = 0.0
    usage: Usage | None = None


Reply = Text | ToolCalls | Json | Error
Responder = Callable[[dict[str, Any]], Reply | None]


def reply_from_json(item: dict[str, Any]) -> tuple[Reply, str | None]:
    """Parse the JSON form of a reply (``{"kind": "text", "text": ...}``); returns (reply, model)."""
    common: dict[str, Any] = {"latency": float(item.get("latency", 0.0))}
    if item.get("usage") is not None:
        prompt, completion = item["usage"]
        common["usage"] = (int(prompt), int(completion))
    kind = item.get("kind")
    reply: Reply
    if kind == "text":
        reply = Text(str(item["text"]), **common)
    elif kind == "tool_calls":
        reply = ToolCalls([(call["name"], call.get("arguments", {})) for call in item["calls"]], **common)
    elif kind == "json":
        reply = Json(item["data"], **common)
    elif kind == "error":
        reply = Error(int(item.get("status", 500)), str(item.get("message", "fake provider error")), **common)
    else:
        raise ValueError(f"unknown reply kind {kind!r}; use text, tool_calls, json or error")
    return reply, item.get("model")


def _words(text: str) -> int:
    return len(text.split())


def _content_of(reply: Text | Json) -> str:
    return reply.text if isinstance(reply, Text) else json.dumps(reply.data)


def _usage(reply: Reply, body: dict[str, Any]) -> Usage:
    if reply.usage is not None:
        return reply.usage
    prompt = sum(_words(m["content"]) for m in body.get("messages", []) if isinstance(m.get("content"), str))
    if isinstance(reply, ToolCalls):
        completion = sum(_words(json.dumps(arguments)) + 1 for _, arguments in reply.calls)
    elif isinstance(reply, Error):
        completion = 0
    else:
        completion = _words(_content_of(reply))
    return max(prompt, 1), max(completion, 1)


def _tool_calls(reply: ToolCalls) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        for name, arguments in reply.calls
    ]


@dataclass
class _Script:
    """The mutable state shared by the server thread and the test thread."""

    default: Reply = field(default_factory=lambda: Text("ok"))
    responder: Responder | None = None
    queue: list[tuple[str | None, Reply]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    embedding_requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, body: dict[str, Any]) -> Reply:
        model = body.get("model")
        with self.lock:
            for index, (wanted, reply) in enumerate(self.queue):
                if wanted is None or wanted == model:
                    del self.queue[index]
                    return reply
            responder, default = self.responder, self.default
        return (responder(body) if responder else None) or default


EMBEDDING_SIZE = 8


def toy_embedding(text: Any) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing words point the same way."""
    vector = [0.0] * EMBEDDING_SIZE
    for word in re.findall(r"\w+", str(text).lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % EMBEDDING_SIZE] += 1.0 if digest[1] % 2 else -1.0
    return vector if any(vector) else [1.0] + [0.0] * (EMBEDDING_SIZE - 1)


def _normalise_model(model: str | None) -> str | None:
    # LiteLLM strips the `openai/` routing prefix before the request reaches us.
    return model.removeprefix("openai/") if model else model


def build_app(script: _Script) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        record = {
            "model": body.get("model"),
            "messages": body.get("messages", []),
            "tools": body.get("tools"),
            "tool_choice": body.get("tool_choice"),
            "response_format": body.get("response_format"),
            "stream": bool(body.get("stream")),
            "authorization": request.headers.get("authorization"),
            "body": body,
            "received_at": time.time(),
            "started": time.monotonic(),
            "finished": None,
        }
        with script.lock:
            script.requests.append(record)
        streaming = False
        try:
            reply = script.next_reply(body)
            if reply.latency:
                await asyncio.sleep(reply.latency)
            if isinstance(reply, Error):
                kind = "rate_limit_exceeded" if reply.status == 429 else "server_error"
                error = {"error": {"message": reply.message, "type": kind, "param": None, "code": None}}
                return JSONResponse(error, status_code=reply.status)
            if body.get("stream"):
                streaming = True  # the stream itself records when it ends
                return StreamingResponse(_stream(reply, body, record), media_type="text/event-stream")
            return JSONResponse(_completion(reply, body))
        finally:
            if not streaming:
                record["finished"] = time.monotonic()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await request.json()
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        with script.lock:
            script.embedding_requests.append({"model": body.get("model"), "input": texts})
        data = [
            {"object": "embedding", "index": index, "embedding": toy_embedding(text)}
            for index, text in enumerate(texts)
        ]
        tokens = sum(len(str(text).split()) for text in texts)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.get("/_requests")
    async def list_requests() -> list[dict[str, Any]]:
        with script.lock:
            return [dict(r) for r in script.requests]

    @app.post("/_enqueue")
    async def enqueue(request: Request) -> dict[str, int]:
        payload = await request.json()
        items = payload if isinstance(payload, list) else [payload]
        parsed = [reply_from_json(item) for item in items]
        with script.lock:
            script.queue.extend((_normalise_model(model), reply) for reply, model in parsed)
            return {"queued": len(script.queue)}

    return app


def _completion(reply: Text | ToolCalls | Json, body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if isinstance(reply, ToolCalls):
        message["tool_calls"] = _tool_calls(reply)
        finish = "tool_calls"
    else:
        message["content"] = _content_of(reply)
        finish = "stop"
    prompt, completion = _usage(reply, body)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


async def _stream(reply: Text | ToolCalls | Json, body: dict[str, Any], record: dict[str, Any]) -> AsyncIterator[str]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        event = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(event)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        if isinstance(reply, ToolCalls):
            for index, call in enumerate(_tool_calls(reply)):
                yield chunk({"tool_calls": [{"index": index, **call}]})
            yield chunk({}, "tool_calls")
        else:
            pieces = _content_of(reply).split(" ")
            for position, piece in enumerate(pieces):
                yield chunk({"content": piece if position == 0 else " " + piece})
            yield chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt, completion = _usage(reply, body)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        record["finished"] = time.monotonic()


class _Server(uvicorn.Server):
    """uvicorn.Server that tells us when it is accepting connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._on_ready()


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


class ServerThread:
    """Serve an ASGI app on 127.0.0.1 (a free port) from a daemon thread."""

    def __init__(self, app: Any) -> None:
        self._socket = _bind(0)
        self.port: int = self._socket.getsockname()[1]
        self._ready = threading.Event()
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = _Server(config, self._ready.set)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=15):
            raise RuntimeError("fake server did not start within 15 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


class FakeLLM:
    """A scripted OpenAI-compatible endpoint: ``enqueue`` replies, then inspect ``requests``."""

    def __init__(self) -> None:
        self._script = _Script()
        self._server = ServerThread(build_app(self._script))

    def __enter__(self) -> FakeLLM:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    @property
    def default(self) -> Reply:
        return self._script.default

    @default.setter
    def default(self, reply: Reply) -> None:
        with self._script.lock:
            self._script.default = reply

    @property
    def responder(self) -> Responder | None:
        return self._script.responder

    @responder.setter
    def responder(self, responder: Responder | None) -> None:
        with self._script.lock:
            self._script.responder = responder

    def enqueue(self, reply: Reply, model: str | None = None) -> None:
        """Queue a reply (FIFO); with `model`, only a request for that model gets it."""
        with self._script.lock:
            self._script.queue.append((_normalise_model(model), reply))

    def enqueue_all(self, replies: Iterable[Reply], model: str | None = None) -> None:
        for reply in replies:
            self.enqueue(reply, model)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._script.lock:
            return [dict(r) for r in self._script.requests]

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        with self._script.lock:
            return [dict(r) for r in self._script.embedding_requests]

    @property
    def pending(self) -> int:
        with self._script.lock:
            return len(self._script.queue)

    def count(self, model: str | None = None) -> int:
        model = _normalise_model(model)
        return sum(1 for r in self.requests if model is None or r["model"] == model)

    def max_concurrency(self) -> int:
        return max_concurrency(self.requests)

    def reset(self) -> None:
        with self._script.lock:
            self._script.queue.clear()
            self._script.requests.clear()
            self._script.embedding_requests.clear()
            self._script.default = Text("ok")
            self._script.responder = None


def max_concurrency(requests: Iterable[dict[str, Any]]) -> int:
    """Most requests in flight at once, from their recorded (started, finished) times."""
    events: list[tuple[float, int]] = []
    for request in requests:
        events.append((request["started"], 1))
        finished = request["finished"]
        events.append((finished if finished is not None else float("inf"), -1))
    # At equal times, ends sort before starts: touching intervals do not overlap.
    events.sort()
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="JSON file: a list of replies in their JSON form")
    args = parser.parse_args(argv)
    script = _Script()
    if args.script:
        with open(args.script, encoding="utf-8") as handle:
            for item in json.load(handle):
                reply, model = reply_from_json(item)
                script.queue.append((_normalise_model(model), reply))
    sock = _bind(args.port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(script), log_level="warning", lifespan="off")
    server = _Server(config, lambda: print(f"READY {port}", flush=True))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
