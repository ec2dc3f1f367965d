"""The web tools against local fakes of DuckDuckGo, MediaWiki, arXiv, web pages and feeds.

The fakes listen on loopback, which the egress guard keeps closed: each test opens 127.0.0.1 as an operator
would (`allow_internal`) and grants it as a workflow would (`hosts`), unless it checks a refusal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agentflow.settings import Settings
from agentflow.tools import web
from agentflow.tools.arxiv import arxiv_tool, search_query
from agentflow.tools.feeds import RSS
from agentflow.tools.fetching import fetch
from agentflow.tools.pages import FETCH_PAGE, MAX_CHARS
from agentflow.tools.registry import Tool, ToolContext, ToolError, builtin_registry
from agentflow.tools.search import web_search_tool
from agentflow.tools.wikipedia import wikipedia_tool
from agentflow.trust.egress import EgressDenied, EgressPolicy
from tests.fakes.web_services import ARXIV_SUMMARY, RSS_FEED, WIKI_EXTRACT, WebServices, web_services

pytestmark = pytest.mark.store_agnostic

LOCAL = ToolContext(egress=EgressPolicy(hosts=frozenset({"127.0.0.1"}), allow_internal=("127.0.0.1",)))
NOT_GRANTED = ToolContext(egress=EgressPolicy(hosts=frozenset({"example.org"}), allow_internal=("127.0.0.1",)))
NOT_OPENED = ToolContext(egress=EgressPolicy(hosts=frozenset({"127.0.0.1"})))


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[WebServices, str]]:
    with web_services() as served:
        yield served


@pytest.fixture(scope="module")
def base(fake: tuple[WebServices, str]) -> str:
    return fake[1]


@pytest.fixture(scope="module")
def services(fake: tuple[WebServices, str]) -> WebServices:
    return fake[0]


@pytest.fixture(scope="module")
def search(base: str) -> Tool:
    return web_search_tool(f"{base}/duckduckgo/html/")


@pytest.fixture(scope="module")
def wikipedia(base: str) -> Tool:
    return wikipedia_tool(base + "/wiki/{lang}")


@pytest.fixture(scope="module")
def arxiv(base: str) -> Tool:
    return arxiv_tool(f"{base}/arxiv/api/query")


async def call(tool: Tool, context: ToolContext = LOCAL, **arguments: Any) -> Any:
    return await tool.call(arguments, context)


# -- registration --------------------------------------------------------------------------------


def test_the_web_tools_are_installed_with_their_capabilities() -> None:
    registry = builtin_registry(operator=False)
    described = {name: registry.get(name).describe() for name in ("web_search", "wikipedia", "arxiv")}
    assert {name: entry["hosts"] for name, entry in described.items()} == {
        "web_search": ["html.duckduckgo.com"],
        "wikipedia": ["*.wikipedia.org"],
        "arxiv": ["export.arxiv.org"],
    }
    for name in ("fetch_page", "rss"):
        tool = registry.get(name)
        assert tool.network and tool.hosts == () and "url" in tool.parameters_schema()["required"]
    assert registry.get("wikipedia").capability() == "tool wikipedia; egress to *.wikipedia.org"


def test_an_operator_setting_moves_a_fixed_host_tool_and_its_hosts() -> None:
    settings: Any = SimpleNamespace(
        search_url="https://search.mirror.example/html/",
        wikipedia_url="https://wiki.mirror.example/{lang}",
        arxiv_url="https://arxiv.mirror.example/api/query",
    )
    hosts = {tool.name: tool.hosts for tool in web.tools(settings)}
    assert hosts["web_search"] == ("search.mirror.example",)
    assert hosts["wikipedia"] == ("wiki.mirror.example",)
    assert hosts["arxiv"] == ("arxiv.mirror.example",)
    assert {tool.name for tool in web.tools(Settings())} == {"web_search", "wikipedia", "arxiv", "fetch_page", "rss"}


@pytest.mark.parametrize(
    ("make", "url", "error"),
    [
        (web_search_tool, "html.duckduckgo.com/html/", "AGENTFLOW_SEARCH_URL='html.duckduckgo.com/html/' must be"),
        (arxiv_tool, "ftp://export.arxiv.org/", "AGENTFLOW_ARXIV_URL='ftp://export.arxiv.org/' must be an absolute"),
        (wikipedia_tool, "https://wiki-{lang}.example.org", "{lang} may only be the first label of the host"),
        (wikipedia_tool, "https://{lang}.{lang}.example.org", "{lang} may only be the first label of the host"),
    ],
)
def test_a_bad_base_url_names_its_setting(make: Any, url: str, error: str) -> None:
    with pytest.raises(ValueError) as caught:
        make(url)
    assert error in str(caught.value)


# -- web_search ----------------------------------------------------------------------------------


async def test_web_search_posts_ddgs_payload_and_reads_the_results(search: Tool, services: WebServices) -> None:
    results = await call(search, query="python docs", region="uk-en", safesearch="off", timelimit="w")

    assert services.received("/duckduckgo/html/")[-1] == {"q": "python docs", "l": "uk-en", "df": "w", "kp": "-2"}
    assert len(results) == 5  # the default max_results, of 12 on the page; the advert is left out
    assert results[0] == {
        "title": "Welcome to Python.org",
        "url": "https://www.python.org/",
        "snippet": "The official home of the Python Programming Language.",
    }
    assert results[1]["url"] == "https://docs.python.org/3/"  # unwrapped from DuckDuckGo's redirector
    assert all("y.js" not in result["url"] for result in results)
    assert results[2]["snippet"].endswith(" …") and len(results[2]["snippet"]) <= 500


async def test_web_search_returns_at_most_what_the_page_has(search: Tool) -> None:
    assert len(await call(search, query="python", max_results=20)) == 12
    assert len(await call(search, query="python", max_results=1)) == 1


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("nothing at all", "web_search: no results for 'nothing at all'; try fewer or different words"),
        ("too many searches", "DuckDuckGo answered HTTP 202 instead of results (it limits automated searches"),
        ("empty page", "web_search: the results page could not be read (Document is empty); search again"),
        ("server error", "web_search: DuckDuckGo answered HTTP 500; try again later"),
    ],
)
async def test_web_search_service_failures_are_clear(search: Tool, query: str, error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await call(search, query=query)
    assert error in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"query": "x", "engine": "bing"}, "engine: Extra inputs are not permitted"),
        ({"query": ""}, "query: String should have at least 1 character"),
        ({"query": "x", "max_results": 21}, "max_results: Input should be less than or equal to 20"),
        ({"query": "x", "region": "english"}, "region: String should match pattern"),
        ({"query": "x", "safesearch": "strict"}, "safesearch: Input should be 'on', 'moderate' or 'off'"),
        ({"query": "x", "timelimit": "h"}, "timelimit: Input should be 'd', 'w', 'm' or 'y'"),
    ],
)
async def test_web_search_bad_arguments(search: Tool, arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await search.call(arguments, LOCAL)
    assert str(caught.value).startswith("invalid arguments for tool 'web_search': ") and error in str(caught.value)


# -- egress, for every tool ----------------------------------------------------------------------


def _calls(base: str) -> list[tuple[Tool, dict[str, Any]]]:
    return [
        (web_search_tool(f"{base}/duckduckgo/html/"), {"query": "python"}),
        (wikipedia_tool(base + "/wiki/{lang}"), {"query": "python"}),
        (arxiv_tool(f"{base}/arxiv/api/query"), {"query": "attention"}),
        (FETCH_PAGE, {"url": f"{base}/pages/article"}),
        (RSS, {"url": f"{base}/feeds/rss.xml"}),
    ]


@pytest.mark.parametrize("index", range(5), ids=["web_search", "wikipedia", "arxiv", "fetch_page", "rss"])
async def test_egress_is_refused_when_not_granted_or_not_opened(base: str, services: WebServices, index: int) -> None:
    tool, arguments = _calls(base)[index]
    before = len(services.requests)
    with pytest.raises(EgressDenied) as not_granted:
        await tool.call(arguments, NOT_GRANTED)
    assert str(not_granted.value) == (
        f"{tool.name} to 127.0.0.1 refused: host 127.0.0.1 is not in this workflow's granted egress (example.org); "
        "add it to spec.permissions.egress and have a person grant it"
    )
    with pytest.raises(EgressDenied) as not_opened:
        await tool.call(arguments, NOT_OPENED)
    assert str(not_opened.value).startswith(f"{tool.name} to 127.0.0.1 refused: 127.0.0.1 is a loopback address")
    assert "AGENTFLOW_EGRESS_ALLOW_INTERNAL=127.0.0.1" in str(not_opened.value)
    assert len(services.requests) == before  # refused before anything was sent
    assert await tool.call(arguments, LOCAL)  # and the same call works once granted and opened


@pytest.mark.parametrize("index", range(5), ids=["web_search", "wikipedia", "arxiv", "fetch_page", "rss"])
async def test_a_silent_service_times_out(base: str, services: WebServices, index: int) -> None:
    tool, arguments = _calls(f"{base}/hold")[index]
    with services.holding() as arrived, pytest.raises(ToolError) as caught:
        await tool.call({**arguments, "timeout": 0.3}, LOCAL)
    assert arrived.is_set()  # the request reached the fake, which never answered
    assert re.search(
        rf"^{tool.name}: (GET|POST) http://127\.0\.0\.1:\d+/hold/.* timed out after 0\.3 s", str(caught.value)
    )


# -- wikipedia -----------------------------------------------------------------------------------


async def test_wikipedia_page_mode_gives_the_best_match_cut_at_max_chars(
    wikipedia: Tool, services: WebServices
) -> None:
    article = await call(wikipedia, query="python language", max_chars=500)

    sent = services.received("/wiki/en/w/api.php")[-1]
    assert sent["generator"] == "search" and sent["gsrsearch"] == "python language" and "exsentences" not in sent
    assert (sent["action"], sent["format"], sent["formatversion"], sent["explaintext"]) == ("query", "json", "2", "1")
    assert article["title"] == "Python (programming language)"
    assert article["url"] == "https://en.wikipedia.org/wiki/Python_(programming_language)"
    assert article["truncated"] is True and len(article["extract"]) <= 500
    assert WIKI_EXTRACT.startswith(article["extract"].removesuffix(" …"))


async def test_wikipedia_sentences_and_language(wikipedia: Tool, services: WebServices) -> None:
    article = await call(wikipedia, query="python", lang="de", sentences=2)
    assert services.received("/wiki/de/w/api.php")[-1]["exsentences"] == "2"
    assert article["title"] == "Python (de)" and "truncated" not in article
    assert article["extract"] == (
        "Python is a high-level, general-purpose programming language. Its design philosophy emphasizes code "
        "readability with the use of significant indentation."
    )


async def test_wikipedia_search_mode_lists_articles(wikipedia: Tool, base: str, services: WebServices) -> None:
    found = await call(wikipedia, query="python", mode="search", max_results=2)
    assert services.received("/wiki/en/w/api.php")[-1]["srlimit"] == "2"
    assert found == [
        {
            "title": "Python (programming language)",
            "url": f"{base}/wiki/en/wiki/Python_(programming_language)",
            "snippet": 'Python is a "language"',
        },
        {"title": "Monty Python", "url": f"{base}/wiki/en/wiki/Monty_Python", "snippet": "British comedy troupe"},
    ]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"query": "nothing at all"}, "wikipedia: no en article matches 'nothing at all'; try mode=search"),
        ({"query": "nothing at all", "mode": "search"}, "no en article matches 'nothing at all'; try other words"),
        ({"query": "server error"}, "/wiki/en/w/api.php answered HTTP 500; try again later"),
        ({"query": "not json"}, "did not answer with JSON; is the base URL a MediaWiki site?"),
        ({"query": "bad request"}, "wikipedia: the API refused the query: Search is disabled."),
    ],
)
async def test_wikipedia_service_failures_are_clear(wikipedia: Tool, arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await call(wikipedia, **arguments)
    assert error in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"query": "x", "lang": "en.evil.example/x"}, "lang: String should match pattern"),
        ({"query": "x", "lang": "EN"}, "lang: String should match pattern"),
        ({"query": "x", "mode": "summary"}, "mode: Input should be 'page' or 'search'"),
        ({"query": "x", "sentences": 11}, "sentences: Input should be less than or equal to 10"),
        ({"query": "x", "max_chars": 50_000}, "max_chars: Input should be less than or equal to 20000"),
        ({"query": "x", "title": "Python"}, "title: Extra inputs are not permitted"),
    ],
)
async def test_wikipedia_bad_arguments(wikipedia: Tool, arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await call(wikipedia, **arguments)
    assert error in str(caught.value)


# -- arxiv ---------------------------------------------------------------------------------------


def test_arxiv_query_syntax() -> None:
    assert search_query("attention transformers") == "all:attention AND all:transformers"
    assert search_query("ti:attention AND cat:cs.CL") == "ti:attention AND cat:cs.CL"


async def test_arxiv_returns_papers_from_the_atom_feed(arxiv: Tool, services: WebServices) -> None:
    papers = await call(arxiv, query="attention transformers", max_results=3, sort="submitted", summary_chars=300)

    assert services.received("/arxiv/api/query")[-1] == {
        "search_query": "all:attention AND all:transformers",
        "start": "0",
        "max_results": "3",
        "sortBy": "submittedDate",
        "sortOrder": "descending",
    }
    assert len(papers) == 3
    first = papers[0]
    assert {key: first[key] for key in ("id", "title", "authors", "published", "pdf_url", "categories")} == {
        "id": "1706.03760v7",
        "title": "Attention Is All You Need (0)",
        "authors": ["Ashish Vaswani", "Noam Shazeer"],
        "published": "2017-06-12T17:57:34Z",
        "pdf_url": "https://arxiv.org/pdf/1706.03760v7",
        "categories": ["cs.CL", "cs.LG"],
    }
    assert len(first["summary"]) <= 300 and ARXIV_SUMMARY.startswith(first["summary"].removesuffix(" …"))


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("nothing here", "arxiv: no papers match 'nothing here'; try fewer words"),
        ("id:1234", "arxiv: the API refused the query: incorrect id format for 1234"),
        ("overloaded", "/arxiv/api/query answered HTTP 503; try again in a minute"),
        ("garbled", "arxiv: the answer is not an Atom feed"),
    ],
)
async def test_arxiv_service_failures_are_clear(arxiv: Tool, query: str, error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await call(arxiv, query=query)
    assert error in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"query": "x", "max_results": 21}, "max_results: Input should be less than or equal to 20"),
        ({"query": "x", "sort": "citations"}, "sort: Input should be 'relevance', 'updated' or 'submitted'"),
        ({"query": "x", "start": 5}, "start: Extra inputs are not permitted"),
    ],
)
async def test_arxiv_bad_arguments(arxiv: Tool, arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await call(arxiv, **arguments)
    assert error in str(caught.value)


# -- fetch_page ----------------------------------------------------------------------------------


async def test_fetch_page_gives_readable_markdown(base: str) -> None:
    page = await call(FETCH_PAGE, url=f"{base}/pages/article")

    assert (page["url"], page["title"], page["content_type"]) == (
        f"{base}/pages/article",
        "The Tide Tables",
        "text/html",
    )
    content = page["content"]
    assert content.startswith("# Tides\n\nThe tide rises **twice** a day.")
    assert f"[the moon]({base}/pages/moon)" in content  # made absolute, so it can be fetched next
    assert "- High water\n- Low water" in content
    for dropped in ("window.track", "alert", "color: red", "Home", "About", "Copyright", "chart", "javascript:"):
        assert dropped not in content
    assert "truncated" not in page


async def test_fetch_page_follows_redirects(base: str, services: WebServices) -> None:
    page = await call(FETCH_PAGE, url=f"{base}/pages/redirect")
    assert page["url"] == f"{base}/pages/article" and page["title"] == "The Tide Tables"
    assert [path for _, path, _ in services.requests[-3:]] == ["/pages/redirect", "/pages/hop", "/pages/article"]


@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        (
            "to-internal",
            "fetch_page to 127.0.0.2 (a redirect from {base}/pages/to-internal) refused: "
            "127.0.0.2 is a loopback address",
        ),
        (
            "to-metadata",
            "fetch_page to 169.254.169.254 (a redirect from {base}/pages/to-metadata) refused: "
            "169.254.169.254 is a cloud metadata address",
        ),
    ],
)
async def test_fetch_page_refuses_a_redirect_to_an_internal_address(base: str, name: str, refusal: str) -> None:
    # Granted any host (egress: ["*"]): the address is still checked on the hop that reaches it.
    any_host = ToolContext(egress=EgressPolicy(hosts=None, allow_internal=("127.0.0.1",)))
    with pytest.raises(EgressDenied) as caught:
        await call(FETCH_PAGE, any_host, url=f"{base}/pages/{name}")
    assert str(caught.value).startswith(refusal.format(base=base))
    with pytest.raises(EgressDenied) as not_granted:
        await call(FETCH_PAGE, url=f"{base}/pages/{name}")
    assert "refused: host " in str(not_granted.value) and "is not in this workflow's granted egress" in str(
        not_granted.value
    )


async def test_fetch_page_passes_text_through(base: str) -> None:
    notes = await call(FETCH_PAGE, url=f"{base}/pages/notes.txt")
    assert (notes["title"], notes["content"], notes["content_type"]) == ("", "plain notes\nline two", "text/plain")
    data = await call(FETCH_PAGE, url=f"{base}/pages/data.json")
    assert data["content"] == '{"tide":"high"}'


async def test_fetch_page_output_is_bounded(base: str) -> None:
    page = await call(FETCH_PAGE, url=f"{base}/pages/big", max_chars=1000)
    assert page["truncated"] is True and page["title"] == "Big"
    assert len(page["content"]) <= 1000 and page["content"].startswith("word")
    with pytest.raises(ToolError, match=rf"max_chars: Input should be less than or equal to {MAX_CHARS}"):
        await call(FETCH_PAGE, url=f"{base}/pages/big", max_chars=MAX_CHARS + 1)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("paper.pdf", "fetch_page: {base}/pages/paper.pdf is a PDF; read it with the read_pdf tool"),
        ("untyped-pdf", "fetch_page: {base}/pages/untyped-pdf is a PDF; read it with the read_pdf tool"),
        ("chart.png", "fetch_page: {base}/pages/chart.png is image/png, not a web page or text; fetch_page reads"),
        ("missing", "fetch_page: {base}/pages/missing answered HTTP 404; check the URL or try later"),
        ("loop", "fetch_page: GET {base}/pages/loop failed: TooManyRedirects: more than 5 redirects"),
    ],
)
async def test_fetch_page_errors_say_what_to_do(base: str, name: str, error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await call(FETCH_PAGE, url=f"{base}/pages/{name}")
    assert str(caught.value).startswith(error.format(base=base))


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"url": "file:///etc/passwd"}, "url: Value error, must be an absolute http:// or https:// URL"),
        ({"url": "/pages/article"}, "url: Value error, must be an absolute http:// or https:// URL"),
        ({"url": "http://x", "headers": {}}, "headers: Extra inputs are not permitted"),
        ({"url": "http://x", "timeout": 0}, "timeout: Input should be greater than 0"),
    ],
)
async def test_fetch_page_bad_arguments(arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await FETCH_PAGE.call(arguments, LOCAL)
    assert error in str(caught.value)


# -- rss -----------------------------------------------------------------------------------------


async def test_rss_reads_an_rss_feed(base: str) -> None:
    feed = await call(RSS, url=f"{base}/feeds/rss.xml", summary_chars=200)

    assert (feed["title"], feed["link"]) == ("Harbour News", "https://harbour.example/")
    first, storm, undated = feed["items"]
    assert first == {
        "title": "New pier opens",
        "link": "https://harbour.example/pier",
        "published": "2025-06-03T07:30:00+00:00",  # normalised to UTC
        "summary": "The new pier opened today.",  # markup stripped, the script dropped
    }
    assert storm["published"] == "2025-06-02T18:00:00+00:00"
    assert len(storm["summary"]) <= 200 and storm["summary"].endswith(" …")
    assert (undated["title"], undated["published"], undated["summary"]) == ("Undated note", "", "")
    assert len((await call(RSS, url=f"{base}/feeds/rss.xml", max_items=1))["items"]) == 1


async def test_rss_reads_an_atom_feed_behind_a_redirect(base: str) -> None:
    feed = await call(RSS, url=f"{base}/feeds/old")
    assert feed["title"] == "Lighthouse Log"
    assert feed["items"] == [
        {
            "title": "Lamp replaced",
            "link": "https://lighthouse.example/lamp",
            "published": "2025-06-01T12:00:00+00:00",
            "summary": "The old lamp was replaced.",
        }
    ]


async def test_rss_never_lets_the_parser_open_what_the_body_names(
    base: str, services: WebServices, tmp_path: Path
) -> None:
    local = tmp_path / "feed.xml"
    local.write_text(RSS_FEED, encoding="utf-8")
    services.local_file = str(local)  # a body that is a path: a parser given bytes would open and read the file
    with pytest.raises(ToolError) as caught:
        await call(RSS, url=f"{base}/feeds/path")
    assert str(caught.value).startswith(f"rss: {base}/feeds/path is not a readable RSS or Atom feed")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("broken.xml", "rss: {base}/feeds/broken.xml is not a readable RSS or Atom feed: it is malformed (<unknown>:"),
        (
            "page.html",
            "rss: {base}/feeds/page.html is not a readable RSS or Atom feed but a web page; it announces a "
            "feed at {base}/feeds/rss.xml: call rss with that URL",
        ),
        ("gone", "rss: {base}/feeds/gone answered HTTP 410; check the feed's URL or try later"),
    ],
)
async def test_rss_errors_say_what_to_do(base: str, name: str, error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await call(RSS, url=f"{base}/feeds/{name}")
    assert str(caught.value).startswith(error.format(base=base))


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"url": "feed://harbour.example/rss"}, "url: Value error, must be an absolute http:// or https:// URL"),
        ({"url": "http://x", "max_items": 0}, "max_items: Input should be greater than or equal to 1"),
        ({"url": "http://x", "etag": "abc"}, "etag: Extra inputs are not permitted"),
    ],
)
async def test_rss_bad_arguments(arguments: dict[str, Any], error: str) -> None:
    with pytest.raises(ToolError) as caught:
        await RSS.call(arguments, LOCAL)
    assert error in str(caught.value)


async def test_no_tool_reads_more_than_its_byte_bound(base: str) -> None:
    fetched = await fetch("fetch_page", LOCAL, f"{base}/pages/big", max_bytes=1000, timeout=10)
    assert (len(fetched.body), fetched.truncated) == (1000, True)
    whole = await fetch("fetch_page", LOCAL, f"{base}/pages/notes.txt", max_bytes=1000, timeout=10)
    assert (whole.text(), whole.truncated, whole.media_type, whole.charset) == (
        "plain notes\nline two",
        False,
        "text/plain",
        "utf-8",
    )
