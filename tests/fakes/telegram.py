"""A fake Telegram Bot API for tests, speaking its HTTP protocol, and the Telegram `Medium` of the contract suite.

``with FakeTelegram() as fake:`` serves `/bot<token>/<method>` on 127.0.0.1 from a background
thread, as python-telegram-bot calls it (form-encoded, JSON values; a JSON body works too), with
what our channel uses: getMe, getUpdates (long polling: `offset` confirms, `timeout` holds the
request until an update comes), setWebhook / deleteWebhook / getWebhookInfo, sendMessage,
answerCallbackQuery, editMessageReplyMarkup, editMessageText. It keeps Telegram's rules that
matter to us: 401 for another token, 409 for getUpdates while a webhook is set, a 4,096-unit
text limit, 64-byte button data, each button press answered once.

The test's side: `push_message` / `push_callback` / `push_raw` are what people do; `sent`,
`answered_callbacks`, `edited_markups`, `edited_texts` and `webhook` are what the bot did, and
`wait_sent` (or `until`, from async code) waits for it on a condition, never a sleep.

`telegram_medium(flow, conversation)` wires a started `TelegramChannel` to this fake, for
`tests/integration/test_channel_contract.py` and `test_telegram.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agentflow.channels.base import Channel, Inbound
from agentflow.channels.notifier import Notifier
from agentflow.channels.router import ChannelRouter
from agentflow.channels.telegram import TelegramChannel
from tests.fakes.media import ALLOWED_USER
from tests.fakes.openai_server import ServerThread

if TYPE_CHECKING:
    from agentflow.chat.engine import ConversationEngine
    from agentflow.runtime import AgentFlow

T = TypeVar("T")

BOT_ID = 7000001
TOKEN = f"{BOT_ID}:AAF-fake-token-for-the-agentflow-suite"
BOT_USERNAME = "agentflow_test_bot"
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "AgentFlow", "username": BOT_USERNAME}

INTEGERS = ("chat_id", "offset", "limit", "timeout", "message_id", "cache_time", "max_connections")
JSON_VALUES = ("reply_markup", "allowed_updates", "entities")
BOOLEANS = ("drop_pending_updates", "show_alert", "disable_notification")
APPROVAL_BUTTON = re.compile(r"^a:(\d+):([yn])$")


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after


@dataclass(frozen=True)
class SentMessage:
    message_id: int
    chat_id: int
    text: str
    reply_markup: dict[str, Any] | None
    params: dict[str, Any]

    @property
    def buttons(self) -> list[tuple[str, str]]:
        """(label, callback data) of its inline keyboard, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [(button["text"], button.get("callback_data", "")) for row in rows for button in row]

    @property
    def approvals(self) -> list[int]:
        """The approval ids its buttons decide."""
        ids = [int(found.group(1)) for _, data in self.buttons if (found := APPROVAL_BUTTON.match(data))]
        return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Answer:
    callback_query_id: str
    text: str | None
    show_alert: bool


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class _State:
    """What the server thread and the test share; every change notifies `changed`."""

    token: str
    lock: threading.RLock = field(default_factory=threading.RLock)  # re-entered by `wait`'s checks
    changed: threading.Condition = field(init=False)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(500_001))
    message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    queue: list[tuple[dict[str, Any], bool]] = field(default_factory=list)  # (update, delivered once)
    updates: dict[int, dict[str, Any]] = field(default_factory=dict)  # every update pushed, by id
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)  # every message, as Telegram has it now
    callbacks: dict[str, bool] = field(default_factory=dict)  # callback query id -> answered
    sent: list[SentMessage] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    edited_markups: list[tuple[int, int, dict[str, Any] | None]] = field(default_factory=list)
    edited_texts: list[tuple[int, int, str]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    webhook: dict[str, Any] | None = None
    blocked: set[int] = field(default_factory=set)
    gone: set[int] = field(default_factory=set)
    failures: list[tuple[str, ApiError]] = field(default_factory=list)
    closing: bool = False  # held getUpdates requests return at once: the server is stopping
    delivered: int = 0  # the highest update id getUpdates has returned
    pollers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def notify(self) -> None:
        """Under the lock: wake waiting tests and held getUpdates requests."""
        self.changed.notify_all()
        for loop, event in self.pollers:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)


