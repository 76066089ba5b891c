"""Signed ingest (SPEC 8): `X-Kaskad-Signature: sha256=<hex HMAC of timestamp.body>` with
`X-Kaskad-Timestamp`, 5 minutes old at most, 30 seconds ahead at most, never `nan`; and a
signed request replayed within the window stores nothing, on every replica."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon
from tests.pgdb import pg_schema

from .helpers import START, Client, make_config

BODY = json.dumps(
    [
        {"type": "cart.updated", "user_id": "u1", "data": {"total": 5}},
        {"type": "cart.updated", "user_id": "u2", "data": {"total": 7}},
    ]
).encode()


def signed(stamp: str, body: bytes = BODY) -> dict[str, str]:
    mac = hmac.new(b"hmac-secret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "X-Kaskad-Timestamp": stamp,
        "X-Kaskad-Signature": f"sha256={mac}",
        "Content-Type": "application/json",
    }


async def send(c: Client, headers: dict[str, str], body: bytes = BODY) -> tuple[int, object]:
    return await c.request("POST", "/v1/events", data=body, headers=headers)


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", "1e999", "infinity"])
async def test_a_timestamp_that_is_not_a_number_of_seconds_is_refused(
    client: Client, stamp: str
) -> None:
    status, body = await send(client, signed(stamp))
    assert (status, body) == (
        401,
        {
            "error": {
                "code": "unauthorized",
                "message": "X-Kaskad-Timestamp must be unix seconds",
                "details": None,
            }
        },
    )
    assert await client.daemon.store.inbox_size() == 0


@pytest.mark.parametrize(
    ("offset_s", "status", "message"),
    [
        (-300, 202, None),
        (-301, 401, "X-Kaskad-Timestamp is outside the 5 minute tolerance"),
        (30, 202, None),
        (31, 401, "X-Kaskad-Timestamp is more than 30 s ahead of the server's clock"),
        (299, 401, "X-Kaskad-Timestamp is more than 30 s ahead of the server's clock"),
    ],
)
async def test_stamps_up_to_5_minutes_old_and_30_seconds_ahead(
    client: Client, offset_s: int, status: int, message: str | None
) -> None:
    got, body = await send(client, signed(str(int(START) + offset_s)))
    assert got == status
    if message is not None:
        assert isinstance(body, dict) and body["error"]["message"] == message


async def test_a_replayed_signature_stores_nothing(client: Client) -> None:
    headers = signed(str(int(START)))
    assert await send(client, headers) == (202, {"accepted": 2, "duplicates": 0})
    assert await send(client, headers) == (202, {"accepted": 0, "duplicates": 2})
    assert await client.daemon.store.inbox_size() == 2
    await client.advance(200)  # processed, and still within the tolerance
    assert await send(client, headers) == (202, {"accepted": 0, "duplicates": 2})
    assert await client.daemon.store.inbox_size() == 0
    status, text = await client.admin("GET", "/metrics")
    assert status == 200 and "kaskad_events_processed_total 2.0" in str(text)
    # The sender's own retry with a fresh stamp is a new signature: a new batch.
    fresh = signed(str(int(START) + 200))
    assert await send(client, fresh) == (202, {"accepted": 2, "duplicates": 0})


async def test_a_bearer_request_is_not_deduplicated_by_its_body(client: Client) -> None:
    bearer = {"Authorization": "Bearer ingest-token", "Content-Type": "application/json"}
    assert await send(client, bearer) == (202, {"accepted": 2, "duplicates": 0})
    assert await send(client, bearer) == (202, {"accepted": 2, "duplicates": 0})


async def test_a_replay_sent_to_another_replica_stores_nothing(
    tmp_path: Path, rules_dir: Path
) -> None:
    async with pg_schema() as url:
        config = make_config(tmp_path, rules_dir, storage_url=url)
        clock = VirtualClock(START)
        replicas = [Daemon(config, clock, background=False) for _ in range(2)]
        for replica in replicas:
            await replica.start()
        try:
            async with aiohttp.ClientSession() as session:
                a, b = (Client(r, session) for r in replicas)
                headers = signed(str(int(START)))
                assert await send(a, headers) == (202, {"accepted": 2, "duplicates": 0})
                assert await send(b, headers) == (202, {"accepted": 0, "duplicates": 2})
        finally:
            for replica in replicas:
                await replica.stop()
