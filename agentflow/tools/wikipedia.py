"""`wikipedia`: an article's plain-text extract, or a list of matching articles, from the MediaWiki Action API.

The base URL is a template: `{lang}` picks the language edition (`https://{lang}.wikipedia.org`), so the grant
a workflow needs is every edition, `*.wikipedia.org`. A mirror or a test fake may put `{lang}` in the path instead.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from agentflow.tools.fetching import Fetched, cut, fetch, service_host
from agentflow.tools.registry import Tool, ToolContext, ToolError

WIKIPEDIA_URL = "https://{lang}.wikipedia.org"
SETTING = "AGENTFLOW_WIKIPEDIA_URL"
MAX_RESPONSE_BYTES = 2_000_000
_TAG = re.compile(r"<[^>]+>")


class WikipediaArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=300, description="An article title or search words")
    mode: Literal["page", "search"] = Field(
        "page", description="page: the best-matching article's text; search: a list of matching articles"
    )
    lang: str = Field(
        "en",
        pattern=r"^[a-z]{2,12}(-[a-z]{2,12}){0,2}$",
        description="The language edition's code: en, de, fr, simple, zh-yue...",
    )
    sentences: int | None = Field(
        None, ge=1, le=10, description="page mode: only the article's first N sentences (default: the whole text)"
    )
    max_chars: int = Field(4000, ge=100, le=20_000, description="page mode: cut the text at this many characters")
    max_results: int = Field(5, ge=1, le=20, description="search mode: how many articles to list")
    timeout: float = Field(20.0, gt=0, le=60, description="Seconds for the request")


def wikipedia_tool(base_url: str = WIKIPEDIA_URL) -> Tool:
    """The tool reading the MediaWiki API under `base_url` (`{lang}` in it is replaced by the `lang` argument)."""
    hosts = (_host_pattern(base_url),)

    async def wikipedia(args: WikipediaArgs, context: ToolContext) -> Any:
        site = base_url.replace("{lang}", args.lang).rstrip("/")
        if args.mode == "search":
            params: dict[str, Any] = {"list": "search", "srsearch": args.query, "srlimit": args.max_results}
            params |= {"srprop": "snippet"}
        else:
            params = {"generator": "search", "gsrsearch": args.query, "gsrlimit": 1, "redirects": 1}
            params |= {"prop": "extracts|info", "inprop": "url", "explaintext": 1, "exsectionformat": "plain"}
            if args.sentences is not None:
                params["exsentences"] = args.sentences
        params |= {"action": "query", "format": "json", "formatversion": 2}
        fetched = await fetch(
            "wikipedia", context, f"{site}/w/api.php", params=params, max_bytes=MAX_RESPONSE_BYTES, timeout=args.timeout
        )
        answer = _answer(fetched)
        if args.mode == "search":
            return _articles(answer, args, site)
        return _article(answer, args, site)

    return Tool(
        name="wikipedia",
        description=(
            "Read Wikipedia. mode=page (default): the best-matching article as {title, url, extract}; "
            "mode=search: a list of {title, url, snippet}. `lang` picks the language edition."
        ),
        args_model=WikipediaArgs,
        fn=wikipedia,
        network=True,
        hosts=hosts,
    )


def _answer(fetched: Fetched) -> dict[str, Any]:
    if fetched.status != 200:
        raise ToolError(f"wikipedia: {fetched.endpoint} answered HTTP {fetched.status}; try again later")
    if fetched.truncated:
        raise ToolError(f"wikipedia: the answer is larger than {MAX_RESPONSE_BYTES} bytes; ask for fewer sentences")
    try:
        answer = json.loads(fetched.body)
    except ValueError:
        raise ToolError(
            f"wikipedia: {fetched.endpoint} did not answer with JSON; is the base URL a MediaWiki site?"
        ) from None
    if not isinstance(answer, dict):
        raise ToolError("wikipedia: the API answered with something other than a JSON object")
    if isinstance(error := answer.get("error"), dict):
        raise ToolError(f"wikipedia: the API refused the query: {error.get('info') or error.get('code')}")
    return answer


def _articles(answer: dict[str, Any], args: WikipediaArgs, site: str) -> list[dict[str, str]]:
    hits = _listed(answer, "search")
    if not hits:
        raise ToolError(f"wikipedia: no {args.lang} article matches {args.query!r}; try other words or another lang")
    return [
        {
            "title": hit["title"],
            "url": _article_url(site, hit["title"]),
            "snippet": html.unescape(_TAG.sub("", hit.get("snippet", ""))),
        }
        for hit in hits[: args.max_results]
        if isinstance(hit.get("title"), str)
    ]


def _article(answer: dict[str, Any], args: WikipediaArgs, site: str) -> dict[str, Any]:
    pages = [page for page in _listed(answer, "pages") if not page.get("missing")]
    if not pages:
        raise ToolError(
            f"wikipedia: no {args.lang} article matches {args.query!r}; "
            "try mode=search to see the titles that come close"
        )
    page = min(pages, key=lambda page: page.get("index", 0))  # the search's best match
    extract, truncated = cut(page.get("extract") or "", args.max_chars)
    if not extract:
        raise ToolError(f"wikipedia: the article {page.get('title')!r} has no text to extract")
    return {
        "title": page.get("title", ""),
        "url": page.get("fullurl") or _article_url(site, page.get("title", "")),
        "extract": extract,
        **({"truncated": True} if truncated else {}),
    }


def _listed(answer: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The objects under `query.<key>`; MediaWiki leaves `query` out altogether when nothing matched."""
    query = answer.get("query")
    found = query.get(key) if isinstance(query, dict) else None
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def _article_url(site: str, title: str) -> str:
    path = quote(title.replace(" ", "_"), safe="/:(),'!")  # as Wikipedia writes its own links
    return f"{site}/wiki/{path}"


def _host_pattern(base_url: str) -> str:
    """`https://{lang}.wikipedia.org` -> `*.wikipedia.org`: the language picks the host, so every edition is granted."""
    marker = "xlangx"  # a valid host label standing in for {lang} while the URL is parsed
    host = service_host(base_url.replace("{lang}", marker), SETTING)
    if marker not in host:
        return host
    if not host.startswith(f"{marker}.") or marker in host.removeprefix(f"{marker}."):
        raise ValueError(
            f"{SETTING}={base_url!r}: {{lang}} may only be the first label of the host "
            "(https://{lang}.wikipedia.org) or part of the path"
        )
    return "*." + host.removeprefix(f"{marker}.")
