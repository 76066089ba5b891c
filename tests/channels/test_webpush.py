"""Web push adapter against a fake push service that checks VAPID and decrypts every body."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from channels.base import Limits, OutboundMessage, Outcome
from channels.webpush import WebPushChannel, build
from tests.fakes.webpush import FakePushService, Reply, b64url, raw_public_key

VAPID_KEY = ec.generate_private_key(ec.SECP256R1())
VAPID_RAW = b64url(VAPID_KEY.private_numbers().private_value.to_bytes(32, "big"))
VAPID_PUBLIC = b64url(raw_public_key(VAPID_KEY))
PAYLOAD = {"title": "Your cart", "body": "Still there", "url": "https://s/c", "icon": "/i.png"}


@pytest.fixture
async def push() -> AsyncIterator[FakePushService]:
    async with FakePushService(vapid_public_key=VAPID_PUBLIC) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make(session: aiohttp.ClientSession, timeout_s: float = 5.0, **config: Any) -> WebPushChannel:
    keys = {"vapid_private_key": VAPID_RAW, "vapid_subject": "mailto:ops@shop.example", **config}
    return WebPushChannel("webpush", keys, session, Limits(timeout_s=timeout_s))


def msg(*subscriptions: Any, **payload: Any) -> OutboundMessage:
    return OutboundMessage(
        id="m1",
        channel="webpush",
        user_id="u1",
        rule="cart",
        category="marketing",
        addresses=list(subscriptions),
        payload=payload or dict(PAYLOAD),
    )


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_delivers_an_encrypted_payload_signed_with_vapid(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    sub = push.subscribe()

    outcome = await make(session).send(msg(sub))

    assert outcome == Outcome.accepted(f"{push.origin}/m/1")
    (received,) = push.pushes
    assert received.payload == {**PAYLOAD, "message_id": "m1"}
    assert received.public_key == VAPID_PUBLIC
    assert received.claims["aud"] == push.origin
    assert received.claims["sub"] == "mailto:ops@shop.example"
    assert time.time() < received.claims["exp"] <= time.time() + 86400
    assert received.headers["TTL"] == "86400"
    assert received.headers["Content-Encoding"] == "aes128gcm"
    assert received.headers["Content-Type"] == "application/octet-stream"
    assert received.headers["Authorization"].startswith("vapid t=")
    assert f",k={VAPID_PUBLIC}" in received.headers["Authorization"]
    assert "Urgency" not in received.headers


async def test_ttl_and_urgency_come_from_the_config(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    await make(session, ttl_s="600", urgency="high").send(msg(push.subscribe()))

    assert push.pushes[0].headers["TTL"] == "600"
    assert push.pushes[0].headers["Urgency"] == "high"


def pem(fmt: serialization.PrivateFormat) -> str:
    return VAPID_KEY.private_bytes(
        serialization.Encoding.PEM, fmt, serialization.NoEncryption()
    ).decode()


@pytest.mark.parametrize(
    "key",
    [
        VAPID_RAW,
        VAPID_RAW + "=",  # padded
        pem(serialization.PrivateFormat.PKCS8),
        pem(serialization.PrivateFormat.TraditionalOpenSSL),
        b64url(
            VAPID_KEY.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        ),
    ],
    ids=["raw", "raw-padded", "pem-pkcs8", "pem-sec1", "der"],
)
async def test_key_formats(push: FakePushService, session: aiohttp.ClientSession, key: str) -> None:
    outcome = await make(session, vapid_private_key=key).send(msg(push.subscribe()))

    assert outcome.kind == "accepted"


async def test_one_vapid_token_per_origin_until_an_hour_before_expiry(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    clock = [time.time()]
    channel = WebPushChannel(
        "webpush",
        {"vapid_private_key": VAPID_RAW, "vapid_subject": "https://shop.example/contact"},
        session,
        now=lambda: clock[0],
    )
    async with FakePushService() as other:
        for _ in range(3):
            await channel.send(msg(push.subscribe("a"), other.subscribe("b")))
        clock[0] += 11 * 3600 - 1  # tokens live 12 h, renewed from 11 h
        await channel.send(msg(push.subscribe("a"), other.subscribe("b")))
        clock[0] += 1
        await channel.send(msg(push.subscribe("a"), other.subscribe("b")))
        other_origin = other.origin

    tokens = [p.headers["Authorization"] for p in push.pushes]
    assert len(set(tokens[:4])) == 1
    assert tokens[4] != tokens[0]
    assert {p.claims["aud"] for p in other.pushes} == {other_origin}
    assert not {p.headers["Authorization"] for p in other.pushes} & set(tokens)


ANSWERS = [
    # (reply, kind, after_s, dead, provider id)
    (Reply(201, headers={"Location": "https://push.example/m/9"}), "accepted", None, False,
     "https://push.example/m/9"),
    (Reply(200), "accepted", None, False, "endpoint"),
    (Reply(202), "accepted", None, False, "endpoint"),
    (Reply(404, '{"errno": 102}'), "reject_recipient", None, True, None),
    (Reply(410, '{"errno": 103, "error": "Gone"}'), "reject_recipient", None, True, None),
    (Reply(413, '{"errno": 104}'), "reject_message", None, False, None),
    (Reply(429, headers={"Retry-After": "12"}), "retry", 12.0, False, None),
    (Reply(429), "retry", None, False, None),
    (Reply(500), "retry", None, False, None),
    (Reply(502, "<html>bad gateway"), "retry", None, False, None),
    (Reply(503, headers={"Retry-After": "60"}), "retry", 60.0, False, None),
    (Reply(401, '{"errno": 109}'), "config_error", None, False, None),
    (Reply(403), "config_error", None, False, None),
    (Reply(400, '{"errno": 111}'), "reject_message", None, False, None),
    (Reply(301, headers={"Location": "https://elsewhere/"}), "retry", None, False, None),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "kind", "after_s", "dead", "provider_id"), ANSWERS)
async def test_every_answer_maps_to_its_outcome(
    push: FakePushService,
    session: aiohttp.ClientSession,
    reply: Reply,
    kind: str,
    after_s: float | None,
    dead: bool,
    provider_id: str | None,
) -> None:
    sub = push.subscribe()
    push.script("s1", reply)

    outcome = await make(session).send(msg(sub))

    assert (outcome.kind, outcome.after_s) == (kind, after_s)
    assert outcome.dead_addresses == ((sub["endpoint"],) if dead else ())
    if provider_id is not None:
        assert outcome.provider_id == (
            sub["endpoint"] if provider_id == "endpoint" else provider_id
        )


async def test_a_key_the_service_does_not_know_is_a_config_error(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    raw = b64url(other_key.private_numbers().private_value.to_bytes(32, "big"))

    outcome = await make(session, vapid_private_key=raw).send(msg(push.subscribe()))

    assert outcome.kind == "config_error"
    assert outcome.detail.startswith("403")


async def test_a_gone_subscription_among_live_ones(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    gone, live = push.subscribe("gone"), push.subscribe("live")
    push.script("gone", Reply(410))

    outcome = await make(session).send(msg(gone, live, gone))

    assert outcome.kind == "accepted"
    assert outcome.provider_id == f"{push.origin}/m/1"
    assert outcome.dead_addresses == (gone["endpoint"],)
    assert push.requests == 2


async def test_all_subscriptions_gone(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    a, b = push.subscribe("a"), push.subscribe("b")
    push.script("a", Reply(404))
    push.script("b", Reply(410))

    outcome = await make(session).send(msg(a, b))

    assert outcome.kind == "reject_recipient"
    assert outcome.dead_addresses == (a["endpoint"], b["endpoint"])


def broken_subscriptions(sub: dict[str, Any]) -> list[Any]:
    keys = sub["keys"]
    return [
        "https://push.example/x",
        {"keys": keys},
        {"endpoint": "ftp://push.example/x", "keys": keys},
        {"endpoint": "https://[::1/x", "keys": keys},
        {"endpoint": "https://push.example:99999/x", "keys": keys},
        {"endpoint": sub["endpoint"]},
        {"endpoint": sub["endpoint"], "keys": {**keys, "p256dh": "AAAA"}},
        {"endpoint": sub["endpoint"], "keys": {**keys, "p256dh": "BA" + "A" * 85}},
        {"endpoint": sub["endpoint"], "keys": {**keys, "auth": "c2hvcnQ"}},
        {"endpoint": sub["endpoint"], "keys": {**keys, "auth": "!!!"}},
    ]


@pytest.mark.parametrize("index", range(10))
async def test_a_broken_subscription_is_dead_without_a_request(
    push: FakePushService, session: aiohttp.ClientSession, index: int
) -> None:
    broken = broken_subscriptions(push.subscribe())[index]

    outcome = await make(session).send(msg(broken))

    assert outcome.kind == "reject_recipient"
    # keyed as the engine keys addresses (reach.address_key)
    key = str(broken.get("endpoint")) if isinstance(broken, dict) else str(broken)
    assert outcome.dead_addresses == (key,)
    assert push.requests == 0


async def test_no_subscription(session: aiohttp.ClientSession) -> None:
    assert (await make(session).send(msg())).kind == "reject_recipient"


async def test_the_largest_payload_that_fits_is_delivered(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    frame = len('{"body":"","message_id":"m1"}')

    outcome = await make(session).send(msg(push.subscribe(), body="x" * (3993 - frame)))

    assert outcome.kind == "accepted"
    assert len(push.pushes[0].payload["body"]) == 3993 - frame


async def test_one_byte_more_is_rejected_before_any_request(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    frame = len('{"body":"","message_id":"m1"}')

    outcome = await make(session).send(msg(push.subscribe(), body="x" * (3994 - frame)))

    assert outcome.kind == "reject_message"
    assert outcome.detail == "payload is 3994 bytes, over 3993"
    assert push.requests == 0


async def test_a_slow_service_times_out_into_a_retry(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    sub = push.subscribe()
    push.script("s1", Reply(delay_s=5))

    outcome = await make(session, timeout_s=0.2).send(msg(sub))

    assert (outcome.kind, outcome.detail) == ("retry", "network error: TimeoutError")


async def test_connection_refused_is_a_retry(
    push: FakePushService, session: aiohttp.ClientSession
) -> None:
    sub = {**push.subscribe(), "endpoint": f"{closed_url()}/push/s1"}

    outcome = await make(session).send(msg(sub))

    assert outcome.kind == "retry"
    assert outcome.detail.startswith("network error")


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


CONFIG_ERRORS = [
    ({"vapid_subject": "mailto:a@b.c"}, "vapid_private_key: required"),
    ({"vapid_private_key": "c2hvcnQ", "vapid_subject": "mailto:a@b.c"},
     "vapid_private_key: expected a base64url raw P-256 key (32 bytes) or a PEM key"),
    ({"vapid_private_key": _rsa_pem(), "vapid_subject": "mailto:a@b.c"},
     "vapid_private_key: expected a base64url raw P-256 key (32 bytes) or a PEM key"),
    ({"vapid_private_key": VAPID_RAW}, "vapid_subject: required, a mailto: or https: URI"),
    ({"vapid_private_key": VAPID_RAW, "vapid_subject": "ops@shop.example"},
     "vapid_subject: required, a mailto: or https: URI"),
    ({"vapid_private_key": VAPID_RAW, "vapid_subject": "mailto:a@b.c", "ttl_s": -1},
     "ttl_s: expected whole seconds 0-2419200 (28 days)"),
    ({"vapid_private_key": VAPID_RAW, "vapid_subject": "mailto:a@b.c", "urgency": "urgent"},
     "urgency: expected one of very-low, low, normal, high"),
    ({"vapid_private_key": VAPID_RAW, "vapid_subject": "mailto:a@b.c", "tll_s": 60},
     "tll_s: unknown key; did you mean 'ttl_s'?"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "error"), CONFIG_ERRORS)
def test_config_errors_name_the_key(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError) as caught:
        WebPushChannel("webpush", keys, None, Limits())  # type: ignore[arg-type]

    assert str(caught.value) == f"channels.webpush.{error}"
    assert VAPID_RAW not in str(caught.value)


async def test_build_and_repr(session: aiohttp.ClientSession) -> None:
    keys = {"provider": "vapid", "vapid_private_key": VAPID_RAW, "vapid_subject": "mailto:a@b.c"}

    channel = build("webpush", keys, Limits(), session)

    assert channel.provider == "vapid"
    assert VAPID_RAW not in repr(channel)
    await channel.close()
    with pytest.raises(ValueError, match=r"channels\.webpush: the vapid provider needs"):
        build("webpush", keys, Limits(), None)