async def _params(request: Request) -> dict[str, Any]:
    body = await request.body()
    kind = request.headers.get("content-type", "")
    if "json" in kind:
        raw: dict[str, Any] = json.loads(body or b"{}")
        return raw
    if "multipart" in kind:
        form = await request.form()
        values = {key: str(value) for key, value in form.items()}
    else:
        values = {key: items[-1] for key, items in parse_qs(body.decode(), keep_blank_values=True).items()}
    values.update(request.query_params)
    params: dict[str, Any] = {}
    for key, value in values.items():
        if key in INTEGERS:
            params[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
        elif key in JSON_VALUES:
            params[key] = json.loads(value)
        elif key in BOOLEANS:
            params[key] = value.lower() in ("true", "1")
        else:
            params[key] = value
    return params


def build_app(state: _State) -> FastAPI:
    app = FastAPI()

    @app.api_route("/bot{token}/{method}", methods=["GET", "POST"])
    async def call(token: str, method: str, request: Request) -> JSONResponse:
        if token != state.token:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401)
        params = await _params(request)
        handler = METHODS.get(method)
        try:
            with state.lock:
                state.calls.append((method, params))
                for index, (name, failure) in enumerate(state.failures):
                    if name == method:
                        del state.failures[index]
                        raise failure
                state.notify()
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            result = await handler(state, params) if method == "getUpdates" else _locked(state, handler, params)
        except ApiError as error:
            body: dict[str, Any] = {"ok": False, "error_code": error.code, "description": error.description}
            if error.retry_after is not None:
                body["parameters"] = {"retry_after": error.retry_after}
            return JSONResponse(body, status_code=error.code)
        return JSONResponse({"ok": True, "result": result})

    return app


def _locked(state: _State, handler: Callable[..., Any], params: dict[str, Any]) -> Any:
    with state.lock:
        result = handler(state, params)
        state.notify()
        return result


# -- the Bot API methods -------------------------------------------------------------


def _get_me(state: _State, params: dict[str, Any]) -> dict[str, Any]:
    return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}


