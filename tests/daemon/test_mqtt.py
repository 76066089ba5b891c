"""MQTT ingest (SPEC 8) against a real broker and real daemon processes: QoS 1 payloads of
every shape, dead letters, shared subscriptions, and the persistent session.

The broker is the `broker` fixture's (tests/daemon/broker.py): the local Mosquitto, one
started here, or amqtt in-process; topics and client ids carry a random suffix so parallel
runs on one broker never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from typing import Any

from .broker import require
from .mqtt_run import (
    Run,
    accepted,
    cart,
    collect,
    get,
    metrics,
    profile,
    stored_profile,
    wait_profile,
)
from .proc import http_session, metric, poll


async def test_payload_shapes_dead_letters_metrics_and_readiness(run: Run) -> None:
    daemon = await run.start("one", f"{run.base}-one")
    bad_type = b'{"type": "Bad"}'
    not_json = b"this is not JSON"
    async with run.client() as mq, http_session() as session:
        await mq.subscribe(run.dead_topic, qos=1)
        await mq.publish(run.topic, json.dumps([profile("m1"), cart("m1")]), qos=1)
        ndjson = "".join(json.dumps(e) + "\n" for e in (profile("m2"), cart("m2")))
        await mq.publish(run.topic, ndjson, qos=1)
        # A redelivery of the first: acknowledged, ignored as duplicates.
        await mq.publish(run.topic, json.dumps([profile("m1"), cart("m1")]), qos=1)
        await mq.publish(run.topic, bad_type, qos=1)
        await mq.publish(run.topic, not_json, qos=1)

        dead: dict[str, dict[str, Any]] = {}
        for message in await collect(mq, 2, within=20):
            assert isinstance(message.payload, bytes | str)
            body = json.loads(message.payload)
            dead[body["payload"]] = body
        assert set(dead) == {bad_type.decode(), not_json.decode()}
        assert dead[bad_type.decode()]["topic"] == run.topic
        assert "type" in dead[bad_type.decode()]["error"]
        assert dead[bad_type.decode()]["error"].startswith("[0] type:")
        assert "invalid JSON" in dead[not_json.decode()]["error"]

        for user in ("m1", "m2"):
            found = await wait_profile(session, daemon, user)
            assert found["email"] == f"{user}@shop.test"

            async def cart_instance(user: str = user) -> dict[str, Any] | None:
                body = await get(session, daemon, f"/v1/users/{user}/timeline")
                rules = {i["rule"]: i for i in body["instances"]}
                return rules.get("abandoned_cart")

            instance = await poll(cart_instance, within=20, what=f"{user}'s cart instance")
            assert instance["status"] == "active"
            assert instance["trigger"]["id"] == f"c-{user}"

        text = await metrics(session, daemon)
        assert metric(text, "kaskad_mqtt_dead_letters_total") == 2.0
        assert metric(text, "kaskad_events_accepted_total") == 4.0
        assert metric(text, "kaskad_events_duplicate_total") == 2.0
        ready = await get(session, daemon, "/readyz")
        assert ready["ready"] is True and ready["checks"]["broker"] == "ok", ready
    assert len(daemon.events("mqtt.dead_letter")) == 2
    assert await daemon.terminate() == 0, daemon.tail()


async def test_shared_group_splits_the_stream(run: Run) -> None:
    require(run.broker, "shared")
    a = await run.start("a", f"{run.base}-a", shared_group="g1")
    b = await run.start("b", f"{run.base}-b", shared_group="g1")
    users = [f"s{i}" for i in range(40)]
    async with run.client() as mq:
        for user in users:
            await mq.publish(run.topic, json.dumps(profile(user)), qos=1)
    async with http_session() as session:

        async def all_stored() -> tuple[float, float] | None:
            counts = (await accepted(session, a), await accepted(session, b))
            return counts if sum(counts) >= len(users) else None

        counts = await poll(all_stored, within=20, what="40 events stored by the two replicas")
        assert sum(counts) == len(users), counts
        assert counts[0] > 0 and counts[1] > 0, f"the broker gave one replica all: {counts}"
        # Each event was stored by exactly one replica.
        for user in users:
            owners = [d.name for d in (a, b) if await stored_profile(session, d, user) is not None]
            assert len(owners) == 1, (user, owners)
    print(f"\nshared group g1: replica a stored {counts[0]:.0f}, replica b {counts[1]:.0f}")
    assert await a.terminate() == 0, a.tail()
    assert await b.terminate() == 0, b.tail()


async def test_persistent_session_keeps_what_arrives_while_down(run: Run) -> None:
    client_id = f"{run.base}-p"
    first = await run.start("p", client_id)
    async with run.client() as mq, http_session() as session:
        await mq.publish(run.topic, json.dumps(profile("w0")), qos=1)
        await wait_profile(session, first, "w0")
        assert await first.terminate() == 0, first.tail()
        # Down: the broker keeps these for the daemon's session.
        for i in range(5):
            await mq.publish(run.topic, json.dumps(profile(f"d{i}")), qos=1)
        second = await run.start("p", client_id)
        for i in range(5):
            stored = await wait_profile(session, second, f"d{i}")
            assert stored["email"] == f"d{i}@shop.test"
        assert await accepted(session, second) == 5.0
    assert await second.terminate() == 0, second.tail()


async def test_kill9_mid_stream_loses_no_message(run: Run) -> None:
    """A message is acknowledged to the broker only once its events are stored: what the
    daemon had received but not stored when it died comes again (QoS 1), once."""
    require(run.broker, "redelivers")
    client_id = f"{run.base}-k"
    first = await run.start("k", client_id)
    users = [f"k{i}" for i in range(60)]
    async with run.client() as mq, http_session() as session:
        await asyncio.gather(
            *(mq.publish(run.topic, json.dumps([profile(u), cart(u)]), qos=1) for u in users)
        )

        async def some_stored() -> float | None:
            count = await accepted(session, first)
            return count if count >= 20 else None

        before = await poll(some_stored, within=20, what="the first events stored")
        await first.kill()
        second = await run.start("k", client_id)
        for user in users:
            await wait_profile(session, second, user)
        text = await metrics(session, second)
    again = metric(text, "kaskad_events_accepted_total") or 0.0
    duplicates = metric(text, "kaskad_events_duplicate_total") or 0.0
    print(
        f"\nmqtt kill -9: {before:.0f} events stored before the kill (or more), "
        f"{again:.0f} after the restart, {duplicates:.0f} redelivered duplicates"
    )
    assert again + duplicates <= 2 * len(users)
    assert await second.terminate() == 0, second.tail()
    with contextlib.closing(sqlite3.connect(f"file:{run.tmp_path}/k.db?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT user_id, count(*) FROM instances WHERE rule_id = 'abandoned_cart' "
            "GROUP BY user_id"
        ).fetchall()
    assert sorted(rows) == sorted((u, 1) for u in users)
