"""The SMTP channel against a real aiosmtpd server: MIME, headers, auth, TLS, every reply class."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from channels.base import Limits, OutboundMessage
from channels.email import SmtpChannel, build
from tests.fakes.smtp import FakeSmtp, Script, self_signed_server_context

TO = "anna@example.org"
FROM = "Shop <news@shop.example>"


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with FakeSmtp() as fake:
        yield fake


NOW = 1_700_000_000.0


def channel(fake: FakeSmtp, timeout_s: float = 5.0, **keys: Any) -> SmtpChannel:
    config: dict[str, Any] = {"host": fake.host, "port": fake.port, "tls": "none", "from": FROM}
    config.update(keys)
    return SmtpChannel("email", config, Limits(timeout_s=timeout_s), now=lambda: NOW)


def outbound(
    to: str = TO, headers: dict[str, str] | None = None, **payload: Any
) -> OutboundMessage:
    body = {"subject": "Your cart is waiting", "text": "Plain words", "html": "<p>Rich words</p>"}
    body.update(payload)
    return OutboundMessage(
        id="m-1",
        channel="email",
        user_id="u-1",
        rule="cart_abandoned",
        category="marketing",
        addresses=[to],
        payload={k: v for k, v in body.items() if v is not None},
        headers=headers or {},
    )


async def test_sends_a_multipart_alternative_message(smtp: FakeSmtp) -> None:
    outcome = await channel(smtp).send(outbound())

    assert outcome.kind == "accepted"
    [got] = smtp.received
    mail = got.message
    assert outcome.provider_id == mail["Message-ID"]
    assert outcome.provider_id == "<m-1@shop.example>"  # every attempt: receivers dedupe
    assert outcome.detail == "2.0.0 Ok: queued as Q00001"
    assert (got.mail_from, got.rcpt_tos) == ("news@shop.example", [TO])
    assert (mail["From"], mail["To"]) == (FROM, TO)
    assert mail["Subject"] == "Your cart is waiting"
    assert mail["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert mail.get_content_type() == "multipart/alternative"
    parts = [(p.get_content_type(), p.get_content().strip()) for p in mail.iter_parts()]
    assert parts == [("text/plain", "Plain words"), ("text/html", "<p>Rich words</p>")]
    assert "List-Unsubscribe" not in mail


async def test_marketing_mail_gets_one_click_unsubscribe(smtp: FakeSmtp) -> None:
    ch = channel(smtp, unsubscribe_mailto="unsubscribe@shop.example")
    headers = {"List-Unsubscribe": "https://t.shop.example/u/m-1", "X-Kaskad-Message": "m-1"}

    outcome = await ch.send(outbound(headers=headers))

    assert outcome.kind == "accepted"
    mail = smtp.received[0].message
    # The generator folds the long header after the colon, hence the strip.
    assert mail["List-Unsubscribe"].strip() == (
        "<https://t.shop.example/u/m-1>, <mailto:unsubscribe@shop.example>"
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["X-Kaskad-Message"] == "m-1"


async def test_list_unsubscribe_without_a_mailto(smtp: FakeSmtp) -> None:
    headers = {"List-Unsubscribe": "<https://t.shop.example/u/m-1>"}
    await channel(smtp).send(outbound(headers=headers))

    mail = smtp.received[0].message
    assert mail["List-Unsubscribe"].strip() == "<https://t.shop.example/u/m-1>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_transactional_mail_has_no_unsubscribe_even_with_a_mailto(smtp: FakeSmtp) -> None:
    await channel(smtp, unsubscribe_mailto="unsubscribe@shop.example").send(outbound())

    mail = smtp.received[0].message
    assert "List-Unsubscribe" not in mail
    assert "List-Unsubscribe-Post" not in mail


@pytest.mark.parametrize(
    ("payload", "content_type", "body"),
    [
        ({"html": None}, "text/plain", "Plain words"),
        ({"text": None}, "text/html", "<p>Rich words</p>"),
    ],
)
async def test_one_body_makes_a_single_part_message(
    smtp: FakeSmtp, payload: dict[str, Any], content_type: str, body: str
) -> None:
    assert (await channel(smtp).send(outbound(**payload))).kind == "accepted"

    mail = smtp.received[0].message
    assert mail.get_content_type() == content_type
    assert mail.get_content().strip() == body


async def test_payload_overrides_from_and_reply_to(smtp: FakeSmtp) -> None:
    ch = channel(smtp, reply_to="care@shop.example")
    await ch.send(outbound())
    await ch.send(outbound(**{"from": "Deals <deals@deals.shop.example>", "reply_to": "x@y.org"}))

    first, second = (r.message for r in smtp.received)
    assert first["Reply-To"] == "care@shop.example"
    assert second["From"] == "Deals <deals@deals.shop.example>"
    assert second["Reply-To"] == "x@y.org"
    assert second["Message-ID"].endswith("@deals.shop.example>")
    assert smtp.received[1].mail_from == "deals@deals.shop.example"


async def test_preheader_is_hidden_at_the_top_of_the_html(smtp: FakeSmtp) -> None:
    html = "<html><body><p>Hi</p></body></html>"
    await channel(smtp).send(outbound(html=html, preheader="10% off & free <shipping>"))

    rendered = smtp.received[0].message.get_body(("html",))
    assert rendered is not None
    content = rendered.get_content()
    assert '<body><div style="display:none' in content
    assert "10% off &amp; free &lt;shipping&gt;</div><p>Hi</p>" in content


async def test_logs_in_with_the_configured_credentials() -> None:
    with FakeSmtp(username="news", password="s3cret") as fake:
        outcome = await channel(fake, username="news", password="s3cret").send(outbound())

        assert outcome.kind == "accepted"
        assert fake.received[0].authenticated
        assert fake.auth_attempts[0][1] == "news"


async def test_a_wrong_password_is_a_config_error() -> None:
    with FakeSmtp(username="news", password="s3cret") as fake:
        outcome = await channel(fake, username="news", password="wrong").send(outbound())

        assert outcome.kind == "config_error"
        assert "535" in outcome.detail
        assert fake.auth_attempts and not fake.received


async def test_no_credentials_where_the_server_requires_them_is_a_config_error() -> None:
    with FakeSmtp(username="news", password="s3cret") as fake:
        outcome = await channel(fake).send(outbound())

        assert outcome.kind == "config_error"
        assert "530" in outcome.detail


# (stage, server reply, outcome kind): every reply class of PROVIDERS.md, at the stage it comes.
SMTP_REPLIES = [
    ("rcpt", "550 5.1.1 User unknown", "reject_recipient"),
    ("rcpt", "551 5.1.6 User has moved", "reject_recipient"),
    ("rcpt", "553 5.1.3 Bad recipient address syntax", "reject_recipient"),
    ("rcpt", "550 5.2.1 Mailbox disabled", "reject_recipient"),
    ("rcpt", "550 Requested action not taken: mailbox unavailable", "reject_recipient"),
    ("rcpt", "553 Mailbox name not allowed", "reject_recipient"),
    ("rcpt", "450 4.2.1 Mailbox busy", "retry"),
    ("rcpt", "451 4.3.0 Try later", "retry"),
    ("rcpt", "452 4.5.3 Too many recipients", "retry"),
    ("rcpt", "421 4.7.0 Too many connections, closing", "retry"),
    ("rcpt", "552 5.2.2 Mailbox full", "retry"),
    ("rcpt", "550 5.7.1 Rejected by policy", "reject_message"),
    ("rcpt", "550 5.1.8 Sender address rejected: Domain not found", "config_error"),
    ("data", "554 5.7.1 Message rejected as spam", "reject_message"),
    ("data", "550 5.7.26 Unauthenticated email is not accepted", "reject_message"),
    ("data", "552 5.3.4 Message size exceeds fixed limit", "reject_message"),
    ("data", "552 5.2.2 Mailbox full", "retry"),
    ("data", "552 Requested mail action aborted: exceeded storage allocation", "retry"),
    ("data", "451 4.3.0 Local error in processing", "retry"),
    ("data", "554 Transaction failed", "reject_message"),
    ("data", "550 5.1.1 Recipient address rejected", "reject_recipient"),
    ("mail", "553 5.1.8 Sender domain does not exist", "config_error"),
    ("mail", "550 5.7.1 Sender not allowed", "config_error"),
    ("mail", "451 4.3.0 Try later", "retry"),
]


@pytest.mark.parametrize(("stage", "reply", "kind"), SMTP_REPLIES)
async def test_smtp_replies_map_to_outcomes(
    smtp: FakeSmtp, stage: str, reply: str, kind: str
) -> None:
    if stage == "mail":
        smtp.mail_reply = reply
    else:
        smtp.script[TO] = Script(**{stage: reply})

    outcome = await channel(smtp).send(outbound())

    assert outcome.kind == kind
    assert outcome.detail.startswith(reply[:3])
    assert outcome.dead_addresses == ((TO,) if kind == "reject_recipient" else ())
    assert not outcome.opt_out
    assert smtp.received == []


async def test_a_server_that_holds_the_answer_past_the_timeout_is_a_retry(smtp: FakeSmtp) -> None:
    smtp.script[TO] = Script(delay_s=5.0)

    outcome = await channel(smtp, timeout_s=0.2).send(outbound())

    assert outcome.kind == "retry"
    assert "Timeout" in outcome.detail


async def test_connection_refused_is_a_retry() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ch = SmtpChannel("email", {"host": "127.0.0.1", "port": port, "tls": "none", "from": FROM})

    outcome = await ch.send(outbound())

    assert outcome.kind == "retry"
    assert "Connect" in outcome.detail


@pytest.fixture
async def hangup_port() -> AsyncIterator[int]:
    """A TCP server that accepts and hangs up before the SMTP greeting."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_a_dropped_connection_is_a_retry(hangup_port: int) -> None:
    config = {"host": "127.0.0.1", "port": hangup_port, "tls": "none", "from": FROM}

    outcome = await SmtpChannel("email", config, Limits(timeout_s=2.0)).send(outbound())

    assert outcome.kind == "retry"


