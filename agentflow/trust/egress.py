"""The egress guard: which hosts a network tool may reach, checked on the address it actually connects to.

A workflow is granted host patterns (`EgressPolicy.hosts`). Internal addresses (loopback, private, link-local,
cloud metadata...) stay closed unless the operator opened them with AGENTFLOW_EGRESS_ALLOW_INTERNAL. A name is
resolved once and the connection goes to the address that was checked, so a second DNS answer cannot slip in;
every redirect hop is checked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import idna

from agentflow.settings import Settings, SettingsError
from agentflow.tools.registry import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

OPEN_SETTING = "AGENTFLOW_EGRESS_ALLOW_INTERNAL"
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "169.254.0.23",  # Tencent Cloud
        "168.63.129.16",  # Azure wire server: a public address that only the VM's host answers
    )
)
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
_PRIVATE = tuple(ipaddress.ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAME = re.compile(r"[a-z0-9_-]{1,63}(\.[a-z0-9_-]{1,63})*")
_NUMBER = re.compile(r"0x[0-9a-f]*|[0-9]+")
_CROSS_ORIGIN_HEADERS = ("authorization", "proxy-authorization", "cookie")
_BODY_HEADERS = ("content-type", "content-length", "transfer-encoding")


class EgressDenied(ToolError):
    """A network tool tried to reach something the workflow was not granted or the operator did not open."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target} refused: {reason}")
        self.target = target
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    hosts: frozenset[str] | None
    """Host patterns the workflow was granted: "api.example.com", "*.slack.com", "*"; None: any public host."""
    allow_internal: tuple[str, ...] = ()
    """Operator-opened CIDRs, addresses and host names (AGENTFLOW_EGRESS_ALLOW_INTERNAL)."""
    _networks: tuple[IPNetwork, ...] = field(default=(), init=False, repr=False, compare=False)
    _names: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.hosts is not None:
            object.__setattr__(self, "hosts", frozenset(_canonical_pattern(pattern) for pattern in self.hosts))
        networks: list[IPNetwork] = []
        names: set[str] = set()
        for entry in self.allow_internal:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            try:
                parsed = _parse_host(entry)
            except EgressDenied:
                raise SettingsError(
                    f"{OPEN_SETTING} entry {entry!r} is not a CIDR range, an IP address or a host name"
                ) from None
            if isinstance(parsed, str):
                names.add(parsed)
            else:
                networks.append(ipaddress.ip_network(parsed))
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_names", frozenset(names))

    @classmethod
    def from_settings(cls, settings: Settings, hosts: Collection[str] | None) -> EgressPolicy:
        return cls(hosts=None if hosts is None else frozenset(hosts), allow_internal=settings.egress_allow_internal)

    def check_host(self, host: str) -> None:
        """Refuse a host outside the workflow's grant, before any DNS lookup."""
        if self.hosts is None:
            return
        name = str(_parse_host(host))
        if not any(host_matches(name, pattern) for pattern in self.hosts):
            granted = ", ".join(sorted(self.hosts)) or "none"
            raise EgressDenied(
                name,
                f"host {name} is not in this workflow's granted egress ({granted}); "
                "add it to spec.permissions.egress and have a person grant it",
            )

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve `host` once and keep the addresses this policy allows; connect only to those."""
        parsed = _parse_host(host)
        if isinstance(parsed, str):
            if parsed in METADATA_NAMES and parsed not in self._names:
                raise EgressDenied(
                    parsed,
                    f"{parsed} is a cloud metadata name; it stays closed unless an operator lists this exact name "
                    f"in {OPEN_SETTING}",
                )
            name: str | None = parsed
            addresses = await _lookup(parsed, port)
        else:
            name, addresses = None, [parsed]
        allowed = [address for address in addresses if self._allows(address, name)]
        if not allowed:
            literal = "" if name or host.strip("[]") == str(parsed) else f"{host} is {parsed}: "
            raise EgressDenied(name or host, literal + _refusal(addresses, name))
        return allowed

    def _allows(self, address: IPAddress, name: str | None) -> bool:
        if address_denied(address) is None:
            return True
        if _is_metadata(address):  # only an exact listing opens it, never a range or a name
            return any(network.num_addresses == 1 and address in network for network in self._networks)
        return name in self._names or any(address in network for network in self._networks)


def address_denied(address: IPAddress | str) -> str | None:
    """Why `address` is internal ("loopback", "private", "cloud metadata"...), or None when it is public."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        kind, inner = embedded
        if (inner_reason := address_denied(inner)) is not None:
            return f"{kind} {inner_reason}"
        if kind in ("IPv4-mapped", "NAT64"):  # reaches exactly that public IPv4 (NAT64: on IPv6-only networks)
            return None
    checks: tuple[tuple[str, bool], ...] = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", any(ip in network for network in _PRIVATE)),
        ("carrier-grade NAT", ip in _SHARED),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("reserved", ip.is_reserved),
        ("special-purpose", not ip.is_global),
    )
    return next((reason for reason, applies in checks if applies), None)


