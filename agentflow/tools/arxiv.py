"""`arxiv`: papers from the arXiv API (an Atom feed), read with feedparser from the bytes the guard fetched."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentflow.tools.fetching import Fetched, cut, fetch, service_host
from agentflow.tools.registry import Tool, ToolContext, ToolError

ARXIV_URL = "https://export.arxiv.org/api/query"
MAX_FEED_BYTES = 2_000_000
SORT = {"relevance": "relevance", "updated": "lastUpdatedDate", "submitted": "submittedDate"}
_FIELD = re.compile(r"\b(ti|au|abs|co|jr|cat|rn|id|all):")
_ABS = re.compile(r"^https?://(export\.)?arxiv\.org/abs/")


class ArxivArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=1,
        max_length=500,
        description=(
            "Search words (all of them must match), or arXiv query syntax such as "
            "`ti:transformer AND cat:cs.CL` or `au:hinton`"
        ),
    )
    max_results: int = Field(5, ge=1, le=20, description="How many papers to return (1-20)")
    sort: Literal["relevance", "updated", "submitted"] = Field(
        "relevance", description="relevance, or the newest first by last update or by first submission"
    )
    summary_chars: int = Field(1500, ge=100, le=5000, description="Cut each abstract at this many characters")
    timeout: float = Field(30.0, gt=0, le=120, description="Seconds for the request (arXiv can be slow)")


def arxiv_tool(base_url: str = ARXIV_URL) -> Tool:
    """The tool querying the arXiv API at `base_url` (a mirror, or a local fake in tests)."""
    host = service_host(base_url, "AGENTFLOW_ARXIV_URL")

    async def arxiv(args: ArxivArgs, context: ToolContext) -> list[dict[str, Any]]:
        params = {
            "search_query": search_query(args.query),
            "start": 0,
            "max_results": args.max_results,
            "sortBy": SORT[args.sort],
            "sortOrder": "descending",
        }
        fetched = await fetch("arxiv", context, base_url, params=params, max_bytes=MAX_FEED_BYTES, timeout=args.timeout)
        feed = await asyncio.to_thread(_parse, fetched)
        papers = [_paper(entry, args.summary_chars) for entry in feed.entries[: args.max_results]]
        if not papers:
            raise ToolError(f"arxiv: no papers match {args.query!r}; try fewer words or a broader field (all:)")
        return papers

    return Tool(
        name="arxiv",
        description=(
            "Search arXiv papers. Returns a list of {id, title, authors, published, summary, pdf_url}; "
            "read a paper's PDF with read_pdf."
        ),
        args_model=ArxivArgs,
        fn=arxiv,
        network=True,
        hosts=(host,),
    )


def search_query(query: str) -> str:
    """Plain words become `all:a AND all:b`; a query already in arXiv syntax (`ti:...`) is sent as written."""
    if _FIELD.search(query):
        return query
    return " AND ".join(f"all:{word}" for word in query.split())


def _parse(fetched: Fetched) -> Any:
    import feedparser

    # A stream, never bytes or a string: feedparser opens a string that looks like a URL or a file name itself.
    feed = feedparser.parse(io.BytesIO(fetched.body), response_headers={"content-type": fetched.media_type})
    errors = [entry for entry in feed.entries if entry.get("title") == "Error"]
    if errors:  # arXiv reports a bad query as a feed with one entry titled "Error"
        raise ToolError(f"arxiv: the API refused the query: {errors[0].get('summary', 'no reason given')}")
    if fetched.status != 200:
        raise ToolError(f"arxiv: {fetched.endpoint} answered HTTP {fetched.status}; try again in a minute")
    if not feed.get("version") and not feed.entries:
        reason = feed.get("bozo_exception") or f"content type {fetched.media_type or 'unknown'}"
        raise ToolError(f"arxiv: the answer is not an Atom feed ({reason}); is AGENTFLOW_ARXIV_URL the arXiv API?")
    return feed


def _paper(entry: Any, summary_chars: int) -> dict[str, Any]:
    pdf = next((link.get("href") for link in entry.get("links", []) if link.get("type") == "application/pdf"), None)
    abstract = " ".join(entry.get("summary", "").split())
    return {
        "id": _ABS.sub("", entry.get("id", "")),
        "title": " ".join(entry.get("title", "").split()),
        "authors": [author.get("name", "") for author in entry.get("authors", [])],
        "published": entry.get("published", ""),
        "updated": entry.get("updated", ""),
        "summary": cut(abstract, summary_chars)[0],
        "categories": [tag.get("term", "") for tag in entry.get("tags", [])],
        "pdf_url": pdf,
        "url": entry.get("link", ""),
    }
