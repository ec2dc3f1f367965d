"""WhatsApp through Twilio: its webhook in, its REST Messages API out.

Twilio POSTs each message form-encoded to `/channels/whatsapp`, signed with the account's auth
token over the exact URL it called (`X-Twilio-Signature`); behind a TLS proxy that URL is
rebuilt from AGENTFLOW_PUBLIC_URL or, with AGENTFLOW_TRUST_PROXY, from `X-Forwarded-*`. The
webhook answers at once with empty TwiML and handles the message in a task, because an assistant
turn may outlast Twilio's 15 s; messages of one chat are handled in the order they came. Replies
go out with `messages.create`, at most 1,600 characters each. WhatsApp takes free-form messages
only within 24 hours of the person's last one (Twilio error 63016): outside it, the error says so.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from agentflow.channels.base import ApprovalPrompt, Inbound, split_text
from agentflow.settings import Settings, SettingsError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from twilio.rest import Client

    from agentflow.channels.router import ChannelRouter

log = logging.getLogger("agentflow.channels")

PATH = "/channels/whatsapp"
PREFIX = "whatsapp:"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
OUTSIDE_WINDOW = 63016
"""Twilio's error for a free-form WhatsApp message more than 24 hours after the person last wrote."""
SEND_TIMEOUT_S = 30.0
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MEDIA_ONLY = "Only text is read here: write what you want, or a command like /help."
BUTTON = re.compile(r"^a:(\d{1,12}):([yn])$")
"""A quick-reply button's payload: `a:<approval id>:y` approves, `:n` rejects."""


def number(address: str) -> str:
    """`whatsapp:+33 6 12-34-56-78` -> `+33612345678`: how numbers are compared and shown."""
    raw = address.strip()
    if raw.lower().startswith(PREFIX):
        raw = raw[len(PREFIX) :]
    digits = re.sub(r"[\s().-]", "", raw)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    return digits if digits.startswith("+") else "+" + digits


def configured(settings: Settings) -> bool:
    return bool(settings.twilio_account_sid and settings.twilio_auth_token)


def _allowed_numbers(raw: tuple[str, ...]) -> frozenset[str]:
    allowed: set[str] = set()
    for entry in raw:
        if entry.strip() == "*":
            allowed.add("*")
            continue
        found = number(entry)
        if not E164.match(found):
            raise SettingsError(
                f"AGENTFLOW_WHATSAPP_ALLOW has {entry!r}, which is not a phone number; "
                "give numbers in international form, like +33612345678, separated by commas"
            )
        allowed.add(found)
    return frozenset(allowed)


def _first(value: str | None) -> str | None:
    """The first hop of a forwarded header (`https, http` when proxies are chained): the one the world called."""
    if not value:
        return None
    return value.split(",", 1)[0].strip() or None


