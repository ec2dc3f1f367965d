"""A real SMTP server (aiosmtpd) on a loopback port that keeps what it receives, with optional STARTTLS, implicit
TLS and AUTH; and a throwaway certificate authority for it."""

from __future__ import annotations

import datetime
import email
import ipaddress
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class ServerCertificates:
    """A CA (its PEM for SSL_CERT_FILE) and a server certificate it signed for `localhost` and 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(directory: Path, names: tuple[str, ...] = ("localhost",)) -> ServerCertificates:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AgentFlow test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alternative: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternative.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = ServerCertificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    authenticated_as: str | None
    tls: bool


@dataclass
class _Mailbox:
    refuse: set[str] = field(default_factory=set)
    """Recipients answered with 550."""
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # aiosmtpd calls its hooks by these names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.lock:
            self.received.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=email.message_from_bytes(raw),
                    authenticated_as=login,
                    tls=session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                )
            )
        return "250 Message accepted"


class _BoundController(Controller):
    """aiosmtpd's Controller on a socket bound before it starts: a free port without a race for it."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        super().__init__(handler, hostname="127.0.0.1", port=self._socket.getsockname()[1], **kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._socket, ssl=self.ssl_context)

    def factory(self) -> SMTP:
        with warnings.catch_warnings():  # implicit TLS: aiosmtpd cannot see that AUTH already runs over TLS
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            return super().factory()


class FakeSMTP:
    """`with FakeSMTP(user=..., password=..., certificates=..., mode="starttls") as smtp:` then `smtp.received`."""

    def __init__(
        self,
        *,
        mode: str = "plain",
        certificates: ServerCertificates | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.mailbox = _Mailbox()
        self._credentials = (user, password)
        kwargs: dict[str, Any] = {"ready_timeout": 15}
        if mode == "starttls":
            assert certificates is not None
            kwargs.update(tls_context=certificates.server_context(), require_starttls=True)
        elif mode == "smtps":
            assert certificates is not None
            kwargs.update(ssl_context=certificates.server_context())
        if user is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=mode == "starttls")
        self._controller = _BoundController(self.mailbox, **kwargs)
        self.port: int = self._controller.port

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        given = (auth_data.login.decode(), auth_data.password.decode())
        return AuthResult(success=given == self._credentials, handled=False, auth_data=auth_data)

    @property
    def received(self) -> list[Received]:
        with self.mailbox.lock:
            return list(self.mailbox.received)

    def __enter__(self) -> FakeSMTP:
        self._controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._controller.stop()
