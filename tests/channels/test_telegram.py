"""Telegram Bot API adapter against a fake Bot API."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog

from channels.base import Limits, OutboundMessage, Outcome
from channels.telegram import TelegramChannel, build
from tests.fakes.telegram import TOKEN, FakeTelegram, Reply, tg_error

CHAT = 5550001


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make(
    telegram: FakeTelegram, session: aiohttp.ClientSession, timeout_s: float = 5.0, **config: Any
) -> TelegramChannel:
    keys = {"base_url": telegram.base_url, "bot_token": TOKEN, **config}
    return TelegramChannel("telegram", keys, session, Limits(timeout_s=timeout_s))


def msg(chat: Any = CHAT, **payload: Any) -> OutboundMessage:
    return OutboundMessage(
        id="m1",
        channel="telegram",
        user_id="u1",
        rule="cart",
        category="marketing",
        addresses=[chat],
        payload=payload or {"text": "Your cart is waiting"},
    )


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_sends_a_message(telegram: FakeTelegram, session: aiohttp.ClientSession) -> None:
    outcome = await make(telegram, session).send(msg())

    assert outcome == Outcome.accepted(f"{CHAT}:42")
    assert telegram.requests == [{"chat_id": CHAT, "text": "Your cart is waiting"}]


async def test_parse_mode_and_no_link_preview(
    telegram: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    payload = {"text": "<b>Cart</b>", "parse_mode": "HTML", "disable_preview": True}

    await make(telegram, session).send(msg("@shop_news", **payload))

    assert telegram.requests == [
        {
            "chat_id": "@shop_news",
            "text": "<b>Cart</b>",
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": True},
        }
    ]


ANSWERS = [
    # (reply, kind, after_s)
    (tg_error(403, "Forbidden: bot was blocked by the user"), "reject_recipient", None),
    (tg_error(403, "Forbidden: user is deactivated"), "reject_recipient", None),
    (tg_error(403, "Forbidden: bot can't initiate conversation with a user"),
     "reject_recipient", None),
    (tg_error(403, "Forbidden: bot was kicked from the group chat"), "reject_recipient", None),
    (tg_error(400, "Bad Request: chat not found"), "reject_recipient", None),
    (tg_error(400, "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte 3"),
     "reject_message", None),
    (tg_error(400, "Bad Request: message is too long"), "reject_message", None),
    (tg_error(429, "Too Many Requests: retry after 17", retry_after=17), "retry", 17.0),
    (tg_error(429, "Too Many Requests", {"Retry-After": "4"}), "retry", 4.0),
    (tg_error(429, "Too Many Requests"), "retry", None),
    (tg_error(401, "Unauthorized"), "config_error", None),
    (tg_error(404, "Not Found"), "config_error", None),
    (tg_error(500, "Internal Server Error"), "retry", None),
    (tg_error(502, "Bad Gateway"), "retry", None),
    (Reply(502, "<html><body>502 Bad Gateway</body></html>"), "retry", None),
    (Reply(503, "", {"Retry-After": "30"}), "retry", 30.0),
    (Reply(500, {"ok": False, "error_code": 400, "description": "odd"}), "retry", None),
    (Reply(200, "{\"ok\": tr"), "retry", None),
    (Reply(200, {"ok": True}), "retry", None),
    (Reply(200, {"ok": True, "result": {"message_id": "42"}}), "retry", None),
    (Reply(200, {"ok": False}), "retry", None),
    (Reply(200, [1]), "retry", None),
    (Reply(400, "Bad Request"), "reject_message", None),
    (Reply(302, "", {"Location": "https://elsewhere/"}), "retry", None),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "kind", "after_s"), ANSWERS)
async def test_every_answer_maps_to_its_outcome(
    telegram: FakeTelegram,
    session: aiohttp.ClientSession,
    reply: Reply,
    kind: str,
    after_s: float | None,
) -> None:
    telegram.script(CHAT, reply)

    outcome = await make(telegram, session).send(msg())

    assert (outcome.kind, outcome.after_s) == (kind, after_s)
    if kind == "retry" and reply.status == 200:
        assert outcome.detail == "malformed answer"
    assert TOKEN not in outcome.detail


async def test_a_migrated_chat_is_resent_to_the_supergroup(
    telegram: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    telegram.migrations[-4001] = -1004001

    outcome = await make(telegram, session).send(msg(-4001))

    assert outcome == Outcome.accepted("-1004001:42", detail="migrated_to=-1004001")
    assert [r["chat_id"] for r in telegram.requests] == [-4001, -1004001]


async def test_a_migrated_chat_that_then_fails(
    telegram: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    telegram.migrations[-4001] = -1004001
    telegram.script(-1004001, tg_error(403, "Forbidden: bot was kicked from the supergroup chat"))

    outcome = await make(telegram, session).send(msg(-4001))

    assert outcome.kind == "reject_recipient"
    assert outcome.detail.startswith("migrated_to=-1004001; 403 Forbidden")


async def test_a_chat_migrating_twice_is_resent_only_once(
    telegram: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    telegram.migrations.update({-4001: -1004001, -1004001: -1004002})

    outcome = await make(telegram, session).send(msg(-4001))

    assert outcome.kind == "reject_recipient"
    assert len(telegram.requests) == 2


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (msg(None), "reject_recipient"),
        (msg(""), "reject_recipient"),
        (msg(True), "reject_recipient"),
        (msg(CHAT, text=""), "reject_message"),
        (msg(CHAT, parse_mode="HTML"), "reject_message"),
    ],
)
async def test_nothing_to_send_makes_no_call(
    telegram: FakeTelegram, session: aiohttp.ClientSession, message: OutboundMessage, kind: str
) -> None:
    assert (await make(telegram, session).send(message)).kind == kind
    assert telegram.requests == []


async def test_a_revoked_token_is_a_config_error_and_never_shown(
    telegram: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    telegram.token = "1:other"

    with structlog.testing.capture_logs() as logs:
        outcome = await make(telegram, session).send(msg())

    assert outcome.kind == "config_error"
    assert logs and logs[-1]["event"] == "channel.config_error"
    assert TOKEN not in repr(logs)
    assert TOKEN.split(":")[1] not in repr(outcome)


async def test_a_slow_api_times_out_into_a_retry(
    telegram: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    telegram.script(CHAT, Reply(delay_s=5))

    outcome = await make(telegram, session, timeout_s=0.2).send(msg())

    assert (outcome.kind, outcome.detail) == ("retry", "network error: TimeoutError")


async def test_connection_refused_is_a_retry_without_the_token(
    telegram: FakeTelegram, session: aiohttp.ClientSession
) -> None:
    with structlog.testing.capture_logs() as logs:
        outcome = await make(telegram, session, base_url=closed_url()).send(msg())

    assert outcome.kind == "retry"
    assert outcome.detail.startswith("network error")
    assert TOKEN not in repr(outcome) + repr(logs)


CONFIG_ERRORS = [
    ({}, "bot_token: required"),
    ({"bot_token": "not a token"}, "bot_token: expected '<bot id>:<secret>' from BotFather"),
    ({"bot_token": TOKEN, "base_url": "api.telegram.org"},
     "base_url: expected an http(s) URL, got 'api.telegram.org'"),
    ({"bot_token": TOKEN, "bot_tokn": TOKEN}, "bot_tokn: unknown key; did you mean 'bot_token'?"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "error"), CONFIG_ERRORS)
def test_config_errors_name_the_key(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError) as caught:
        TelegramChannel("telegram", keys, None, Limits())  # type: ignore[arg-type]

    assert str(caught.value) == f"channels.telegram.{error}"


async def test_build_and_repr(telegram: FakeTelegram, session: aiohttp.ClientSession) -> None:
    keys = {"provider": "bot_api", "base_url": telegram.base_url, "bot_token": TOKEN}

    channel = build("telegram", keys, Limits(), session)

    assert channel.provider == "bot_api"
    assert TOKEN.split(":")[1] not in repr(channel)
    assert (await channel.send(msg())).kind == "accepted"
    await channel.close()
    with pytest.raises(ValueError, match=r"channels\.telegram: the bot_api provider needs"):
        build("telegram", keys, Limits(), None)
