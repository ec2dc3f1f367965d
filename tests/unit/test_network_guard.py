"""The suite's network guard: nothing leaves the machine, loopback and AF_UNIX still work."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.network_guard import NetworkBlockedError, take_blocked

pytest_plugins = ["pytester"]

TEST_NET = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never routed, so a leak could not reach anyone either


def targets() -> list[str]:
    return [attempt.target for attempt in take_blocked()]


@pytest.fixture
def on_purpose() -> Iterator[None]:
    """Forget the attempts this test made on purpose, so that the autouse guard does not fail it for them."""
    yield
    take_blocked()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


@pytest.mark.usefixtures("on_purpose")
def test_connecting_to_another_machine_is_refused_before_any_packet() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)  # a real connect would return EINPROGRESS here, not the guard's error
        with pytest.raises(NetworkBlockedError, match=r"may not reach 192\.0\.2\.1:80: .*tests/fakes/"):
            sock.connect((TEST_NET, 80))
        with pytest.raises(NetworkBlockedError, match=r"192\.0\.2\.1:443"):
            sock.connect_ex((TEST_NET, 443))
        with pytest.raises(OSError):
            sock.getpeername()  # never connected: no SYN was sent
    assert targets() == ["192.0.2.1:80", "192.0.2.1:443"]


@pytest.mark.usefixtures("on_purpose")
def test_udp_to_another_machine_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(NetworkBlockedError, match=r"192\.0\.2\.1:53"):
            sock.sendto(b"x", (TEST_NET, 53))  # UDP needs no connect
        with pytest.raises(NetworkBlockedError, match=r"192\.0\.2\.1:123"):
            sock.sendto(b"x", 0, (TEST_NET, 123))
    assert targets() == ["192.0.2.1:53", "192.0.2.1:123"]


@pytest.mark.usefixtures("on_purpose")
def test_create_connection_and_urllib_are_refused() -> None:
    with pytest.raises(NetworkBlockedError, match=r"192\.0\.2\.1:80"):
        socket.create_connection((TEST_NET, 80), timeout=5)
    with pytest.raises(NetworkBlockedError, match=r"192\.0\.2\.1:8080"):
        urllib.request.urlopen(f"http://{TEST_NET}:8080/", timeout=5)


@pytest.mark.usefixtures("on_purpose")
async def test_httpx_is_refused_with_the_guards_error_not_a_connect_error() -> None:
    with pytest.raises(NetworkBlockedError, match=r"192\.0\.2\.1:80"):
        httpx.get(f"http://{TEST_NET}/", timeout=5)
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(NetworkBlockedError, match=r"'api\.openai\.com'"):
            await client.get("https://api.openai.com/v1/models")


@pytest.mark.parametrize("name", ["example.com", "api.openai.com", "localhost.example.com"])
@pytest.mark.usefixtures("on_purpose")
def test_resolving_a_name_is_refused(name: str) -> None:
    with pytest.raises(NetworkBlockedError, match=re.escape(f"the name '{name}' (a DNS lookup for port 443)")):
        socket.getaddrinfo(name, 443)
    assert targets() == [f"the name '{name}' (a DNS lookup for port 443)"]


@pytest.mark.usefixtures("on_purpose")
def test_connecting_by_name_is_refused_without_a_lookup() -> None:
    # socket.connect resolves a name in C, past socket.getaddrinfo: the guard must judge the name itself.
    with socket.socket() as sock, pytest.raises(NetworkBlockedError, match=r"example\.com:80"):
        sock.connect(("example.com", 80))


@pytest.mark.usefixtures("on_purpose")
async def test_asyncio_transports_are_refused() -> None:
    with pytest.raises(NetworkBlockedError, match=r"192\.0\.2\.1:80"):
        await asyncio.open_connection(TEST_NET, 80)
    with pytest.raises(NetworkBlockedError, match=r"'example\.com'"):
        await asyncio.open_connection("example.com", 80)


@pytest.mark.usefixtures("on_purpose")
def test_a_swallowed_attempt_is_still_recorded_for_the_autouse_check() -> None:
    with contextlib.suppress(Exception):  # what careless code under test might do
        socket.create_connection((TEST_NET, 80))
    assert targets() == ["192.0.2.1:80"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_still_works(listener: socket.socket, host: str) -> None:
    port = listener.getsockname()[1]
    with socket.create_connection((host, port), timeout=5) as client:
        accepted, _ = listener.accept()
        with accepted:
            client.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
    assert targets() == []


async def test_loopback_works_through_asyncio(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()
    assert targets() == []


def test_unix_sockets_are_allowed(tmp_path: Path) -> None:
    path = str(tmp_path / "guard.sock")
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen()
        client.connect(path)
    assert targets() == []


def test_ollama_points_at_a_closed_local_port() -> None:
    base = os.environ["OLLAMA_API_BASE"]
    assert os.environ["OLLAMA_HOST"] == base
    host, port = base.removeprefix("http://").split(":")
    assert host == "127.0.0.1"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5)


def test_a_test_that_swallowed_an_attempt_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.network_guard import network_guard  # noqa: F401\n")
    pytester.makepyfile(
        """
        import socket

        def test_careless():
            try:
                socket.getaddrinfo("example.com", 443)
            except Exception:
                pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the test tried to reach the name 'example.com'*.py:5 test_careless)*tests/fakes/*"])
