"""What the channel contract suite drives: a person on a medium, through the medium's own protocol.

Each channel's test double (`tests/fakes/telegram.py`, `tests/fakes/twilio.py`, the terminal's in
the suite) provides a `Medium`: the channel under test wired to a real `ChannelRouter`, and the
person's side of the conversation — what they write, which buttons they press, what they read.
`tests/integration/test_channel_contract.py` runs the same tests on every medium.
"""

from __future__ import annotations

from typing import Protocol

from agentflow.channels.base import Channel

ALLOWED_USER = "1001"
"""The person on the operator's allow-list, in every medium (a Telegram user id; for WhatsApp, +1001...)."""
STRANGER = "2002"
"""Someone not on it."""


class Medium(Protocol):
    channel: Channel

    async def say(self, text: str, *, user: str = ALLOWED_USER) -> None:
        """The person writes `text` in their chat; returns once the channel has taken it (not answered)."""
        ...

    async def say_again(self) -> None:
        """The medium delivers the last message again, with the same id (a retry after a timeout)."""
        ...

    async def received(self, count: int, *, timeout: float = 20.0) -> list[str]:
        """The first `count` texts the person's chat received, once there are that many (fails on timeout)."""
        ...

    def received_now(self) -> list[str]:
        """What the chat has received so far."""
        ...

    async def offered(self, *, timeout: float = 20.0) -> list[int]:
        """The approval ids offered to the person so far (buttons, or `approve N` in the text); waits for one."""
        ...

    async def decide(self, approval_id: int, *, approve: bool, user: str = ALLOWED_USER) -> str:
        """The person decides (presses the button, or types the decision); what the medium showed them back."""
        ...