def host_matches(host: str, pattern: str) -> bool:
    """`pattern` is a host, "*.example.com" (its subdomains, not example.com itself) or "*" (any host)."""
    try:
        parsed = _parse_host(host)
    except EgressDenied:
        return False
    pattern = _canonical_pattern(pattern)
    if pattern == "*":
        return True
    if pattern.startswith("*.") and isinstance(parsed, str):
        return parsed.endswith(pattern[1:])
    return str(parsed) == pattern


@asynccontextmanager
async def guarded_stream(
    policy: EgressPolicy,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    content: bytes | None = None,
    json: Any = None,
    timeout: float,
    follow_redirects: bool,
    max_redirects: int = 5,
    verify: ssl.SSLContext | bool = True,
) -> AsyncIterator[httpx.Response]:
    """An httpx streaming request whose every hop is granted, resolved once, checked and pinned to that address."""
    target = httpx.URL(url)
    if params:
        target = target.copy_merge_params(dict(params))
    sent = {key: value for key, value in (headers or {}).items() if key.lower() != "host"}
    previous: httpx.URL | None = None
    for hop in range(max(max_redirects, 0) + 1):
        try:
            client, response = await _send(policy, method, target, sent, content, json, timeout, verify)
        except EgressDenied as exc:
            if previous is None:
                raise
            raise EgressDenied(f"{exc.target} (a redirect from {previous})", exc.reason) from None
        if not (follow_redirects and response.has_redirect_location):
            break
        await response.aclose()
        await client.aclose()
        if hop == max_redirects:
            raise httpx.TooManyRedirects(f"more than {max_redirects} redirects", request=response.request)
        previous, target = target, target.join(response.headers["location"])
        if (target.scheme, target.raw_host, target.port) != (previous.scheme, previous.raw_host, previous.port):
            sent = {key: value for key, value in sent.items() if key.lower() not in _CROSS_ORIGIN_HEADERS}
        redirected = _redirect_method(response.status_code, method)
        if redirected != method:
            method, content, json = redirected, None, None
            sent = {key: value for key, value in sent.items() if key.lower() not in _BODY_HEADERS}
    try:
        yield response
    finally:
        await response.aclose()
        await client.aclose()


async def _send(
    policy: EgressPolicy,
    method: str,
    url: httpx.URL,
    headers: dict[str, str],
    content: bytes | None,
    json: Any,
    timeout: float,
    verify: ssl.SSLContext | bool,
) -> tuple[httpx.AsyncClient, httpx.Response]:
    if url.scheme not in ("http", "https"):
        raise EgressDenied(str(url), "only http:// and https:// URLs may be fetched")
    host = url.raw_host.decode("ascii")
    policy.check_host(host)
    addresses = await policy.resolve(host, url.port or (443 if url.scheme == "https" else 80))
    parsed = _parse_host(host)
    netloc = f"[{host}]" if ":" in host else host
    pinned_headers = {**headers, "Host": netloc if url.port is None else f"{netloc}:{url.port}"}
    # TLS still verifies the name: SNI and the certificate check use it, not the address.
    extensions = {"sni_hostname": parsed} if url.scheme == "https" and isinstance(parsed, str) else {}
    # One client per hop: a pooled connection verified for one name must not carry a request for another.
    client = httpx.AsyncClient(timeout=timeout, verify=verify, follow_redirects=False, trust_env=False)

    def build(address: IPAddress) -> httpx.Request:
        pinned = url.copy_with(host=str(address))
        return client.build_request(
            method, pinned, headers=pinned_headers, content=content, json=json, extensions=extensions
        )

    try:
        for address in addresses[:-1]:  # the next allowed address when one refuses the connection
            with contextlib.suppress(httpx.ConnectError):
                return client, await client.send(build(address), stream=True)
        return client, await client.send(build(addresses[-1]), stream=True)
    except BaseException:
        await client.aclose()
        raise


