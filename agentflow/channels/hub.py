"""The server's chat channels: the ones the operator configured, their routes, receivers and notifier.

Telegram is served when AGENTFLOW_TELEGRAM_TOKEN is set, WhatsApp when the Twilio settings are
(docs/channels.md). Routes are added when the app is made (under `/channels/`, public: each
request is authenticated by the medium's own signature or secret); receivers start with the
server, after its executor and live feed, and stop before them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agentflow.channels.notifier import Notifier
from agentflow.channels.router import ChannelRouter

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentflow.runtime import AgentFlow
    from agentflow.settings import Settings

log = logging.getLogger("agentflow.channels")

PREFIX = "/channels"


def configured(settings: Settings) -> dict[str, Any]:
    """The channels these settings configure, made (not started)."""
    channels: dict[str, Any] = {}
    if settings.telegram_token:
        from agentflow.channels.telegram import TelegramChannel

        channels["telegram"] = TelegramChannel(settings)
    if settings.twilio_account_sid and settings.twilio_auth_token:
        from agentflow.channels.whatsapp import WhatsAppChannel

        channels["whatsapp"] = WhatsAppChannel(settings)
    return channels


class ChannelHub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.channels = configured(settings)
        self.router: ChannelRouter | None = None
        self.notifier: Notifier | None = None

    def install(self, app: FastAPI) -> None:
        app.state.access.allow_public(PREFIX)
        for channel in self.channels.values():
            channel.install(app)

    async def start(self, flow: AgentFlow, conversation: Any) -> None:
        if not self.channels:
            return
        self.router = ChannelRouter(flow, conversation)
        started: dict[str, Any] = {}
        for name, channel in self.channels.items():
            try:
                await channel.start(self.router)
            except Exception as exc:  # a bad token or no network: the rest of the server still serves
                log.error("channel %s did not start: %s; the app runs without it", name, exc)
                continue
            started[name] = channel
            log.info("channel %s is listening", name)
        self.channels = started
        self.notifier = Notifier(flow, self.router, started)
        await self.notifier.start()

    async def stop(self) -> None:
        if self.notifier is not None:
            await self.notifier.stop()
            self.notifier = None
        for name, channel in self.channels.items():
            try:
                await channel.stop()
            except Exception:  # stopping one must not keep the others running
                log.exception("channel %s did not stop cleanly", name)
