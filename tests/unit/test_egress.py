"""The egress guard: granted hosts, internal addresses, DNS pinning and redirects (SECURITY.md promise 11)."""

from __future__ import annotations

import asyncio
import datetime
import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from agentflow.settings import Settings, SettingsError
from agentflow.tools.http_request import HTTP_REQUEST
from agentflow.tools.registry import ToolContext, ToolError
from agentflow.trust.egress import EgressDenied, EgressPolicy, address_denied, guarded_stream, host_matches
from tests.fakes.openai_server import ServerThread

CLOSED = EgressPolicy(hosts=None)


class FakeDNS:
    """Answers for made-up names; IP literals and `localhost` (/etc/hosts) go to the real resolver."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []

    async def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "localhost" or _is_ip(host):
            return await self._real(host, port, *args, **kwargs)
        self.lookups.append(host)
        script = self.answers.get(host)
        if not script:
            raise AssertionError(f"unexpected DNS lookup of {host}")
        addresses = script.pop(0) if len(script) > 1 else script[0]
        return [
            (socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in addresses
        ]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    """Every name lookup in the test goes through this fake; an unexpected one fails the test."""
    loop = asyncio.get_running_loop()
    fake = FakeDNS(loop.getaddrinfo)
    monkeypatch.setattr(loop, "getaddrinfo", fake.getaddrinfo)
    return fake


def _app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/to", methods=["GET", "POST"])
    async def to(location: str, status: int = 302) -> RedirectResponse:
        return RedirectResponse(location, status_code=status)

    @app.get("/loop")
    async def loop() -> RedirectResponse:
        return RedirectResponse("/loop")

    @app.api_route("/echo", methods=["GET", "POST"])
    async def echo(request: Request) -> dict[str, Any]:
        return {
            "method": request.method,
            "host": request.headers.get("host"),
            "authorization": request.headers.get("authorization"),
            "body": (await request.body()).decode(),
        }

    return app


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """A server on 127.0.0.1."""
    server = ServerThread(_app())
    server.start()
    yield server.port
    server.stop()


async def fetch(policy: EgressPolicy, url: str, **arguments: Any) -> dict[str, Any]:
    result = await HTTP_REQUEST.call({"url": url, **arguments}, ToolContext(egress=policy))
    assert isinstance(result, dict)
    return result


def redirect(port: int, location: str, status: int = 302, host: str = "localhost") -> str:
    return str(httpx.URL(f"http://{host}:{port}/to", params={"location": location, "status": status}))


# --- addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.100.100.200", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("192.0.2.1", "special-purpose"),
        ("240.0.0.1", "reserved"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd12::1", "private"),
        ("fd00:ec2::254", "cloud metadata"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped cloud metadata"),
        ("::127.0.0.1", "IPv4-compatible loopback"),
        ("64:ff9b::7f00:1", "NAT64 loopback"),
        ("64:ff9b::a00:1", "NAT64 private"),
        ("2002:7f00:1::", "6to4 loopback"),
        ("2002:a9fe:a9fe::", "6to4 cloud metadata"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo loopback"),  # client 127.0.0.1, obfuscated
    ],
)
async def test_internal_addresses_are_refused_with_the_reason(address: str, reason: str) -> None:
    assert address_denied(address) == reason
    with pytest.raises(EgressDenied) as refused:
        await CLOSED.resolve(address, 80)
    assert f"is {'an' if reason[0] in 'aeiouI' else 'a'} {reason} address" in str(refused.value)
    assert "AGENTFLOW_EGRESS_ALLOW_INTERNAL=" in str(refused.value)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
async def test_public_addresses_are_allowed_without_a_lookup(dns: FakeDNS, address: str) -> None:
    assert address_denied(address) is None
    assert await CLOSED.resolve(address, 443) == [ipaddress.ip_address(address)]
    assert dns.lookups == []


async def test_the_refusal_says_how_to_open_it() -> None:
    with pytest.raises(EgressDenied) as refused:
        await CLOSED.resolve("10.0.0.1", 80)
    assert str(refused.value) == (
        "10.0.0.1 refused: 10.0.0.1 is a private address; "
        "an operator can open it with AGENTFLOW_EGRESS_ALLOW_INTERNAL=10.0.0.1"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://127.0.0.1./",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[0:0:0:0:0:ffff:7f00:1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0/",
    ],
)
async def test_ip_literals_in_any_notation_are_refused(dns: FakeDNS, url: str) -> None:
    with pytest.raises(EgressDenied, match=r"^http_request to .* refused: .* is an? [\w -]*(loopback|metadata|unspec)"):
        await fetch(CLOSED, url)
    assert dns.lookups == []


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "127.1", "127.0.1", "0x7F.0.0.01"]
)
async def test_every_ipv4_notation_the_resolver_accepts_is_decoded(dns: FakeDNS, host: str) -> None:
    with pytest.raises(EgressDenied, match=f"^{host} refused: {host} is 127.0.0.1: 127.0.0.1 is a loopback address"):
        await CLOSED.resolve(host, 80)
    assert dns.lookups == []


@pytest.mark.parametrize(
    "url", ["http://08.1/", "http://1.2.3.4.5/", "http://256.0.0.0.1/", "http://b%C3%BCcher.example/"]
)
async def test_hosts_the_guard_cannot_read_are_refused(dns: FakeDNS, url: str) -> None:
    with pytest.raises(EgressDenied, match="not a host name or IP address the egress guard can check"):
        await fetch(CLOSED, url)
    assert dns.lookups == []


async def test_a_name_resolving_to_loopback_is_refused(port: int) -> None:
    with pytest.raises(EgressDenied) as refused:
        await fetch(CLOSED, f"http://localhost:{port}/echo")  # /etc/hosts: 127.0.0.1
    message = str(refused.value)
    assert message.startswith("http_request to localhost refused: localhost resolves to 127.0.0.1, a loopback address")
    assert "AGENTFLOW_EGRESS_ALLOW_INTERNAL=localhost (this name)" in message


async def test_metadata_names_are_refused_before_any_lookup(dns: FakeDNS) -> None:
    for name in ("metadata.google.internal", "METADATA.google.internal.", "metadata", "instance-data"):
        with pytest.raises(EgressDenied, match="is a cloud metadata name"):
            await CLOSED.resolve(name, 80)
    assert dns.lookups == []


async def test_only_the_allowed_answers_of_a_lookup_are_kept(dns: FakeDNS) -> None:
    dns.answers["mixed.test"] = [["10.0.0.7", "8.8.8.8"]]
    assert await CLOSED.resolve("mixed.test", 443) == [ipaddress.ip_address("8.8.8.8")]
    dns.answers["inside.test"] = [["10.0.0.7", "127.0.0.1"]]
    with pytest.raises(EgressDenied, match=r"inside.test resolves only to internal addresses \(10.0.0.7: private"):
        await CLOSED.resolve("inside.test", 443)


# --- the workflow's grant -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "pattern", "matches"),
    [
        ("a.example", "a.example", True),
        ("A.Example.", "a.example", True),
        ("hooks.slack.com", "*.slack.com", True),
        ("a.b.slack.com", "*.slack.com", True),
        ("slack.com", "*.slack.com", False),
        ("evilslack.com", "*.slack.com", False),
        ("slack.com.evil.example", "*.slack.com", False),
        ("anything.example", "*", True),
        ("8.8.8.8", "*", True),
        ("xn--bcher-kva.example", "bücher.example", True),
        ("bücher.example", "xn--bcher-kva.example", True),
        ("a.example", "b.example", False),
    ],
)
def test_host_patterns(host: str, pattern: str, matches: bool) -> None:
    assert host_matches(host, pattern) is matches


async def test_a_host_outside_the_grant_is_refused_before_any_lookup(dns: FakeDNS) -> None:
    granted = EgressPolicy(hosts=frozenset({"a.example"}))
    granted.check_host("A.EXAMPLE.")
    with pytest.raises(EgressDenied) as refused:
        await fetch(granted, "https://b.example/path")
    assert str(refused.value) == (
        "http_request to b.example refused: host b.example is not in this workflow's granted egress (a.example); "
        "add it to spec.permissions.egress and have a person grant it"
    )
    assert dns.lookups == []


async def test_a_granted_host_is_reached_on_the_checked_address(dns: FakeDNS, port: int) -> None:
    # The first answer is the one checked and connected to; a later, different answer is never asked for.
    dns.answers["a.example"] = [["127.0.0.1"], ["127.0.0.2"]]
    policy = EgressPolicy(hosts=frozenset({"a.example"}), allow_internal=("a.example",))
    response = await fetch(policy, f"http://a.example:{port}/echo")
    assert response["status"] == 200 and response["body"]["host"] == f"a.example:{port}"
    assert dns.lookups == ["a.example"]


# --- the operator's opening -----------------------------------------------------------------------


async def test_an_opened_address_or_range_is_reachable(port: int) -> None:
    for opened in ("127.0.0.1", "127.0.0.0/8"):
        policy = EgressPolicy.from_settings(Settings(egress_allow_internal=(opened,)), hosts=None)
        response = await fetch(policy, f"http://127.0.0.1:{port}/echo")
        assert response["status"] == 200 and response["body"]["host"] == f"127.0.0.1:{port}"
    with pytest.raises(EgressDenied, match=r"127\.0\.0\.2 is a loopback address"):
        await EgressPolicy(hosts=None, allow_internal=("127.0.0.1",)).resolve("127.0.0.2", port)


async def test_metadata_stays_closed_unless_its_exact_address_is_listed(dns: FakeDNS) -> None:
    link_local = EgressPolicy(hosts=None, allow_internal=("169.254.0.0/16", "fd00::/8", "0.0.0.0/0"))
    assert await link_local.resolve("169.254.1.1", 80) == [ipaddress.ip_address("169.254.1.1")]
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        with pytest.raises(EgressDenied, match="cloud metadata stays closed unless an operator lists this exact"):
            await link_local.resolve(address, 80)
    exact = EgressPolicy(hosts=None, allow_internal=("169.254.169.254",))
    assert await exact.resolve("169.254.169.254", 80) == [ipaddress.ip_address("169.254.169.254")]
    # An opened name may resolve to internal addresses, but not to metadata.
    dns.answers["ollama.lan"] = [["169.254.169.254"]]
    with pytest.raises(EgressDenied, match=r"ollama\.lan resolves to 169\.254\.169\.254, a cloud metadata address"):
        await EgressPolicy(hosts=None, allow_internal=("ollama.lan",)).resolve("ollama.lan", 80)


async def test_the_opening_comes_from_the_operator_setting() -> None:
    settings = Settings.from_env({"AGENTFLOW_EGRESS_ALLOW_INTERNAL": "10.0.0.0/8, Ollama.LAN ::1"})
    policy = EgressPolicy.from_settings(settings, hosts=["API.example.com", "*.Slack.com"])
    assert policy.hosts == frozenset({"api.example.com", "*.slack.com"})
    assert policy.allow_internal == ("10.0.0.0/8", "Ollama.LAN", "::1")
    assert await policy.resolve("10.1.2.3", 80) == [ipaddress.ip_address("10.1.2.3")]
    with pytest.raises(SettingsError, match="AGENTFLOW_EGRESS_ALLOW_INTERNAL entry 'not a/host'"):
        EgressPolicy(hosts=None, allow_internal=("not a/host",))


# --- redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "refusal"),
    [
        ("http://127.0.0.1:{port}/echo", "127.0.0.1 is a loopback address"),
        ("http://127.0.0.2:{port}/echo", "127.0.0.2 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/echo", "is an IPv4-mapped loopback address"),
        ("http://0x7f.1:{port}/echo", "0x7f.1 is 127.0.0.1: 127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://metadata.google.internal/", "metadata.google.internal is a cloud metadata name"),
        ("ftp://localhost/file", "only http:// and https:// URLs may be fetched"),
    ],
)
async def test_every_redirect_hop_is_checked(dns: FakeDNS, port: int, location: str, refusal: str) -> None:
    # The server is opened by its name only; a redirect to any other internal address is refused at the hop.
    policy = EgressPolicy(hosts=None, allow_internal=("localhost",))
    start = redirect(port, location.format(port=port))
    with pytest.raises(EgressDenied) as refused:
        await fetch(policy, start, follow_redirects=True)
    assert f"(a redirect from {start}) refused: " in str(refused.value)
    assert refusal in str(refused.value)
    assert dns.lookups == []


async def test_a_redirect_outside_the_grant_is_refused(dns: FakeDNS, port: int) -> None:
    policy = EgressPolicy(hosts=frozenset({"localhost"}), allow_internal=("localhost",))
    with pytest.raises(EgressDenied, match=r"host b.example is not in this workflow's granted egress \(localhost\)"):
        await fetch(policy, redirect(port, "https://b.example/"), follow_redirects=True)
    assert dns.lookups == []


async def test_an_unfollowed_redirect_comes_back_as_is(port: int) -> None:
    policy = EgressPolicy(hosts=None, allow_internal=("localhost",))
    response = await fetch(policy, redirect(port, "http://169.254.169.254/"))
    assert (response["status"], response["headers"]["location"]) == (302, "http://169.254.169.254/")


@pytest.mark.parametrize(
    ("status", "method", "body"),
    [(303, "GET", ""), (302, "GET", ""), (301, "GET", ""), (307, "POST", '{"a":1}'), (308, "POST", '{"a":1}')],
)
async def test_redirect_methods(port: int, status: int, method: str, body: str) -> None:
    policy = EgressPolicy(hosts=None, allow_internal=("localhost",))
    response = await fetch(policy, redirect(port, "/echo", status), method="POST", json={"a": 1}, follow_redirects=True)
    assert (response["body"]["method"], response["body"]["body"]) == (method, body)


async def test_credentials_do_not_follow_a_redirect_to_another_origin(port: int) -> None:
    policy = EgressPolicy(hosts=None, allow_internal=("localhost", "127.0.0.1"))
    headers = {"Authorization": "Bearer secret"}
    same = await fetch(policy, redirect(port, "/echo"), headers=headers, follow_redirects=True)
    assert same["body"]["authorization"] == "Bearer secret"
    other = await fetch(policy, redirect(port, f"http://127.0.0.1:{port}/echo"), headers=headers, follow_redirects=True)
    assert other["body"] == {"method": "GET", "host": f"127.0.0.1:{port}", "authorization": None, "body": ""}


async def test_redirects_are_bounded(port: int) -> None:
    policy = EgressPolicy(hosts=None, allow_internal=("localhost",))
    with pytest.raises(ToolError, match="failed: TooManyRedirects: more than 5 redirects"):
        await fetch(policy, f"http://localhost:{port}/loop", follow_redirects=True)


# --- TLS to a pinned address ----------------------------------------------------------------------


class _TLSServer:
    """HTTPS on 127.0.0.1 with a certificate for `pinned.test`; records the SNI and Host each request carried."""

    def __init__(self, directory: Path) -> None:
        self.certificate = directory / "cert.pem"
        key = _self_signed(self.certificate, directory / "key.pem")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, key)
        self.seen: list[tuple[str | None, str | None]] = []
        sni: list[str | None] = []

        def record_sni(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
            sni.append(name)

        context.sni_callback = record_sni
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((sni[-1] if sni else None, self.headers.get("host")))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> _TLSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _self_signed(certificate: Path, key_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinned.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("pinned.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[_TLSServer]:
    with _TLSServer(tmp_path) as server:
        yield server


async def test_tls_verifies_the_name_while_connecting_to_the_checked_address(
    dns: FakeDNS, tls_server: _TLSServer
) -> None:
    dns.answers["pinned.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    policy = EgressPolicy(hosts=frozenset({"pinned.test"}), allow_internal=("pinned.test", "127.0.0.1"))
    trusted = ssl.create_default_context(cafile=tls_server.certificate)
    async with guarded_stream(
        policy, "GET", f"https://pinned.test:{tls_server.port}/", timeout=10, follow_redirects=False, verify=trusted
    ) as response:
        assert response.status_code == 200 and await response.aread() == b"ok"
    assert tls_server.seen == [("pinned.test", f"pinned.test:{tls_server.port}")]
    assert dns.lookups == ["pinned.test"]
    # The same address under another name fails verification: the certificate is checked against the name.
    policy = EgressPolicy(hosts=None, allow_internal=("127.0.0.1",))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        async with guarded_stream(
            policy, "GET", f"https://127.0.0.1:{tls_server.port}/", timeout=10, follow_redirects=False, verify=trusted
        ):
            pass
