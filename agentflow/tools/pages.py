"""`fetch_page`: a web page as readable markdown, without the scripts, styles, menus and footers around it."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field

from agentflow.tools.fetching import Fetched, HttpUrl, cut, fetch
from agentflow.tools.registry import Tool, ToolContext, ToolError

MAX_PAGE_BYTES = 2_000_000
"""What is read of a page: converting HTML costs time per element, so the input is bounded too."""
MAX_CHARS = 100_000
"""The hard cap on what one call returns, whatever `max_chars` asks."""
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("application/json", "application/xml", "application/rss+xml", "application/atom+xml", "text/")
DROPPED = ("script", "style", "noscript", "template", "nav", "footer", "iframe", "svg", "canvas")
_BLANK_LINES = re.compile(r"\n\s*\n(\s*\n)+")


class FetchPageArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="The page's http:// or https:// URL")
    max_chars: int = Field(20_000, ge=200, le=MAX_CHARS, description="Cut the text at this many characters")
    timeout: float = Field(30.0, gt=0, le=120, description="Seconds for the whole request, redirects included")


async def fetch_page(args: FetchPageArgs, context: ToolContext) -> dict[str, Any]:
    fetched = await fetch(
        "fetch_page",
        context,
        args.url,
        headers={"Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5"},
        max_bytes=MAX_PAGE_BYTES,
        timeout=args.timeout,
        follow_redirects=True,
    )
    if fetched.status >= 400:
        raise ToolError(f"fetch_page: {fetched.url} answered HTTP {fetched.status}; check the URL or try later")
    kind = _kind(fetched)
    if kind == "html":
        title, text = await asyncio.to_thread(html_to_markdown, fetched.body, fetched.charset, fetched.url)
    else:
        title, text = "", fetched.text().strip()
    content, truncated = cut(text, args.max_chars)
    return {
        "url": fetched.url,
        "title": title,
        "content_type": fetched.media_type,
        "content": content,
        **({"truncated": True} if truncated or fetched.truncated else {}),
    }


def _kind(fetched: Fetched) -> str:
    """html or text; a PDF or binary content is an error that says which tool reads it."""
    media_type = fetched.media_type
    if media_type == "application/pdf" or (not media_type and fetched.body.startswith(b"%PDF-")):
        raise ToolError(f"fetch_page: {fetched.url} is a PDF; read it with the read_pdf tool")
    if media_type in HTML_TYPES:
        return "html"
    if media_type.startswith(TEXT_TYPES) or media_type.endswith(("+json", "+xml")):
        return "text"
    if not media_type and b"\x00" not in fetched.body[:1024]:
        return "html" if fetched.body.lstrip()[:1] == b"<" else "text"
    raise ToolError(
        f"fetch_page: {fetched.url} is {media_type or 'binary content'}, not a web page or text; "
        "fetch_page reads HTML and text (a PDF: read_pdf)"
    )


def html_to_markdown(body: bytes, charset: str | None, url: str) -> tuple[str, str]:
    """The page's title and its main content as markdown: links made absolute, images and chrome dropped."""
    # Imported here: BeautifulSoup and markdownify cost ~140 ms, which listing the tools should not pay.
    from bs4 import BeautifulSoup
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(body, "lxml", from_encoding=charset)
    title = " ".join(soup.title.get_text().split()) if soup.title else ""
    for tag in soup.find_all(DROPPED):
        tag.decompose()
    for link in soup.find_all("a", href=True):
        href = urljoin(url, str(link["href"]))
        if href.startswith(("http://", "https://")):
            link["href"] = href
        else:  # javascript:, mailto: ... mean nothing to a reader of the text
            del link["href"]
    main = soup.find("main") or soup.body or soup
    markdown = MarkdownConverter(heading_style="ATX", strip=["img"], bullets="-").convert_soup(main)
    return title, _BLANK_LINES.sub("\n\n", markdown).strip()


FETCH_PAGE = Tool(
    name="fetch_page",
    description=(
        "Read a web page as markdown: returns {url, title, content_type, content}; scripts, menus and footers "
        "are dropped and the text is cut at max_chars. Plain text passes through; for a PDF use read_pdf. "
        "Redirects are followed; only the hosts the workflow was granted are reachable."
    ),
    args_model=FetchPageArgs,
    fn=fetch_page,
    network=True,
)
