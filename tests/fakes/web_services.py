"""Local fakes of the web services the web tools reach, each speaking its real protocol.

One FastAPI app serves them all under prefixes: DuckDuckGo's HTML results page (`/duckduckgo/html/`, the markup
ddgs's xpaths read), the MediaWiki Action API (`/wiki/{lang}/w/api.php`), the arXiv API (`/arxiv/api/query`,
Atom), web pages with redirects (`/pages/...`) and feeds (`/feeds/...`). `/hold/...` answers nothing until the test
releases it, for timeouts. Every request is recorded in `requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from tests.fakes.openai_server import ServerThread

# -- DuckDuckGo ----------------------------------------------------------------------------------

_DDG_RESULT = """
    <div class="result results_links results_links_deep web-result ">
      <div class="links_main links_deep result__body">
        <h2 class="result__title">
          <a rel="nofollow" class="result__a" href="{href}">{title}</a>
        </h2>
        <div class="result__extras">
          <div class="result__extras__url">
            <span class="result__icon"><a rel="nofollow" href="{href}"><img class="result__icon__img" width="16"
              height="16" alt="" src="//external-content.duckduckgo.com/ip3/example.ico" name="i15" /></a></span>
            <a class="result__url" href="{href}">{display}</a>
          </div>
        </div>
        <a class="result__snippet" href="{href}">{snippet}</a>
        <div class="clear"></div>
      </div>
    </div>"""

_DDG_AD = """
    <div class="result results_links results_links_deep result--ad ">
      <div class="links_main links_deep result__body">
        <h2 class="result__title">
          <a rel="nofollow" class="result__a" href="https://duckduckgo.com/y.js?ad_domain=ads.example">Buy now</a>
        </h2>
        <a class="result__snippet" href="https://duckduckgo.com/y.js?ad_domain=ads.example">An advert.</a>
      </div>
    </div>"""

_DDG_NO_RESULTS = """
    <div class="result results_links_deep highlight_d result--no-result">
      <div class="links_main links_deep result__body"><div class="no-results">No results.</div></div>
    </div>"""

_DDG_PAGE = """<!DOCTYPE html>
<html lang="en-US">
<head><meta charset="utf-8"><title>{query} at DuckDuckGo</title>
  <link rel="stylesheet" href="/dist/h.css" type="text/css"></head>
<body>
  <div id="header" class="header cw"><form id="search_form" name="x" action="/html/" method="post">
    <input type="text" name="q" value="{query}" class="search__input"></form></div>
  <div class="serp__results"><div id="links" class="results">{results}
    <div class="nav-link"><form action="/html/" method="post"><input type="submit" class="btn" value="Next" />
      <input type="hidden" name="q" value="{query}" /><input type="hidden" name="s" value="10" /></form></div>
  </div></div>
