"""Server-sent events: the wire format of `/api/runs/{id}/stream` and `/api/events`.

Each event is `id:` (the event's id in the store, which a reconnecting client sends back as
`Last-Event-ID`), `event:` (its type) and `data:` (its JSON). A comment line keeps an idle
connection open through proxies.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

KEEPALIVE_SECONDS = 15.0
# A busy run's events go out at most this often per stream, together: fewer, larger writes.
LINGER_SECONDS = 0.1
RETRY_MS = 2000
_CACHED = 4096

# Every subscriber of an event sends the same frame: encode it once (events are never changed). Keyed by
# the event's id and its run: ids count per store, and a process may serve several (the test suite does).
_frames: OrderedDict[tuple[int, str], str] = OrderedDict()


def message(event: dict[str, Any]) -> str:
    event_id = event["id"]
    key = (event_id, str(event.get("run_id")))
    frame = _frames.get(key)
    if frame is None:
        data = json.dumps(event, default=str, separators=(",", ":"))  # one line: no newline can break the frame
        frame = _frames[key] = f"id: {event_id}\nevent: {event.get('type', 'message')}\ndata: {data}\n\n"
        if len(_frames) > _CACHED:
            _frames.popitem(last=False)
    return frame


async def sse(batches: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[str]:
    """The stream's text: a retry hint, then each batch of events as one write; an empty batch (an idle
    spell) is a keep-alive."""
    yield f"retry: {RETRY_MS}\n\n"
    async for batch in batches:
        yield "".join(message(event) for event in batch) if batch else ": keep-alive\n\n"
