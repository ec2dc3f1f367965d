"""`web_search`: DuckDuckGo's HTML results page, asked and read the way the `ddgs` package does.

`ddgs` sends its requests with its own HTTP client, which the egress guard cannot see; so only its DuckDuckGo
engine's request shape (`build_payload`) and parser (`extract_results`) are used, and the request goes through
`agentflow.tools.fetching` like every other network call.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from agentflow.tools.fetching import cut, fetch, service_host
from agentflow.tools.registry import Tool, ToolContext, ToolError

if TYPE_CHECKING:
    from ddgs.engines.duckduckgo import Duckduckgo

SEARCH_URL = "https://html.duckduckgo.com/html/"
MAX_PAGE_BYTES = 1_000_000
MAX_SNIPPET_CHARS = 500
RATE_LIMITED = (202, 403, 429)
"""DuckDuckGo answers 202 with a challenge page when it suspects automated searches (and sometimes 403 or 429)."""
SAFESEARCH = {"on": "1", "moderate": "-1", "off": "-2"}
"""DuckDuckGo's `kp` parameter (ddgs's engine leaves safe search to the site's default)."""


class WebSearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=500, description="What to search for, as you would type it")
    max_results: int = Field(5, ge=1, le=20, description="How many results to return (1-20)")
    region: str = Field(
        "us-en", pattern=r"^[a-z]{2}-[a-z]{2}$", description="Region and language, e.g. us-en, uk-en, de-de, wt-wt"
    )
    safesearch: Literal["on", "moderate", "off"] = Field("moderate", description="Filter explicit results")
    timelimit: Literal["d", "w", "m", "y"] | None = Field(
        None, description="Only results from the last day (d), week (w), month (m) or year (y)"
    )
    timeout: float = Field(20.0, gt=0, le=60, description="Seconds for the search request")


@functools.cache
def _engine_class() -> type[Duckduckgo]:
    # Imported here: ddgs (and lxml) cost ~70 ms, which listing the tools should not pay.
    from ddgs.engines.duckduckgo import Duckduckgo

    class Parser(Duckduckgo):
        """ddgs's DuckDuckGo engine without its HTTP client: it only builds payloads and reads pages."""

        def __init__(self) -> None:
            self.results = []

    return Parser


def _engine() -> Duckduckgo:
    """A fresh engine per search: its lxml parser must not be shared by two threads parsing at once."""
    return _engine_class()()


def web_search_tool(base_url: str = SEARCH_URL) -> Tool:
    """The tool searching the DuckDuckGo HTML endpoint at `base_url` (a mirror, or a local fake in tests)."""
    host = service_host(base_url, "AGENTFLOW_SEARCH_URL")

    async def web_search(args: WebSearchArgs, context: ToolContext) -> list[dict[str, str]]:
        payload = _engine().build_payload(args.query, args.region, args.safesearch, args.timelimit)
        payload["kp"] = SAFESEARCH[args.safesearch]
        fetched = await fetch(
            "web_search",
            context,
            base_url,
            method="POST",
            content=urlencode(payload).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": base_url},
            max_bytes=MAX_PAGE_BYTES,
            timeout=args.timeout,
        )
        if fetched.status in RATE_LIMITED:
            raise ToolError(
                f"web_search: DuckDuckGo answered HTTP {fetched.status} instead of results "
                "(it limits automated searches: wait a minute and search again)"
            )
        if fetched.status != 200:
            raise ToolError(f"web_search: DuckDuckGo answered HTTP {fetched.status}; try again later")
        results = await asyncio.to_thread(_parse, fetched.text())
        if not results:
            raise ToolError(f"web_search: no results for {args.query!r}; try fewer or different words")
        return results[: args.max_results]

    return Tool(
        name="web_search",
        description=(
            "Search the web (DuckDuckGo). Returns a list of {title, url, snippet}; read a result with fetch_page."
        ),
        args_model=WebSearchArgs,
        fn=web_search,
        network=True,
        hosts=(host,),
    )


def _parse(page: str) -> list[dict[str, str]]:
    from lxml.etree import ParserError

    engine = _engine()
    try:
        found = engine.post_extract_results(engine.extract_results(page))
    except ParserError as exc:
        raise ToolError(f"web_search: the results page could not be read ({exc}); search again") from None
    results: list[dict[str, str]] = []
    for result in found:
        url = _target(result.href)
        if result.title and url.startswith(("http://", "https://")):
            results.append({"title": result.title, "url": url, "snippet": cut(result.body, MAX_SNIPPET_CHARS)[0]})
    return results


def _target(href: str) -> str:
    """The result's own URL: DuckDuckGo sometimes links through its redirector (/l/?uddg=<url>)."""
    parts = urlsplit(href if "://" in href else f"https:{href}" if href.startswith("//") else href)
    if parts.hostname in ("duckduckgo.com", "html.duckduckgo.com") and parts.path == "/l/":
        return parse_qs(parts.query).get("uddg", [href])[0]
    return href
