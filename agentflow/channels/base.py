"""The channel contract: what a medium (terminal, Telegram, WhatsApp, and Slack or Discord later) provides.

A channel turns its medium's messages into `Inbound` and hands them to the `ChannelRouter`
(`router.py`), which decides what they mean: an approval, a workflow's trigger, or a turn with the
assistant. Answers come back through `send` (text already split to `max_text`) and approval
requests through `ask_approval` (buttons where the medium has them, typed `approve ID` otherwise).
Every channel passes `tests/integration/test_channel_contract.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from a person on a channel."""

    channel: str  # telegram | whatsapp | terminal
    chat: str  # where answers go: a Telegram chat id, whatsapp:+33..., the terminal
    user: str  # who wrote it: a Telegram user id, the WhatsApp number
    text: str
    key: str | None = None  # the medium's id for it (update id, MessageSid): handled once
    name: str | None = None  # how the person is shown (a Telegram @username, a WhatsApp profile name)

    @property
    def person(self) -> str:
        """Who decides approvals and grants from this message: `telegram:12345`."""
        return f"{self.channel}:{self.user}"


@dataclass(frozen=True, slots=True)
class ApprovalPrompt:
    """A run waiting for a person, as a channel shows it."""

    approval_id: int
    run_id: str
    workflow: str
    node_id: str
    message: str

    @property
    def typed(self) -> str:
        """How to decide it by typing, where buttons are missing: `approve 12` / `reject 12 reason`."""
        return f"approve {self.approval_id}` or `reject {self.approval_id} [why]"


class Channel(Protocol):
    name: str
    """telegram, whatsapp, terminal: also the prefix of the people it serves (telegram:12345)."""
    max_text: int
    """The longest message the medium takes; longer replies are split (`split_text`)."""

    def allowed(self, user: str) -> bool:
        """Whether this user is served at all (the operator's allow-list; default: nobody)."""
        ...

    async def send(self, chat: str, text: str) -> None:
        """Send one message of at most `max_text` characters."""
        ...

    async def ask_approval(self, chat: str, prompt: ApprovalPrompt) -> None:
        """Show a pending approval with a way to decide it (Approve / Reject buttons, or the typed form)."""
        ...


def split_text(text: str, limit: int) -> list[str]:
    """`text` in parts of at most `limit` characters, cut at a paragraph, a line or a space when one is near."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        if cut < limit // 2:  # no natural break in the second half: cut hard
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ") if cut < limit else rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return [part for part in parts if part] or [""]


def allow_list(raw: tuple[str, ...]) -> frozenset[str]:
    """An operator's allow-list: ids or numbers, `@names` lower-cased; `*` lets anyone in (never the default)."""
    return frozenset(
        entry.strip().lower() if entry.strip().startswith("@") else entry.strip() for entry in raw if entry.strip()
    )
