"""A tiny A2A agent's card server on loopback: serves its card with an ETag, answers If-None-Match with 304."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CARD_PATH = "/.well-known/agent-card.json"


def card(name: str, *, version: str = "1.0.0", skills: list[dict[str, Any]] | None = None, url: str = "") -> dict:
    return {
        "name": name,
        "description": f"{name}, a test agent",
        "version": version,
        "supportedInterfaces": [{"url": url or "/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": skills
        if skills is not None
        else [{"id": "summarise", "name": "Summarise", "description": "short summaries", "tags": ["text"]}],
    }


class CardServer:
    """`card` may be replaced at any time; `requests` lists (path, If-None-Match, status) for each request."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.card = body
        self.requests: list[tuple[str, str | None, int]] = []
        self.down = False  # answer 503 to everything
        self.url = ""

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(json.dumps(self.card, sort_keys=True).encode()).hexdigest()[:16] + '"'

    def answer(self, path: str, if_none_match: str | None) -> tuple[int, bytes, dict[str, str]]:
        if self.down:
            return 503, b"down", {}
        if path != CARD_PATH:
            return 404, b"not found", {}
        if if_none_match == self.etag:
            return 304, b"", {"ETag": self.etag}
        return 200, json.dumps(self.card).encode(), {"ETag": self.etag, "Content-Type": "application/json"}


@contextmanager
def serve_card(body: dict[str, Any]) -> Iterator[CardServer]:
    served = CardServer(body)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, payload, headers = served.answer(self.path, self.headers.get("If-None-Match"))
            served.requests.append((self.path, self.headers.get("If-None-Match"), status))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="agent-card")
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