</body></html>"""

DDG_RESULTS = [
    (
        "https://www.python.org/",
        "Welcome to Python.org",
        "The official home of the <b>Python</b> Programming Language.",
    ),
    (
        "//duckduckgo.com/l/?uddg=https%3A%2F%2Fdocs.python.org%2F3%2F&amp;rut=5c1a",
        "3.13 Documentation",
        "The <b>Python</b> documentation: tutorial, library reference, language reference.",
    ),
    (
        "https://en.wikipedia.org/wiki/Python_(programming_language)",
        "Python - Wikipedia",
        "Python is a " + "lang " * 300,
    ),
]


def _ddg_page(query: str) -> str:
    if query == "nothing at all":
        results = _DDG_NO_RESULTS
    else:
        results = _DDG_AD + "".join(
            _DDG_RESULT.format(href=href, title=title, display=href.split("/")[2] or "docs.python.org", snippet=snippet)
            for href, title, snippet in DDG_RESULTS * 4  # 12 results, more than the default max_results
        )
    return _DDG_PAGE.format(query=query, results=results)


# -- MediaWiki -----------------------------------------------------------------------------------

WIKI_EXTRACT = (
    "Python is a high-level, general-purpose programming language. Its design philosophy emphasizes code "
    "readability with the use of significant indentation. " + "Python is dynamically typed. " * 400
)


def _mediawiki(params: dict[str, str], lang: str) -> Response:
    query = params.get("srsearch") or params.get("gsrsearch") or ""
    if params.get("action") != "query" or params.get("format") != "json":
        return JSONResponse({"error": {"code": "badvalue", "info": 'Unrecognized value for parameter "action".'}})
    if query == "server error":
        return PlainTextResponse("upstream connect error", status_code=500)
    if query == "not json":
        return PlainTextResponse("<html><body>Wikimedia Error</body></html>", media_type="text/html")
    if query == "bad request":
        return JSONResponse({"error": {"code": "srsearch-text-disabled", "info": "Search is disabled."}})
    if query == "nothing at all":
        return JSONResponse({"batchcomplete": True})
    title = "Python (programming language)" if lang == "en" else f"Python ({lang})"
    if params.get("list") == "search":
        hits = [
            {
                "ns": 0,
                "title": title,
                "pageid": 23862,
                "snippet": '<span class="searchmatch">Python</span> is a &quot;language&quot;',
            },
            {"ns": 0, "title": "Monty Python", "pageid": 18942, "snippet": "British comedy troupe"},
            {"ns": 0, "title": "Pythonidae", "pageid": 77215, "snippet": "family of snakes"},
        ]
        return JSONResponse({"batchcomplete": True, "query": {"searchinfo": {"totalhits": 3}, "search": hits}})
    sentences = int(params.get("exsentences", "0"))
    extract = ". ".join(WIKI_EXTRACT.split(". ")[:sentences]) + "." if sentences else WIKI_EXTRACT
    page = {
        "pageid": 23862,
        "ns": 0,
        "title": title,
        "index": 1,
        "extract": extract,
        "fullurl": f"https://{lang}.wikipedia.org/wiki/Python_(programming_language)",
    }
    return JSONResponse({"batchcomplete": True, "query": {"pages": [page]}})


# -- arXiv ---------------------------------------------------------------------------------------

_ATOM_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"
      xmlns:arxiv="http://arxiv.org/schemas/atom">
  <id>https://arxiv.org/api/Ur3WMf6aXwM</id>
  <title>arXiv Query: search_query={query}</title>
  <updated>2025-05-01T00:00:00Z</updated>
  <link href="https://arxiv.org/api/query?search_query={query}" type="application/atom+xml"/>
  <opensearch:itemsPerPage>{count}</opensearch:itemsPerPage>
  <opensearch:totalResults>{count}</opensearch:totalResults>
  <opensearch:startIndex>0</opensearch:startIndex>"""

_ARXIV_ENTRY = """
  <entry>
    <id>http://arxiv.org/abs/{id}</id>
    <title>{title}</title>
    <updated>2023-08-02T00:41:18Z</updated>
    <link href="https://arxiv.org/abs/{id}" rel="alternate" type="text/html"/>
    <link href="https://arxiv.org/pdf/{id}" rel="related" type="application/pdf" title="pdf"/>
    <summary>  {summary}
    </summary>
    <category term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
    <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
    <published>2017-06-12T17:57:34Z</published>
    <arxiv:primary_category term="cs.CL"/>
    <author><name>Ashish Vaswani</name></author>
    <author><name>Noam Shazeer</name></author>
  </entry>"""

_ARXIV_ERROR = """
  <entry>
    <id>https://arxiv.org/api/errors#incorrect_id_format_for_1234</id>
    <title>Error</title>
    <summary>incorrect id format for 1234</summary>
    <updated>2025-05-01T00:00:00Z</updated>
    <link href="https://arxiv.org/api/errors#incorrect_id_format_for_1234" rel="alternate" type="text/html"/>
    <author><name>arXiv api core</name></author>
  </entry>"""

ARXIV_SUMMARY = "The dominant sequence transduction models are based on complex recurrent networks. " * 60


