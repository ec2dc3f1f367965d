"""`rss`: the latest items of an RSS or Atom feed, fetched through the guard and parsed by feedparser."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field

from agentflow.tools.fetching import Fetched, HttpUrl, cut, fetch
from agentflow.tools.registry import Tool, ToolContext, ToolError

MAX_FEED_BYTES = 3_000_000
FEED_TYPES = ("application/rss+xml", "application/atom+xml")


class RssArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="The feed's http:// or https:// URL (RSS or Atom)")
    max_items: int = Field(10, ge=1, le=50, description="How many of the newest items to return (1-50)")
    summary_chars: int = Field(500, ge=50, le=5000, description="Cut each item's summary at this many characters")
    timeout: float = Field(30.0, gt=0, le=120, description="Seconds for the whole request, redirects included")


async def rss(args: RssArgs, context: ToolContext) -> dict[str, Any]:
    fetched = await fetch(
        "rss",
        context,
        args.url,
        headers={"Accept": ", ".join((*FEED_TYPES, "application/xml;q=0.9", "*/*;q=0.5"))},
        max_bytes=MAX_FEED_BYTES,
        timeout=args.timeout,
        follow_redirects=True,
    )
    if fetched.status >= 400:
        raise ToolError(f"rss: {fetched.url} answered HTTP {fetched.status}; check the feed's URL or try later")
    return await asyncio.to_thread(_read, fetched, args)


def _read(fetched: Fetched, args: RssArgs) -> dict[str, Any]:
    import feedparser

    # A stream, never bytes or a string: feedparser opens a string that looks like a URL or a file name itself.
    feed = feedparser.parse(io.BytesIO(fetched.body), response_headers={"content-type": fetched.media_type})
    if not feed.entries and (not feed.get("version") or feed.get("bozo")):
        raise ToolError(f"rss: {fetched.url} is not a readable RSS or Atom feed{_hint(fetched, feed)}")
    return {
        "title": feed.feed.get("title", ""),
        "link": feed.feed.get("link", ""),
        "items": [_item(entry, args.summary_chars) for entry in feed.entries[: args.max_items]],
        **({"truncated": True} if fetched.truncated else {}),
    }


def _item(entry: Any, summary_chars: int) -> dict[str, str]:
    summary = _text(entry.get("summary", ""))
    return {
        "title": " ".join(entry.get("title", "").split()),
        "link": entry.get("link", ""),
        "published": _when(entry),
        "summary": cut(summary, summary_chars)[0],
    }


def _when(entry: Any) -> str:
    """ISO 8601 when feedparser understood the date (it normalises to UTC), else the date as the feed wrote it."""
    for key in ("published", "updated"):
        parsed: time.struct_time | None = entry.get(f"{key}_parsed")
        if parsed is not None:
            return datetime(*parsed[:6], tzinfo=UTC).isoformat()
        if entry.get(key):
            return str(entry[key])
    return ""


def _text(markup: str) -> str:
    from bs4 import BeautifulSoup

    if "<" not in markup and "&" not in markup:
        return " ".join(markup.split())
    return " ".join(BeautifulSoup(markup, "html.parser").get_text(" ").split())


def _hint(fetched: Fetched, feed: Any) -> str:
    """What the page was, and the feed it links to when it is a web page that announces one."""
    reason = feed.get("bozo_exception")
    if feed.get("version"):
        return f": it is malformed ({reason}); try again later, or tell the feed's publisher"
    if "html" not in fetched.media_type:
        return f" ({reason}); give the URL of the feed itself" if reason else "; give the URL of the feed itself"
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(fetched.body, "lxml", from_encoding=fetched.charset)
    for link in soup.find_all("link", href=True):
        if "alternate" in (link.get("rel") or []) and link.get("type") in FEED_TYPES:
            announced = urljoin(fetched.url, str(link["href"]))
            return f" but a web page; it announces a feed at {announced}: call rss with that URL"
    return " but a web page; give the URL of its feed (often /feed, /rss or /atom.xml)"


RSS = Tool(
    name="rss",
    description=(
        "Read an RSS or Atom feed: returns {title, link, items: [{title, link, published, summary}]}, "
        "newest first as the feed lists them. Only the hosts the workflow was granted are reachable."
    ),
    args_model=RssArgs,
    fn=rss,
    network=True,
)
