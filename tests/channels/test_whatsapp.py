"""WhatsApp Cloud API adapter against a fake Graph API, and the status-webhook helpers."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from channels.base import Limits, OutboundMessage, Outcome
from channels.whatsapp import (
    Receipt,
    WhatsAppChannel,
    build,
    parse_statuses,
    verify_signature,
    verify_subscription,
)
from tests.fakes.whatsapp import ACCESS_TOKEN, PHONE_NUMBER_ID, FakeWhatsApp, Reply, wa_error

PHONE = "+7 999 000-11-22"
TO = "79990001122"
APP_SECRET = "app-secret-1"


@pytest.fixture
async def whatsapp() -> AsyncIterator[FakeWhatsApp]:
    async with FakeWhatsApp() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession, timeout_s: float = 5.0, **config: Any
) -> WhatsAppChannel:
    keys = {
        "base_url": whatsapp.base_url,
        "phone_number_id": PHONE_NUMBER_ID,
        "access_token": ACCESS_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": "verify-me",
        **config,
    }
    return WhatsAppChannel("whatsapp", keys, session, Limits(timeout_s=timeout_s))


def msg(phone: Any = PHONE, **payload: Any) -> OutboundMessage:
    return OutboundMessage(
        id="m1",
        channel="whatsapp",
        user_id="u1",
        rule="cart",
        category="marketing",
        addresses=[phone],
        payload=payload or {"name": "cart_reminder", "language": "ru", "params": ["1 990 ₽", 3]},
    )


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_sends_a_template_message(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession
) -> None:
    outcome = await make(whatsapp, session).send(msg())

    assert outcome == Outcome.accepted("wamid.HBgL000001")
    assert whatsapp.requests == [
        {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": TO,
            "type": "template",
            "template": {
                "name": "cart_reminder",
                "language": {"code": "ru"},
                "components": [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": "1 990 ₽"},
                            {"type": "text", "text": "3"},
                        ],
                    }
                ],
            },
        }
    ]


async def test_a_template_without_params_has_no_components(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession
) -> None:
    await make(whatsapp, session).send(msg(TO, name="welcome", language="en_US"))

    assert whatsapp.requests[0]["template"] == {"name": "welcome", "language": {"code": "en_US"}}


def code_cases() -> list[tuple[int, int, str]]:
    """(HTTP status, error code, outcome kind) for every code PROVIDERS.md names."""
    cases = [(400, 131026, "reject_recipient"), (400, 131050, "reject_recipient")]
    cases += [(400, c, "reject_message") for c in (131047, 132000, 132001, 131008, 131009, 100)]
    cases += [(400, 131051, "reject_message")]
    cases += [(429, 130429, "retry"), (400, 131056, "retry"), (400, 131049, "retry")]
    cases += [(500, 131000, "retry"), (500, 1, "retry"), (503, 2, "retry")]
    cases += [(401, 190, "config_error"), (403, 10, "config_error")]
    cases += [(403, c, "config_error") for c in (200, 250, 299)]
    cases += [(400, c, "config_error") for c in (131031, 131042, 131048, 368, 80007)]
    cases += [(400, 4, "config_error")]
    return cases


@pytest.mark.parametrize(("status", "code", "kind"), code_cases())
async def test_every_error_code_maps_to_its_outcome(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession, status: int, code: int, kind: str
) -> None:
    whatsapp.script(TO, wa_error(status, code, f"(#{code}) something", "more"))

    outcome = await make(whatsapp, session).send(msg())

    assert outcome.kind == kind
    assert outcome.opt_out == (code == 131050)
    assert outcome.detail == f"{status} {code} (#{code}) something more"


ANSWERS = [
    # (reply, kind, after_s)
    (Reply(429, "", {"Retry-After": "20"}), "retry", 20.0),
    (wa_error(429, 130429, "Rate limit hit"), "retry", None),
    (Reply(500), "retry", None),
    (Reply(502, "<html>Bad Gateway</html>"), "retry", None),
    (wa_error(500, 100, "contradictory"), "retry", None),
    (Reply(503, '{"error": {"code": 2'), "retry", None),
    (Reply(200, "{not json"), "retry", None),
    (Reply(200, {}), "retry", None),
    (Reply(200, {"messages": []}), "retry", None),
    (Reply(200, {"messages": [{"id": 7}]}), "retry", None),
    (Reply(200, {"messages": "wamid.x"}), "retry", None),
    (wa_error(400, 999999, "new code"), "reject_message", None),
    (Reply(400, "Bad Request"), "reject_message", None),
    (Reply(401), "config_error", None),
    (wa_error(403, 999999, "new permission code"), "config_error", None),
    (Reply(404, "Not Found"), "config_error", None),
    (Reply(307, "", {"Location": "https://elsewhere/"}), "retry", None),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "kind", "after_s"), ANSWERS)
async def test_every_answer_maps_to_its_outcome(
    whatsapp: FakeWhatsApp,
    session: aiohttp.ClientSession,
    reply: Reply,
    kind: str,
    after_s: float | None,
) -> None:
    whatsapp.script(TO, reply)

    outcome = await make(whatsapp, session).send(msg())

    assert (outcome.kind, outcome.after_s) == (kind, after_s)
    if kind == "retry" and reply.status == 200:
        assert outcome.detail == "malformed answer"


async def test_an_expired_token_is_a_config_error(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession
) -> None:
    outcome = await make(whatsapp, session, access_token="EAAG-expired").send(msg())

    assert outcome.kind == "config_error"
    assert outcome.detail.startswith("401 190 Error validating access token")
    assert "EAAG" not in outcome.detail


async def test_a_wrong_phone_number_id_is_rejected_by_the_api(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession
) -> None:
    outcome = await make(whatsapp, session, phone_number_id=123).send(msg())

    assert outcome.kind == "reject_message"  # code 100, as PROVIDERS.md maps it


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (msg(None), "reject_recipient"),
        (msg("call me"), "reject_recipient"),
        (msg("+1 234"), "reject_recipient"),
        (msg("+1234567890123456"), "reject_recipient"),
        (msg(PHONE, language="ru"), "reject_message"),
        (msg(PHONE, name="cart_reminder"), "reject_message"),
        (msg(PHONE, name="cart_reminder", language="ru", params="x"), "reject_message"),
    ],
)
async def test_nothing_to_send_makes_no_call(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession, message: OutboundMessage, kind: str
) -> None:
    assert (await make(whatsapp, session).send(message)).kind == kind
    assert whatsapp.requests == []


async def test_a_slow_api_times_out_into_a_retry(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession
) -> None:
    whatsapp.script(TO, Reply(delay_s=5))

    outcome = await make(whatsapp, session, timeout_s=0.2).send(msg())

    assert (outcome.kind, outcome.detail) == ("retry", "network error: TimeoutError")


async def test_connection_refused_is_a_retry(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession
) -> None:
    outcome = await make(whatsapp, session, base_url=closed_url()).send(msg())

    assert outcome.kind == "retry"
    assert outcome.detail.startswith("network error")


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


BODY = b'{"object":"whatsapp_business_account","entry":[]}'


@pytest.mark.parametrize(
    ("secret", "body", "header", "valid"),
    [
        (APP_SECRET, BODY, sign(BODY), True),
        (APP_SECRET, BODY, sign(BODY).upper().replace("SHA256=", "sha256="), True),
        (APP_SECRET, BODY + b" ", sign(BODY), False),
        (APP_SECRET, BODY, sign(BODY, "other"), False),
        (APP_SECRET, BODY, sign(BODY).removeprefix("sha256="), False),
        (APP_SECRET, BODY, "sha1=" + sign(BODY)[7:], False),
        (APP_SECRET, BODY, "sha256=", False),
        (APP_SECRET, BODY, "sha256=é", False),
        (APP_SECRET, BODY, None, False),
        ("", BODY, "sha256=" + hmac.new(b"", BODY, hashlib.sha256).hexdigest(), False),
    ],
)
def test_verify_signature(secret: str, body: bytes, header: str | None, valid: bool) -> None:
    assert verify_signature(secret, body, header) is valid


@pytest.mark.parametrize(
    ("params", "token", "challenge"),
    [
        ({"hub.mode": "subscribe", "hub.verify_token": "t", "hub.challenge": "42"}, "t", "42"),
        ({"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "42"}, "t", None),
        ({"hub.mode": "unsubscribe", "hub.verify_token": "t", "hub.challenge": "42"}, "t", None),
        ({"hub.verify_token": "t", "hub.challenge": "42"}, "t", None),
        ({"hub.mode": "subscribe", "hub.challenge": "42"}, "t", None),
        ({"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "42"}, "", None),
        ({"hub.mode": "subscribe", "hub.verify_token": "t"}, "t", None),
        ({"hub.mode": "subscribe", "hub.verify_token": "тест", "hub.challenge": "1"}, "t", None),
    ],
)
def test_verify_subscription(params: dict[str, str], token: str, challenge: str | None) -> None:
    assert verify_subscription(params, token) == challenge


async def test_the_channel_checks_webhooks_with_its_own_secrets(
    whatsapp: FakeWhatsApp, session: aiohttp.ClientSession
) -> None:
    channel = make(whatsapp, session)
    params = {"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "c"}

    assert channel.verify_signature(BODY, sign(BODY))
    assert channel.verify_subscription(params) == "c"


def webhook(*statuses: Any, extra_change: Any = None) -> dict[str, Any]:
    changes: list[Any] = [
        {
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1"},
                "statuses": list(statuses),
            },
        }
    ]
    if extra_change is not None:
        changes.append(extra_change)
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": changes}]}


def test_parse_statuses() -> None:
    body = webhook(
        {
            "id": "wamid.A",
            "status": "delivered",
            "timestamp": "1700000100",
            "recipient_id": TO,
            "conversation": {"id": "c", "origin": {"type": "marketing"}},
            "pricing": {"billable": True, "category": "marketing"},
        },
        {"id": "wamid.A", "status": "read", "timestamp": "1700000200", "recipient_id": TO},
        {
            "id": "wamid.B",
            "status": "failed",
            "timestamp": 1700000300,
            "recipient_id": TO,
            "errors": [
                {
                    "code": 131026,
                    "title": "Message undeliverable",
                    "error_data": {"details": "Message Undeliverable."},
                }
            ],
        },
    )

    assert parse_statuses(json.loads(json.dumps(body))) == [
        Receipt("wamid.A", "delivered", 1700000100.0, TO, None),
        Receipt("wamid.A", "read", 1700000200.0, TO, None),
        Receipt("wamid.B", "failed", 1700000300.0, TO, "131026: Message undeliverable"),
    ]


def test_parse_statuses_skips_malformed_parts() -> None:
    good = {"id": "wamid.ok", "status": "sent", "timestamp": "1700000000"}
    body = webhook(
        None,
        "wamid.x",
        {"status": "sent", "timestamp": "1"},
        {"id": "", "status": "sent", "timestamp": "1"},
        {"id": "wamid.y", "status": "deleted", "timestamp": "1"},
        {"id": "wamid.y", "status": "sent"},
        {"id": "wamid.y", "status": "sent", "timestamp": "soon"},
        {"id": "wamid.y", "status": "sent", "timestamp": "nan"},
        {"id": "wamid.y", "status": ["sent"], "timestamp": "1"},
        {**good, "recipient_id": {"x": 1}, "errors": "broken"},
        good,
        extra_change={"value": {"statuses": "none"}},
    )
    body["entry"] += [None, {"changes": None}, {"changes": [None, {"value": None}]}]

    assert parse_statuses(body) == [
        Receipt("wamid.ok", "sent", 1700000000.0, None, None),
        Receipt("wamid.ok", "sent", 1700000000.0, None, None),
    ]


@pytest.mark.parametrize("body", [None, [], "x", {}, {"entry": "x"}, {"entry": [1, "a"]}])
def test_parse_statuses_of_junk_is_empty(body: Any) -> None:
    assert parse_statuses(body) == []


CONFIG_ERRORS = [
    ({"access_token": "t"}, "phone_number_id: required"),
    ({"access_token": "t", "phone_number_id": "12a"}, "phone_number_id: expected digits"),
    ({"phone_number_id": "1"}, "access_token: required"),
    ({"phone_number_id": "1", "access_token": 5}, "access_token: expected a string"),
    ({"phone_number_id": "1", "access_token": "t", "api_version": "21"},
     "api_version: expected like 'v21.0', got '21'"),
    ({"phone_number_id": "1", "access_token": "t", "base_url": "graph"},
     "base_url: expected an http(s) URL, got 'graph'"),
    ({"phone_number_id": "1", "access_token": "t", "app_secrets": "s"},
     "app_secrets: unknown key; did you mean 'app_secret'?"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "error"), CONFIG_ERRORS)
def test_config_errors_name_the_key(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError) as caught:
        WhatsAppChannel("whatsapp", keys, None, Limits())  # type: ignore[arg-type]

    assert str(caught.value) == f"channels.whatsapp.{error}"


async def test_build_and_repr(whatsapp: FakeWhatsApp, session: aiohttp.ClientSession) -> None:
    keys = {
        "provider": "cloud_api",
        "base_url": whatsapp.base_url,
        "api_version": "v21.0",
        "phone_number_id": int(PHONE_NUMBER_ID),
        "access_token": ACCESS_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": "verify-me",
        "timeout_s": 3,
    }

    channel = build("whatsapp", keys, Limits(), session)

    assert channel.provider == "cloud_api"
    assert (await channel.send(msg())).kind == "accepted"
    assert not {ACCESS_TOKEN, APP_SECRET, "verify-me"} & set(repr(channel).split("'"))
    assert ACCESS_TOKEN not in repr(channel) and APP_SECRET not in repr(channel)
    await channel.close()
    with pytest.raises(ValueError, match=r"channels\.whatsapp: the cloud_api provider needs"):
        build("whatsapp", keys, Limits(), None)
