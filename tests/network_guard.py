"""No test reaches past this machine: non-local sockets and DNS lookups fail loudly, and Ollama is a closed port.

`block_the_network()` runs from `tests/conftest.py` before anything imports agentflow, and patches the
`socket` module for the whole process: `socket.socket.connect`, `connect_ex` and `sendto` (so
`socket.create_connection`, urllib, httpx and asyncio's transports, which all end in them) and
`socket.getaddrinfo`. The `network_guard` fixture then fails any test during which an attempt was
blocked, even if the code under test caught the error and carried on.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

LOCAL_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto
_real_getaddrinfo = socket.getaddrinfo
# Stack frames of the machinery between the caller and the socket: not the code that decided to connect.
_PLUMBING = (
    __file__,
    "/socket.py",
    "/ssl.py",
    "/selectors.py",
    "/threading.py",
    "/asyncio/",
    "/concurrent/",
    "/http/client.py",
    "/urllib/",
    "/urllib3/",
    "/requests/",
    "/httpx",  # and httpx2
    "/httpcore",  # and httpcore2
    "/anyio/",
    "/aiohttp/",
)
_ROOT = Path(__file__).resolve().parents[1]


class Attempt(NamedTuple):
    """One blocked attempt: where it tried to go (`192.0.2.1:80`, `the name 'example.com' …`) and what asked."""

    target: str
    origin: str

    def __str__(self) -> str:
        return f"{self.target} (from {self.origin})"


class NetworkBlockedError(RuntimeError):
    """A test tried to reach another machine. Not an OSError, so that code expecting a network failure cannot quietly
    take it for one."""


_lock = threading.Lock()
_blocked: list[Attempt] = []


def _short(filename: str) -> str:
    path = Path(filename)
    if "site-packages" in path.parts:
        return "/".join(path.parts[path.parts.index("site-packages") + 1 :])
    return str(path.relative_to(_ROOT)) if path.is_relative_to(_ROOT) else path.name


def _refuse(what: str) -> NetworkBlockedError:
    # Where the attempt came from, for when the code under test swallows the error and only the fixture reports it.
    frames = [frame for frame in traceback.extract_stack() if not any(part in frame.filename for part in _PLUMBING)]
    origin = "; ".join(f"{_short(frame.filename)}:{frame.lineno} {frame.name}" for frame in frames[-3:])
    with _lock:
        _blocked.append(Attempt(what, origin))
    return NetworkBlockedError(
        f"the test suite may not reach {what}: nothing may leave this machine; "
        "use the local fakes in tests/fakes/ (e.g. the `fake_llm` fixture) or a server on 127.0.0.1"
    )


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 literal may carry a scope: fe80::1%eth0
    except ValueError:
        return None


def _is_local(host: str) -> bool:
    """Whether `host` is a loopback or unspecified address literal, or a name that always means this machine."""
    if host == "" or host.lower() in LOCAL_NAMES:
        return True
    address = _address(host)
    if address is None:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    # Linux delivers a connection to 0.0.0.0 or :: to this machine, as it does one to 127.0.0.0/8.
    return any(found.is_loopback or found.is_unspecified for found in (address, mapped) if found is not None)


def _text(host: object) -> str:
    return host.decode("ascii", "replace") if isinstance(host, bytes) else "" if host is None else str(host)


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # AF_UNIX paths and the like stay on this machine
    host, port = (address[0], address[1]) if isinstance(address, tuple) and len(address) > 1 else (address, "?")
    if not _is_local(_text(host)):
        raise _refuse(f"{_text(host)}:{port}")


def _connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _real_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _real_connect_ex(self, address)


def _sendto(self: socket.socket, data: Any, *args: Any) -> int:
    _check(self, args[-1])  # sendto(data, address) or sendto(data, flags, address)
    return _real_sendto(self, data, *args)


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    name = _text(host)
    # A lookup of a name goes out to a resolver; an address literal needs none, and `connect` judges where it leads.
    if not _is_local(name) and _address(name) is None:
        raise _refuse(f"the name {name!r} (a DNS lookup for port {port})")
    return _real_getaddrinfo(host, port, *args, **kwargs)


def closed_port() -> int:
    """A loopback TCP port that was just bound and closed, so connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def block_the_network() -> None:
    """Patch `socket` for the whole process; point Ollama at a closed local port (a real one must not answer) and
    tell libraries that would phone home that they are offline."""
    ollama = f"http://127.0.0.1:{closed_port()}"
    os.environ["OLLAMA_API_BASE"] = ollama
    os.environ["OLLAMA_HOST"] = ollama
    # huggingface_hub (under gradio_client) fetches a registry from the Hub for its User-Agent unless offline.
    os.environ["HF_HUB_OFFLINE"] = "1"
    socket.socket.connect = _connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign, assignment]
    socket.socket.sendto = _sendto  # type: ignore[assignment]
    socket.getaddrinfo = _getaddrinfo


def take_blocked() -> list[Attempt]:
    """The attempts blocked since the last call, forgotten once returned (for tests that expect one)."""
    with _lock:
        taken = list(_blocked)
        _blocked.clear()
    return taken


@pytest.fixture(autouse=True)
def network_guard() -> Iterator[None]:
    """Fail the test if it tried to reach another machine, even when the code under test swallowed the error."""
    # Not cleared first: an attempt from a session fixture set up for this test belongs to this test.
    yield
    blocked = take_blocked()
    if blocked:
        tried = ", ".join(map(str, blocked))
        pytest.fail(f"the test tried to reach {tried}; use the local fakes in tests/fakes/", pytrace=False)