async def _get_updates(state: _State, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Long polling: what is not confirmed yet, or nothing once `timeout` seconds passed with no update."""
    loop = asyncio.get_running_loop()
    offset, limit = params.get("offset"), int(params.get("limit") or 100)
    deadline = loop.time() + float(params.get("timeout") or 0)
    while True:
        event = asyncio.Event()
        with state.lock:
            if state.webhook is not None:
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            if isinstance(offset, int) and offset > 0:  # confirms everything before it that was delivered
                state.queue = [
                    (update, seen) for update, seen in state.queue if update["update_id"] >= offset or not seen
                ]
            ready = [update for update, _ in state.queue][:limit]
            if ready or state.closing or loop.time() >= deadline:
                wanted = {update["update_id"] for update in ready}
                state.queue = [(update, seen or update["update_id"] in wanted) for update, seen in state.queue]
                state.delivered = max([state.delivered, *wanted])
                state.notify()
                return ready
            state.pollers.append((loop, event))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), deadline - loop.time())
        finally:
            with state.lock:
                state.pollers.remove((loop, event))


def _set_webhook(state: _State, params: dict[str, Any]) -> bool:
    url = str(params.get("url", ""))
    if not url:
        state.webhook = None
        return True
    if not url.startswith("https://"):
        raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
    secret = params.get("secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
        raise ApiError(400, "Bad Request: secret token contains unallowed characters")
    state.webhook = {key: params.get(key) for key in ("url", "secret_token", "allowed_updates", "max_connections")}
    return True


def _delete_webhook(state: _State, params: dict[str, Any]) -> bool:
    state.webhook = None
    if params.get("drop_pending_updates"):
        state.queue.clear()
    return True


def _get_webhook_info(state: _State, params: dict[str, Any]) -> dict[str, Any]:
    hook = state.webhook or {}
    return {"url": hook.get("url") or "", "has_custom_certificate": False, "pending_update_count": len(state.queue)}


def _chat_of(state: _State, params: dict[str, Any]) -> int:
    chat_id = params.get("chat_id")
    if not isinstance(chat_id, int):
        raise ApiError(400, "Bad Request: chat not found")
    if chat_id in state.gone:
        raise ApiError(400, "Bad Request: chat not found")
    if chat_id in state.blocked:
        raise ApiError(403, "Forbidden: bot was blocked by the user")
    return chat_id


def _checked_text(params: dict[str, Any]) -> str:
    text = str(params.get("text", ""))
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if _utf16(text) > 4096:
        raise ApiError(400, "Bad Request: message is too long")
    return text


def _checked_markup(params: dict[str, Any]) -> dict[str, Any] | None:
    markup = params.get("reply_markup")
    for row in (markup or {}).get("inline_keyboard", []):
        for button in row:
            if len(str(button.get("callback_data", "")).encode()) > 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup or None


def _send_message(state: _State, params: dict[str, Any]) -> dict[str, Any]:
    chat_id = _chat_of(state, params)
    text = _checked_text(params)
    markup = _checked_markup(params)
    message_id = next(state.message_ids)
    message: dict[str, Any] = {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": _chat(chat_id),
        "from": BOT_USER,
        "text": text,
    }
    if markup is not None:
        message["reply_markup"] = markup
    state.messages[message_id] = message
    state.sent.append(SentMessage(message_id, chat_id, text, markup, params))
    return message


def _answer_callback_query(state: _State, params: dict[str, Any]) -> bool:
    query_id = str(params.get("callback_query_id", ""))
    if state.callbacks.get(query_id, True):  # unknown, or answered already
        raise ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
    text = params.get("text")
    if text is not None and _utf16(str(text)) > 200:
        raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
    state.callbacks[query_id] = True
    state.answers.append(Answer(query_id, None if text is None else str(text), bool(params.get("show_alert"))))
    return True


def _message_to_edit(state: _State, params: dict[str, Any]) -> dict[str, Any]:
    chat_id = _chat_of(state, params)
    message = state.messages.get(int(params.get("message_id") or 0))
    if message is None or message["chat"]["id"] != chat_id or message["from"]["id"] != BOT_ID:
        raise ApiError(400, "Bad Request: message to edit not found")
    return message


NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)


def _edit_message_reply_markup(state: _State, params: dict[str, Any]) -> dict[str, Any]:
    message = _message_to_edit(state, params)
    markup = _checked_markup(params)
    if markup == message.get("reply_markup"):
        raise ApiError(400, NOT_MODIFIED)
    message.pop("reply_markup", None)
    if markup is not None:
        message["reply_markup"] = markup
    message["edit_date"] = int(time.time())
    state.edited_markups.append((message["chat"]["id"], message["message_id"], markup))
    return message


def _edit_message_text(state: _State, params: dict[str, Any]) -> dict[str, Any]:
    message = _message_to_edit(state, params)
    text = _checked_text(params)
    markup = _checked_markup(params)  # none given: the message keeps no keyboard
    if text == message.get("text") and markup == message.get("reply_markup"):
        raise ApiError(400, NOT_MODIFIED)
    message["text"] = text
    message.pop("reply_markup", None)
    if markup is not None:
        message["reply_markup"] = markup
    message["edit_date"] = int(time.time())
    state.edited_texts.append((message["chat"]["id"], message["message_id"], text))
    return message


METHODS: dict[str, Callable[..., Any]] = {
    "getMe": _get_me,
    "getUpdates": _get_updates,
    "setWebhook": _set_webhook,
    "deleteWebhook": _delete_webhook,
    "getWebhookInfo": _get_webhook_info,
    "sendMessage": _send_message,
    "answerCallbackQuery": _answer_callback_query,
    "editMessageReplyMarkup": _edit_message_reply_markup,
    "editMessageText": _edit_message_text,
}


# -- Telegram objects ------------------------------------------------------------------


def _user(user_id: int, username: str | None, first_name: str | None) -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name or f"Person {user_id}"}
    if username:
        user["username"] = username
    return user


def _chat(chat_id: int, user: dict[str, Any] | None = None) -> dict[str, Any]:
    if chat_id < 0:
        return {"id": chat_id, "type": "group", "title": f"Group {-chat_id}"}
    chat = {"id": chat_id, "type": "private", "first_name": (user or {}).get("first_name", f"Person {chat_id}")}
    if user and "username" in user:
        chat["username"] = user["username"]
    return chat


class FakeTelegram:
    """The Bot API for one bot token; start it with `with`, point `TelegramChannel` at `base_url`."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self._state = _State(token)
        self._server = ServerThread(build_app(self._state))

    def __enter__(self) -> FakeTelegram:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._state.lock:
            self._state.closing = True
            self._state.notify()
        self._server.stop()

    @property
    def base_url(self) -> str:
        """What `AGENTFLOW_TELEGRAM_API` is set to: the token and the method follow it."""
        return f"{self._server.url}/bot"

    # -- what people do ----------------------------------------------------------------

    def message(
        self,
        user_id: int,
        text: str | None = None,
        *,
        chat_id: int | None = None,
        username: str | None = None,
        first_name: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A Message a person writes (text, or other `fields` such as `photo`), in their private chat by default."""
        user = _user(user_id, username, first_name)
        with self._state.lock:
            message_id = next(self._state.message_ids)
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": _chat(chat_id if chat_id is not None else user_id, user),
            "from": user,
            **fields,
        }
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                command = text.split(maxsplit=1)[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": _utf16(command)}]
        return message

    def push_message(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        username: str | None = None,
        first_name: str | None = None,
    ) -> int:
        """A person writes `text`; returns the update id."""
        message = self.message(user_id, text, chat_id=chat_id, username=username, first_name=first_name)
        return self.push_raw({"message": message})

    def push_callback(self, user_id: int, data: str, message_id: int, *, username: str | None = None) -> str:
        """A person presses a button of the bot's message `message_id`; returns the callback query id."""
        with self._state.lock:
            message = self._state.messages.get(message_id)
            if message is None:
                raise ValueError(f"the bot sent no message {message_id}; press a button of one in `sent`")
            query_id = f"cbq-{next(self._state.ids)}"
            self._state.callbacks[query_id] = False
            query = {
                "id": query_id,
                "from": _user(user_id, username, None),
                "message": json.loads(json.dumps(message)),  # as it is now, not as it changes later
                "chat_instance": f"ci-{message['chat']['id']}",
                "data": data,
            }
        self.push_raw({"callback_query": query})
        return query_id

    def push_raw(self, update: dict[str, Any]) -> int:
        """Queue an update as is; without an `update_id` it gets the next one. The same id again is a redelivery
        (as after a receiver died before confirming): it is delivered once more, whatever the offset."""
        with self._state.lock:
            update = dict(update)
            update.setdefault("update_id", next(self._state.ids))
            self._state.updates[update["update_id"]] = update
            self._state.queue.append((update, False))
            if "message" in update:
                self._state.messages[update["message"]["message_id"]] = update["message"]
            self._state.notify()
            return int(update["update_id"])

    def update(self, update_id: int) -> dict[str, Any]:
        """An update pushed before, as pushed."""
        with self._state.lock:
            return dict(self._state.updates[update_id])

    # -- Telegram's own behaviour -------------------------------------------------------

    def block(self, chat_id: int) -> None:
        """The person blocks the bot: sending to them is 403 Forbidden from now on."""
        with self._state.lock:
            self._state.blocked.add(chat_id)

    def chat_gone(self, chat_id: int) -> None:
        """The chat no longer exists for the bot (a deleted group, one it was never in): 400 chat not found."""
        with self._state.lock:
            self._state.gone.add(chat_id)

    def fail_next(self, method: str, code: int, description: str, *, retry_after: int | None = None) -> None:
        """The next call of `method` fails like Telegram does (429 with `retry_after` is flood control)."""
        with self._state.lock:
            self._state.failures.append((method, ApiError(code, description, retry_after)))

    # -- what the bot did ------------------------------------------------------------------

    @property
    def sent(self) -> list[SentMessage]:
        with self._state.lock:
            return list(self._state.sent)

    def sent_to(self, chat_id: int | str) -> list[SentMessage]:
        return [message for message in self.sent if message.chat_id == int(chat_id)]

    @property
    def answered_callbacks(self) -> list[Answer]:
        with self._state.lock:
            return list(self._state.answers)

    @property
    def edited_markups(self) -> list[tuple[int, int, dict[str, Any] | None]]:
        """(chat id, message id, the new markup: None when the buttons were removed)."""
        with self._state.lock:
            return list(self._state.edited_markups)

    @property
    def edited_texts(self) -> list[tuple[int, int, str]]:
        with self._state.lock:
            return list(self._state.edited_texts)

    @property
    def webhook(self) -> dict[str, Any] | None:
        """What setWebhook set (url, secret_token, allowed_updates), None when deleted or never set."""
        with self._state.lock:
            return None if self._state.webhook is None else dict(self._state.webhook)

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        """The parameters of every call of `method` (of every method when None) so far, in order."""
        with self._state.lock:
            return [params for name, params in self._state.calls if method is None or name == method]

    def current(self, message_id: int) -> dict[str, Any]:
        """A message as Telegram shows it now (after edits)."""
        with self._state.lock:
            return json.loads(json.dumps(self._state.messages[message_id]))

    # -- waiting ------------------------------------------------------------------------------

    def wait(self, found: Callable[[FakeTelegram], T | None], *, timeout: float = 20.0, what: str = "it") -> T:
        """Block until `found(self)` returns something truthy (re-checked on every change); fails on timeout."""
        result: list[T] = []

        def check() -> bool:
            value = found(self)
            if not value:
                return False
            result.append(value)
            return True

        with self._state.changed:
            if not self._state.changed.wait_for(check, timeout=timeout):
                raise AssertionError(f"the fake Telegram saw no {what} within {timeout} s; sent: {self._state.sent}")
        return result[0]

    async def until(self, found: Callable[[FakeTelegram], T | None], *, timeout: float = 20.0, what: str = "it") -> T:
        """`wait` from async code: the event loop keeps running the bot meanwhile."""
        return await asyncio.to_thread(self.wait, found, timeout=timeout, what=what)

    def wait_sent(self, count: int, *, timeout: float = 20.0, chat_id: int | str | None = None) -> list[SentMessage]:
        """The first `count` messages sent (to `chat_id`, if given), once there are that many."""

        def enough(fake: FakeTelegram) -> list[SentMessage] | None:
            found = fake.sent if chat_id is None else fake.sent_to(chat_id)
            return found[:count] if len(found) >= count else None

        return self.wait(enough, timeout=timeout, what=f"{count} sent messages")

    def wait_answered(self, callback_query_id: str, *, timeout: float = 20.0) -> Answer:
        def answered(fake: FakeTelegram) -> Answer | None:
            return next((a for a in fake.answered_callbacks if a.callback_query_id == callback_query_id), None)

        return self.wait(answered, timeout=timeout, what=f"answer to {callback_query_id}")


# -- the Medium of the channel contract suite ------------------------------------------


class RecordingRouter(ChannelRouter):
    """The real router, also noting each message it is handed and what it did: tests wait on that, not on time."""

    def __init__(self, flow: AgentFlow, conversation: ConversationEngine | None = None) -> None:
        super().__init__(flow, conversation)
        self.seen: list[Inbound] = []
        self.outcomes: list[tuple[Inbound, str]] = []
        self._changed = asyncio.Condition()

    async def handle(self, channel: Channel, message: Inbound) -> str:
        async with self._changed:
            self.seen.append(message)
            self._changed.notify_all()
        outcome = "failed"
        try:
            outcome = await super().handle(channel, message)
            return outcome
        finally:
            async with self._changed:
                self.outcomes.append((message, outcome))
                self._changed.notify_all()

    async def until(self, found: Callable[[], bool], *, timeout: float = 20.0) -> None:
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(found), timeout)
        except TimeoutError:
            raise AssertionError(f"not so within {timeout} s; the router was handed {self.seen}") from None

    async def outcome(self, key: str, *, nth: int = 1, timeout: float = 20.0) -> str:
        """What was done with the `nth` delivery of the message with this key (update id)."""

        def done() -> list[str]:
            return [outcome for message, outcome in self.outcomes if message.key == key]

        await self.until(lambda: len(done()) >= nth, timeout=timeout)
        return done()[nth - 1]


class TelegramMedium:
    """A person in their private chat with the bot (chat id = their user id), through the fake Bot API."""

    def __init__(self, fake: FakeTelegram, channel: TelegramChannel, router: RecordingRouter) -> None:
        self.fake = fake
        self.channel = channel
        self.router = router
        self.last_update: int | None = None
        """The update id of the last thing `say` wrote: `router.outcome(str(medium.last_update))`."""

    async def say(self, text: str, *, user: str = ALLOWED_USER) -> None:
        update_id = self.fake.push_message(int(user), text)
        self.last_update = update_id
        await self._taken(str(update_id), 1)

    async def say_again(self) -> None:
        if self.last_update is None:
            raise AssertionError("say something first: say_again redelivers the last message")
        key = str(self.last_update)
        before = sum(1 for message in self.router.seen if message.key == key)
        self.fake.push_raw(self.fake.update(self.last_update))
        await self._taken(key, before + 1)

    async def _taken(self, key: str, count: int) -> None:
        await self.router.until(lambda: sum(1 for message in self.router.seen if message.key == key) >= count)

    async def received(self, count: int, *, timeout: float = 20.0) -> list[str]:
        found = await asyncio.to_thread(self.fake.wait_sent, count, timeout=timeout, chat_id=ALLOWED_USER)
        return [message.text for message in found]

    def received_now(self) -> list[str]:
        return [message.text for message in self.fake.sent_to(ALLOWED_USER)]

    async def offered(self, *, timeout: float = 20.0) -> list[int]:
        def offers(fake: FakeTelegram) -> list[int] | None:
            ids = [approval for message in fake.sent_to(ALLOWED_USER) for approval in message.approvals]
            return ids or None

        return await self.fake.until(offers, timeout=timeout, what="approval buttons")

    async def decide(self, approval_id: int, *, approve: bool, user: str = ALLOWED_USER) -> str:
        """Press Approve or Reject on the message offering `approval_id`; the notification Telegram showed back."""
        answer = await self.press(approval_id, approve=approve, user=user)
        return answer.text or ""

    async def press(self, approval_id: int, *, approve: bool, user: str = ALLOWED_USER) -> Answer:
        data = f"a:{approval_id}:{'y' if approve else 'n'}"
        offering = next((m for m in self.fake.sent if any(d == data for _, d in m.buttons)), None)
        if offering is None:
            raise AssertionError(f"no message offers approval #{approval_id}; sent: {self.fake.sent}")
        query_id = self.fake.push_callback(int(user), data, offering.message_id)
        return await asyncio.to_thread(self.fake.wait_answered, query_id)


@contextlib.asynccontextmanager
async def telegram_medium(
    flow: AgentFlow,
    conversation: ConversationEngine | None = None,
    *,
    fake: FakeTelegram | None = None,
    allow: tuple[str, ...] = (ALLOWED_USER,),
) -> AsyncIterator[TelegramMedium]:
    """A started TelegramChannel (long polling the fake) with a router and notifier over `flow`.

    `allow` is AGENTFLOW_TELEGRAM_ALLOW (default: the contract's ALLOWED_USER). Without `fake`, one is
    served for the block. Runs are answered in their chat once the flow's executor and feed are started
    (`await flow.executor.start(); await flow.feed.start()`), which is the caller's to do.
    """
    with contextlib.ExitStack() as stack:
        if fake is None:
            fake = stack.enter_context(FakeTelegram())
        settings = replace(
            flow.settings, telegram_token=fake.token, telegram_api=fake.base_url, telegram_allow=allow, public_url=None
        )
        channel = TelegramChannel(settings)
        router = RecordingRouter(flow, conversation)
        notifier = Notifier(flow, router, {channel.name: channel})
        await channel.start(router)
        try:
            await notifier.start()
            yield TelegramMedium(fake, channel, router)
        finally:
            await notifier.stop()
            await channel.stop()
