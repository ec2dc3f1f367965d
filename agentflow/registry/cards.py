"""Fetching A2A agent cards: plain JSON through the egress guard, ETag-aware so polling costs a 304."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from agentflow.tools.registry import ToolError
from agentflow.trust.egress import EgressDenied, EgressPolicy, guarded_stream

MAX_CARD_BYTES = 256 * 1024
WELL_KNOWN = (".well-known/agent-card.json", ".well-known/agent.json")  # A2A 1.0, then 0.3


class CardError(Exception):
    """A card could not be fetched or is not an agent card; the message says which URL and why."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # the egress guard refused the address (not a network failure)


@dataclass(frozen=True, slots=True)
class CardFetch:
    card: dict[str, Any] | None  # None when not modified
    etag: str | None
    not_modified: bool
    url: str = ""  # where the card was found (the URL itself, or a well-known path under it)


def card_locations(url: str) -> list[str]:
    """A URL ending in .json is the card itself; any other is an agent's base URL, with the card well-known under it."""
    target = httpx.URL(url)
    if target.path.endswith(".json"):
        return [url]
    base = url if url.endswith("/") else url + "/"
    return [str(httpx.URL(base).join(path)) for path in WELL_KNOWN]


async def fetch_card(url: str, *, policy: EgressPolicy, etag: str | None = None, timeout: float) -> CardFetch:
    """The card at `url` (or well-known under it); with `etag`, a 304 answers `not_modified`."""
    if httpx.URL(url).scheme not in ("http", "https"):
        raise CardError(f"card URL {url!r} must be an http:// or https:// URL")
    misses: list[str] = []
    for location in card_locations(url):
        headers = {"Accept": "application/json"}
        if etag:
            headers["If-None-Match"] = etag
        try:
            async with guarded_stream(
                policy, "GET", location, headers=headers, timeout=timeout, follow_redirects=True
            ) as response:
                if response.status_code == 304:
                    return CardFetch(None, response.headers.get("etag") or etag, True, location)
                if response.status_code == 404 and len(misses) + 1 < len(card_locations(url)):
                    misses.append(f"{location}: HTTP 404")
                    continue
                if response.status_code != 200:
                    raise CardError(f"the agent card at {location} answered HTTP {response.status_code}")
                body = await _read(response, location)
                return CardFetch(parse_card(body, location), response.headers.get("etag"), False, location)
        except EgressDenied as exc:
            raise CardError(f"the card URL {location} is not reachable from here: {exc}", refused=True) from None
        except ToolError as exc:
            raise CardError(f"cannot fetch the agent card at {location}: {exc}") from None
        except httpx.HTTPError as exc:
            raise CardError(f"cannot fetch the agent card at {location}: {type(exc).__name__} {exc}") from None
    raise CardError("no agent card found: " + "; ".join(misses))


async def _read(response: httpx.Response, location: str) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_CARD_BYTES:
            raise CardError(f"the agent card at {location} is larger than {MAX_CARD_BYTES} bytes")
    return body


def parse_card(body: bytes, location: str) -> dict[str, Any]:
    try:
        card = json.loads(body)
    except ValueError:
        raise CardError(f"the agent card at {location} is not JSON") from None
    if not isinstance(card, dict) or not isinstance(card.get("name"), str) or not card["name"].strip():
        raise CardError(f"the document at {location} is not an A2A agent card: it has no 'name'")
    if not isinstance(card.get("skills", []), list):
        raise CardError(f"the agent card at {location} has 'skills' that is not a list")
    return card


def card_endpoint(card: dict[str, Any], card_url: str) -> str:
    """The A2A endpoint a card names: its JSON-RPC interface (A2A 1.0), else any, else `url` (0.3)."""
    interfaces = [item for item in card.get("supportedInterfaces") or [] if isinstance(item, dict) and item.get("url")]
    preferred = [item for item in interfaces if str(item.get("protocolBinding", "")).upper() == "JSONRPC"]
    chosen = (preferred or interfaces or [{"url": card.get("url")}])[0].get("url")
    if not isinstance(chosen, str) or not chosen:
        raise CardError(f"the agent card at {card_url} names no endpoint (supportedInterfaces[].url or url)")
    return str(httpx.URL(card_url).join(chosen))


def card_skills(card: dict[str, Any]) -> list[dict[str, Any]]:
    """The card's skills as {id, name, description, tags}; entries that are not objects are skipped."""
    skills = []
    for item in card.get("skills") or []:
        if not isinstance(item, dict):
            continue
        identifier = str(item.get("id") or item.get("name") or "").strip()
        if not identifier:
            continue
        tags = item.get("tags")
        if not isinstance(tags, list):
            tags = []
        skills.append(
            {
                "id": identifier,
                "name": str(item.get("name") or identifier),
                "description": str(item.get("description") or ""),
                "tags": [str(tag) for tag in tags],
            }
        )
    return skills
