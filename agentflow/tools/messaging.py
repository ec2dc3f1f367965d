"""The messaging tools: send_email (SMTP) and post_message (a Slack or Discord incoming webhook).

Both take their credential from ONE granted secret named by an argument (`account`, `webhook`): the SMTP URL
and the webhook URL are credentials, so neither is ever echoed in a result or an error. The host inside the
secret passes the egress guard at call time: the workflow lists it in spec.permissions.egress.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr, make_msgid, parseaddr
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentflow.settings import Settings
from agentflow.tools.registry import Tool, ToolContext, ToolError
from agentflow.trust.egress import EgressDenied, EgressPolicy, IPAddress, address_denied, guarded_stream

MAX_RECIPIENTS = 20
MAX_EMAIL_CHARS = 500_000
MAX_RESPONSE_BYTES = 10_000
DISCORD_MAX_CHARS = 2000
SLACK_MAX_CHARS = 40_000
_SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")


# --- send_email ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpAccount:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    user: str | None
    password: str | None
    sender: str


def parse_account(url: str, name: str) -> SmtpAccount:
    """`smtp://user:pass@host:587?from=me@example.com&starttls=1` or `smtps://user:pass@host:465?from=...`."""
    shape = "smtp://user:password@host:587?from=you@example.com (or smtps://...:465)"
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ToolError(f"the secret {name} is not an SMTP URL; write it as {shape}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    implicit_tls = parts.scheme == "smtps"
    starttls = not implicit_tls and query.get("starttls", "1").lower() not in ("0", "false", "no")
    try:
        port = parts.port or (465 if implicit_tls else 587 if starttls else 25)
    except ValueError:
        raise ToolError(f"the secret {name} has an invalid port; write it as {shape}") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password and not (implicit_tls or starttls):
        raise ToolError(
            f"the secret {name} would send its password unencrypted (starttls=0); use starttls=1 or smtps://"
        )
    sender = query.get("from") or (user if user and _ADDRESS.match(user) else "")
    if not _ADDRESS.match(sender):
        raise ToolError(f"the secret {name} names no sender address: add ?from=you@example.com to its URL")
    return SmtpAccount(parts.hostname, port, implicit_tls, starttls, user, password, sender)


def _checked_address(value: str) -> str:
    name, address = parseaddr(value)
    if not _ADDRESS.match(address) or any(character in value for character in "\r\n"):
        raise ValueError(f"{value!r} is not an email address (name@example.com)")
    return formataddr((name, address)) if name else address


class SendEmailArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = Field(
        pattern=_SECRET_NAME,
        description="The NAME of the granted secret holding the SMTP URL (e.g. SMTP_ACCOUNT), never the URL",
    )
    to: list[str] = Field(min_length=1, description="Recipient addresses")
    cc: list[str] = Field(default_factory=list, description="Copy recipients")
    subject: str = Field(max_length=998, description="The subject line (one line)")
    text: str = Field(description="The plain-text body")
    html: str | None = Field(None, description="An HTML alternative of the body")
    timeout: float = Field(30.0, gt=0, le=120, description="Seconds for the whole SMTP exchange")

    @field_validator("to", "cc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [_checked_address(value) for value in values]

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("must be one line (no line breaks)")
        return value


def _message(args: SendEmailArgs, sender: str, context: ToolContext) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(args.to)
    if args.cc:
        message["Cc"] = ", ".join(args.cc)
    message["Subject"] = args.subject
    if context.run_id is not None:  # the same node of the same run sends the same Message-ID: a retry is spotted
        digest = hashlib.sha256(f"{context.run_id}\0{context.node_id}".encode()).hexdigest()[:32]
        message["Message-ID"] = f"<{digest}@agentflow.invalid>"
    else:
        message["Message-ID"] = make_msgid(domain="agentflow.invalid")
    message.set_content(args.text)
    if args.html is not None:
        message.add_alternative(args.html, subtype="html")
    return message


class _PinnedSMTP(smtplib.SMTP):
    """Connects to the address the egress guard checked; STARTTLS still verifies the host's name."""

    def __init__(self, address: IPAddress, timeout: float) -> None:
        self._address = address
        super().__init__(timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self._host = host  # the name STARTTLS verifies the certificate against
        return socket.create_connection((str(self._address), port), timeout)


class _PinnedSMTPS(smtplib.SMTP_SSL):
    def __init__(self, address: IPAddress, timeout: float, context: ssl.SSLContext) -> None:
        self._address = address
        super().__init__(timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        self._host = host
        raw = socket.create_connection((str(self._address), port), timeout)
        return self.context.wrap_socket(raw, server_hostname=host)


def _send(account: SmtpAccount, addresses: list[IPAddress], message: EmailMessage, timeout: float) -> dict[str, Any]:
    tls = httpx.create_ssl_context()  # the CA bundle http_request uses (SSL_CERT_FILE when set)
    last: OSError | None = None
    for address in addresses:
        smtp = _PinnedSMTPS(address, timeout, tls) if account.implicit_tls else _PinnedSMTP(address, timeout)
        try:
            smtp.connect(account.host, account.port)
        except OSError as exc:  # refused or unreachable: the next checked address
            last = exc
            smtp.close()
            continue
        try:
            smtp.ehlo()
            if account.starttls:
                smtp.starttls(context=tls)
                smtp.ehlo()
            if account.user is not None and account.password is not None:
                smtp.login(account.user, account.password)
            refused = smtp.send_message(message)
            smtp.quit()
        finally:
            smtp.close()
        return {"refused": sorted(refused)}
    raise last or OSError("no address to connect to")


async def send_email(args: SendEmailArgs, context: ToolContext) -> dict[str, Any]:
    recipients = len(args.to) + len(args.cc)
    if recipients > MAX_RECIPIENTS:
        raise ToolError(f"{recipients} recipients; send_email sends to at most {MAX_RECIPIENTS} per message")
    if len(args.text) + len(args.html or "") > MAX_EMAIL_CHARS:
        raise ToolError(f"the body is longer than {MAX_EMAIL_CHARS} characters; send a shorter message")
    account = parse_account(context.secret_value(args.account), args.account)
    policy = context.egress or EgressPolicy(hosts=None)
    secret_parts = [part for part in (account.password, account.user) if part]
    try:
        policy.check_host(account.host)
        addresses = await policy.resolve(account.host, account.port)
        message = _message(args, account.sender, context)
        async with asyncio.timeout(args.timeout):
            sent = await asyncio.to_thread(_send, account, addresses, message, args.timeout)
    except EgressDenied as exc:
        raise EgressDenied(f"send_email to {exc.target}", exc.reason) from None
    except TimeoutError:
        raise ToolError(f"the SMTP server {account.host} did not finish within {args.timeout:g} s") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise ToolError(
            f"the SMTP server {account.host} refused the login of the account in secret {args.account} "
            f"({exc.smtp_code}); check the user and password in that secret"
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise ToolError(f"the SMTP server refused every recipient: {', '.join(sorted(exc.recipients))}") from None
    except smtplib.SMTPNotSupportedError as exc:
        if "AUTH" in str(exc):
            raise ToolError(
                f"the SMTP server {account.host} offers no login here; remove the user and password from secret "
                f"{args.account}, or use the server's submission port (587 with STARTTLS, or 465 with smtps://)"
            ) from None
        raise ToolError(
            f"the SMTP server {account.host} does not offer STARTTLS; use smtps:// (port 465) in secret "
            f"{args.account}, or starttls=0 for a server without a password"
        ) from None
    except ssl.SSLError as exc:
        raise ToolError(f"TLS with the SMTP server {account.host} failed: {exc.reason or exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        detail = _scrub(f"{type(exc).__name__}: {exc}", secret_parts)
        raise ToolError(f"sending through the SMTP server {account.host}:{account.port} failed: {detail}") from None
    accepted = recipients - len(sent["refused"])
    return {"sent": True, "message_id": message["Message-ID"], "accepted": accepted, "refused": sent["refused"]}


def _scrub(message: str, secret_parts: list[str]) -> str:
    for part in secret_parts:
        message = message.replace(part, "***")
    return message


# --- post_message --------------------------------------------------------------------------------


class PostMessageArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook: str = Field(
        pattern=_SECRET_NAME,
        description="The NAME of the granted secret holding the incoming-webhook URL (e.g. SLACK_WEBHOOK)",
    )
    text: str = Field(min_length=1, max_length=SLACK_MAX_CHARS, description="The message (Slack mrkdwn or Markdown)")
    username: str | None = Field(None, max_length=80, description="The name the message is shown from")
    format: Literal["auto", "slack", "discord"] = Field(
        "auto", description="The webhook's kind; auto tells it by the URL's host"
    )
    timeout: float = Field(30.0, gt=0, le=120, description="Seconds for the request")


def webhook_format(url: str, chosen: str, name: str) -> str:
    if chosen != "auto":
        return chosen
    host = (urlsplit(url).hostname or "").lower()
    if host == "hooks.slack.com":
        return "slack"
    if host in ("discord.com", "discordapp.com", "canary.discord.com", "ptb.discord.com"):
        return "discord"
    raise ToolError(
        f"cannot tell the kind of webhook in secret {name} from its host {host or '?'}: pass format: slack or discord"
    )


async def post_message(args: PostMessageArgs, context: ToolContext) -> dict[str, Any]:
    url = context.secret_value(args.webhook)
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ToolError(f"the secret {args.webhook} is not a webhook URL (https://hooks.slack.com/services/...)")
    kind = webhook_format(url, args.format, args.webhook)
    if kind == "discord" and len(args.text) > DISCORD_MAX_CHARS:
        raise ToolError(f"Discord takes at most {DISCORD_MAX_CHARS} characters per message; shorten the text")
    body: dict[str, Any] = {"text": args.text} if kind == "slack" else {"content": args.text}
    if args.username:
        body["username"] = args.username
    policy = context.egress or EgressPolicy(hosts=None)
    target = f"post_message to {parts.hostname}"
    try:
        if parts.scheme == "http":
            await _refuse_clear_text(policy, parts.hostname, parts.port or 80, args.webhook)
        async with (
            asyncio.timeout(args.timeout),
            guarded_stream(
                policy,
                "POST",
                url,
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                timeout=args.timeout,
                follow_redirects=False,
            ) as response,
        ):
            answer = await _read_bounded(response)
    except EgressDenied as exc:
        raise EgressDenied(target, exc.reason) from None
    except TimeoutError:
        raise ToolError(f"{target} gave no answer within {args.timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ToolError(f"{target} failed: {type(exc).__name__}") from None
    return _outcome(kind, response.status_code, answer, target, args.webhook)


async def _refuse_clear_text(policy: EgressPolicy, host: str, port: int, name: str) -> None:
    """A webhook URL is a credential: plain http is only for a relay on an internal network the operator opened."""
    addresses = await policy.resolve(host, port)
    if any(address_denied(address) is None for address in addresses):
        raise ToolError(f"the webhook in secret {name} is plain http:// to a public host; use its https:// URL")


async def _read_bounded(response: httpx.Response) -> str:
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received.extend(chunk)
        if len(received) > MAX_RESPONSE_BYTES:
            break
    return bytes(received[:MAX_RESPONSE_BYTES]).decode("utf-8", errors="replace")


def _outcome(kind: str, status: int, answer: str, target: str, name: str) -> dict[str, Any]:
    if kind == "slack" and status == 200 and answer.strip() == "ok":
        return {"status": "sent", "format": kind}
    if kind == "discord" and status in (200, 204):
        return {"status": "sent", "format": kind}
    reason = answer.strip()[:300]
    if kind == "discord":
        with contextlib.suppress(ValueError, AttributeError):  # Discord explains itself in JSON
            reason = str(json.loads(answer).get("message") or reason)
    if status == 429:
        fix = "the service is rate limiting: send fewer messages"
    elif status in (401, 403, 404, 410):
        fix = f"the webhook in secret {name} is revoked, wrong or its channel is gone: create a new one"
    else:
        fix = "check the message"
    raise ToolError(f"{target} was refused ({status} {reason}); {fix}")


def tools(settings: Settings) -> list[Tool]:
    return [
        Tool(
            name="send_email",
            description=(
                "Send an email through the SMTP account in the granted secret named by `account`. "
                f"At most {MAX_RECIPIENTS} recipients (to + cc). Returns {{sent, message_id, accepted, refused}}."
            ),
            args_model=SendEmailArgs,
            fn=send_email,
            network=True,
            secret_arguments=("account",),
        ),
        Tool(
            name="post_message",
            description=(
                "Post a message to a Slack or Discord channel through the incoming webhook in the granted secret "
                "named by `webhook`. Returns {status: sent, format}."
            ),
            args_model=PostMessageArgs,
            fn=post_message,
            network=True,
            secret_arguments=("webhook",),
        ),
    ]
