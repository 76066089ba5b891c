"""Every metric family moves: an in-process daemon on a virtual clock (with MQTT on a real
broker) is driven through a scenario that touches each family that engine/runtime/metrics.py
declares, and GET /metrics shows each family's samples change.

The families are read off the daemon's registry, not listed here: a family added to
Metrics that nothing ever moves fails this test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from prometheus_client.parser import text_string_to_metric_families

from engine.clock import VirtualClock
from engine.core.changes import Changes
from engine.core.model import new_profile
from engine.daemon import Daemon
from tests.fakes.webhook_receiver import FakeReceiver, Reply

from .broker import Broker
from .helpers import START, Client, make_config
from .proc import poll

NOTE = """\
template: note
email: {subject: Hello, text: "Hello {{ user.user_id }}"}
sms: {text: "Hello"}
webhook:
  body: {user: "{{ user.user_id }}"}
"""
RULES = {
    # A wait (a timer, an active instance) then an email: started, fired, queued, sent, ended.
    "flow": "rule: flow\ntrigger: {event: cart.updated}\nsteps:\n  - wait: 1h\n"
    "  - send: {template: note, cascade: [email]}\n",
    # A user with no phone: skipped, no_address.
    "texting": "rule: texting\ncategory: transactional\ntrigger: {event: bonus.credited}\n"
    "steps:\n  - send: {template: note, cascade: [sms]}\n",
    # A time that is not one: the instance stops, error invalid_time.
    "expiry": 'rule: expiry\ntrigger: {event: points.accrued}\nsteps:\n  - wait: {until: "'
    '{{ trigger.data.expires_at }}"}\n  - send: {template: note, cascade: [email]}\n',
    # A condition that cannot be evaluated on this user's data: an expression error.
    "picky": "rule: picky\ntrigger: {event: thing.happened}\nsteps:\n"
    "  - if: event.data.n + 1 > 5\n    then:\n      - send: {template: note, cascade: [email]}\n",
    # A time of day in the user's zone, for a profile whose zone is none (kept from before
    # timezones were checked): policies.timezone instead, counted.
    "morning": "rule: morning\ncategory: transactional\ntrigger: {event: wake.up}\nsteps:\n"
    "  - wait: {at: '10:00'}\n  - send: {template: note, cascade: [email]}\n",
    # A provider that answers 503: the webhook channel pauses.
    "hook": "rule: hook\ntrigger: {event: hook.ping}\nsteps:\n"
    "  - send: {template: note, cascade: [webhook]}\n",
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def families(text: str) -> dict[str, Samples]:
    """Each family's samples by (name, labels), without the `_created` timestamps (which
    change as label sets appear, whether or not anything is counted)."""
    out: dict[str, Samples] = {}
    for family in text_string_to_metric_families(text):
        samples = out.setdefault(family.name, {})
        for s in family.samples:
            if not s.name.endswith("_created"):
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@contextlib.asynccontextmanager
async def daemon_on(tmp_path: Path, broker: Broker, base: str) -> AsyncIterator[Client]:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in RULES.items():
        (rules / f"{name}.yaml").write_text(text)
    (rules / "note.yaml").write_text(NOTE)
    async with FakeReceiver() as receiver:
        receiver.otherwise = Reply(status=503, text="down for maintenance")
        mqtt = {
            "url": broker.url,
            "topics": [f"{base}/events/#"],
            "client_id": f"{base}-daemon",
            "dead_letter_topic": f"{base}/dead",
        }
        extra = (
            f"mqtt: {json.dumps(mqtt)}\nchannels:\n  webhook: {{provider: webhook, "
            f'url: "{receiver.url}", secret: "{receiver.secret}", timeout_s: 0.5}}\n'
        )
        config = make_config(tmp_path, rules, extra=extra)
        daemon = Daemon(config, VirtualClock(START), background=False)
        await daemon.start()
        try:
            async with aiohttp.ClientSession() as session:
                yield Client(daemon, session)
        finally:
            await daemon.stop()
            with contextlib.suppress(aiomqtt.MqttError):
                async with broker.client(f"{base}-daemon", clean_session=True):
                    pass  # the daemon's persistent session goes


async def test_every_metric_family_moves(tmp_path: Path, broker: Broker) -> None:
    base = f"kaskad-metrics-{secrets.token_hex(4)}"
    async with daemon_on(tmp_path, broker, base) as client:
        daemon = client.daemon
        clock = daemon.clock
        assert isinstance(clock, VirtualClock)
        scrapes: list[dict[str, Samples]] = []

        async def scrape() -> None:
            status, text = await client.admin("GET", "/metrics")
            assert status == 200, text
            scrapes.append(families(text))

        await scrape()
        stale = {**new_profile("zed", clock.now()), "timezone": "localtime"}
        await daemon.store.save(Changes(profiles={"zed": stale}))
        profile = {"type": "profile.updated", "user_id": "ann", "data": {"email": "a@shop.test"}}
        events: list[dict[str, Any]] = [
            {**profile, "id": "e-profile"},
            {"type": "cart.updated", "user_id": "ann", "data": {"total": 5}},
            {"type": "bonus.credited", "user_id": "ann", "data": {"amount": 5}},
            {"type": "points.accrued", "user_id": "ann", "data": {"expires_at": "01.04.2027"}},
            {"type": "thing.happened", "user_id": "ann", "data": {"n": "many"}},
            {"type": "hook.ping", "user_id": "ann"},
            {"type": "wake.up", "user_id": "zed"},
        ]
        assert (await client.post_events(events))[0] == 202
        assert (await client.post_events([{**profile, "id": "e-profile"}]))[1] == {
            "accepted": 0,
            "duplicates": 1,
        }
        assert (await client.post_events([{"type": "Bad", "user_id": "ann"}]))[0] == 400
        await scrape()  # accepted, duplicate, rejected; the inbox holds the events
        # A stored row the engine cannot read back (NaN, as an older version wrote it).
        nan = '{"type": "cart.updated", "user_id": "ann", "data": {"total": NaN}}'
        assert await daemon.store.enqueue([(None, nan)], clock.now()) == (1, 0)
        daemon.processor.accepted(1)

        await client.advance(0)
        await scrape()  # processed, unreadable, started, ended, errors, skips, active, timers...

        clock.advance_to(clock.now() + 3600)
        await daemon.processor.drain()
        await scrape()  # the timer fired; its email is queued
        await daemon.pump()
        await scrape()  # sent

        await mqtt_dead_letter(client, broker, base)
        await scrape()

        rules = Path(daemon.config.rules.path)
        (rules / "broken.yaml").write_text(
            "rule: broken\ntrigger: {event: x}\nsteps: [{delya: 1h}]\n"
        )
        (rules / "hook.yaml").unlink()
        status, body = await client.admin("POST", "/v1/rules/reload")
        assert status == 200, body
        await scrape()  # a rule error; one rule fewer loaded

        declared = {f.name for f in daemon.metrics.registry.collect()}
    still = sorted(
        name
        for name in declared
        if len({json.dumps(sorted(s.get(name, {}).items())) for s in scrapes}) < 2
    )
    assert not still, f"families that never moved: {still}"
    assert declared <= set(scrapes[-1]), declared - set(scrapes[-1])


async def mqtt_dead_letter(client: Client, broker: Broker, base: str) -> None:
    """A bad payload on the daemon's topic, once its MQTT session is up; returns when its
    dead letter arrived (it was counted before it was sent)."""

    async def connected() -> bool | None:
        _, body = await client.request("GET", "/readyz")
        return True if body["checks"].get("broker") == "ok" else None

    await poll(connected, within=30, what="the daemon's MQTT session")
    async with broker.client(f"{base}-pub") as mq:
        await mq.subscribe(f"{base}/dead", qos=1)
        await mq.publish(f"{base}/events/shop", b"not JSON", qos=1)
        async with asyncio.timeout(30):
            async for _ in mq.messages:
                break
