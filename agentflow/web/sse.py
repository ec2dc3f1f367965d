"""Server-sent events: the wire format of `/api/runs/{id}/stream` and `/api/events`.

Each event is `id:` (the event's id in the store, which a reconnecting client sends back as
`Last-Event-ID`), `event:` (its type) and `data:` (its JSON). A comment line keeps an idle
connection open through proxies.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

KEEPALIVE_SECONDS = 15.0
RETRY_MS = 2000


def message(event: dict[str, Any]) -> str:
    data = json.dumps(event, default=str, separators=(",", ":"))  # one line: no newline can break the frame
    return f"id: {event['id']}\nevent: {event.get('type', 'message')}\ndata: {data}\n\n"


async def sse(events: AsyncIterator[dict[str, Any] | None]) -> AsyncIterator[str]:
    """The stream's text: a retry hint, then one message per event; None (an idle spell) is a keep-alive."""
    yield f"retry: {RETRY_MS}\n\n"
    async for event in events:
        yield ": keep-alive\n\n" if event is None else message(event)
