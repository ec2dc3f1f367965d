"""A fake Twilio Messages API, and WhatsApp as a `Medium` of the channel contract suite.

`FakeTwilio` serves `POST /2010-04-01/Accounts/{sid}/Messages.json` over real HTTP on 127.0.0.1
(the real `twilio` client talks to it through `AGENTFLOW_TWILIO_API`): it checks HTTP basic auth,
records each message and answers a Message resource, or Twilio's error JSON — 401 for a wrong
account or token, 63016 for a number whose 24-hour window is closed (`close_window`). `sign`
signs an inbound webhook the way Twilio does.

`whatsapp_medium(flow, conversation)` wires a `WhatsAppChannel` to a real `ChannelRouter` and
`Notifier`, and serves its webhook from a bare FastAPI app through httpx's ASGI transport, in the
test's own event loop (where the router, executor and feed live); the person's messages are signed
form POSTs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from twilio.request_validator import RequestValidator

from agentflow.channels.notifier import Notifier
from agentflow.channels.router import ChannelRouter
from agentflow.channels.whatsapp import PATH, WhatsAppChannel
from agentflow.runtime import AgentFlow
from agentflow.settings import Settings
from tests.fakes.media import ALLOWED_USER
from tests.fakes.openai_server import ServerThread

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "fake-twilio-auth-token-0123456789"
SENDER = "whatsapp:+14155238886"
APP_URL = "http://127.0.0.1:7860"
"""Where the medium's webhook requests arrive (the ASGI transport's base URL): Twilio signs this URL + PATH."""
MAX_BODY = 1600
OUTSIDE_WINDOW_MESSAGE = (
    "Failed to send freeform message because you are outside the allowed window. "
    "If you are using WhatsApp, please use a Message Template."
)


def address(user: str) -> str:
    """A medium user's WhatsApp address: `1001` -> `whatsapp:+10015550100`; a `+number` is kept."""
    return "whatsapp:" + (user if user.startswith("+") else f"+{user}5550100")


@dataclass(frozen=True)
class Sent:
    sid: str
    from_: str
    to: str
    body: str


@dataclass
class _Outbox:
    """What the server thread and the test share."""

    account_sid: str
    auth_token: str
    sent: list[Sent] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (Twilio error code, To)
    outside_window: set[str] = field(default_factory=set)
    changed: threading.Condition = field(default_factory=threading.Condition)


def _error(status: int, code: int, message: str) -> JSONResponse:
    more = f"https://www.twilio.com/docs/errors/{code}"
    return JSONResponse({"code": code, "message": message, "more_info": more, "status": status}, status_code=status)


def _authorised(request: Request, outbox: _Outbox, sid: str) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return False
    return sid == user == outbox.account_sid and password == outbox.auth_token


def build_app(outbox: _Outbox) -> FastAPI:
    app = FastAPI()

    @app.post("/2010-04-01/Accounts/{sid}/Messages.json")
    async def create_message(sid: str, request: Request) -> JSONResponse:
        if not _authorised(request, outbox, sid):
            return _error(401, 20003, "Authenticate")
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        to, sender, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if not re.fullmatch(r"whatsapp:\+\d{7,15}", sender):
            return _error(400, 63007, "Twilio could not find a Channel with the specified From address")
        with outbox.changed:
            if to in outbox.outside_window:
                outbox.refused.append((63016, to))
                outbox.changed.notify_all()
                return _error(400, 63016, OUTSIDE_WINDOW_MESSAGE)
            message = Sent(f"SM{uuid.uuid4().hex}", sender, to, body)
            outbox.sent.append(message)
            outbox.changed.notify_all()
        now = email.utils.formatdate(usegmt=True)
        resource: dict[str, Any] = {
            "account_sid": sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": message.sid,
            "status": "queued",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{sid}/Messages/{message.sid}/Media.json"},
            "to": to,
            "uri": f"/2010-04-01/Accounts/{sid}/Messages/{message.sid}.json",
        }
        return JSONResponse(resource, status_code=201)

    return app


