"""The web tools: search, Wikipedia, arXiv, reading a page and reading a feed.

web_search, wikipedia and arxiv reach fixed services; an operator may point each at another base URL (a regional
mirror, a proxy) with a setting, and the tool's declared hosts follow. fetch_page and rss reach the URL they are
given, within the hosts the workflow was granted.
"""

from __future__ import annotations

from agentflow.settings import Settings
from agentflow.tools.arxiv import ARXIV_URL, arxiv_tool
from agentflow.tools.feeds import RSS
from agentflow.tools.pages import FETCH_PAGE
from agentflow.tools.registry import Tool
from agentflow.tools.search import SEARCH_URL, web_search_tool
from agentflow.tools.wikipedia import WIKIPEDIA_URL, wikipedia_tool


def tools(settings: Settings) -> list[Tool]:
    return [
        web_search_tool(_base_url(settings, "search_url") or SEARCH_URL),
        wikipedia_tool(_base_url(settings, "wikipedia_url") or WIKIPEDIA_URL),
        arxiv_tool(_base_url(settings, "arxiv_url") or ARXIV_URL),
        FETCH_PAGE,
        RSS,
    ]


def _base_url(settings: Settings, name: str) -> str | None:
    # AGENTFLOW_SEARCH_URL, AGENTFLOW_WIKIPEDIA_URL, AGENTFLOW_ARXIV_URL, once Settings carries them.
    value = getattr(settings, name, None)
    return value if isinstance(value, str) and value else None
