"""A scripted server that speaks Ollama's own HTTP API, for the fully local path.

``with FakeOllama() as ollama: ...`` serves on ``ollama.url`` (point OLLAMA_API_BASE at it) from a
background thread. It answers what LiteLLM and AgentFlow ask of a real Ollama:

- ``GET /api/tags``, ``GET /api/version``, ``POST /api/show``: the pulled models (404 for any other);
- ``POST /api/chat`` (``ollama_chat/…``): a message, native tool calls
  (``message.tool_calls[{function: {name, arguments: {...}}}]``), NDJSON streaming;
- ``POST /api/generate`` (``ollama/…``): a ``response`` string; LiteLLM emulates tools there by asking for
  ``format: "json"`` and reading ``{"name": ..., "arguments": {...}}`` back, so a scripted tool call is sent so;
- ``POST /api/embed`` and the older ``POST /api/embeddings``: deterministic vectors (hashed words, unit
  length), so texts sharing words are close.

Replies are the OpenAI fake's (`Text`, `ToolCalls`, `Json`, `Error`). Under `format` (``"json"`` or a schema)
Ollama's output is always well-formed JSON, so a scripted `Text` that is not JSON is refused (HTTP 500, saying
so) rather than sent as no real Ollama could; conformance to a schema is not enforced, so that a test can
script a wrong-but-JSON reply and exercise repair.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.fakes.openai_server import Error, Json, Reply, ServerThread, Text, ToolCalls

__all__ = ["DEFAULT_MODELS", "Error", "FakeOllama", "Json", "Text", "ToolCalls", "word_vector"]

DEFAULT_MODELS = ("llama3.2:latest", "nomic-embed-text:latest")
VERSION = "0.12.6"
DIMENSIONS = 16
# Nanoseconds, as Ollama reports every duration; fixed so that replies are reproducible.
_DURATIONS = {"total_duration": 4_883_583, "load_duration": 1_334, "prompt_eval_duration": 342_546}
_WORD = re.compile(r"\w+")

Embedder = Callable[[str], list[float]]


def model_name(model: str | None) -> str:
    """The name Ollama resolves: without LiteLLM's routing prefix, `:latest` when no tag is given."""
    name = (model or "").removeprefix("ollama_chat/").removeprefix("ollama/")
    return name if ":" in name else f"{name}:latest"


