"""Telegram: one bot for every workflow, through python-telegram-bot 22.

Telegram allows one webhook per bot, so one receiver serves them all and the `ChannelRouter`
routes inside. With AGENTFLOW_PUBLIC_URL, Telegram delivers to `POST /channels/telegram`, each
delivery proven by its secret-token header; without it the bot long-polls, which needs nothing
reachable from the internet (the local-first default). Either way the same handlers run: text
becomes an `Inbound` for the router, and the Approve / Reject buttons decide approvals. Updates
are handled concurrently, so a long assistant turn holds up nobody else.

Replies are plain text (no parse mode): nothing a person or a model writes can break Telegram's
markup. Telegram refusing a message (a blocked bot, a chat gone) is logged, never raised into
the receiver.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request  # at run time: FastAPI reads the route's annotations
from fastapi.responses import JSONResponse
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters
from telegram.warnings import PTBDeprecationWarning

from agentflow.channels.base import ApprovalPrompt, Inbound, allow_list, split_text
from agentflow.settings import SettingsError

if TYPE_CHECKING:
    from fastapi import FastAPI, Response
    from telegram import CallbackQuery

    from agentflow.channels.router import ChannelRouter
    from agentflow.settings import Settings

log = logging.getLogger("agentflow.channels")

T = TypeVar("T")

WEBHOOK_PATH = "/channels/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = ("message", "callback_query")
MAX_TEXT = 4096
"""Telegram's limit, which it counts in UTF-16 code units: `send` splits further when emoji push a part past it."""
ANSWER_LIMIT = 200
"""The longest notification a button press can show (answerCallbackQuery)."""
MAX_RETRY_AFTER = 30.0
"""Telegram's flood control asks to wait; a message is retried once after a wait up to this long, else dropped."""
BUTTON = re.compile(r"^a:(\d{1,12}):([yn])$")
TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
SECRET_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
NOT_TEXT = "Only text is read here: write your message out (photos, voice notes and files are not read)."


class TelegramStartError(RuntimeError):
    """The bot could not start: the message says what to fix (it never contains the token)."""


def webhook_secret(settings: Settings) -> str:
    """The X-Telegram-Bot-Api-Secret-Token of deliveries: the operator's, or one derived from the bot token."""
    if settings.telegram_secret is not None:
        if not SECRET_SHAPE.match(settings.telegram_secret):
            raise SettingsError(
                "AGENTFLOW_TELEGRAM_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule); "
                "unset it to use one derived from the bot token"
            )
        return settings.telegram_secret
    token = settings.telegram_token or ""
    return hmac.new(token.encode(), b"agentflow-telegram-webhook", hashlib.sha256).hexdigest()[:32]


def file_url(api: str) -> str:
    """The Bot API's file URL beside its method URL: https://api.telegram.org/bot -> .../file/bot."""
    base = api.rstrip("/")
    return base[: -len("/bot")] + "/file/bot" if base.endswith("/bot") else base + "/file/bot"


def button_data(approval_id: int, approved: bool) -> str:
    """A button's callback data: `a:12:y` (Telegram takes at most 64 bytes)."""
    return f"a:{approval_id}:{'y' if approved else 'n'}"


def parse_button(data: str | None) -> tuple[int, bool] | None:
    found = BUTTON.match(data or "")
    return (int(found.group(1)), found.group(2) == "y") if found else None


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, units: int) -> str:
    """`text` cut to at most `units` UTF-16 code units (how Telegram counts), with `…` where it was cut."""
    if utf16_length(text) <= units:
        return text
    kept = text.encode("utf-16-le")[: (units - 1) * 2].decode("utf-16-le", errors="ignore")
    return kept + "…"