async def test_starttls_then_login(tmp_path: Path) -> None:
    context = self_signed_server_context(tmp_path)
    with FakeSmtp(username="news", password="s3cret", starttls_context=context) as fake:
        ch = channel(fake, tls="starttls", username="news", password="s3cret", validate_certs=False)
        outcome = await ch.send(outbound())

        assert outcome.kind == "accepted"
        assert fake.received[0].tls and fake.received[0].authenticated


async def test_an_untrusted_certificate_is_a_config_error(tmp_path: Path) -> None:
    with FakeSmtp(starttls_context=self_signed_server_context(tmp_path)) as fake:
        outcome = await channel(fake, tls="starttls").send(outbound())

        assert outcome.kind == "config_error"
        assert "certificate" in outcome.detail
        assert fake.received == []


async def test_implicit_tls(tmp_path: Path) -> None:
    with FakeSmtp(implicit_tls_context=self_signed_server_context(tmp_path)) as fake:
        outcome = await channel(fake, tls="tls", validate_certs="false").send(outbound())

        assert outcome.kind == "accepted"
        assert fake.received[0].tls


async def test_starttls_required_but_not_offered_is_a_config_error(smtp: FakeSmtp) -> None:
    outcome = await channel(smtp, tls="starttls").send(outbound())

    assert outcome.kind == "config_error"
    assert "STARTTLS" in outcome.detail


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (outbound(to="not-an-address"), "reject_recipient"),
        (outbound(to="Anna <anna@example.org>"), "reject_recipient"),
        (outbound(subject="Hi\r\nBcc: everyone@example.org"), "reject_message"),
        (outbound(subject=""), "reject_message"),
        (outbound(text=None, html=None), "reject_message"),
        (outbound(**{"from": "nobody"}), "reject_message"),
        (outbound(headers={"X-Evil": "a\nb"}), "reject_message"),
    ],
    ids=["no-at", "display-name", "header-injection", "no-subject", "no-body", "bad-from", "hdr"],
)
async def test_bad_input_is_refused_before_connecting(
    smtp: FakeSmtp, message: OutboundMessage, kind: str
) -> None:
    outcome = await channel(smtp).send(message)

    assert outcome.kind == kind
    assert smtp.received == []