class WhatsAppChannel:
    name = "whatsapp"
    max_text = 1600

    def __init__(self, settings: Settings) -> None:
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            raise SettingsError(
                "the WhatsApp channel needs AGENTFLOW_TWILIO_ACCOUNT_SID and AGENTFLOW_TWILIO_AUTH_TOKEN "
                "(Twilio console, Account Info); unset both to run without WhatsApp"
            )
        if not settings.whatsapp_from:
            raise SettingsError(
                "AGENTFLOW_WHATSAPP_FROM is not set: give the Twilio WhatsApp sender that answers, "
                "like whatsapp:+14155238886 (the sandbox number, or your approved sender)"
            )
        sender = number(settings.whatsapp_from)
        if not E164.match(sender):
            raise SettingsError(
                f"AGENTFLOW_WHATSAPP_FROM={settings.whatsapp_from!r} is not a WhatsApp address; "
                "give one like whatsapp:+14155238886"
            )
        self.settings = settings
        self.sender = PREFIX + sender
        self._allow = _allowed_numbers(settings.whatsapp_allow)
        self._token = settings.twilio_auth_token
        self._client = _client(settings)
        self._router: ChannelRouter | None = None
        self._lanes: dict[str, asyncio.Task[None]] = {}
        """The last task of each chat: the next message of that chat waits for it."""

    # -- the Channel contract ----------------------------------------------------------------

    def allowed(self, user: str) -> bool:
        return "*" in self._allow or number(user) in self._allow

    async def send(self, chat: str, text: str) -> None:
        """One message; Twilio's refusals are logged with what to do, never raised into the caller's turn."""
        from twilio.base.exceptions import TwilioException, TwilioRestException

        try:
            message = await asyncio.to_thread(self._client.messages.create, to=chat, from_=self.sender, body=text)
        except TwilioRestException as exc:
            self._log_refusal(chat, exc.code, f"HTTP {exc.status}: {exc.msg}")
            return
        except (TwilioException, OSError) as exc:  # requests' errors are OSErrors
            log.error(
                "could not reach Twilio to send a WhatsApp message to %s: %s; check the network and "
                "AGENTFLOW_TWILIO_API (unset it to use Twilio's own API)",
                chat,
                exc,
            )
            return
        if message.error_code:  # Twilio reports most failures later, in status callbacks (not subscribed to)
            self._log_refusal(chat, message.error_code, message.error_message or str(message.status))

    async def ask_approval(self, chat: str, prompt: ApprovalPrompt) -> None:
        # Typed decisions, because quick-reply buttons on WhatsApp need a Content template the operator has
        # Twilio approve (ContentSid); a template whose buttons carry `a:<id>:y` / `a:<id>:n` works as is.
        text = (
            f"Approval needed — {prompt.workflow}, step {prompt.node_id} (run {prompt.run_id[:12]}):\n\n"
            f"{prompt.message}\n\n"
            f"Reply *approve {prompt.approval_id}* or *reject {prompt.approval_id} [why]*."
        )
        for part in split_text(text, self.max_text):
            await self.send(chat, part)

    # -- serving -----------------------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        app.add_api_route(PATH, self._webhook, methods=["POST"], include_in_schema=False)

    async def start(self, router: ChannelRouter) -> None:
        self._router = router

    async def stop(self) -> None:
        self._router = None
        lanes = list(self._lanes.values())
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        self._lanes.clear()
        session = getattr(self._client.http_client, "session", None)
        if session is not None:
            session.close()

    async def _webhook(self, request: Request) -> Response:
        router = self._router
        if router is None:
            return PlainTextResponse("the WhatsApp channel is starting; Twilio may retry", status_code=503)
        url = self.public_url(request)
        signature = request.headers.get("x-twilio-signature")
        if not signature:  # refused before reading anything
            log.warning("refused a WhatsApp webhook to %s: no X-Twilio-Signature header (not sent by Twilio)", url)
            return PlainTextResponse("missing X-Twilio-Signature", status_code=403)
        params = await self._form(request)
        if isinstance(params, Response):
            return params
        if not self._valid(url, params, signature):
            log.warning(
                "refused a WhatsApp webhook: X-Twilio-Signature does not match %s; check "
                "AGENTFLOW_TWILIO_AUTH_TOKEN, and that this is the exact URL set in Twilio (behind a TLS proxy, "
                "set AGENTFLOW_PUBLIC_URL or AGENTFLOW_TRUST_PROXY=1)",
                url,
            )
            return PlainTextResponse("invalid X-Twilio-Signature", status_code=403)
        inbound = self._inbound(params)
        if inbound is not None:
            self._enqueue(router, inbound)
        return Response(EMPTY_TWIML, media_type="text/xml")

    async def _form(self, request: Request) -> ImmutableMultiDict[str, str] | Response:
        """The posted form, or the answer refusing it: too large (413, counted as it arrives), not a form (415)."""
        limit = self.settings.hook_max_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return PlainTextResponse(f"the body is larger than {limit} bytes", status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return PlainTextResponse(f"the body is larger than {limit} bytes", status_code=413)
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return PlainTextResponse(
                "Twilio's webhooks are form-encoded (application/x-www-form-urlencoded)", status_code=415
            )
        return ImmutableMultiDict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))

    def public_url(self, request: Request) -> str:
        """The URL Twilio called, as it signed it: scheme, host, port, path and query."""
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if self.settings.public_url:
            return self.settings.public_url + path
        if not self.settings.trust_proxy:
            return str(request.url)
        headers = request.headers
        scheme = (_first(headers.get("x-forwarded-proto")) or request.url.scheme).lower()
        host = _first(headers.get("x-forwarded-host")) or headers.get("host") or request.url.netloc
        port = _first(headers.get("x-forwarded-port"))
        has_port = re.search(r":\d+$", host) is not None
        if port and not has_port and port != {"https": "443", "http": "80"}.get(scheme):
            host = f"{host}:{port}"
        return f"{scheme}://{host}{path}"

    def _valid(self, url: str, params: ImmutableMultiDict[str, str], signature: str) -> bool:
        from twilio.request_validator import RequestValidator

        return bool(RequestValidator(self._token).validate(url, params, signature))

    def _inbound(self, params: ImmutableMultiDict[str, str]) -> Inbound | None:
        sender = params.get("From", "")
        if not sender.lower().startswith(PREFIX):
            log.warning(
                "ignored a Twilio message from %r on the WhatsApp webhook: not a WhatsApp sender; point only "
                "the WhatsApp sender's webhook at %s",
                sender,
                PATH,
            )
            return None
        text = params.get("Body", "").strip()
        button = BUTTON.match(params.get("ButtonPayload", "").strip())
        if button is not None:  # a quick-reply button: the decision it carries, whatever its label says
            approval_id, choice = button.groups()
            text = f"{'approve' if choice == 'y' else 'reject'} {approval_id}"
        if not text and params.get("NumMedia", "0") in ("", "0"):
            return None  # nothing to read (a reaction, a location)
        return Inbound(
            channel=self.name,
            chat=PREFIX + number(sender),
            user=number(sender),
            text=text,
            key=params.get("MessageSid") or params.get("SmsMessageSid") or None,
            name=params.get("ProfileName") or None,
        )

    def _enqueue(self, router: ChannelRouter, inbound: Inbound) -> None:
        chat = inbound.chat
        previous = self._lanes.get(chat)
        task = asyncio.create_task(self._handle(router, inbound, previous), name=f"agentflow-whatsapp-{chat}")
        self._lanes[chat] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._lanes.get(chat) is finished:
                del self._lanes[chat]

        task.add_done_callback(done)

    async def _handle(self, router: ChannelRouter, inbound: Inbound, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            if inbound.text:
                await router.handle(self, inbound)
            elif self.allowed(inbound.user):
                await self.send(inbound.chat, MEDIA_ONLY)
        except Exception:  # one message failing must not stop the chat's next ones
            log.exception("could not handle a WhatsApp message from %s", inbound.user)

    def _log_refusal(self, chat: str, code: int | None, detail: str) -> None:
        if code == OUTSIDE_WINDOW:
            log.error(
                "WhatsApp message to %s not sent: more than 24 hours since they last wrote (Twilio error 63016), "
                "and WhatsApp then takes only approved templates. The person must write first, or use an "
                "approved template (ContentSid)",
                chat,
            )
        else:
            log.error(
                "WhatsApp message to %s not sent: Twilio error %s (%s); see https://www.twilio.com/docs/api/errors/%s",
                chat,
                code,
                detail,
                code,
            )


def _client(settings: Settings) -> Client:
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    client = Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        http_client=TwilioHttpClient(timeout=SEND_TIMEOUT_S),
    )
    if settings.twilio_api:
        # Every request of the Messages API is built on this domain's base URL; an edge or region
        # (TWILIO_EDGE, TWILIO_REGION) would rewrite its host, so an explicit base URL turns them off.
        client.api.base_url = settings.twilio_api.rstrip("/")
        client.edge = None
        client.region = None
    return client
