"""A real SMTP server (aiosmtpd) on 127.0.0.1 and an ephemeral port, scriptable per recipient."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_HOLD_MAX_S = 60.0  # a held reply is released by then even if the test forgot to


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    authenticated: bool


@dataclass
class Script:
    """What the server answers for one recipient (None: the usual 250)."""

    rcpt: str | None = None  # e.g. "550 5.1.1 User unknown"
    data: str | None = None  # the reply at the end of DATA, e.g. "554 5.7.1 Spam"
    delay_s: float = 0.0  # sleep inside DATA before answering: a timeout for the client
    # Keep the message (and tell `on_received`), then answer DATA only once this is set: the
    # mail is in the mailbox while the sender still waits for the server's reply.
    hold: threading.Event | None = None


class _PortZeroController(Controller):
    def _trigger_server(self) -> None:
        # Bound to port 0: learn the port the OS picked before aiosmtpd connects to it.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class FakeSmtp:
    """Usage: `with FakeSmtp(...) as smtp:`; then `smtp.port`, `smtp.received`, `smtp.script`."""

    username: str | None = None
    password: str | None = None
    starttls_context: ssl.SSLContext | None = None  # offer (and require) STARTTLS
    implicit_tls_context: ssl.SSLContext | None = None  # TLS from the first byte (port 465)
    mail_reply: str | None = None  # answer to MAIL FROM, e.g. "553 5.1.8 Sender domain unknown"
    script: dict[str, Script] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    auth_attempts: list[tuple[str, str]] = field(default_factory=list)
    # Called with each message kept, on aiosmtpd's own thread: hand it to the test's loop with
    # loop.call_soon_threadsafe.
    on_received: Callable[[Received], None] | None = None
    host: str = "127.0.0.1"
    port: int = 0
    _queued: int = 0
    _controller: Controller | None = None

    def __enter__(self) -> FakeSmtp:
        kwargs: dict[str, Any] = {}
        if self.username is not None:
            # Auth is enforced in handle_MAIL: aiosmtpd's auth_required without TLS warns.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        if self.starttls_context is not None:
            kwargs.update(tls_context=self.starttls_context, require_starttls=True)
        controller = _PortZeroController(
            self,
            hostname=self.host,
            port=0,
            ssl_context=self.implicit_tls_context,
            server_hostname="fake-smtp.test",
            **kwargs,
        )
        controller.start()
        self._controller = controller
        self.port = controller.port
        return self

    def __exit__(self, *exc: object) -> None:
        for script in self.script.values():
            if script.hold is not None:
                script.hold.set()  # no held reply outlives the server
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        self.auth_attempts.append((mechanism, login))
        if (login, password) == (self.username, self.password):
            return AuthResult(success=True)
        # handled=False lets aiosmtpd answer 535; handled=True would leave the client hanging.
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        if self.username is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        script = self.script.get(address)
        if script is not None and script.rcpt is not None:
            return script.rcpt
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        script = self.script.get(envelope.rcpt_tos[0], Script())
        if script.delay_s:
            await asyncio.sleep(script.delay_s)  # cancelled by stop(), never awaited in full
        if script.data is not None:
            return script.data
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        received = Received(
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            message=parsed,
            raw=raw,
            # STARTTLS sets session.ssl; implicit TLS shows on the transport only.
            tls=session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            authenticated=bool(session.authenticated),
        )
        self.received.append(received)
        self._queued += 1
        queue_id = f"Q{self._queued:05d}"
        if self.on_received is not None:
            self.on_received(received)
        if script.hold is not None:
            # A thread waits on the test's Event, so this server's loop keeps serving others.
            await asyncio.get_running_loop().run_in_executor(None, script.hold.wait, _HOLD_MAX_S)
        return f"250 2.0.0 Ok: queued as {queue_id}"


def self_signed_server_context(directory: Path) -> ssl.SSLContext:
    """A server TLS context for "localhost"/127.0.0.1 with a throwaway self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