async def test_no_address_is_a_reject_recipient(smtp: FakeSmtp) -> None:
    message = outbound()
    message.addresses = []

    assert (await channel(smtp).send(message)).kind == "reject_recipient"


VALID = {"host": "smtp.shop.example", "from": FROM}


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"from": FROM}, "channels.email.host: required"),
        ({"host": "smtp.shop.example"}, "channels.email.from: required"),
        ({**VALID, "from": "news"}, "channels.email.from: expected an address"),
        ({**VALID, "tls": "ssl"}, "channels.email.tls: expected one of starttls, tls, none"),
        ({**VALID, "port": "smtp"}, "channels.email.port: expected a port number"),
        ({**VALID, "port": 70000}, "channels.email.port: expected a port number"),
        ({**VALID, "username": "news"}, "channels.email.password: required when username"),
        ({**VALID, "password": "x"}, "channels.email.username: required when password"),
        ({**VALID, "validate_certs": "maybe"}, "channels.email.validate_certs: expected true"),
        ({**VALID, "reply_to": "care"}, "channels.email.reply_to: expected an e-mail address"),
        ({**VALID, "unsubscribe_mailto": "x"}, "channels.email.unsubscribe_mailto: expected"),
        ({**VALID, "form": FROM}, "channels.email.form: unknown key (did you mean 'from'?)"),
        ({**VALID, "host": 25}, "channels.email.host: expected text, got int"),
    ],
)
def test_config_errors_name_the_key(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError) as raised:
        SmtpChannel("email", keys)
    assert str(raised.value).startswith(error)


def test_config_defaults_and_environment_text() -> None:
    default = SmtpChannel("email", VALID).config
    assert (default.port, default.tls, default.validate_certs) == (587, "starttls", True)
    assert SmtpChannel("email", {**VALID, "tls": "tls"}).config.port == 465
    from_env = SmtpChannel(
        "email", {**VALID, "port": "2525", "validate_certs": "false", "provider": "smtp"}
    ).config
    assert (from_env.port, from_env.validate_certs) == (2525, False)
    mailto = SmtpChannel("email", {**VALID, "unsubscribe_mailto": "mailto:u@shop.example"})
    assert mailto.config.unsubscribe_mailto == "mailto:u@shop.example"


def test_the_password_never_shows() -> None:
    ch = build("email", {**VALID, "username": "news", "password": "hunter2"}, Limits(), None)

    assert ch.provider == "smtp" and ch.name == "email"
    assert "hunter2" not in repr(ch)
    assert isinstance(ch, SmtpChannel)
    assert "hunter2" not in repr(ch.config)
