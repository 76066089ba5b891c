"""The webhook channel against a receiver that checks Standard Webhooks signatures on its own."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.base import Limits, OutboundMessage
from channels.webhook import WebhookChannel, build, sign, verify_webhook_signature
from tests.fakes.webhook_receiver import FakeReceiver, Reply

NOW = 1_700_000_000.0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def receiver() -> AsyncIterator[FakeReceiver]:
    async with FakeReceiver() as fake:
        yield fake


def channel(
    fake: FakeReceiver, session: aiohttp.ClientSession, timeout_s: float = 5.0, **keys: Any
) -> WebhookChannel:
    config: dict[str, Any] = {"url": fake.url, "secret": fake.secret, **keys}
    return WebhookChannel("webhook", config, Limits(timeout_s=timeout_s), session, now=lambda: NOW)


def outbound(body: Any = None) -> OutboundMessage:
    return OutboundMessage(
        id="m-42",
        channel="webhook",
        user_id="u-1",
        rule="cart_abandoned",
        category="marketing",
        addresses=["u-1"],
        payload={"body": {"event": "cart_reminder", "total": 59.9} if body is None else body},
    )


async def test_posts_signed_json(receiver: FakeReceiver, session: aiohttp.ClientSession) -> None:
    ch = channel(receiver, session, headers={"Authorization": "Bearer crm-token", "X-Shop": 7})

    outcome = await ch.send(outbound({"event": "cart_reminder", "items": ["Сумка"]}))

    assert (outcome.kind, outcome.provider_id, outcome.detail) == ("accepted", "m-42", "HTTP 200")
    [delivery] = receiver.deliveries
    assert delivery.signature_ok
    assert delivery.json == {
        "event": "cart_reminder",
        "items": ["Сумка"],
        "message_id": "m-42",
        "rule": "cart_abandoned",
        "user_id": "u-1",
    }
    headers = delivery.headers
    assert headers["webhook-id"] == "m-42"
    assert headers["Idempotency-Key"] == "m-42"  # the same on every attempt, any replica
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["Content-Type"] == "application/json"
    assert (headers["Authorization"], headers["X-Shop"]) == ("Bearer crm-token", "7")
    assert verify_webhook_signature(
        receiver.secret,
        headers["webhook-id"],
        headers["webhook-timestamp"],
        delivery.body,
        headers["webhook-signature"],
        now=NOW + 10,
    )


async def test_our_fields_win_over_the_template(
    receiver: FakeReceiver, session: aiohttp.ClientSession
) -> None:
    await channel(receiver, session).send(outbound({"user_id": "spoofed", "rule": "x", "k": 1}))

    assert receiver.deliveries[0].json == {
        "user_id": "u-1",
        "rule": "cart_abandoned",
        "k": 1,
        "message_id": "m-42",
    }


async def test_a_wrong_secret_is_refused_by_the_receiver(
    receiver: FakeReceiver, session: aiohttp.ClientSession
) -> None:
    other = "whsec_" + base64.b64encode(b"another key of 32 bytes........").decode()

    outcome = await channel(receiver, session, secret=other).send(outbound())

    # A receiver's 401 is "another 4xx" in PROVIDERS.md.
    assert outcome.kind == "reject_message"
    assert outcome.detail == "HTTP 401: bad signature"
    assert not receiver.deliveries[0].signature_ok


RETRY_DATE = "Tue, 14 Nov 2023 22:15:00 GMT"  # NOW + 100 s

# (canned answer, outcome kind, after_s)
ANSWERS = [
    (Reply(200), "accepted", None),
    (Reply(202, "queued"), "accepted", None),
    (Reply(204), "accepted", None),
    (Reply(410, "gone"), "config_error", None),
    (Reply(408), "retry", None),
    (Reply(429, "slow down", {"Retry-After": "30"}), "retry", 30.0),
    (Reply(429, "", {"Retry-After": RETRY_DATE}), "retry", 100.0),
    (Reply(429, "", {"Retry-After": "later"}), "retry", None),
    (Reply(500, "Internal Server Error"), "retry", None),
    (Reply(502), "retry", None),
    (Reply(503, "", {"Retry-After": "5"}), "retry", 5.0),
    (Reply(504), "retry", None),
    (Reply(400, "bad payload"), "reject_message", None),
    (Reply(403), "reject_message", None),
    (Reply(404), "reject_message", None),
    (Reply(413), "reject_message", None),
    (Reply(422, '{"error": "unknown event"}'), "reject_message", None),
    (Reply(301, "", {"Location": "https://crm.example/new"}), "config_error", None),
]


@pytest.mark.parametrize(("reply", "kind", "after_s"), ANSWERS)
async def test_answers_map_to_outcomes(
    receiver: FakeReceiver,
    session: aiohttp.ClientSession,
    reply: Reply,
    kind: str,
    after_s: float | None,
) -> None:
    receiver.replies.append(reply)

    outcome = await channel(receiver, session).send(outbound())

    assert (outcome.kind, outcome.after_s) == (kind, after_s)
    assert str(reply.status) in outcome.detail or "redirected" in outcome.detail
    assert receiver.deliveries[0].signature_ok


async def test_an_answer_slower_than_the_timeout_is_a_retry(
    receiver: FakeReceiver, session: aiohttp.ClientSession
) -> None:
    receiver.replies.append(Reply(delay_s=5.0))

    outcome = await channel(receiver, session, timeout_s=0.2).send(outbound())

    assert (outcome.kind, outcome.detail) == ("retry", "timeout after 0.2 s")


async def test_connection_refused_is_a_retry(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    config = {"url": f"http://127.0.0.1:{port}/hook", "secret": secret}

    outcome = await WebhookChannel("webhook", config, Limits(), session).send(outbound())

    assert outcome.kind == "retry"
    assert "ClientConnectorError" in outcome.detail


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (["a", "list"], "webhook.body must be a mapping"),
        ({"total": float("nan")}, "body is not JSON: Out of range float values"),
        ({"when": object()}, "body is not JSON: Object of type object"),
    ],
)
async def test_a_body_that_cannot_be_sent_is_refused_before_posting(
    receiver: FakeReceiver, session: aiohttp.ClientSession, body: Any, detail: str
) -> None:
    outcome = await channel(receiver, session).send(outbound(body))

    assert outcome.kind == "reject_message"
    assert outcome.detail.startswith(detail)
    assert receiver.deliveries == []


# The Standard Webhooks reference vector (standard-webhooks / svix test suites).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("secret", "msg_id", "body", "header", "now", "valid"),
    [
        (SECRET, MSG_ID, BODY, SIGNATURE, None, True),
        (SECRET, MSG_ID, BODY, f"v1,bm90IGl0 {SIGNATURE}", None, True),
        (SECRET, MSG_ID, BODY, SIGNATURE, TIMESTAMP + 299, True),
        (SECRET, MSG_ID, BODY, SIGNATURE, TIMESTAMP + 301, False),
        (SECRET, MSG_ID, BODY, SIGNATURE, TIMESTAMP - 301, False),
        (SECRET, MSG_ID, b'{"test": 2432232315}', SIGNATURE, None, False),
        (SECRET, "msg_other", BODY, SIGNATURE, None, False),
        (SECRET, MSG_ID, BODY, SIGNATURE.replace("v1,", "v2,"), None, False),
        (SECRET, MSG_ID, BODY, "", None, False),
        (SECRET, MSG_ID, BODY, "v1,подпись", None, False),
        ("whsec_" + base64.b64encode(b"x" * 24).decode(), MSG_ID, BODY, SIGNATURE, None, False),
    ],
    ids=[
        "vector",
        "rotated",
        "fresh",
        "stale",
        "future",
        "body",
        "id",
        "v2",
        "empty",
        "utf8",
        "key",
    ],
)
def test_verify_webhook_signature(
    secret: str, msg_id: str, body: bytes, header: str, now: float | None, valid: bool
) -> None:
    assert verify_webhook_signature(secret, msg_id, TIMESTAMP, body, header, now=now) is valid


def test_verify_refuses_a_malformed_secret() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        verify_webhook_signature("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", MSG_ID, TIMESTAMP, BODY, "")


async def test_signs_like_the_reference(session: aiohttp.ClientSession) -> None:
    """Our signing reproduces the reference vector byte for byte (body and id aside)."""
    ch = WebhookChannel(
        "webhook", {"url": "https://crm.example/h", "secret": SECRET}, None, session
    )
    assert "v1," + sign(ch.config.key, MSG_ID, str(TIMESTAMP), BODY) == SIGNATURE


VALID = {"url": "https://crm.example/hooks/kaskad", "secret": SECRET}


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"secret": SECRET}, "channels.webhook.url: required"),
        ({**VALID, "url": "crm.example/hook"}, "channels.webhook.url: expected an http(s) URL"),
        ({**VALID, "url": "ftp://crm.example/"}, "channels.webhook.url: expected an http(s) URL"),
        ({"url": VALID["url"]}, "channels.webhook.secret: required"),
        ({**VALID, "secret": "MfKQ9r8G"}, "channels.webhook.secret: expected 'whsec_' followed"),
        ({**VALID, "secret": "whsec_not base64!"}, "channels.webhook.secret: expected 'whsec_'"),
        ({**VALID, "secret": "whsec_"}, "channels.webhook.secret: the key after 'whsec_' is empty"),
        ({**VALID, "headers": ["X-A: b"]}, "channels.webhook.headers: expected a mapping"),
        ({**VALID, "headers": {"Webhook-Id": "x"}}, "channels.webhook.headers.Webhook-Id: set by"),
        ({**VALID, "headers": {"X-A": {"b": 1}}}, "channels.webhook.headers.X-A: expected text"),
        ({**VALID, "secrit": SECRET}, "channels.webhook.secrit: unknown key (did you mean 'sec"),
    ],
)
async def test_config_errors_name_the_key(
    session: aiohttp.ClientSession, keys: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError) as raised:
        WebhookChannel("webhook", keys, None, session)
    assert str(raised.value).startswith(error)


async def test_build_hides_the_secret(session: aiohttp.ClientSession) -> None:
    ch = build("webhook", {**VALID, "provider": "webhook", "max_retries": 3}, Limits(), session)

    assert (ch.name, ch.provider) == ("webhook", "webhook")
    assert isinstance(ch, WebhookChannel)
    for text in (repr(ch), repr(ch.config)):
        assert "MfKQ9r8G" not in text and str(ch.config.key) not in text
