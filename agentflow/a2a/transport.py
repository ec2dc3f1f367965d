"""An httpx transport whose every request passes the egress guard: for a2a-sdk's client.

Each origin is checked (its host against the policy's grant) and resolved once, through the guard's
rules; the connection goes to an address that was checked, with `Host`, TLS SNI and the certificate
check keeping the name. So the card's URL, the JSON-RPC URL it names and anything after are all
guarded, and a second DNS answer cannot slip in.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl

import httpx

from agentflow.trust.egress import EgressDenied, EgressPolicy, IPAddress


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._addresses: dict[tuple[str, str, int], list[IPAddress]] = {}
        self._inner = httpx.AsyncHTTPTransport(verify=_tls(), trust_env=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise EgressDenied(str(url), "an agent URL must be http:// or https://")
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        origin = (url.scheme, host, port)
        addresses = self._addresses.get(origin)
        if addresses is None:
            self._policy.check_host(host)
            addresses = self._addresses[origin] = await self._policy.resolve(host, port)
        netloc = f"[{host}]" if ":" in host else host
        headers = [(key, value) for key, value in request.headers.raw if key.lower() != b"host"]
        headers.insert(0, (b"Host", (netloc if url.port is None else f"{netloc}:{url.port}").encode("ascii")))
        extensions = dict(request.extensions)
        if url.scheme == "https" and not _is_address(host):
            extensions["sni_hostname"] = host
        last: Exception | None = None
        for address in addresses:
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=str(address)),
                headers=headers,
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx.ConnectError as exc:  # the next checked address when one refuses the connection
                last = exc
        assert last is not None
        raise last

    async def aclose(self) -> None:
        await self._inner.aclose()


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every call: loading the CA bundle takes ~25 ms, too long to do per call."""
    return httpx.create_ssl_context()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