def fitted(text: str) -> list[str]:
    """`text` in parts Telegram accepts: at most 4096 UTF-16 code units each, none empty."""
    parts = []
    for part in split_text(text, MAX_TEXT):
        # Every code point is at most two UTF-16 units, so parts of 2048 always fit.
        parts.extend(split_text(part, MAX_TEXT // 2) if utf16_length(part) > MAX_TEXT else [part])
    return [part for part in parts if part.strip()]


def shown(user: User) -> str:
    return f"@{user.username}" if user.username else user.full_name


class _Redacted(logging.Filter):
    """Keeps the bot token out of httpx's request log lines (the token is part of every Bot API URL)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "<token>"), ()
        return True


class TelegramChannel:
    name = "telegram"
    max_text = MAX_TEXT

    def __init__(self, settings: Settings) -> None:
        token = (settings.telegram_token or "").strip()
        if not token:
            raise SettingsError("AGENTFLOW_TELEGRAM_TOKEN is not set; create a bot with @BotFather and set its token")
        if not TOKEN_SHAPE.match(token):
            raise SettingsError(
                "AGENTFLOW_TELEGRAM_TOKEN does not look like a bot token (digits, a colon, then letters, "
                "like 123456:ABC-DEF...); copy it again from @BotFather"
            )
        self.settings = settings
        self._token = token
        self._secret = webhook_secret(settings)
        self._allow = allow_list(settings.telegram_allow)
        self._named: set[str] = set()  # user ids whose current @username is on the allow-list
        self._webhook_url = settings.public_url + WEBHOOK_PATH if settings.public_url else None
        self._application: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._router: ChannelRouter | None = None
        self._redacted = _Redacted(token)

    # -- who is served ---------------------------------------------------------------

    def allowed(self, user: str) -> bool:
        return "*" in self._allow or user in self._allow or user in self._named

    def _remember(self, user: User) -> None:
        """Match `@name` entries against the name the person has now (Telegram names can change hands)."""
        if user.username and f"@{user.username.lower()}" in self._allow:
            self._named.add(str(user.id))
        else:
            self._named.discard(str(user.id))

    # -- lifecycle -------------------------------------------------------------------

    def install(self, app: FastAPI) -> None:
        app.add_api_route(WEBHOOK_PATH, self._receive, methods=["POST"], include_in_schema=False)

    async def start(self, router: ChannelRouter) -> None:
        """Connect the bot: set the webhook when there is a public URL, else long-poll; raises TelegramStartError."""
        if self._application is not None:
            raise RuntimeError("the Telegram channel is already started")
        self._router = router
        api = self.settings.telegram_api
        builder = (
            Application.builder().token(self._token).base_url(api).base_file_url(file_url(api)).concurrent_updates(True)
        )
        if self._webhook_url is not None:
            builder = builder.updater(None)
        application = builder.build()
        application.add_handler(CallbackQueryHandler(self._on_button))
        application.add_handler(MessageHandler(filters.TEXT, self._on_text))
        application.add_handler(MessageHandler(filters.ChatType.PRIVATE & ~filters.TEXT, self._on_other))
        application.add_error_handler(self._on_error)
        logging.getLogger("httpx").addFilter(self._redacted)
        try:
            await application.initialize()
        except TelegramError as exc:
            await application.bot.shutdown()  # its HTTP clients were opened before Telegram answered
            self._forget()
            raise self._unreachable(exc) from None
        try:
            await application.start()
            if self._webhook_url is not None:
                await application.bot.set_webhook(
                    url=self._webhook_url, secret_token=self._secret, allowed_updates=list(ALLOWED_UPDATES)
                )
            else:
                assert application.updater is not None
                # Polling first removes any webhook: Telegram delivers one way at a time.
                await application.updater.start_polling(allowed_updates=list(ALLOWED_UPDATES))
        except TelegramError as exc:
            await self._close(application)
            self._forget()
            where = f"set the webhook {self._webhook_url}" if self._webhook_url else "start polling"
            plain = self._webhook_url is not None and not self._webhook_url.startswith("https://")
            hint = " (Telegram needs an https AGENTFLOW_PUBLIC_URL)" if plain else ""
            raise TelegramStartError(f"could not {where}: {self._clean(exc)}{hint}") from None
        self._application = application
        how = f"webhook {self._webhook_url}" if self._webhook_url else "long polling"
        log.info("Telegram bot @%s is listening (%s)", application.bot.username, how)

    async def stop(self) -> None:
        """Stop receiving; updates being handled finish first."""
        application, self._application = self._application, None
        if application is not None:
            try:
                await self._close(application)
            finally:
                self._forget()

    async def _close(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        try:
            if application.updater is not None and application.updater.running:
                await application.updater.stop()
            if application.running:
                await application.stop()
        finally:
            await application.shutdown()

    def _unreachable(self, error: TelegramError) -> TelegramStartError:
        api = self.settings.telegram_api
        if isinstance(error, InvalidToken):  # its own message quotes the token
            return TelegramStartError(
                f"Telegram ({api}) rejected AGENTFLOW_TELEGRAM_TOKEN; copy the bot's token again from @BotFather"
            )
        return TelegramStartError(
            f"could not reach Telegram at {api}: {self._clean(error)}; check the network, or AGENTFLOW_TELEGRAM_API"
        )

    def _forget(self) -> None:
        logging.getLogger("httpx").removeFilter(self._redacted)

    def _clean(self, error: BaseException) -> str:
        return str(error).replace(self._token, "<token>")

    # -- the medium's side of the Channel protocol ---------------------------------------

    async def send(self, chat: str, text: str) -> None:
        bot = self._started().bot
        for part in fitted(text):
            await self._deliver(f"send a message to chat {chat}", partial(bot.send_message, chat, part))

    async def ask_approval(self, chat: str, prompt: ApprovalPrompt) -> None:
        head = f"Approval needed — workflow {prompt.workflow}, step {prompt.node_id}:\n\n"
        tail = f"\n\n(Or type `{prompt.typed}`.)"
        message = clip(prompt.message, max(MAX_TEXT - utf16_length(head + tail), 100))
        buttons = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton("✅ Approve", callback_data=button_data(prompt.approval_id, True)),
                    InlineKeyboardButton("⛔ Reject", callback_data=button_data(prompt.approval_id, False)),
                ]
            ]
        )
        bot = self._started().bot
        await self._deliver(
            f"ask chat {chat} for approval #{prompt.approval_id}",
            lambda: bot.send_message(chat, head + message + tail, reply_markup=buttons),
        )

    def _started(self) -> Application[Any, Any, Any, Any, Any, Any]:
        if self._application is None:
            raise RuntimeError("the Telegram channel is not started; `await channel.start(router)` first")
        return self._application

    def _routing(self) -> ChannelRouter:
        assert self._router is not None  # handlers are added by `start`, after the router is known
        return self._router

    async def _deliver(self, what: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """One Bot API call; Telegram's refusals are logged, not raised (one chat must not stop the others)."""
        for attempt in (1, 2):
            try:
                return await call()
            except RetryAfter as exc:
                with warnings.catch_warnings():  # an int now, a timedelta in PTB 23: both are handled
                    warnings.simplefilter("ignore", PTBDeprecationWarning)
                    wait = exc.retry_after
                seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
                if attempt == 2 or seconds > MAX_RETRY_AFTER:
                    log.warning("could not %s: Telegram's flood control asks to wait %.0f s; dropped", what, seconds)
                    return None
                await asyncio.sleep(seconds)
            except Forbidden as exc:
                log.warning(
                    "could not %s: Telegram says %r (the person blocked the bot, or it was removed from the group)",
                    what,
                    exc.message,
                )
                return None
            except BadRequest as exc:
                if "not modified" in exc.message.lower():  # a second press, or a second process, got there first
                    log.debug("did not %s: %s", what, exc.message)
                else:
                    log.warning("could not %s: Telegram says %r", what, exc.message)
                return None
            except TelegramError as exc:
                log.warning("could not %s: %s", what, self._clean(exc))
                return None
        return None

    # -- receiving -------------------------------------------------------------------

    async def _receive(self, request: Request) -> Response:
        """A webhook delivery: authenticated by its secret header, then queued; the answer does not wait for it."""
        given = request.headers.get(SECRET_HEADER, "").encode("latin-1")
        if not hmac.compare_digest(given, self._secret.encode()):
            return JSONResponse({"detail": f"missing or wrong {SECRET_HEADER}"}, status_code=403)
        application = self._application
        if application is None:
            return JSONResponse({"detail": "the Telegram receiver is not running yet; retry"}, status_code=503)
        if self._webhook_url is None:
            return JSONResponse(
                {"detail": "this server long-polls Telegram; set AGENTFLOW_PUBLIC_URL to receive webhooks"},
                status_code=503,
            )
        limit = self.settings.hook_max_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return JSONResponse({"detail": f"the update is larger than {limit} bytes"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return JSONResponse({"detail": f"the update is larger than {limit} bytes"}, status_code=413)
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("no update_id")
            update = Update.de_json(data, application.bot)
        except (ValueError, TypeError, KeyError, AttributeError):
            detail = "not a Telegram update: a JSON object with an update_id, as the Bot API sends"
            return JSONResponse({"detail": detail}, status_code=400)
        # The handlers run from the queue, concurrently: Telegram waits for no assistant turn.
        await application.update_queue.put(update)
        return JSONResponse({"ok": True})

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user, chat = update.effective_message, update.effective_user, update.effective_chat
        if message is None or message.text is None or user is None or chat is None or user.is_bot:
            return
        self._remember(user)
        inbound = Inbound(
            channel=self.name,
            chat=str(chat.id),
            user=str(user.id),
            text=message.text,
            key=str(update.update_id),
            name=shown(user),
        )
        await self._routing().handle(self, inbound)

    async def _on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A photo, a voice note, a sticker in a private chat: say what is read, to people who are served."""
        user, chat = update.effective_user, update.effective_chat
        if user is None or chat is None or user.is_bot:
            return
        self._remember(user)
        if self.allowed(str(user.id)):
            await self.send(str(chat.id), NOT_TEXT)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        user = query.from_user
        self._remember(user)
        parsed = parse_button(query.data)
        if parsed is None:
            await self._answer(query, "This button is not one of AgentFlow's approvals (an old message?).")
            return
        approval_id, approved = parsed
        # The router refuses people off the allow-list, and decides the rest exactly once.
        answer = await self._routing().decide(self, str(user.id), approval_id, approved=approved)
        if self.allowed(str(user.id)):
            await self._show_decision(query, approval_id)
        await self._answer(query, answer)  # last: the person sees it once everything is done

    async def _answer(self, query: CallbackQuery, text: str) -> None:
        """Always answered: until then the person's client shows the button as busy."""
        short = clip(text, ANSWER_LIMIT)
        await self._deliver(f"answer a button press of {query.from_user.id}", lambda: query.answer(short))

    async def _show_decision(self, query: CallbackQuery, approval_id: int) -> None:
        """The buttons go, and the message says who decided: what the store recorded, whoever pressed first."""
        store = self._routing().flow.store
        message = query.message
        if isinstance(message, Message) and message.reply_markup is None:
            return  # shown already: this was a second press
        approval = await asyncio.to_thread(store.approval, approval_id)
        if approval is None or approval.status == "pending":
            return
        who = approval.decided_by or "someone"
        if who == f"{self.name}:{query.from_user.id}" and query.from_user.username:
            who = f"@{query.from_user.username}"
        verb = {"approved": "✅ Approved", "rejected": "⛔ Rejected"}.get(approval.status, approval.status.capitalize())
        await self._deliver(
            f"remove the buttons of approval #{approval_id}", lambda: query.edit_message_reply_markup(reply_markup=None)
        )
        if isinstance(message, Message) and message.text:
            text = f"{message.text}\n\n{verb} by {who}."
            if utf16_length(text) <= MAX_TEXT:
                await self._deliver(
                    f"show the decision of approval #{approval_id}", lambda: query.edit_message_text(text)
                )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        number = update.update_id if isinstance(update, Update) else "?"
        log.error(
            "Telegram update %s failed: %s", number, self._clean(context.error or Exception()), exc_info=context.error
        )
