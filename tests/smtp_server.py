"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, recording what it receives.

Plain, STARTTLS and implicit TLS (with a self-signed certificate made here), AUTH PLAIN/LOGIN,
and replies a test can set (a 550 to RCPT, a 451 to DATA...).
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.message
import email.policy
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USERNAME = "smtp-user"
PASSWORD = "smtp-password-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost; ``cert`` is also the CA file."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(
    directory: Path,
    common_name: str = "127.0.0.1",
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> Certificate:
    """A self-signed certificate valid for ``hosts`` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(names),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{common_name}-cert.pem"
    key_path = directory / f"{common_name}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_path, key_path)


@dataclass(frozen=True)
class Received:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    auth_mechanism: str | None
    # Which SMTP session carried it, numbered from 1 in the order sessions sent mail.
    session: int

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed

    def body(self, subtype: str) -> str:
        part = self.message.get_body((subtype,))
        assert part is not None, f"no text/{subtype} part"
        content = part.get_content()
        assert isinstance(content, str)
        return content.replace("\r\n", "\n")  # CRLF on the wire, lines for the reader


@dataclass
class RecordingHandler:
    """Accepts everything unless a reply is set; records each message and AUTH mechanism."""

    received: list[Received] = field(default_factory=list)
    mail_reply: str | None = None
    rcpt_reply: str | None = None
    data_reply: str | None = None
    accept_reply: str = "250 2.0.0 Ok: queued as 4QxYz1"
    # Take the message, then drop the connection instead of answering (an ambiguous failure).
    drop_after_data: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sessions: int = 0

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data_reply is not None:
            return self.data_reply
        with self._lock:
            if not hasattr(session, "test_number"):
                self._sessions += 1
                session.test_number = self._sessions
            self.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or envelope.content),
                    tls=server.transport.get_extra_info("ssl_object") is not None,
                    auth_mechanism=session.auth_data if session.authenticated else None,
                    session=session.test_number,
                )
            )
        if self.drop_after_data:
            server.transport.abort()
        return self.accept_reply

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USERNAME.encode()
            and auth_data.password == PASSWORD.encode()
        )
        # handled=False: aiosmtpd itself answers 535 to a failure.
        return AuthResult(success=ok, handled=False, auth_data=mechanism)

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    async def wait_for(self, count: int = 1, wait_seconds: float = 10.0) -> list[Received]:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while len(self.messages()) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(self.messages())} of {count} messages received")
            await asyncio.sleep(0.01)
        return self.messages()


@dataclass
class SmtpServer:
    handler: RecordingHandler
    host: str
    port: int
    controller: Controller


@contextmanager
def running_smtp_server(
    *,
    tls_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    auth: bool = False,
    auth_exclude_mechanism: list[str] | None = None,
    require_starttls: bool = False,
    port: int | None = None,
    handler: RecordingHandler | None = None,
) -> Iterator[SmtpServer]:
    """Start aiosmtpd in its own thread and event loop on a free port; stop it afterwards.

    ``tls_context`` offers STARTTLS (or, with ``implicit_tls``, TLS from the first byte).
    ``auth`` offers AUTH; with TLS it is also required before MAIL FROM (aiosmtpd warns when
    AUTH is required on a plain session, and warnings are errors here).
    """
    handler = handler or RecordingHandler()
    port = port or free_port()
    options: dict[str, Any] = {}
    if tls_context is not None and not implicit_tls:
        options["tls_context"] = tls_context
        options["require_starttls"] = require_starttls
    if auth:
        options["authenticator"] = handler.authenticator
        options["auth_required"] = tls_context is not None
        options["auth_require_tls"] = tls_context is not None
        if auth_exclude_mechanism:
            options["auth_exclude_mechanism"] = auth_exclude_mechanism
    controller = Controller(
        handler,
        # Its own loop: aiosmtpd would otherwise take the test's running loop.
        loop=asyncio.new_event_loop(),
        hostname="127.0.0.1",
        port=port,
        ssl_context=tls_context if implicit_tls else None,
        **options,
    )
    controller.start()
    try:
        yield SmtpServer(handler=handler, host="127.0.0.1", port=port, controller=controller)
    finally:
        controller.stop()