def _arxiv(params: dict[str, str]) -> Response:
    query = params.get("search_query", "")
    atom = "application/atom+xml; charset=utf-8"
    if "nothing" in query:
        return Response(_ATOM_HEAD.format(query=query, count=0) + "\n</feed>", media_type=atom)
    if query.startswith("id:1234"):
        body = _ATOM_HEAD.format(query=query, count=1) + _ARXIV_ERROR + "\n</feed>"
        return Response(body, status_code=400, media_type=atom)
    if "overloaded" in query:
        return PlainTextResponse("Service Unavailable", status_code=503)
    if "garbled" in query:
        return Response("<html><body><h1>Rate exceeded.</h1>", media_type="text/html")
    count = int(params.get("max_results", "10"))
    entries = "".join(
        _ARXIV_ENTRY.format(
            id=f"1706.0376{index}v7", title=f"Attention Is\n      All You Need ({index})", summary=ARXIV_SUMMARY
        )
        for index in range(count)
    )
    return Response(_ATOM_HEAD.format(query=query, count=count) + entries + "\n</feed>", media_type=atom)


# -- pages and feeds -----------------------------------------------------------------------------

ARTICLE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>  The Tide
  Tables </title>
<style>body { color: red }</style><script>window.track("visit")</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<main>
  <h1>Tides</h1>
  <p>The tide rises <strong>twice</strong> a day. See <a href="/pages/moon">the moon</a>
     or <a href="javascript:void(0)">nothing</a>.</p>
  <img src="/chart.png" alt="a chart">
  <ul><li>High water</li><li>Low water</li></ul>
  <script>alert("inside main")</script>
</main>
<footer>Copyright the harbour office</footer>
</body></html>"""

RSS_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel>
  <title>Harbour News</title>
  <link>https://harbour.example/</link>
  <description>What happens at the harbour</description>
  <item>
    <title>New pier opens</title>
    <link>https://harbour.example/pier</link>
    <pubDate>Tue, 03 Jun 2025 09:30:00 +0200</pubDate>
    <description><![CDATA[<p>The <b>new</b> pier opened today.</p><script>x()</script>]]></description>
  </item>
  <item>
    <title>Storm warning</title>
    <link>https://harbour.example/storm</link>
    <pubDate>Mon, 02 Jun 2025 18:00:00 GMT</pubDate>
    <description>{long}</description>
  </item>
  <item><title>Undated note</title><link>https://harbour.example/note</link></item>
</channel></rss>""".replace("{long}", "Winds rising. " * 200)

ATOM_FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Lighthouse Log</title>
  <link href="https://lighthouse.example/"/>
  <updated>2025-06-01T12:00:00Z</updated>
  <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
  <entry>
    <title>Lamp replaced</title>
    <link href="https://lighthouse.example/lamp"/>
    <id>urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a</id>
    <updated>2025-06-01T12:00:00Z</updated>
    <summary>The old lamp was replaced.</summary>
  </entry>
