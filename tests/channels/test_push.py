"""FCM HTTP v1 adapter against a fake FCM and its OAuth token endpoint."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from channels.base import Limits, OutboundMessage, Outcome
from channels.push import FcmChannel, build
from tests.fakes.fcm import FakeFcm, Reply, fcm_error, service_account

TOKEN = "device-token-a"


@pytest.fixture
async def fcm() -> AsyncIterator[FakeFcm]:
    async with FakeFcm() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make(
    fcm: FakeFcm, session: aiohttp.ClientSession, timeout_s: float = 5.0, **config: Any
) -> FcmChannel:
    keys = {
        "base_url": fcm.base_url,
        "project_id": fcm.project_id,
        "service_account": fcm.service_account(),
        **config,
    }
    return FcmChannel("mobile_push", keys, session, Limits(timeout_s=timeout_s))


def msg(*tokens: Any, **payload: Any) -> OutboundMessage:
    return OutboundMessage(
        id="m1",
        channel="mobile_push",
        user_id="u1",
        rule="cart",
        category="marketing",
        addresses=list(tokens or [TOKEN]),
        payload=payload or {"title": "Your cart", "body": "Still there", "url": "https://s/c"},
    )


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_sends_the_v1_message_with_a_bearer_token(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    channel = make(fcm, session, ttl_s=3600)
    payload = {"title": "Hi", "body": "Cart", "url": "https://s/c", "data": {"n": 2, "k": "v"}}

    outcome = await channel.send(msg(TOKEN, **payload))

    assert outcome == Outcome.accepted("projects/shop-app/messages/0:1")
    assert fcm.sends == [
        {
            "auth": "ya29.fake-1",
            "message": {
                "token": TOKEN,
                "notification": {"title": "Hi", "body": "Cart"},
                "data": {"n": "2", "k": "v", "url": "https://s/c", "message_id": "m1"},
                "android": {"ttl": "3600s", "priority": "high"},
            },
        }
    ]


async def test_an_image_also_goes_to_the_apns_block(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    await make(fcm, session).send(msg(TOKEN, body="b", image="https://s/i.png"))

    sent = fcm.sends[0]["message"]
    assert sent["notification"] == {"body": "b", "image": "https://s/i.png"}
    assert sent["apns"] == {
        "payload": {"aps": {"mutable-content": 1}},
        "fcm_options": {"image": "https://s/i.png"},
    }


async def test_one_token_fetch_serves_many_sends(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    channel = make(fcm, session)

    outcomes = await asyncio.gather(*(channel.send(msg()) for _ in range(10)))
    outcomes.append(await channel.send(msg()))

    assert {o.kind for o in outcomes} == {"accepted"}
    assert fcm.token_fetches == 1
    (claims,) = fcm.assertions
    assert claims["iss"] == fcm.client_email
    assert claims["aud"] == fcm.token_uri
    assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging"
    assert claims["exp"] - claims["iat"] == 3600


async def test_the_token_is_renewed_five_minutes_before_it_expires(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    real = time.time()
    clock = [real - 400]  # starts early so every assertion's iat is in the real past
    channel = FcmChannel(
        "mobile_push",
        {"base_url": fcm.base_url, "service_account": fcm.service_account()},
        session,
        Limits(timeout_s=5),
        now=lambda: clock[0],
    )
    fcm.expires_in = 600  # renewal due at real - 400 + 600 - 300 = real - 100

    await channel.send(msg())
    clock[0] = real - 101
    await channel.send(msg())
    assert fcm.token_fetches == 1
    clock[0] = real - 100
    await channel.send(msg())
    assert fcm.token_fetches == 2
    assert [s["auth"] for s in fcm.sends] == ["ya29.fake-1", "ya29.fake-1", "ya29.fake-2"]


async def test_unauthenticated_refreshes_the_token_and_retries_once(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    channel = make(fcm, session)
    await channel.send(msg())
    fcm.revoke_tokens()

    outcome = await channel.send(msg())

    assert outcome.kind == "accepted"
    assert fcm.token_fetches == 2
    assert [s["auth"] for s in fcm.sends] == ["ya29.fake-1", "ya29.fake-2"]


async def test_unauthenticated_after_the_refresh_is_a_config_error(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    unauthenticated = fcm_error(401, "UNAUTHENTICATED", "Request had invalid credentials.")
    fcm.script(TOKEN, unauthenticated, unauthenticated)

    with structlog.testing.capture_logs() as logs:
        outcome = await make(fcm, session).send(msg())

    assert outcome.kind == "config_error"
    assert "UNAUTHENTICATED" in outcome.detail
    assert fcm.token_fetches == 2
    assert len(fcm.sends) == 2
    assert {"event": "channel.config_error", "log_level": "warning"}.items() <= logs[-1].items()
    assert "ya29" not in repr(logs)


NOT_A_TOKEN = "The registration token is not a valid FCM registration token"
ANSWERS = [
    # (reply, kind, after_s, dead)
    (fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"),
     "reject_recipient", None, True),
    (fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"),
     "reject_recipient", None, True),
    (fcm_error(400, "INVALID_ARGUMENT", NOT_A_TOKEN, "INVALID_ARGUMENT"),
     "reject_recipient", None, True),
    (fcm_error(400, "INVALID_ARGUMENT", "Invalid registration", "INVALID_ARGUMENT",
               [("message.token", "Invalid registration token")]),
     "reject_recipient", None, True),
    (fcm_error(400, "INVALID_ARGUMENT", "Invalid value", "INVALID_ARGUMENT",
               [("message.data[0].value", "Invalid value")]),
     "reject_message", None, False),
    (fcm_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
     "reject_message", None, False),
    (fcm_error(401, "UNAUTHENTICATED", "APNs certificate invalid", "THIRD_PARTY_AUTH_ERROR"),
     "config_error", None, False),
    (fcm_error(403, "PERMISSION_DENIED", "FCM API disabled"), "config_error", None, False),
    (fcm_error(404, "NOT_FOUND", "Requested entity was not found."), "config_error", None, False),
    (fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED",
               headers={"Retry-After": "30"}),
     "retry", 30.0, False),
    (fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "QUOTA_EXCEEDED"),
     "retry", None, False),
    (fcm_error(500, "INTERNAL", "Internal error", "INTERNAL"), "retry", None, False),
    (fcm_error(503, "UNAVAILABLE", "Overloaded", "UNAVAILABLE", headers={"Retry-After": "7"}),
     "retry", 7.0, False),
    (fcm_error(503, "UNAVAILABLE", "Overloaded"), "retry", None, False),
    (fcm_error(500, "UNKNOWN", "odd", "UNSPECIFIED_ERROR"), "retry", None, False),
    (Reply(502, "<html>Bad Gateway</html>"), "retry", None, False),
    (Reply(500, '{"error": {"code": 500'), "retry", None, False),
    (Reply(429, "", {"Retry-After": "nonsense"}), "retry", None, False),
    (Reply(401, "Unauthorized"), "config_error", None, False),  # twice: after the refresh too
    (Reply(400, "Bad Request"), "reject_message", None, False),
    (Reply(413, "Too large"), "reject_message", None, False),
    (Reply(302, "", {"Location": "https://elsewhere/"}), "config_error", None, False),
    (Reply(200, "{not json"), "retry", None, False),
    (Reply(200, {}), "retry", None, False),
    (Reply(200, {"name": 42}), "retry", None, False),
    (Reply(200, [1, 2]), "retry", None, False),
    (Reply(200, {"error": {"status": "INTERNAL"}}), "retry", None, False),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "kind", "after_s", "dead"), ANSWERS)
async def test_every_answer_maps_to_its_outcome(
    fcm: FakeFcm,
    session: aiohttp.ClientSession,
    reply: Reply,
    kind: str,
    after_s: float | None,
    dead: bool,
) -> None:
    fcm.script(TOKEN, reply, reply)

    outcome = await make(fcm, session).send(msg())

    assert (outcome.kind, outcome.after_s) == (kind, after_s)
    assert outcome.dead_addresses == ((TOKEN,) if dead else ())
    if kind == "retry" and reply.status == 200:
        assert outcome.detail == "malformed answer"


async def test_third_party_auth_error_does_not_refresh_the_token(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    fcm.script(TOKEN, fcm_error(401, "UNAUTHENTICATED", "APNs", "THIRD_PARTY_AUTH_ERROR"))

    assert (await make(fcm, session).send(msg())).kind == "config_error"
    assert (fcm.token_fetches, len(fcm.sends)) == (1, 1)


async def test_retry_after_as_an_http_date(fcm: FakeFcm, session: aiohttp.ClientSession) -> None:
    fcm.script(TOKEN, Reply(503, "", {"Retry-After": formatdate(time.time() + 120, usegmt=True)}))

    outcome = await make(fcm, session).send(msg())

    assert outcome.kind == "retry"
    assert outcome.after_s is not None and 110 <= outcome.after_s <= 121


TOKEN_ANSWERS = [
    (Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
     "config_error"),
    (Reply(401, {"error": "invalid_client", "error_description": "deleted"}), "config_error"),
    (Reply(403, "Forbidden"), "config_error"),
    (Reply(429, "", {"Retry-After": "3"}), "retry"),
    (Reply(500, {"error": "internal_failure"}), "retry"),
    (Reply(503, "<html>"), "retry"),
    (Reply(200, {"token_type": "Bearer"}), "retry"),
    (Reply(200, "garbage"), "retry"),
]  # fmt: skip


@pytest.mark.parametrize(("reply", "kind"), TOKEN_ANSWERS)
async def test_token_endpoint_answers(
    fcm: FakeFcm, session: aiohttp.ClientSession, reply: Reply, kind: str
) -> None:
    fcm.token_replies.append(reply)

    outcome = await make(fcm, session).send(msg())

    assert outcome.kind == kind
    assert outcome.detail.startswith("token endpoint")
    assert fcm.sends == []
    if reply.status == 429:
        assert outcome.after_s == 3.0


async def test_a_key_the_token_endpoint_rejects_is_a_config_error(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    account = fcm.service_account()
    account["client_email"] = "someone-else@shop-app.iam.gserviceaccount.com"

    outcome = await make(fcm, session, service_account=account).send(msg())

    assert outcome.kind == "config_error"
    assert "invalid_grant" in outcome.detail


async def test_the_token_endpoint_is_retried_on_the_next_send(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    fcm.token_replies.append(Reply(503, ""))
    channel = make(fcm, session)

    assert (await channel.send(msg())).kind == "retry"
    assert (await channel.send(msg())).kind == "accepted"
    assert fcm.token_fetches == 2


DEAD = fcm_error(404, "NOT_FOUND", "not found", "UNREGISTERED")
BUSY = fcm_error(503, "UNAVAILABLE", "busy", "UNAVAILABLE", headers={"Retry-After": "9"})
DEVICES = [
    # (script per token, outcome kind, provider id, dead tokens, sends)
    ({}, "accepted", "projects/shop-app/messages/0:1", (), 3),
    ({"a": [DEAD]}, "accepted", "projects/shop-app/messages/0:1", ("a",), 3),
    ({"a": [DEAD], "b": [BUSY]}, "accepted", "projects/shop-app/messages/0:1", ("a",), 3),
    ({"a": [DEAD], "b": [DEAD], "c": [DEAD]}, "reject_recipient", None, ("a", "b", "c"), 3),
    ({"a": [DEAD], "b": [BUSY], "c": [DEAD]}, "retry", None, ("a", "c"), 3),
    ({"a": [fcm_error(400, "INVALID_ARGUMENT", "bad", "INVALID_ARGUMENT")]},
     "reject_message", None, (), 1),
    ({"a": [DEAD], "b": [fcm_error(401, "UNAUTHENTICATED", "x", "THIRD_PARTY_AUTH_ERROR")]},
     "config_error", None, ("a",), 2),
]  # fmt: skip


@pytest.mark.parametrize(("script", "kind", "provider_id", "dead", "sends"), DEVICES)
async def test_several_devices(
    fcm: FakeFcm,
    session: aiohttp.ClientSession,
    script: dict[str, list[Reply]],
    kind: str,
    provider_id: str | None,
    dead: tuple[str, ...],
    sends: int,
) -> None:
    for token, replies in script.items():
        fcm.script(token, *replies)

    outcome = await make(fcm, session).send(msg("a", "b", "c", "a"))

    assert (outcome.kind, outcome.provider_id, outcome.dead_addresses) == (kind, provider_id, dead)
    assert len(fcm.sends) == sends
    if kind == "retry":
        assert outcome.after_s == 9.0


async def test_no_token_at_all(fcm: FakeFcm, session: aiohttp.ClientSession) -> None:
    message = msg()
    message.addresses = []

    assert (await make(fcm, session).send(message)).kind == "reject_recipient"
    assert fcm.token_fetches == 0


async def test_an_oversized_payload_is_rejected_before_any_call(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    outcome = await make(fcm, session).send(msg(TOKEN, title="t", body="x" * 4100))

    assert outcome.kind == "reject_message"
    assert "over 4096" in outcome.detail
    assert (fcm.token_fetches, fcm.sends) == (0, [])


async def test_a_payload_at_the_limit_goes_out(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    base = {"notification": {"body": ""}, "data": {"message_id": "m1"}}
    room = 4096 - len(json.dumps(base, separators=(",", ":")))

    outcome = await make(fcm, session).send(msg(TOKEN, body="é" * (room // 2)))

    assert outcome.kind == "accepted"


async def test_a_slow_send_times_out_into_a_retry(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    fcm.script(TOKEN, Reply(delay_s=5))

    outcome = await make(fcm, session, timeout_s=0.2).send(msg())

    assert (outcome.kind, outcome.detail) == ("retry", "network error: TimeoutError")


async def test_a_slow_token_endpoint_times_out_into_a_retry(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    fcm.token_replies.append(Reply(delay_s=5))

    outcome = await make(fcm, session, timeout_s=0.2).send(msg())

    assert outcome.kind == "retry"
    assert fcm.sends == []


async def test_connection_refused_is_a_retry(fcm: FakeFcm, session: aiohttp.ClientSession) -> None:
    outcome = await make(fcm, session, base_url=closed_url()).send(msg())

    assert outcome.kind == "retry"
    assert outcome.detail.startswith("network error")


async def test_an_unreachable_token_endpoint_is_a_retry(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    account = fcm.service_account()
    account["token_uri"] = f"{closed_url()}/token"

    outcome = await make(fcm, session, service_account=account).send(msg())

    assert outcome.kind == "retry"


async def test_the_service_account_file(
    fcm: FakeFcm, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "fcm.json"
    path.write_text(json.dumps(fcm.service_account()))
    keys = {"base_url": fcm.base_url, "service_account_file": str(path)}

    channel = build("mobile_push", keys, Limits(timeout_s=5), session)

    assert channel.provider == "fcm"
    assert (await channel.send(msg())).kind == "accepted"
    await channel.close()


async def test_the_service_account_inline_as_a_string(
    fcm: FakeFcm, session: aiohttp.ClientSession
) -> None:
    channel = make(fcm, session, service_account=json.dumps(fcm.service_account()))

    assert (await channel.send(msg())).kind == "accepted"


ACCOUNT = service_account("shop-app", "k@shop-app.iam", "https://oauth2.googleapis.com/token")
PEM = "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----"
CONFIG_ERRORS = [
    ({}, "service_account_file: required (or service_account)"),
    ({"service_account": {**ACCOUNT, "project_id": ""}}, "project_id: required"),
    ({"service_account": {**ACCOUNT, "private_key": None}},
     "service_account: 'private_key' missing from the service account"),
    ({"service_account": {**ACCOUNT, "private_key": PEM}},
     "service_account: 'private_key' is not an unencrypted RSA PEM key"),
    ({"service_account": "[1, 2]"}, "service_account: not a JSON service-account key"),
    ({"service_account_file": "{dir}/none.json"},
     "service_account_file: cannot read {dir}/none.json: No such file or directory"),
    ({"service_account_file": "{dir}/broken.json"},
     "service_account_file: not a JSON service-account key"),
    ({"service_account": ACCOUNT, "service_account_file": "x.json"},
     "service_account: give service_account_file or service_account, not both"),
    ({"service_account": {**ACCOUNT, "token_uri": "file:///x"}},
     "service_account.token_uri: expected an http(s) URL, got 'file:///x'"),
    ({"service_account": ACCOUNT, "base_url": "fcm.googleapis.com"},
     "base_url: expected an http(s) URL, got 'fcm.googleapis.com'"),
    ({"service_account": ACCOUNT, "ttl_s": "1h"},
     "ttl_s: expected whole seconds 0-2419200 (28 days)"),
    ({"service_account": ACCOUNT, "projet_id": "x"},
     "projet_id: unknown key; did you mean 'project_id'?"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "error"), CONFIG_ERRORS)
def test_config_errors_name_the_key(tmp_path: Path, keys: dict[str, Any], error: str) -> None:
    (tmp_path / "broken.json").write_text("{")
    path = keys.get("service_account_file")
    if path:
        keys = {**keys, "service_account_file": path.format(dir=tmp_path)}

    with pytest.raises(ValueError) as caught:
        FcmChannel("mobile_push", keys, None, Limits())  # type: ignore[arg-type]

    assert str(caught.value) == "channels.mobile_push." + error.format(dir=tmp_path)
    assert "PRIVATE KEY" not in str(caught.value)


def test_build_needs_a_session() -> None:
    with pytest.raises(ValueError, match=r"channels\.mobile_push: the fcm provider needs"):
        build("mobile_push", {}, Limits(), None)


async def test_the_repr_shows_no_secret(fcm: FakeFcm, session: aiohttp.ClientSession) -> None:
    channel = make(fcm, session)
    await channel.send(msg())

    text = repr(channel)
    assert "shop-app" in text
    assert "PRIVATE" not in text
    assert "ya29" not in text