def _redirect_method(status: int, method: str) -> str:
    if status == 303 and method != "HEAD":
        return "GET"
    if status in (301, 302) and method == "POST":
        return "GET"
    return method


async def _lookup(name: str, port: int) -> list[IPAddress]:
    try:
        answers = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ToolError(f"cannot resolve host {name}: {exc.strerror}") from None
    addresses: list[IPAddress] = []
    for family, *_, sockaddr in answers:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])  # a zone never changes the verdict
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise ToolError(f"cannot resolve host {name}: no IPv4 or IPv6 address")
    return addresses


def _refusal(addresses: list[IPAddress], name: str | None) -> str:
    first = addresses[0]
    if _is_metadata(first):
        fix = f"cloud metadata stays closed unless an operator lists this exact address: {OPEN_SETTING}={first}"
    elif name is not None:
        fix = f"an operator can open it with {OPEN_SETTING}={name} (this name) or {OPEN_SETTING}={first} (this address)"
    else:
        fix = f"an operator can open it with {OPEN_SETTING}={first}"
    if name is None:
        return f"{first} is {_a(address_denied(first))} address; {fix}"
    if len(addresses) == 1:
        return f"{name} resolves to {first}, {_a(address_denied(first))} address; {fix}"
    found = ", ".join(f"{address}: {address_denied(address)}" for address in addresses)
    return f"{name} resolves only to internal addresses ({found}); {fix}"


def _a(reason: str | None) -> str:
    reason = reason or "internal"
    return f"an {reason}" if reason[0] in "aeiouI" else f"a {reason}"


def _is_metadata(address: IPAddress) -> bool:
    return (address_denied(address) or "").endswith("cloud metadata")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo), with its kind."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d, but not :: or ::1
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip))
    return None


def _parse_host(host: str) -> str | IPAddress:
    """A URL host as it is compared: an IP address (any notation getaddrinfo accepts) or a lower-case ASCII name."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.removesuffix(".")
    if ":" in text:
        try:
            ip = ipaddress.IPv6Address(text)
        except ValueError:
            raise _unparseable(host) from None
        if ip.scope_id:
            raise EgressDenied(host, "IPv6 addresses with a zone (%...) cannot be checked; give a global address")
        return ip
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise _unparseable(host) from None
    labels = text.split(".")
    if all(_NUMBER.fullmatch(label) for label in labels):
        return _numeric_ipv4(host, labels)
    if len(text) > 253 or not _NAME.fullmatch(text):
        raise _unparseable(host)
    return text


def _numeric_ipv4(host: str, labels: list[str]) -> ipaddress.IPv4Address:
    """Decode inet_aton notation ("2130706433", "0x7f.1", "0177.0.0.1"), as the resolver would."""
    try:
        values = [int(label, 16 if label.startswith("0x") else 8 if label[0] == "0" else 10) for label in labels]
    except ValueError:
        raise _unparseable(host) from None
    *head, last = values
    if len(labels) > 4 or any(value > 255 for value in head) or last >= 256 ** (5 - len(labels)):
        raise _unparseable(host)
    return ipaddress.IPv4Address(sum(value << 8 * (3 - index) for index, value in enumerate(head)) + last)


def _unparseable(host: str) -> EgressDenied:
    return EgressDenied(repr(host), "not a host name or IP address the egress guard can check; give a plain name")


def _canonical_pattern(pattern: str) -> str:
    pattern = pattern.strip().lower()
    if pattern == "*":
        return pattern
    prefix, rest = ("*.", pattern[2:]) if pattern.startswith("*.") else ("", pattern)
    try:
        return prefix + str(_parse_host(rest))
    except EgressDenied:
        return pattern  # matches nothing: hosts are always canonical
