"""Email over SMTP (aiosmtplib): one connection per message, every reply mapped to an outcome."""

from __future__ import annotations

import html
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Literal

import aiosmtplib

from ._common import check_keys, optional_text
from .base import Channel, Limits, OutboundMessage, Outcome

TlsMode = Literal["starttls", "tls", "none"]
_TLS_MODES: tuple[TlsMode, ...] = ("starttls", "tls", "none")
# Submission ports: 587 with STARTTLS (RFC 6409), 465 with implicit TLS (RFC 8314).
_DEFAULT_PORT: dict[TlsMode, int] = {"starttls": 587, "tls": 465, "none": 587}
_KEYS = frozenset(
    {"host", "port", "tls", "username", "password", "from", "reply_to", "validate_certs"}
    | {"unsubscribe_mailto"}
)
# The engine owns the MIME structure; a header of the same name would break it.
_MSGID_SAFE = re.compile(r"[A-Za-z0-9._+-]{1,200}")  # fits a Message-ID's left side as is
_STRUCTURAL = frozenset({"content-type", "content-transfer-encoding", "mime-version"})
# RFC 3463 enhanced status code at the start of the reply text ("5.1.1 User unknown").
_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_SENDER_CODES = frozenset({"5.1.7", "5.1.8"})  # bad sender mailbox / system: our From, not theirs
_TOO_BIG = frozenset({"5.2.3", "5.3.4"})  # message too large: retrying it cannot help
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
Stage = Literal["session", "rcpt", "data"]


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    sender: str  # the From header, e.g. "Shop <news@shop.example>"
    port: int = 587
    tls: TlsMode = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    reply_to: str | None = None
    validate_certs: bool = True
    unsubscribe_mailto: str | None = None  # "mailto:unsubscribe@shop.example"

    @classmethod
    def parse(cls, name: str, keys: Mapping[str, Any]) -> SmtpConfig:
        """Validate `channels.NAME`; ValueError names the key and what was expected."""

        def where(key: str) -> str:
            return f"channels.{name}.{key}"

        check_keys(name, keys, _KEYS)
        host = optional_text(keys, "host", where)
        if host is None:
            raise ValueError(f"{where('host')}: required")
        tls = keys.get("tls", "starttls")
        if tls not in _TLS_MODES:
            raise ValueError(
                f"{where('tls')}: expected one of {', '.join(_TLS_MODES)}, got {tls!r}"
            )
        port = _port(keys.get("port", _DEFAULT_PORT[tls]), where("port"))
        sender = optional_text(keys, "from", where)
        if sender is None:
            raise ValueError(f"{where('from')}: required")
        if _domain(sender) is None:
            raise ValueError(
                f"{where('from')}: expected an address like 'Shop <news@shop.example>'"
            )
        reply_to = optional_text(keys, "reply_to", where)
        if reply_to is not None and _domain(reply_to) is None:
            raise ValueError(f"{where('reply_to')}: expected an e-mail address")
        username = optional_text(keys, "username", where)
        password = optional_text(keys, "password", where)
        if username is not None and password is None:
            raise ValueError(f"{where('password')}: required when username is set")
        if password is not None and username is None:
            raise ValueError(f"{where('username')}: required when password is set")
        mailto = optional_text(keys, "unsubscribe_mailto", where)
        if mailto is not None:
            mailto = mailto.removeprefix("mailto:")
            addr = mailto.split("?", 1)[0]  # "unsubscribe@shop.example?subject=stop" is fine
            if _domain(addr) is None or parseaddr(addr)[1] != addr:
                raise ValueError(f"{where('unsubscribe_mailto')}: expected an e-mail address")
            mailto = f"mailto:{mailto}"
        return cls(
            host=host,
            sender=sender,
            port=port,
            tls=tls,
            username=username,
            password=password,
            reply_to=reply_to,
            validate_certs=_flag(keys.get("validate_certs", True), where("validate_certs")),
            unsubscribe_mailto=mailto,
        )


