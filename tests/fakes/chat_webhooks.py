"""Fake Slack and Discord incoming webhooks on a loopback port, answering as the real services do.

Slack: POST /services/T.../B.../TOKEN with {"text"} answers 200 "ok"; a bad token 403 "invalid_token", a bad
body 400 "invalid_payload", an archived channel 410 "channel_is_archived". Discord: POST /api/webhooks/ID/TOKEN
with {"content"} answers 204; a bad token 401 {"message": "Invalid Webhook Token", "code": 50027}.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from tests.fakes.openai_server import ServerThread

SLACK_TOKEN = "xoxFAKEslackTOKEN1234"
DISCORD_TOKEN = "fakeDiscordToken-5678"


@dataclass
class Posted:
    service: str
    path: str
    body: Any
    content_type: str


@dataclass
class _Log:
    posted: list[Posted] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, posted: Posted) -> None:
        with self.lock:
            self.posted.append(posted)


def build_app(log: _Log) -> FastAPI:
    app = FastAPI()

    @app.post("/services/{team}/{channel}/{token}")
    async def slack(team: str, channel: str, token: str, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return PlainTextResponse("invalid_payload", status_code=400)
        log.add(Posted("slack", request.url.path, body, request.headers.get("content-type", "")))
        if token != SLACK_TOKEN:
            return PlainTextResponse("invalid_token", status_code=403)
        if channel == "ARCHIVED":
            return PlainTextResponse("channel_is_archived", status_code=410)
        if not isinstance(body, dict) or not body.get("text"):
            return PlainTextResponse("invalid_payload", status_code=400)
        return PlainTextResponse("ok")

    @app.post("/api/webhooks/{hook_id}/{token}")
    async def discord(hook_id: str, token: str, request: Request) -> Response:
        body = await request.json()
        log.add(Posted("discord", request.url.path, body, request.headers.get("content-type", "")))
        if token != DISCORD_TOKEN:
            return JSONResponse({"message": "Invalid Webhook Token", "code": 50027}, status_code=401)
        if hook_id == "LIMITED":
            return JSONResponse({"message": "You are being rate limited.", "retry_after": 1.5}, status_code=429)
        if not body.get("content"):
            return JSONResponse({"message": "Cannot send an empty message", "code": 50006}, status_code=400)
        return Response(status_code=204)

    return app


class FakeChatWebhooks:
    """`with FakeChatWebhooks() as hooks:` then hooks.slack_url(), hooks.discord_url() and hooks.posted."""

    def __init__(self) -> None:
        self._log = _Log()
        self._server = ServerThread(build_app(self._log))

    def __enter__(self) -> FakeChatWebhooks:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    def slack_url(self, *, token: str = SLACK_TOKEN, channel: str = "B0123") -> str:
        return f"{self._server.url}/services/T0123/{channel}/{token}"

    def discord_url(self, *, token: str = DISCORD_TOKEN, hook_id: str = "112233") -> str:
        return f"{self._server.url}/api/webhooks/{hook_id}/{token}"

    @property
    def posted(self) -> list[Posted]:
        with self._log.lock:
            return list(self._log.posted)
