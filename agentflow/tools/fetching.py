"""One bounded request through the egress guard, shared by the web tools (search, wikipedia, arxiv, pages, feeds).

Each tool reads at most a fixed number of bytes within its own timeout, and a refusal or a failure comes back as
an error naming the tool, so the model (and the person reading the run) knows which call to change.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator

from agentflow.tools.registry import ToolContext, ToolError
from agentflow.trust.egress import EgressDenied, EgressPolicy, guarded_stream


def _absolute_http(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_absolute_http)]
"""A URL argument: absolute http:// or https:// (the guard checks its host when it is fetched)."""


def _user_agent() -> str:
    try:
        release = version("agentflow")
    except PackageNotFoundError:  # a source tree that was never installed
        release = "dev"
    return f"AgentFlow/{release} (local-first workflow runner)"


USER_AGENT = _user_agent()
"""Wikimedia and arXiv ask automated clients to say who they are."""


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    """Where the body came from: the last hop when redirects were followed."""
    status: int
    media_type: str
    """The Content-Type without its parameters, lower case ("" when the server sent none)."""
    charset: str | None
    body: bytes
    truncated: bool
    """The body was longer than the tool reads; `body` holds its first bytes."""

    @property
    def endpoint(self) -> str:
        """The URL without its query: what an error names (the query is the caller's own arguments)."""
        return self.url.partition("?")[0]

    def text(self) -> str:
        return self.body.decode(self.charset or "utf-8", errors="replace")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Building the context loads the CA bundle (~70 ms): do it once, not per request.
    return httpx.create_ssl_context()


async def fetch(
    tool: str,
    context: ToolContext,
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    content: bytes | None = None,
    follow_redirects: bool = False,
) -> Fetched:
    """Send one request as `tool`, every hop checked against the workflow's egress, and read a bounded body."""
    policy = context.egress or EgressPolicy(hosts=None)
    sent = {"User-Agent": USER_AGENT, **(headers or {})}
    try:
        async with (
            asyncio.timeout(timeout),
            guarded_stream(
                policy,
                method,
                url,
                headers=sent,
                params=params,
                content=content,
                timeout=timeout,
                follow_redirects=follow_redirects,
                verify=_tls_context(),
            ) as response,
        ):
            body, truncated = await _read_bounded(response, max_bytes)
    except EgressDenied as exc:
        raise EgressDenied(f"{tool} to {exc.target}", exc.reason) from None
    except TimeoutError:
        raise ToolError(f"{tool}: {method} {url} timed out after {timeout:g} s; try again or raise `timeout`") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ToolError(f"{tool}: {method} {url} failed: {type(exc).__name__}: {exc}") from None
    media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    return Fetched(_asked_url(response), response.status_code, media_type, response.charset_encoding, body, truncated)


def _asked_url(response: httpx.Response) -> str:
    """The URL of the last hop as it was asked for: the guard sends to the checked address, with the name in Host."""
    sent = response.request.url
    host = response.request.headers.get("host")
    return f"{sent.scheme}://{host}{sent.raw_path.decode('ascii')}" if host else str(sent)


async def _read_bounded(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received.extend(chunk)
        if len(received) > max_bytes:
            return bytes(received[:max_bytes]), True
    return bytes(received), False


def cut(text: str, max_chars: int) -> tuple[str, bool]:
    """`text` at most `max_chars` long, cut at a word boundary when one is near; and whether it was cut."""
    if len(text) <= max_chars:
        return text, False
    head = text[: max_chars - 2]  # room for the " …" that says so
    space = head.rfind(" ", max(0, len(head) - 200))
    return (head[:space] if space > 0 else head).rstrip() + " …", True


def service_host(base_url: str, setting: str) -> str:
    """The host a fixed-host tool reaches (what a workflow using it is granted); `setting` names where it is set."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{setting}={base_url!r} must be an absolute http:// or https:// URL")
    return parts.hostname
