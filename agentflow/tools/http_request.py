"""`http_request`: one HTTP call; the response comes back as status, headers and a bounded body."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentflow.tools.registry import Tool, ToolContext, ToolError
from agentflow.trust.egress import EgressDenied, EgressPolicy, guarded_stream

MAX_BODY_BYTES = 100_000


class HttpRequestArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(description="An http:// or https:// URL")
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict, description="Query string parameters")
    json_body: Any = Field(None, alias="json", description="A JSON request body")
    body: str | None = Field(None, description="A raw text request body (instead of `json`)")
    timeout: float = Field(30.0, gt=0, le=120, description="Seconds for the whole request")
    follow_redirects: bool = False

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_body(self) -> HttpRequestArgs:
        if self.body is not None and "json_body" in self.model_fields_set:
            raise ValueError("give either `json` or `body`, not both")
        return self


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Building the context loads the CA bundle (~70 ms): do it once, not per request.
    return httpx.create_ssl_context()


async def http_request(args: HttpRequestArgs, context: ToolContext) -> dict[str, Any]:
    request: dict[str, Any] = {"headers": args.headers, "params": args.params}
    if "json_body" in args.model_fields_set:
        request["json"] = args.json_body
    elif args.body is not None:
        request["content"] = args.body.encode()
    policy = context.egress or EgressPolicy(hosts=None)
    try:
        async with (
            asyncio.timeout(args.timeout),
            guarded_stream(
                policy,
                args.method,
                args.url,
                **request,
                timeout=args.timeout,
                follow_redirects=args.follow_redirects,
                verify=_tls_context(),
            ) as response,
        ):
            raw, truncated = await _read_bounded(response)
    except EgressDenied as exc:
        raise EgressDenied(f"http_request to {exc.target}", exc.reason) from None
    except TimeoutError:
        raise ToolError(f"{args.method} {args.url} timed out after {args.timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ToolError(f"{args.method} {args.url} failed: {type(exc).__name__}: {exc}") from None
    return {
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": _decode(raw, response, truncated),
        **({"truncated": True} if truncated else {}),
    }


async def _read_bounded(response: httpx.Response) -> tuple[bytes, bool]:
    """Read at most MAX_BODY_BYTES: a model does not need (and cannot read) more."""
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received.extend(chunk)
        if len(received) > MAX_BODY_BYTES:
            return bytes(received[:MAX_BODY_BYTES]), True
    return bytes(received), False


def _decode(raw: bytes, response: httpx.Response, truncated: bool) -> Any:
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    if not truncated and "json" in response.headers.get("content-type", "") and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


HTTP_REQUEST = Tool(
    name="http_request",
    description=(
        "Make an HTTP request. Returns {status, headers, body}; a JSON body is parsed, "
        f"text is cut at {MAX_BODY_BYTES // 1000} kB. Redirects are not followed unless follow_redirects is true. "
        "Only the hosts the workflow was granted are reachable; internal addresses are refused."
    ),
    args_model=HttpRequestArgs,
    fn=http_request,
    network=True,
)