class FakeTwilio:
    """Twilio's Messages API on 127.0.0.1: `with FakeTwilio() as fake:`, then read `sent`."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._outbox = _Outbox(account_sid, auth_token)
        self._server = ServerThread(build_app(self._outbox))

    def __enter__(self) -> FakeTwilio:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def sent(self) -> list[Sent]:
        with self._outbox.changed:
            return list(self._outbox.sent)

    @property
    def refused(self) -> list[tuple[int, str]]:
        with self._outbox.changed:
            return list(self._outbox.refused)

    def close_window(self, to: str) -> None:
        """Messages to `to` (whatsapp:+...) now fail with 63016, as 24 hours after the person last wrote."""
        with self._outbox.changed:
            self._outbox.outside_window.add(to)

    def wait(self, ready: Callable[[FakeTwilio], bool], *, timeout: float, what: str) -> None:
        """Block until `ready(self)` holds (checked at each message); AssertionError naming `what` on timeout."""
        with self._outbox.changed:
            if not self._outbox.changed.wait_for(lambda: ready(self), timeout=timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; sent so far: {self.sent}")

    def texts(self, to: str) -> list[str]:
        return [message.body for message in self.sent if message.to == to]

    def sign(self, url: str, params: dict[str, str]) -> str:
        """The X-Twilio-Signature Twilio would send for this form POST to `url`."""
        signature: str = RequestValidator(self.auth_token).compute_signature(url, params)
        return signature


class WhatsAppMedium:
    """A person on WhatsApp: signed webhook POSTs in, the fake's recorded messages out."""

    def __init__(self, fake: FakeTwilio, channel: WhatsAppChannel, router: ChannelRouter, http: httpx.AsyncClient):
        self.fake = fake
        self.channel = channel
        self.router = router
        self.http = http
        self.chat = address(ALLOWED_USER)
        self._last: dict[str, str] | None = None

    def form(self, text: str, *, user: str = ALLOWED_USER, **extra: str) -> dict[str, str]:
        """The form Twilio posts for a message from `user` (a fresh MessageSid each time)."""
        sid = f"SM{uuid.uuid4().hex}"
        return {
            "SmsMessageSid": sid,
            "NumMedia": "0",
            "ProfileName": f"Person {user}",
            "SmsSid": sid,
            "WaId": address(user).removeprefix("whatsapp:+"),
            "SmsStatus": "received",
            "Body": text,
            "To": SENDER,
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": self.fake.account_sid,
            "From": address(user),
            "ApiVersion": "2010-04-01",
            **extra,
        }

    async def post(
        self,
        form: dict[str, str],
        *,
        signed_for: str | None = APP_URL + PATH,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a form to the webhook, signed for `signed_for` (None: unsigned) unless `signature` is given."""
        sent_headers = dict(headers or {})
        if signature is None and signed_for is not None:
            signature = self.fake.sign(signed_for, form)
        if signature is not None:
            sent_headers["X-Twilio-Signature"] = signature
        return await self.http.post(PATH, data=form, headers=sent_headers)

    async def say(self, text: str, *, user: str = ALLOWED_USER) -> None:
        self._last = self.form(text, user=user)
        await self._deliver(self._last)

    async def say_again(self) -> None:
        assert self._last is not None, "say something first"
        await self._deliver(self._last)

    async def _deliver(self, form: dict[str, str]) -> None:
        response = await self.post(form)
        assert response.status_code == 200, f"the webhook answered {response.status_code}: {response.text}"

    async def received(self, count: int, *, timeout: float = 20.0, user: str = ALLOWED_USER) -> list[str]:
        to = address(user)
        what = f"{count} messages to {to}"
        await asyncio.to_thread(self.fake.wait, lambda fake: len(fake.texts(to)) >= count, timeout=timeout, what=what)
        return self.fake.texts(to)[:count]

    def received_now(self) -> list[str]:
        return self.fake.texts(self.chat)

    async def offered(self, *, timeout: float = 20.0) -> list[int]:
        def ids(fake: FakeTwilio) -> list[int]:
            found = (re.findall(r"\bapprove (\d+)\b", text) for text in fake.texts(self.chat))
            return list(dict.fromkeys(int(number) for numbers in found for number in numbers))

        await asyncio.to_thread(self.fake.wait, lambda fake: bool(ids(fake)), timeout=timeout, what="an approval")
        return ids(self.fake)

    async def decide(self, approval_id: int, *, approve: bool, user: str = ALLOWED_USER) -> str:
        """Type the decision; the answer the person then reads (only allow-listed people get one)."""
        to = address(user)
        before = len(self.fake.texts(to))
        await self.say(f"{'approve' if approve else 'reject'} {approval_id}", user=user)

        def answers(fake: FakeTwilio) -> list[str]:  # the run's own messages may come first
            return [text for text in fake.texts(to)[before:] if f"#{approval_id}" in text]

        what = f"an answer about #{approval_id}"
        await asyncio.to_thread(self.fake.wait, lambda fake: bool(answers(fake)), timeout=20.0, what=what)
        return answers(self.fake)[0]


@contextlib.asynccontextmanager
async def whatsapp_medium(
    flow: AgentFlow, conversation: Any = None, *, fake: FakeTwilio | None = None, **settings: Any
) -> AsyncIterator[WhatsAppMedium]:
    """A started WhatsApp channel and its notifier over `flow` (allow-list: the medium's ALLOWED_USER), with a
    fake Twilio of its own unless given one; `settings` override the channel's (trust_proxy=True,
    public_url=..., whatsapp_allow=(...)). Runs answer in their chat once the flow's executor and feed are
    started, which is the caller's to do."""
    with contextlib.ExitStack() as stack:
        twilio = fake if fake is not None else stack.enter_context(FakeTwilio())
        options: dict[str, Any] = {
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": twilio.auth_token,
            "whatsapp_from": SENDER,
            "whatsapp_allow": (address(ALLOWED_USER).removeprefix("whatsapp:"),),
            "twilio_api": twilio.url,
            **settings,
        }
        channel = WhatsAppChannel(Settings(home=flow.settings.home, **options))
        app = FastAPI()
        channel.install(app)
        router = ChannelRouter(flow, conversation)
        notifier = Notifier(flow, router, {channel.name: channel})
        await channel.start(router)
        await notifier.start()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=APP_URL)
        try:
            yield WhatsAppMedium(twilio, channel, router, http)
        finally:
            await http.aclose()
            await notifier.stop()
            await channel.stop()