def word_vector(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    """A unit vector of hashed lower-cased words: the same text gives the same vector, shared words bring texts
    closer, and no two runs of the suite disagree."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % dimensions] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0:
        return [1.0 / math.sqrt(dimensions)] * dimensions
    return [value / norm for value in vector]


@dataclass
class _Script:
    """The state shared by the server thread and the test thread."""

    models: list[str]
    default: Reply = field(default_factory=lambda: Text("ok"))
    queue: list[tuple[str | None, Reply]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    embedder: Embedder = word_vector
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_reply(self, model: str) -> Reply:
        with self.lock:
            for index, (wanted, reply) in enumerate(self.queue):
                if wanted is None or wanted == model:
                    del self.queue[index]
                    return reply
            return self.default

    def pulled(self, model: str) -> bool:
        with self.lock:
            return model in self.models


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _words(text: str) -> int:
    return len(text.split())


def _content(reply: Text | Json) -> str:
    return reply.text if isinstance(reply, Text) else json.dumps(reply.data)


def _prompt_text(body: dict[str, Any]) -> str:
    if "prompt" in body:
        return str(body.get("prompt") or "")
    return " ".join(str(m.get("content") or "") for m in body.get("messages", []))


def _counts(reply: Reply, body: dict[str, Any], completion: str) -> dict[str, int]:
    """`prompt_eval_count`/`eval_count`: the scripted usage, else words as tokens."""
    if reply.usage is not None:
        prompt, output = reply.usage
    else:
        prompt, output = max(_words(_prompt_text(body)), 1), max(_words(completion), 1)
    return {**_DURATIONS, "prompt_eval_count": prompt, "eval_count": output, "eval_duration": 1_000 * output}


def _not_found(model: str) -> JSONResponse:
    return JSONResponse({"error": f'model "{model.removesuffix(":latest")}" not found, try pulling it first'}, 404)


def _unconstrained(reply: Reply, body: dict[str, Any]) -> JSONResponse | None:
    """Refuse a script no real Ollama could follow: plain text while `format` constrains the output to JSON."""
    if body.get("format") is None or not isinstance(reply, Text):
        return None
    try:
        json.loads(reply.text)
    except ValueError:
        message = (
            f"the script has the text reply {reply.text[:60]!r}, but this request sets format="
            f"{json.dumps(body['format'])[:80]} and Ollama then always answers JSON: script Json(...) or ToolCalls"
        )
        return JSONResponse({"error": message}, status_code=500)
    return None


def _chat_message(reply: Text | ToolCalls | Json) -> tuple[dict[str, Any], str]:
    """Ollama's assistant message for a reply, and the text its tokens are counted from."""
    if isinstance(reply, ToolCalls):
        calls = [{"function": {"name": name, "arguments": arguments}} for name, arguments in reply.calls]
        return {"role": "assistant", "content": "", "tool_calls": calls}, json.dumps(calls)
    text = _content(reply)
    return {"role": "assistant", "content": text}, text


def _generated_text(reply: Text | ToolCalls | Json) -> str:
    if not isinstance(reply, ToolCalls):
        return _content(reply)
    if len(reply.calls) != 1:
        raise ValueError(
            f"/api/generate carries one tool call as a JSON object, the script has {len(reply.calls)}: "
            "script one call per reply, or use an ollama_chat/ model (native tool calls)"
        )
    name, arguments = reply.calls[0]
    return json.dumps({"name": name, "arguments": arguments})


def build_app(script: _Script) -> FastAPI:
    app = FastAPI()

    async def received(endpoint: str, request: Request) -> tuple[dict[str, Any], str]:
        """Log a request (what a test asserts on) and return its body and the model name it resolves to."""
        body = await request.json() if request.method == "POST" else {}
        entry = {
            "endpoint": endpoint,
            "model": body.get("model") or body.get("name"),
            "messages": body.get("messages", []),
            "prompt": body.get("prompt"),
            "tools": body.get("tools"),
            "format": body.get("format"),
            "options": body.get("options"),
            "stream": body.get("stream", True) if endpoint in ("/api/chat", "/api/generate") else False,
            "input": body.get("input", body.get("prompt") if endpoint == "/api/embeddings" else None),
            "authorization": request.headers.get("authorization"),
            "body": body,
        }
        with script.lock:
            script.requests.append(entry)
        return body, model_name(body.get("model") or body.get("name"))

    async def reply_for(endpoint: str, request: Request) -> tuple[dict[str, Any], str, Reply | Response]:
        body, model = await received(endpoint, request)
        if not script.pulled(model):
            return body, model, _not_found(model)
        reply = script.next_reply(model)
        if reply.latency:
            await asyncio.sleep(reply.latency)  # a slow model, as scripted
        if isinstance(reply, Error):
            return body, model, JSONResponse({"error": reply.message}, status_code=reply.status)
        return body, model, _unconstrained(reply, body) or reply

    @app.get("/api/version")
    async def version() -> dict[str, str]:
        return {"version": VERSION}

    @app.get("/api/tags")
    async def tags(request: Request) -> dict[str, Any]:
        await received("/api/tags", request)
        with script.lock:
            names = list(script.models)
        return {"models": [_tag(name) for name in names]}

    @app.post("/api/show")
    async def show(request: Request) -> Response:
        _, model = await received("/api/show", request)
        if not script.pulled(model):
            return _not_found(model)
        return JSONResponse(_show(model))

    @app.post("/api/chat")
    async def chat(request: Request) -> Response:
        body, model, reply = await reply_for("/api/chat", request)
        if isinstance(reply, Response):
            return reply
        assert not isinstance(reply, Error)
        message, counted = _chat_message(reply)
        final = {"done": True, "done_reason": "stop", **_counts(reply, body, counted)}
        if body.get("stream", True):
            return _ndjson(_chat_chunks(model, message, final))
        return JSONResponse({"model": model, "created_at": _now(), "message": message, **final})

    @app.post("/api/generate")
    async def generate(request: Request) -> Response:
        body, model, reply = await reply_for("/api/generate", request)
        if isinstance(reply, Response):
            return reply
        assert not isinstance(reply, Error)
        try:
            text = _generated_text(reply)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        final = {"done": True, "done_reason": "stop", "context": [1, 2, 3], **_counts(reply, body, text)}
        if body.get("stream", True):
            return _ndjson(_generate_chunks(model, text, final))
        return JSONResponse({"model": model, "created_at": _now(), "response": text, **final})

    @app.post("/api/embed")
    async def embed(request: Request) -> Response:
        body, model = await received("/api/embed", request)
        if not script.pulled(model):
            return _not_found(model)
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else list(texts)
        vectors = [script.embedder(str(text)) for text in texts]
        count = sum(max(_words(str(text)), 1) for text in texts)
        return JSONResponse(
            {"model": model, "embeddings": vectors, "total_duration": 14_143, "prompt_eval_count": count}
        )

    @app.post("/api/embeddings")
    async def embeddings(request: Request) -> Response:
        body, model = await received("/api/embeddings", request)
        if not script.pulled(model):
            return _not_found(model)
        return JSONResponse({"embedding": script.embedder(str(body.get("prompt", "")))})

    return app


def _tag(name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return {
        "name": name,
        "model": name,
        "modified_at": "2026-01-01T00:00:00Z",
        "size": 2_019_393_189,
        "digest": digest,
        "details": {
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def _show(name: str) -> dict[str, Any]:
    embedding = "embed" in name
    template = "{{ .Prompt }}" if embedding else "{{- if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}"
    return {
        "modelfile": f"FROM {name}",
        "parameters": "",
        "template": template,
        "details": _tag(name)["details"],
        "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
        "capabilities": ["embedding"] if embedding else ["completion", "tools"],
    }


def _ndjson(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield json.dumps(chunk) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _chat_chunks(model: str, message: dict[str, Any], final: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    if message.get("tool_calls"):
        yield {"model": model, "created_at": _now(), "message": message, "done": False}
    else:
        for index, piece in enumerate(str(message["content"]).split(" ")):
            content = piece if index == 0 else " " + piece
            yield {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": content},
                "done": False,
            }
    yield {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""}, **final}


async def _generate_chunks(model: str, text: str, final: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    for index, piece in enumerate(text.split(" ")):
        yield {"model": model, "created_at": _now(), "response": piece if index == 0 else " " + piece, "done": False}
    yield {"model": model, "created_at": _now(), "response": "", **final}


class FakeOllama:
    """A scripted Ollama: ``enqueue`` replies, then inspect ``requests`` (each names its ``endpoint``)."""

    def __init__(self, models: Iterable[str] = DEFAULT_MODELS) -> None:
        self._pulled = [model_name(name) for name in models]
        self._script = _Script(models=list(self._pulled))
        self._server = ServerThread(build_app(self._script))

    def __enter__(self) -> FakeOllama:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        """Ollama's base URL (no path), as OLLAMA_API_BASE takes it."""
        return self._server.url

    @property
    def models(self) -> list[str]:
        with self._script.lock:
            return list(self._script.models)

    @models.setter
    def models(self, names: Iterable[str]) -> None:
        with self._script.lock:
            self._script.models = [model_name(name) for name in names]

    @property
    def default(self) -> Reply:
        return self._script.default

    @default.setter
    def default(self, reply: Reply) -> None:
        with self._script.lock:
            self._script.default = reply

    @property
    def embedder(self) -> Embedder:
        return self._script.embedder

    @embedder.setter
    def embedder(self, embedder: Embedder) -> None:
        with self._script.lock:
            self._script.embedder = embedder

    def enqueue(self, reply: Reply, model: str | None = None) -> None:
        """Queue a reply (FIFO); with `model` (`llama3.2`, `ollama_chat/llama3.2`), only that model gets it."""
        with self._script.lock:
            self._script.queue.append((model_name(model) if model else None, reply))

    def enqueue_all(self, replies: Iterable[Reply], model: str | None = None) -> None:
        for reply in replies:
            self.enqueue(reply, model)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._script.lock:
            return [dict(entry) for entry in self._script.requests]

    def calls(self, endpoint: str) -> list[dict[str, Any]]:
        """The requests one endpoint received (`/api/chat`, `/api/generate`, `/api/embed`...), in order."""
        return [entry for entry in self.requests if entry["endpoint"] == endpoint]

    @property
    def pending(self) -> int:
        with self._script.lock:
            return len(self._script.queue)

    def reset(self) -> None:
        """Back to how it started: no script, no requests, the models it was created with."""
        with self._script.lock:
            self._script.queue.clear()
            self._script.requests.clear()
            self._script.default = Text("ok")
            self._script.embedder = word_vector
            self._script.models = list(self._pulled)