</feed>"""

FEED_PAGE = """<!DOCTYPE html><html><head><title>Harbour</title>
<link rel="alternate" type="application/rss+xml" title="News" href="/feeds/rss.xml"></head>
<body><p>Welcome</p></body></html>"""


@dataclass
class WebServices:
    """The app's state: what it received, and the requests it holds open until released."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    """(method, path, query or form parameters) of every request, in arrival order."""
    local_file: str = ""
    """A file path `/feeds/path` answers with as its body (a parser that opens names would read it)."""
    _held: list[tuple[threading.Event, threading.Event]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path_prefix: str) -> list[dict[str, str]]:
        with self._lock:
            return [params for _, path, params in self.requests if path.startswith(path_prefix)]

    @contextlib.contextmanager
    def holding(self) -> Iterator[threading.Event]:
        """Hold every `/hold/...` request open until the block ends; yields an event set once one arrived."""
        arrived, release = threading.Event(), threading.Event()
        with self._lock:
            self._held.append((arrived, release))
        try:
            yield arrived
        finally:
            release.set()

    def _record(self, method: str, path: str, params: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path, params))

    def build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/duckduckgo/html/")
        async def duckduckgo(request: Request) -> Response:
            form = {key: values[0] for key, values in parse_qs((await request.body()).decode()).items()}
            self._record("POST", request.url.path, form)
            query = form.get("q", "")
            if request.headers.get("content-type") != "application/x-www-form-urlencoded":
                return PlainTextResponse("form expected", status_code=400)
            if query == "too many searches":
                return Response("<html><body>anomaly detected</body></html>", status_code=202, media_type="text/html")
            if query == "server error":
                return PlainTextResponse("internal error", status_code=500)
            if query == "empty page":
                return Response("", media_type="text/html")
            return Response(_ddg_page(query), media_type="text/html; charset=UTF-8")

        @app.get("/wiki/{lang}/w/api.php")
        async def mediawiki(lang: str, request: Request) -> Response:
            params = dict(request.query_params)
            self._record("GET", request.url.path, params)
            if not request.headers.get("user-agent", "").startswith("AgentFlow/"):
                # Wikimedia refuses clients that do not say who they are (its User-Agent policy).
                return PlainTextResponse("Please set a user-agent and respect our robot policy", status_code=403)
            return _mediawiki(params, lang)

        @app.get("/arxiv/api/query")
        async def arxiv(request: Request) -> Response:
            params = dict(request.query_params)
            self._record("GET", request.url.path, params)
            return _arxiv(params)

        @app.get("/pages/{name}")
        async def page(name: str, request: Request) -> Response:
            self._record("GET", request.url.path, dict(request.query_params))
            port = request.url.port
            answers: dict[str, Any] = {
                "article": lambda: Response(ARTICLE, media_type="text/html; charset=utf-8"),
                "redirect": lambda: RedirectResponse("/pages/hop", status_code=302),
                "hop": lambda: RedirectResponse("article", status_code=301),
                "to-internal": lambda: RedirectResponse(f"http://127.0.0.2:{port}/pages/article", status_code=302),
                "to-metadata": lambda: RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302),
                "loop": lambda: RedirectResponse("/pages/loop", status_code=302),
                "notes.txt": lambda: PlainTextResponse("plain notes\nline two"),
                "data.json": lambda: JSONResponse({"tide": "high"}),
                "paper.pdf": lambda: Response(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", media_type="application/pdf"),
                "untyped-pdf": lambda: Response(b"%PDF-1.4\n1 0 obj\n", headers={"content-type": ""}),
                "chart.png": lambda: Response(b"\x89PNG\r\n\x1a\n\x00\x00", media_type="image/png"),
                "big": lambda: Response(
                    "<html><head><title>Big</title></head><body>"
                    + ("<p>" + "word " * 200 + "</p>") * 3000
                    + "</body></html>",
                    media_type="text/html",
                ),
                "missing": lambda: PlainTextResponse("not here", status_code=404),
            }
            if name not in answers:
                return PlainTextResponse("unknown page", status_code=404)
            return answers[name]()

        @app.get("/feeds/{name}")
        async def feed(name: str, request: Request) -> Response:
            self._record("GET", request.url.path, {})
            answers: dict[str, Any] = {
                "rss.xml": lambda: Response(RSS_FEED, media_type="application/rss+xml"),
                "atom.xml": lambda: Response(ATOM_FEED, media_type="application/atom+xml"),
                "old": lambda: RedirectResponse("/feeds/atom.xml", status_code=301),
                "broken.xml": lambda: Response("<rss><channel><title>Half", media_type="application/xml"),
                "page.html": lambda: Response(FEED_PAGE, media_type="text/html"),
                "path": lambda: PlainTextResponse(self.local_file),
                "gone": lambda: PlainTextResponse("gone", status_code=410),
            }
            if name not in answers:
                return PlainTextResponse("unknown feed", status_code=404)
            return answers[name]()

        @app.api_route("/hold/{rest:path}", methods=["GET", "POST"])
        async def hold(rest: str, request: Request) -> Response:
            self._record(request.method, request.url.path, {})
            with self._lock:
                if not self._held:
                    return PlainTextResponse("nothing is held: use `with services.holding():`", status_code=409)
                arrived, release = self._held[-1]
            arrived.set()
            await asyncio.to_thread(release.wait, 30)  # released by the test; bounded so a crash cannot hang it
            return PlainTextResponse("released")

        return app


@contextlib.contextmanager
def web_services() -> Iterator[tuple[WebServices, str]]:
    """Serve the fakes on a loopback port: yields the state and the base URL (http://127.0.0.1:PORT)."""
    services = WebServices()
    server = ServerThread(services.build_app())
    server.start()
    try:
        yield services, server.url
    finally:
        with services._lock:
            for _, release in services._held:
                release.set()
        server.stop()
