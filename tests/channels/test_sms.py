"""The Twilio channel against a fake Messages API: the form it posts, every documented error."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.base import Limits, OutboundMessage
from channels.sms import TwilioChannel, build, verify_twilio_signature
from tests.fakes.twilio import FakeTwilio, Reply, error

TO = "+4915112345678"
FROM = "+15550001111"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as fake:
        yield fake


def channel(
    fake: FakeTwilio, session: aiohttp.ClientSession, timeout_s: float = 5.0, **keys: Any
) -> TwilioChannel:
    config: dict[str, Any] = {
        "base_url": fake.base_url,
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from": FROM,
    }
    config.update(keys)
    config = {k: v for k, v in config.items() if v is not None}
    return TwilioChannel("sms", config, Limits(timeout_s=timeout_s), session)


def outbound(
    text: str = "Your cart is waiting: https://t.example/c/1", to: str = TO
) -> OutboundMessage:
    return OutboundMessage(
        id="m-1",
        channel="sms",
        user_id="u-1",
        rule="cart_abandoned",
        category="marketing",
        addresses=[to],
        payload={"text": text, "segments": 1, "encoding": "GSM-7"},
    )


async def test_posts_the_form_and_keeps_the_sid(
    twilio: FakeTwilio, session: aiohttp.ClientSession
) -> None:
    outcome = await channel(twilio, session).send(outbound("Привет! Ваша корзина ждёт"))

    assert outcome.kind == "accepted"
    assert outcome.provider_id == "SM" + "1".zfill(32)
    assert outcome.detail == "queued"
    [request] = twilio.requests
    assert request.form == {"To": TO, "From": FROM, "Body": "Привет! Ваша корзина ждёт"}
    assert request.content_type.startswith("application/x-www-form-urlencoded")
    assert request.accept == "application/json"


async def test_messaging_service_and_status_callback(
    twilio: FakeTwilio, session: aiohttp.ClientSession
) -> None:
    ch = channel(
        twilio,
        session,
        **{
            "from": None,
            "messaging_service_sid": "MG" + "b" * 32,
            "status_callback": "https://kaskad.shop.example/v1/receipts/twilio",
        },
    )

    outcome = await ch.send(outbound())

    assert (outcome.kind, outcome.detail) == ("accepted", "accepted")
    assert twilio.requests[0].form == {
        "To": TO,
        "Body": outbound().payload["text"],
        "MessagingServiceSid": "MG" + "b" * 32,
        "StatusCallback": "https://kaskad.shop.example/v1/receipts/twilio",
    }


async def test_a_wrong_auth_token_is_a_config_error(
    twilio: FakeTwilio, session: aiohttp.ClientSession
) -> None:
    outcome = await channel(twilio, session, auth_token="stale").send(outbound())

    assert outcome.kind == "config_error"
    assert "20003" in outcome.detail
    assert twilio.requests == []


async def test_a_wrong_base_url_path_is_a_rejected_message(
    twilio: FakeTwilio, session: aiohttp.ClientSession
) -> None:
    ch = channel(twilio, session, base_url=twilio.base_url + "/prefix")

    outcome = await ch.send(outbound())

    # 20404 is "another 4xx" in PROVIDERS.md; a wrong base_url shows in the detail.
    assert outcome.kind == "reject_message"
    assert "20404" in outcome.detail and "/prefix/2010-04-01" in outcome.detail
    assert twilio.requests == []


# (canned answer, outcome kind, opt_out, after_s): every error PROVIDERS.md names, plus the
# malformed answers a proxy or a half-dead server produces.
ANSWERS = [
    (
        error(21610, 400, "Attempt to send to unsubscribed recipient"),
        "reject_recipient",
        True,
        None,
    ),
    (error(21211, 400, "Invalid 'To' Phone Number"), "reject_recipient", False, None),
    (error(21612, 400, "'To' number is not reachable via SMS"), "reject_recipient", False, None),
    (
        error(21614, 400, "'To' number is not a valid mobile number"),
        "reject_recipient",
        False,
        None,
    ),
    (error(20003, 401, "Authenticate"), "config_error", False, None),
    (error(21608, 400, "The number is unverified"), "config_error", False, None),
    (Reply(401, "Unauthorized"), "config_error", False, None),
    (error(20429, 429, "Too Many Requests", **{"Retry-After": "7"}), "retry", False, 7.0),
    (Reply(429, "", {"Retry-After": "2.5"}), "retry", False, 2.5),
    (Reply(429, "", {"Retry-After": "soon"}), "retry", False, None),
    (error(20500, 500, "Internal Server Error"), "retry", False, None),
    (Reply(502, "<html>Bad Gateway</html>"), "retry", False, None),
    (Reply(503, "", {"Retry-After": "120"}), "retry", False, 120.0),
    (error(21617, 400, "Message body exceeds 1600 characters"), "reject_message", False, None),
    (error(21606, 400, "'From' is not a message-capable number"), "reject_message", False, None),
    (Reply(400, '{"code": 21211, "message": "Invalid'), "reject_message", False, None),
    (Reply(404, "Not Found"), "reject_message", False, None),
    (Reply(301, "", {"Location": "https://api.twilio.com/"}), "config_error", False, None),
    (Reply(201, '{"sid": "SM00000000000000000000000000000001", "sta'), "retry", False, None),
    (Reply(201, {"status": "queued"}), "retry", False, None),
    (Reply(201, ["SM1"]), "retry", False, None),
    (Reply(200, ""), "retry", False, None),
]


@pytest.mark.parametrize(("reply", "kind", "opt_out", "after_s"), ANSWERS)
async def test_answers_map_to_outcomes(
    twilio: FakeTwilio,
    session: aiohttp.ClientSession,
    reply: Reply,
    kind: str,
    opt_out: bool,
    after_s: float | None,
) -> None:
    twilio.script[TO] = [reply]

    outcome = await channel(twilio, session).send(outbound())

    assert (outcome.kind, outcome.opt_out, outcome.after_s) == (kind, opt_out, after_s)
    assert outcome.dead_addresses == ((TO,) if kind == "reject_recipient" else ())
    assert outcome.detail
    if isinstance(reply.body, dict) and "code" in reply.body:
        assert str(reply.body["code"]) in outcome.detail
    if 200 <= reply.status < 300:
        assert outcome.detail.startswith("malformed answer")


async def test_script_is_per_recipient(twilio: FakeTwilio, session: aiohttp.ClientSession) -> None:
    twilio.script["+15550009999"] = [error(21211, 400, "Invalid 'To' Phone Number")]
    ch = channel(twilio, session)

    assert (await ch.send(outbound(to="+15550009999"))).kind == "reject_recipient"
    assert (await ch.send(outbound())).kind == "accepted"


async def test_an_answer_slower_than_the_timeout_is_a_retry(
    twilio: FakeTwilio, session: aiohttp.ClientSession
) -> None:
    twilio.script[TO] = [Reply(delay_s=5.0)]

    outcome = await channel(twilio, session, timeout_s=0.2).send(outbound())

    assert outcome.kind == "retry"
    assert outcome.detail == "timeout after 0.2 s"


async def test_connection_refused_is_a_retry(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {"base_url": f"http://127.0.0.1:{port}", "account_sid": "AC1", "auth_token": "t"}
    ch = TwilioChannel("sms", {**config, "from": FROM}, Limits(timeout_s=2.0), session)

    outcome = await ch.send(outbound())

    assert outcome.kind == "retry"
    assert "ClientConnectorError" in outcome.detail


@pytest.fixture
async def raw_http() -> AsyncIterator[tuple[list[bytes], int]]:
    """A TCP server answering each connection with the next canned bytes, then hanging up."""
    answers: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield answers, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # the connection is reset before any answer
        b'HTTP/1.1 201 Created\r\nContent-Length: 200\r\n\r\n{"sid": "SM1',  # cut short
        b"HTTP/1.1 201 Cre",  # cut inside the status line
    ],
    ids=["reset", "truncated-body", "truncated-status"],
)
async def test_a_broken_connection_is_a_retry(
    raw_http: tuple[list[bytes], int], session: aiohttp.ClientSession, answer: bytes
) -> None:
    answers, port = raw_http
    answers.append(answer)
    config = {"base_url": f"http://127.0.0.1:{port}", "account_sid": "AC1", "auth_token": "t"}
    ch = TwilioChannel("sms", {**config, "from": FROM}, Limits(timeout_s=2.0), session)

    outcome = await ch.send(outbound())

    assert outcome.kind == "retry"


@pytest.mark.parametrize(
    ("text", "detail"),
    [("", "text is empty"), ("x" * 1601, "text is 1601 characters, over 1600")],
)
async def test_unsendable_text_is_refused_before_posting(
    twilio: FakeTwilio, session: aiohttp.ClientSession, text: str, detail: str
) -> None:
    outcome = await channel(twilio, session).send(outbound(text))

    assert (outcome.kind, outcome.detail) == ("reject_message", detail)
    assert twilio.requests == []


# Twilio's published example (twilio-python/-php/-csharp RequestValidator tests).
SIGNED_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
SIGNED_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


@pytest.mark.parametrize(
    ("token", "url", "params", "signature", "valid"),
    [
        ("12345", SIGNED_URL, SIGNED_PARAMS, SIGNATURE, True),
        ("12345", SIGNED_URL, dict(reversed(SIGNED_PARAMS.items())), SIGNATURE, True),
        ("12345", SIGNED_URL, {**SIGNED_PARAMS, "Digits": "9999"}, SIGNATURE, False),
        ("12345", SIGNED_URL, {**SIGNED_PARAMS, "Extra": ""}, SIGNATURE, False),
        ("12345", SIGNED_URL + "&baz=3", SIGNED_PARAMS, SIGNATURE, False),
        ("54321", SIGNED_URL, SIGNED_PARAMS, SIGNATURE, False),
        ("12345", SIGNED_URL, SIGNED_PARAMS, "", False),
        ("12345", SIGNED_URL, SIGNED_PARAMS, "подпись", False),
    ],
    ids=["vector", "order", "tampered", "added", "url", "token", "empty", "non-ascii"],
)
def test_verify_twilio_signature(
    token: str, url: str, params: dict[str, str], signature: str, valid: bool
) -> None:
    assert verify_twilio_signature(token, url, params, signature) is valid


VALID = {"account_sid": "AC1", "auth_token": "t0ken", "from": FROM}


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"auth_token": "t", "from": FROM}, "channels.sms.account_sid: required"),
        ({"account_sid": "AC1", "from": FROM}, "channels.sms.auth_token: required"),
        ({**VALID, "auth_token": ""}, "channels.sms.auth_token: required"),
        ({"account_sid": "AC1", "auth_token": "t"}, "channels.sms.from: required (or messaging_"),
        ({**VALID, "messaging_service_sid": "MG1"}, "channels.sms.from: set either from or"),
        ({**VALID, "base_url": "api.twilio.com"}, "channels.sms.base_url: expected an http(s) URL"),
        ({**VALID, "status_callback": "ftp://x"}, "channels.sms.status_callback: expected an http"),
        ({**VALID, "from": 15550001111}, "channels.sms.from: expected text, got int"),
        ({**VALID, "acount_sid": "x"}, "channels.sms.acount_sid: unknown key (did you mean 'acc"),
    ],
)
async def test_config_errors_name_the_key(
    session: aiohttp.ClientSession, keys: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError) as raised:
        TwilioChannel("sms", keys, None, session)
    assert str(raised.value).startswith(error)


async def test_build_uses_the_default_base_url_and_hides_the_token(
    session: aiohttp.ClientSession,
) -> None:
    ch = build("sms", {**VALID, "provider": "twilio", "timeout_s": 3}, Limits(), session)

    assert (ch.name, ch.provider) == ("sms", "twilio")
    assert isinstance(ch, TwilioChannel)
    assert ch.config.base_url == "https://api.twilio.com"
    assert "t0ken" not in repr(ch) and "t0ken" not in repr(ch.config)
