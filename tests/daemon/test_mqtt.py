"""MQTT ingest (SPEC 8) against a real broker and real daemon processes: QoS 1 payloads of
every shape, dead letters, shared subscriptions, and the persistent session.

The broker is the local Mosquitto on 127.0.0.1:1883 when it answers, else one started here;
topics and client ids carry a random suffix so parallel runs on one broker never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from .proc import (
    DaemonProcess,
    Daemons,
    free_port,
    http_json,
    http_session,
    metric,
    poll,
    port_open,
    wait_port,
    write_config,
)

HOST = "127.0.0.1"
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[int]:
    """The port of a Mosquitto broker on the loopback interface."""
    if os.environ.get("KASKAD_TEST_OWN_BROKER") != "1" and await port_open(HOST, 1883):
        yield 1883
        return
    exe = shutil.which("mosquitto")
    if exe is None:
        reason = "no MQTT broker on 127.0.0.1:1883 and no mosquitto binary to start one"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the MQTT tests: {reason}")
        pytest.skip(reason)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\n")
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-c",
        str(conf),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_port(HOST, port, within=10)
        yield port
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@dataclass
class Run:
    """One test's names on the broker, and its daemons."""

    broker: int
    tmp_path: Path
    rules: Path
    daemons: Daemons
    base: str = field(default_factory=lambda: f"kaskad-test-{secrets.token_hex(4)}")
    client_ids: set[str] = field(default_factory=set)

    @property
    def topic(self) -> str:
        return f"{self.base}/events/shop1"

    @property
    def dead_topic(self) -> str:
        return f"{self.base}/dead"

    async def start(
        self, name: str, client_id: str, shared_group: str | None = None
    ) -> DaemonProcess:
        """A daemon on its own SQLite file; waits until it has subscribed."""
        self.client_ids.add(client_id)
        port = free_port()
        config = write_config(
            self.tmp_path / f"{name}-{port}.yaml",
            {
                "server": {"host": HOST, "port": port},
                "storage": {"url": f"sqlite:///{self.tmp_path}/{name}.db"},
                "rules": {"path": str(self.rules), "watch": False},
                "mqtt": {
                    "url": f"mqtt://{HOST}:{self.broker}",
                    "topics": [f"{self.base}/events/#"],
                    "client_id": client_id,
                    "shared_group": shared_group,
                    "dead_letter_topic": self.dead_topic,
                },
                "logging": {"format": "json", "level": "info"},
            },
        )
        daemon = await self.daemons.start(config, port, name)
        await daemon.wait_for("mqtt.connected", within=30)
        return daemon

    def client(self, role: str = "pub") -> aiomqtt.Client:
        return aiomqtt.Client(HOST, self.broker, identifier=f"{self.base}-{role}")

    async def forget_sessions(self) -> None:
        """Drop the daemons' persistent sessions from the (shared) broker."""
        for client_id in sorted(self.client_ids):
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client(
                    HOST, self.broker, identifier=client_id, clean_session=True
                ):
                    pass


@pytest.fixture
async def run(broker: int, tmp_path: Path, rules_dir: Path) -> AsyncIterator[Run]:
    async with Daemons() as daemons:
        r = Run(broker, tmp_path, rules_dir, daemons)
        try:
            yield r
        finally:
            for daemon in daemons.started:
                await daemon.close()
            await r.forget_sessions()


def profile(user: str) -> dict[str, Any]:
    return {
        "id": f"p-{user}",
        "type": "profile.updated",
        "user_id": user,
        "data": {"email": f"{user}@shop.test"},
    }


def cart(user: str) -> dict[str, Any]:
    return {"id": f"c-{user}", "type": "cart.updated", "user_id": user, "data": CART}


async def get(session: aiohttp.ClientSession, daemon: DaemonProcess, path: str) -> Any:
    status, body = await http_json(session, "GET", daemon.url + path)
    assert status == 200, (path, status, body)
    return body


async def stored_profile(
    session: aiohttp.ClientSession, daemon: DaemonProcess, user: str
) -> dict[str, Any] | None:
    status, body = await http_json(session, "GET", f"{daemon.url}/v1/profiles/{user}")
    return body if status == 200 else None


async def wait_profile(
    session: aiohttp.ClientSession, daemon: DaemonProcess, user: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return await stored_profile(session, daemon, user)

    return await poll(probe, within=20, what=f"the profile of {user} in {daemon.name}")


async def metrics(session: aiohttp.ClientSession, daemon: DaemonProcess) -> str:
    text = await get(session, daemon, "/metrics")
    assert isinstance(text, str)
    return text


async def accepted(session: aiohttp.ClientSession, daemon: DaemonProcess) -> float:
    return metric(await metrics(session, daemon), "kaskad_events_accepted_total") or 0.0


async def collect(client: aiomqtt.Client, count: int, within: float) -> list[aiomqtt.Message]:
    """The next `count` messages of a client's subscriptions, or fail at the deadline."""
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(within):
        async for message in client.messages:
            got.append(message)
            if len(got) == count:
                break
    return got


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
