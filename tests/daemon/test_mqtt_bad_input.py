"""One bad MQTT message never stops MQTT ingest (SPEC 8, 10): each is dead-lettered with its
error, acknowledged (never redelivered) and counted, and the next good message is stored
and processed. A store that cannot write, through no fault of the payload, leaves the
message unacknowledged: the broker delivers it again once the store is back.

Real daemon processes on a real broker (tests/daemon/broker.py, mqtt_run.py).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

import aiomqtt
import pytest

from .broker import require
from .mqtt_run import Run, cart, collect, get, metrics, profile, stored_profile, wait_profile
from .proc import http_session, metric, poll

MAX_BODY = 8 * 1024 * 1024  # server.max_body_bytes, default


def nested(depth: int) -> bytes:
    return b'{"type": "deep", "user_id": "u1", "data": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


# (payload, a part of the error its dead letter must carry)
BAD: dict[str, tuple[bytes, str]] = {
    "nested 3,000 deep": (nested(3000), "nested too deeply"),
    "a lone surrogate": (
        b'{"id": "s1", "type": "profile.updated", "user_id": "u1", "data": {"name": "\\ud800"}}',
        "lone surrogate",
    ),
    "a 300-character timezone": (
        json.dumps(
            {"type": "profile.updated", "user_id": "tz", "data": {"timezone": "A" * 300}}
        ).encode(),
        "[0] data.timezone: unknown timezone",
    ),
    "invalid UTF-8": (b'{"type": "x", "user_id": "\xff\xfe"}', "utf-8"),
    "an empty array": (b"[]", "no events"),
    "10,001 events": (
        json.dumps([{"type": "x", "user_id": f"b{i}"} for i in range(10_001)]).encode(),
        "10001 events, over the limit of 10000",
    ),
    # Valid events, each small and fewer than the batch limit, but more bytes than a
    # request may have (HTTP answers 413).
    "over max_body_bytes": (
        json.dumps(
            [{"type": "x", "user_id": f"w{i}", "data": {"s": "x" * 1000}} for i in range(9000)]
        ).encode(),
        f"over the limit of {MAX_BODY}",
    ),
    "a non-object": (b"42", "[0] (event): must be a JSON object"),
    # numbers JSON has not (Python's parser reads them), money past 1e15, a type with "\n"
    "NaN as an order total": (
        b'{"type": "order.created", "user_id": "u1", "data": {"total": NaN}}',
        "[0] data.total: must be a finite number",
    ),
    "1e999 deep in the data of the second event": (
        b'[{"type": "x", "user_id": "u1"}, {"type": "x", "user_id": "u1", "data": {"a": [1e999]}}]',
        "[1] data.a[0]: must be a finite number",
    ),
    "an order total of 1e16": (
        b'{"type": "order.created", "user_id": "u1", "data": {"total": 1e16}}',
        "[0] data.total: must be a number from -1e15 to 1e15",
    ),
    "a type with a trailing newline": (
        b'{"type": "shop.visited\\n", "user_id": "u1"}',
        "[0] type: must match",
    ),
    "a valid event beside an invalid one": (
        json.dumps([profile("beside"), {"type": "Bad", "user_id": "x"}]).encode(),
        "[1] type:",
    ),
}


def dead_letter(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes), message.payload
    body: dict[str, Any] = json.loads(message.payload)
    return body


async def timeline_rules(session: Any, daemon: Any, user: str) -> dict[str, Any]:
    body = await get(session, daemon, f"/v1/users/{user}/timeline")
    return {i["rule"]: i for i in body["instances"]}


async def test_each_bad_message_is_dead_lettered_acked_and_counted_and_ingest_goes_on(
    run: Run,
) -> None:
    client_id = f"{run.base}-bad"
    daemon = await run.start("bad", client_id)
    async with run.client() as mq, http_session() as session:
        await mq.subscribe(run.dead_topic, qos=1)
        for payload, _ in BAD.values():
            await mq.publish(run.topic, payload, qos=1)
        # Right after them, a good message: stored and processed.
        await mq.publish(run.topic, json.dumps([profile("good"), cart("good")]), qos=1)

        letters = [dead_letter(m) for m in await collect(mq, len(BAD), within=60)]
        for (name, (payload, error)), letter in zip(BAD.items(), letters, strict=True):
            assert error in letter["error"], (name, letter["error"][:300])
            assert letter["topic"] == run.topic, name
            quoted = payload[: 64 * 1024].decode("utf-8", "replace")
            assert letter["payload"] == quoted, name

        await wait_profile(session, daemon, "good")

        async def cart_instance() -> dict[str, Any] | None:
            return (await timeline_rules(session, daemon, "good")).get("abandoned_cart")

        instance = await poll(cart_instance, within=20, what="the good user's cart instance")
        assert instance["status"] == "active"
        # The batch with one invalid event was refused whole.
        assert await stored_profile(session, daemon, "beside") is None
        text = await metrics(session, daemon)
        assert metric(text, "kaskad_mqtt_dead_letters_total") == len(BAD)
        assert metric(text, "kaskad_events_accepted_total") == 2.0
        ready = await get(session, daemon, "/readyz")
        assert ready["ready"] is True and ready["checks"]["broker"] == "ok", ready
        assert len(daemon.events("mqtt.dead_letter")) == len(BAD)
        assert await daemon.terminate() == 0, daemon.tail()

        # Acknowledged: the same session, back on the broker, gets none of them again
        # (a redelivery would come before this message, published after the restart).
        again = await run.start("bad", client_id)
        await mq.publish(run.topic, json.dumps(profile("after")), qos=1)
        await wait_profile(session, again, "after")
        text = await metrics(session, again)
    assert (metric(text, "kaskad_mqtt_dead_letters_total") or 0.0) == 0.0, again.tail()
    assert metric(text, "kaskad_events_accepted_total") == 1.0
    assert again.events("mqtt.dead_letter") == []
    assert await again.terminate() == 0, again.tail()


@pytest.mark.parametrize("name", ["a lone surrogate", "nested 3,000 deep"])
async def test_a_bad_message_alone_leaves_the_daemon_healthy(run: Run, name: str) -> None:
    """The daemon answers and ingests over HTTP too after a bad message (no stuck task)."""
    daemon = await run.start("alone", f"{run.base}-alone")
    async with run.client() as mq, http_session() as session:
        await mq.subscribe(run.dead_topic, qos=1)
        await mq.publish(run.topic, BAD[name][0], qos=1)
        (letter,) = await collect(mq, 1, within=30)
        assert BAD[name][1] in dead_letter(letter)["error"]
        await mq.publish(run.topic, json.dumps(profile("next")), qos=1)
        await wait_profile(session, daemon, "next")
        assert (await get(session, daemon, "/healthz"))["status"] == "ok"
    assert await daemon.terminate() == 0, daemon.tail()


async def test_a_store_that_cannot_write_keeps_the_message_until_it_can(run: Run) -> None:
    """Another writer holds the SQLite database's write lock (as a backup, a migration or a
    stray second process would) past the store's busy timeout: the store cannot take the
    batch, through no fault of the payload. The message must not be acknowledged (nor
    dead-lettered): the broker delivers it again, and it is stored once the lock is gone."""
    require(run.broker, "redelivers")
    daemon = await run.start("down", f"{run.base}-down")
    async with run.client() as mq, http_session() as session:
        await mq.publish(run.topic, json.dumps(profile("before")), qos=1)
        await wait_profile(session, daemon, "before")
        lock = sqlite3.connect(run.tmp_path / "down.db", isolation_level=None, timeout=30)
        with contextlib.closing(lock):
            lock.execute("BEGIN IMMEDIATE")
            await mq.publish(run.topic, json.dumps([profile("while"), cart("while")]), qos=1)
            await mq.publish(run.topic, json.dumps(profile("while2")), qos=1)
            _, failed = await daemon.wait_for("mqtt.store_failed", within=60)
            assert "locked" in failed["error"], failed
            assert await stored_profile(session, daemon, "while") is None
            lock.execute("ROLLBACK")
        for user in ("while", "while2"):
            await wait_profile(session, daemon, user)

        async def cart_instance() -> dict[str, Any] | None:
            return (await timeline_rules(session, daemon, "while")).get("abandoned_cart")

        await poll(cart_instance, within=20, what="the cart instance of the redelivered event")
        text = await metrics(session, daemon)
    assert (metric(text, "kaskad_mqtt_dead_letters_total") or 0.0) == 0.0, daemon.tail()
    assert daemon.events("mqtt.dead_letter") == []
    assert metric(text, "kaskad_events_accepted_total") == 4.0
    assert await daemon.terminate() == 0, daemon.tail()
