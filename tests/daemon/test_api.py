"""The HTTP contract of SPEC 8 against an in-process daemon."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.runtime.logs import configure

from .helpers import ADMIN, START, Client, make_config
from .proc import poll

CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}


def cart(user: str, eid: str | None = None) -> dict:
    event = {"type": "cart.updated", "user_id": user, "data": CART}
    if eid:
        event["id"] = eid
    return event


def profile(user: str, **data: object) -> dict:
    return {"type": "profile.updated", "user_id": user, "data": {"email": f"{user}@x.test", **data}}


async def test_single_array_and_ndjson_bodies(client: Client) -> None:
    assert await client.post_events(cart("u1", "e1")) == (202, {"accepted": 1, "duplicates": 0})
    assert await client.post_events([cart("u2", "e2"), cart("u3", "e3")]) == (
        202,
        {"accepted": 2, "duplicates": 0},
    )
    body = "\n".join(json.dumps(cart(f"u{i}", f"e{i}")) for i in (3, 4)) + "\n"
    status, answer = await client.request(
        "POST",
        "/v1/events",
        data=body,
        headers={**client_headers(), "Content-Type": "application/x-ndjson"},
    )
    assert (status, answer) == (202, {"accepted": 1, "duplicates": 1})


def client_headers() -> dict[str, str]:
    return {"Authorization": "Bearer ingest-token"}


async def test_invalid_batch_is_rejected_whole_with_each_problem(client: Client) -> None:
    status, body = await client.post_events(
        [cart("u1", "ok"), {"type": "Cart"}, {"type": "cart.updated"}]
    )
    assert status == 400
    assert body["error"]["code"] == "invalid_events"
    assert body["error"]["details"] == [
        {
            "index": 1,
            "field": "type",
            "message": "must match [a-z0-9_]+(.[a-z0-9_]+)*, e.g. cart.updated",
        },
        {"index": 2, "field": "user_id", "message": "is required"},
    ]
    # Nothing of the batch was kept: the valid event can still be sent and is not a dup.
    assert await client.post_events(cart("u1", "ok")) == (202, {"accepted": 1, "duplicates": 0})


async def test_bad_requests_get_clear_errors(client: Client) -> None:
    status, body = await client.request(
        "POST",
        "/v1/events",
        data=b'{"type": ',
        headers={**client_headers(), "Content-Type": "application/json"},
    )
    assert status == 400 and body["error"]["code"] == "malformed"
    assert "line 1" in body["error"]["message"]
    status, body = await client.request(
        "POST",
        "/v1/events",
        data=b"<xml/>",
        headers={**client_headers(), "Content-Type": "application/xml"},
    )
    assert status == 415
    status, body = await client.post_events([cart(f"u{i}") for i in range(51)])
    assert status == 413 and "over the limit of 50" in body["error"]["message"]
    big = {"type": "x.y", "user_id": "u", "data": {"blob": "a" * 70_000}}
    status, body = await client.post_events(big)
    assert status == 400 and body["error"]["details"][0]["field"] == "(event)"
    status, body = await client.request("GET", "/v1/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_ingest_auth_bearer_and_hmac(client: Client) -> None:
    assert (await client.post_events(cart("u1"), headers={}))[0] == 401
    status, body = await client.post_events(cart("u1"), headers={"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["message"] == "unknown bearer token"
    payload = json.dumps(cart("u1")).encode()
    now = str(int(START))
    sig = hmac.new(b"hmac-secret", now.encode() + b"." + payload, hashlib.sha256).hexdigest()
    headers = {
        "X-Kaskad-Timestamp": now,
        "X-Kaskad-Signature": f"sha256={sig}",
        "Content-Type": "application/json",
    }
    assert (await client.request("POST", "/v1/events", data=payload, headers=headers))[0] == 202
    tampered = payload.replace(b"u1", b"u2")
    status, body = await client.request("POST", "/v1/events", data=tampered, headers=headers)
    assert status == 401 and "does not match" in body["error"]["message"]
    stale = str(int(START) - 600)
    sig = hmac.new(b"hmac-secret", stale.encode() + b"." + payload, hashlib.sha256).hexdigest()
    status, body = await client.request(
        "POST",
        "/v1/events",
        data=payload,
        headers={**headers, "X-Kaskad-Timestamp": stale, "X-Kaskad-Signature": f"sha256={sig}"},
    )
    assert status == 401 and "tolerance" in body["error"]["message"]


async def test_cart_to_message_to_order(client: Client) -> None:
    await client.post_events([profile("u1"), cart("u1")])
    await client.advance(0)
    status, body = await client.admin("GET", "/v1/messages")
    # nothing sent yet; the second cart rule of the group cart_recovery did not start
    assert status == 200
    assert [(m["rule"], m["status"], m["reason"]) for m in body["messages"]] == [
        ("abandoned_cart_quick", "skipped", "group_busy")
    ]
    await client.advance(3600)
    _, body = await client.admin("GET", "/v1/messages?user_id=u1")
    sent = body["messages"]
    assert [
        (m["rule"], m["channel"], m["status"], m["template"])
        for m in sent
        if m["rule"] == "abandoned_cart"
    ] == [("abandoned_cart", "email", "sent", "cart_reminder")]
    assert sent[0]["sent_at"] == "2026-11-23T11:00:00Z"
    await client.post_events(
        {"type": "order.created", "user_id": "u1", "data": {"order_id": "o1", "total": 30}}
    )
    await client.advance(10 * 86400)
    _, body = await client.admin("GET", "/v1/users/u1/timeline")
    statuses = {i["rule"]: i["status"] for i in body["instances"]}
    assert statuses["abandoned_cart"] == "converted"
    _, body = await client.admin("GET", "/v1/messages?rule=abandoned_cart")
    assert len(body["messages"]) == 1


async def test_messages_pagination_and_admin_auth(client: Client) -> None:
    await client.post_events(
        [profile(f"u{i}") for i in range(5)] + [cart(f"u{i}") for i in range(5)]
    )
    await client.advance(3600)
    assert (await client.request("GET", "/v1/messages"))[0] == 401
    _, page1 = await client.admin("GET", "/v1/messages?rule=abandoned_cart&limit=3")
    _, page2 = await client.admin(
        "GET", f"/v1/messages?rule=abandoned_cart&limit=3&cursor={page1['next_cursor']}"
    )
    ids = [m["id"] for m in page1["messages"] + page2["messages"]]
    assert len(ids) == len(set(ids)) == 5 and page2["next_cursor"] is None
    status, _ = await client.admin("GET", "/v1/messages?cursor=garbage")
    assert status == 400


async def test_profiles_read_merge_erase(client: Client) -> None:
    assert (await client.admin("GET", "/v1/profiles/nobody"))[0] == 404
    status, body = await client.admin(
        "PUT", "/v1/profiles/u1", json={"email": "a@x.test", "attributes": {"tier": 1}}
    )
    assert status == 200 and body["email"] == "a@x.test"
    _, body = await client.admin("PUT", "/v1/profiles/u1", json={"attributes": {"vip": True}})
    assert body["attributes"] == {"tier": 1, "vip": True}
    status, body = await client.admin("PUT", "/v1/profiles/u1", json={"consent": {"sms": 1}})
    assert status == 400 and body["error"]["details"][0]["field"] == "data.consent.sms"
    await client.post_events(cart("u1"))
    await client.advance(60)
    assert (await client.admin("DELETE", "/v1/profiles/u1"))[0] == 200
    assert (await client.admin("GET", "/v1/profiles/u1"))[0] == 404
    await client.advance(7200)
    _, body = await client.admin("GET", "/v1/messages?user_id=u1")
    # nothing was sent: the one record is abandoned_cart_quick not started (group_busy)
    assert [(m["status"], m["reason"]) for m in body["messages"]] == [("skipped", "group_busy")]
    _, body = await client.admin("GET", "/v1/users/u1/timeline")
    assert {i["status"] for i in body["instances"]} == {"stopped"}


async def test_rules_listing_and_reload_keeps_previous_version(
    client: Client, rules_dir: Path
) -> None:
    _, body = await client.admin("GET", "/v1/rules")
    ids = {r["id"]: r for r in body["rules"]}
    assert ids["abandoned_cart"]["state"] == "active" and body["problems"] == []
    path = rules_dir / "abandoned_cart.yaml"
    path.write_text(path.read_text().replace("wait: 1h", "wiat: 1h"))
    _, body = await client.admin("POST", "/v1/rules/reload")
    rule = {r["id"]: r for r in body["rules"]}["abandoned_cart"]
    assert rule["state"] == "stale"
    assert any("unknown key 'wiat'" in e and "did you mean 'wait'" in e for e in rule["errors"])
    # The previous version still runs.
    await client.post_events([profile("u1"), cart("u1")])
    await client.advance(3600)
    _, body = await client.admin("GET", "/v1/messages?rule=abandoned_cart")
    assert len(body["messages"]) == 1


async def test_health_readiness_metrics(client: Client) -> None:
    assert await client.request("GET", "/healthz") == (200, {"status": "ok"})
    status, body = await client.request("GET", "/readyz")
    assert status == 200 and body["ready"] is True
    await client.post_events(cart("u1"))
    await client.advance(0)
    # /metrics takes the admin token when no auth.metrics_token is set.
    status, body = await client.request("GET", "/metrics")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, text = await client.admin("GET", "/metrics")
    assert status == 200
    assert "kaskad_events_accepted_total 1.0" in text
    assert "kaskad_events_processed_total 1.0" in text
    assert "kaskad_timers_pending" in text


async def test_store_failure_answers_503_and_acks_nothing(client: Client) -> None:
    await client.daemon.store.close()
    status, body = await client.post_events(cart("u1"))
    assert status == 503 and body["error"]["code"] == "store_unavailable"
    status, body = await client.request("GET", "/readyz")
    assert status == 503 and body["checks"]["store"].startswith("error")


async def test_timers_survive_a_restart_and_late_ones_expire(
    tmp_path: Path, rules_dir: Path
) -> None:
    config = make_config(
        tmp_path, rules_dir, "{quiet_hours: null, frequency_caps: [], max_lateness: 2h}"
    )
    clock = VirtualClock(START)
    first = Daemon(config, clock, background=False)
    await first.start()
    async with aiohttp.ClientSession() as session:
        c = Client(first, session)
        await c.post_events([profile("early"), cart("early"), profile("late")])
        await first.pump()
    await first.stop()
    # Down for 50 minutes: the 1 h timer is still ahead when the daemon comes back.
    clock.advance_to(START + 3000)
    second = Daemon(config, clock, background=False)
    await second.start()
    async with aiohttp.ClientSession() as session:
        c = Client(second, session)
        await c.post_events(cart("late"))
        await c.advance(600)
        _, body = await c.admin("GET", "/v1/messages?rule=abandoned_cart")
        assert [(m["user_id"], m["status"]) for m in body["messages"]] == [("early", "sent")]
    await second.stop()
    # Down for 3 days: the 'late' user's 1 h timer is now past max_lateness.
    clock.advance_to(START + 3 * 86400)
    third = Daemon(config, clock, background=False)
    await third.start()
    async with aiohttp.ClientSession() as session:
        c = Client(third, session)
        await third.pump()
        _, body = await c.admin("GET", "/v1/messages?user_id=late&rule=abandoned_cart")
        assert [(m["status"], m["reason"]) for m in body["messages"]] == [("skipped", "expired")]
    await third.stop()


async def test_admin_auth_header_is_needed_for_profiles(client: Client) -> None:
    status, body = await client.request("GET", "/v1/profiles/u1")
    assert status == 401 and "admin_token" in body["error"]["message"]
    assert ADMIN["Authorization"].startswith("Bearer ")


async def test_a_queued_send_wakes_the_dispatcher(client: Client) -> None:
    """The commit that queues a message wakes the dispatcher at once (else it would wait for
    its next poll, a second later on the real clock)."""
    profile = {"type": "profile.updated", "user_id": "w1", "data": {"phone": "+15550001234"}}
    bonus = {"type": "bonus.credited", "user_id": "w1", "data": {"amount": 5, "balance": 5}}
    assert (await client.post_events([profile]))[0] == 202
    wake = client.daemon.dispatcher.wake
    wake.clear()
    await client.daemon.processor.run_once()
    assert not wake.is_set()  # a profile update queues nothing
    assert (await client.post_events([bonus]))[0] == 202
    await client.daemon.processor.run_once()
    assert wake.is_set()


# -- slow clients and clients that leave (issue 9) ------------------------------------------


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """All the server sends until it closes; a server that never does fails the test."""
    return await asyncio.wait_for(reader.read(), timeout=10)


async def test_a_body_that_does_not_arrive_in_time_gets_408(
    tmp_path: Path, rules_dir: Path
) -> None:
    config = make_config(tmp_path, rules_dir)
    config.server.read_timeout_s = 0.3  # the wall clock: a network deadline, not engine time
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    try:
        # The headers, then 10 of the 1000 bytes promised, then nothing (slowloris).
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer ingest-token\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"type": "'
        )
        answer = await _answer(reader)
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
        error = json.loads(body)["error"]
        assert error["code"] == "request_timeout" and "server.read_timeout_s" in error["message"]
        # Headers that never end: the connection is closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: k\r\nX-Slow: ")
        assert await _answer(reader) == b""
        writer.close()
        assert await daemon.store.inbox_size() == 0
        # Requests in time are served as ever.
        async with aiohttp.ClientSession() as session:
            client = Client(daemon, session)
            assert (await client.post_events(cart("u1")))[0] == 202
    finally:
        await daemon.stop()


@pytest.fixture
def info_logs() -> Iterator[None]:
    """Info lines are kept for the test (the suite keeps warnings and above)."""
    configure(level="info", fmt="console")
    yield
    configure(level="warning", fmt="console")


@pytest.mark.usefixtures("info_logs")
async def test_a_client_that_leaves_mid_request_is_no_server_error(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with capture_logs() as logs:
        _, writer = await asyncio.open_connection("127.0.0.1", client.daemon.port)
        writer.write(
            b"PUT /v1/profiles/u1 HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer admin-token\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"email": '
        )
        await writer.drain()
        writer.transport.abort()  # a reset, mid-body

        async def gone() -> list[dict[str, Any]] | None:
            await asyncio.sleep(0)  # lets the server run; no timer is waited for
            return [e for e in logs if e["event"] == "api.client_gone"] or None

        (line,) = await poll(gone, within=10, what="the server to see the client leave")
    assert line["log_level"] == "info" and line["path"] == "/v1/profiles/u1", line
    assert "exc_info" not in line and "exception" not in line
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    # The server goes on.
    assert (await client.post_events(cart("u1")))[0] == 202