class SmtpChannel:
    provider = "smtp"

    def __init__(
        self,
        name: str,
        keys: Mapping[str, Any],
        limits: Limits | None = None,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.limits = limits or Limits()
        self.config = SmtpConfig.parse(name, keys)
        self._now = now

    def __repr__(self) -> str:
        c = self.config
        return f"SmtpChannel(name={self.name!r}, host={c.host!r}, port={c.port}, tls={c.tls!r})"

    async def send(self, message: OutboundMessage) -> Outcome:
        if not message.addresses:
            return Outcome.reject_recipient("no address")
        to = str(message.addresses[0])
        if _domain(to) is None or parseaddr(to)[1] != to:
            return Outcome.reject_recipient("not an e-mail address", dead=(to,))
        try:
            mail = self.compose(message, to)
        except ValueError as exc:  # a header with a line break, an unparsable From override
            return Outcome.reject_message(f"cannot compose the message: {exc}")
        c = self.config
        try:
            refused, reply = await aiosmtplib.send(
                mail,
                sender=parseaddr(str(mail["From"]))[1],
                recipients=[to],
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.tls == "tls",
                start_tls=c.tls == "starttls",
                validate_certs=c.validate_certs,
                timeout=self.limits.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return _classify(first.code, first.message, "rcpt", to)
        except aiosmtplib.SMTPAuthenticationError as exc:
            if 400 <= exc.code < 500:  # 454 temporary authentication failure
                return Outcome.retry(detail=f"{exc.code} {exc.message}")
            return Outcome.config_error(f"authentication failed: {exc.code} {exc.message}")
        except aiosmtplib.SMTPDataError as exc:
            return _classify(exc.code, exc.message, "data", to)
        except aiosmtplib.SMTPResponseException as exc:  # greeting, HELO, MAIL FROM
            return _classify(exc.code, exc.message, "session", to)
        except aiosmtplib.SMTPNotSupported as exc:  # SMTPUTF8 needed, server lacks it
            return Outcome.reject_message(str(exc))
        except (TimeoutError, OSError) as exc:  # aiosmtplib's network errors are OSErrors
            cert = _cert_error(exc)
            if cert is not None:  # retrying cannot fix a certificate
                return Outcome.config_error(f"TLS certificate rejected: {cert.verify_message}")
            return Outcome.retry(detail=f"{type(exc).__name__}: {exc}")
        except aiosmtplib.SMTPException as exc:  # no STARTTLS / AUTH offered: set-up mismatch
            return Outcome.config_error(str(exc))
        if refused:  # unreachable with one recipient, kept so a refusal is never "accepted"
            response = next(iter(refused.values()))
            return _classify(response.code, response.message, "rcpt", to)
        return Outcome.accepted(str(mail["Message-ID"]), detail=reply)

    def compose(self, message: OutboundMessage, to: str) -> EmailMessage:
        """The MIME message for one recipient; ValueError when the payload cannot make one."""
        payload = message.payload
        sender = str(payload.get("from") or self.config.sender)
        domain = _domain(sender)
        if domain is None:
            raise ValueError(f"from: {sender!r} is not an address")
        subject = str(payload.get("subject") or "")
        if not subject:
            raise ValueError("subject is empty")
        text, body = payload.get("text"), payload.get("html")
        if not text and not body:
            raise ValueError("neither text nor html")
        mail = EmailMessage()
        mail["From"] = sender
        mail["To"] = to
        mail["Subject"] = subject
        reply_to = payload.get("reply_to") or self.config.reply_to
        if reply_to:
            mail["Reply-To"] = str(reply_to)
        mail["Date"] = format_datetime(datetime.fromtimestamp(self._now(), UTC))
        # The message id in it: every attempt of this message (a retry, a replica taking
        # over a send) carries the same Message-ID, which receivers deduplicate on.
        mail["Message-ID"] = (
            f"<{message.id}@{domain}>"
            if _MSGID_SAFE.fullmatch(message.id) and domain
            else make_msgid(domain=domain)
        )
        for header, value in message.headers.items():
            if header.lower() in _STRUCTURAL:
                continue
            del mail[header]
            if header.lower() == "list-unsubscribe":
                self._list_unsubscribe(mail, value)
            else:
                mail[header] = value
        if body and payload.get("preheader"):
            body = _with_preheader(str(body), str(payload["preheader"]))
        if text:
            mail.set_content(str(text))
            if body:
                mail.add_alternative(str(body), subtype="html")
        else:
            mail.set_content(str(body), subtype="html")
        return mail

    def _list_unsubscribe(self, mail: EmailMessage, url: str) -> None:
        # RFC 8058 one-click: the https URI receives POST "List-Unsubscribe=One-Click";
        # the mailto is the RFC 2369 fallback for clients without one-click support.
        targets = [f"<{url.strip().strip('<>')}>"]
        if self.config.unsubscribe_mailto:
            targets.append(f"<{self.config.unsubscribe_mailto}>")
        mail["List-Unsubscribe"] = ", ".join(targets)
        del mail["List-Unsubscribe-Post"]
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"

    async def close(self) -> None:
        return None  # a connection lives for one message only


def _classify(code: int, text: str, stage: Stage, address: str) -> Outcome:
    """One SMTP reply -> outcome (PROVIDERS.md); the enhanced code decides before the basic one."""
    detail = f"{code} {text}".strip()
    match = _ENHANCED.match(text)
    enhanced = match.group(1) if match else None
    if 400 <= code < 500:
        return Outcome.retry(detail=detail)
    if code < 400:
        return Outcome.retry(detail=f"unexpected reply {detail}")
    if stage == "session" or enhanced in _SENDER_CODES:
        # Refused before any recipient was named, or our sender refused: nothing to do with
        # this message or address, and every next message would fail the same way.
        return Outcome.config_error(detail)
    if enhanced in _TOO_BIG:
        return Outcome.reject_message(detail)
    if enhanced == "5.2.2" or (code == 552 and enhanced is None):
        return Outcome.retry(detail=detail)  # mailbox full: may clear up
    if enhanced is not None and enhanced.startswith("5.7."):
        return Outcome.reject_message(detail)  # policy / spam: the address is fine
    if enhanced is not None and (enhanced.startswith("5.1.") or enhanced == "5.2.1"):
        return Outcome.reject_recipient(detail, dead=(address,))
    if stage == "rcpt" and enhanced is None and code in (550, 551, 553):
        return Outcome.reject_recipient(detail, dead=(address,))
    return Outcome.reject_message(detail)


def _cert_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    # aiosmtplib wraps the handshake error of implicit TLS in SMTPConnectError.
    for err in (exc, exc.__cause__, exc.__context__):
        if isinstance(err, ssl.SSLCertVerificationError):
            return err
    return None


def _with_preheader(body: str, preheader: str) -> str:
    # The preview line inboxes show after the subject, hidden in the rendered mail.
    hidden = (
        '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all" aria-hidden="true">'
        f"{html.escape(preheader)}</div>"
    )
    tag = _BODY_TAG.search(body)
    return body[: tag.end()] + hidden + body[tag.end() :] if tag else hidden + body


def _domain(address: str) -> str | None:
    _, addr = parseaddr(address)
    local, at, domain = addr.rpartition("@")
    return domain if at and local and domain and "." in domain.strip(".") else None


def _port(value: Any, where: str) -> int:
    try:
        port = int(value)  # "${SMTP_PORT}" arrives as text
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a port number, got {value!r}") from None
    if isinstance(value, bool) or not 0 < port < 65536:
        raise ValueError(f"{where}: expected a port number, got {value!r}")
    return port


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{where}: expected true or false, got {value!r}")


def build(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    """Registry factory; SMTP needs no HTTP session."""
    return SmtpChannel(name, keys, limits)
