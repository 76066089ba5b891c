"""Three real daemon processes on one PostgreSQL, under load and chaos: events for the same
users through different replicas (each also posted twice), price drops posted right after
the favourites they fan out to, a one-off broadcast and an every-minute one (each fire
time runs once across the replicas), every database connection terminated
mid-load, one replica SIGSTOPped (its claims lapse with its lease: the others send
everything while it stays stopped) then SIGKILLed.

Every expected message reaches the provider (a webhook receiver that, as a provider
honouring an idempotency key does, counts a message id once), no (rule, user) gets two
messages, and nothing is left queued, in flight, answered-unapplied or due once the load
stops. Runs under CI=true (tests/pgdb.py fails rather than skips there).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from tests.fakes.webhook_receiver import FakeReceiver
from tests.pgdb import pg_schema

from .proc import DaemonProcess, Daemons, free_port, http_json, http_session, write_config

BATCHES = 12
USERS_PER_BATCH = 25
FAVOURITES_PER_BATCH = 10  # of a batch's users favourite its product
BROADCAST_IN_S = 6.0  # after the load: a one-off to every profile, loaded by a reload
SEED = 20261124
APP = "kaskad-chaos"  # the replicas' connections (application_name), to terminate them

CART = """\
rule: chaos_cart
trigger: {event: cart.updated}
steps:
  - wait: 1s
  - send: {template: t, cascade: [webhook]}
"""
DROP = """\
rule: chaos_drop
trigger: {event: product.price_dropped, fan_out: [favorite]}
key: "{{ event.data.product_id }}"
steps:
  - send: {template: t, cascade: [webhook]}
"""
# Every minute, to every profile there is: each fire time runs once across the replicas.
MINUTE = """\
rule: chaos_minute
trigger: {schedule: "* * * * *", timezone: UTC}
steps:
  - send: {template: t, cascade: [webhook]}
"""
TEMPLATE = """\
template: t
webhook: {body: {kind: chaos}}
"""


def broadcast(at: float) -> str:
    when = datetime.fromtimestamp(at, UTC).isoformat()
    return f"""\
rule: chaos_all
trigger: {{schedule: {{at: "{when}"}}}}
steps:
  - send: {{template: t, cascade: [webhook]}}
"""


def user(batch: int, n: int) -> str:
    return f"u{batch:02d}-{n:02d}"


async def test_three_replicas_send_every_message_once_through_chaos(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    async with (
        pg_schema() as url,
        FakeReceiver() as receiver,
        Daemons() as group,
        http_session() as session,
    ):
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "cart.yaml").write_text(CART)
        (rules / "drop.yaml").write_text(DROP)
        (rules / "t.yaml").write_text(TEMPLATE)
        (rules / "minute.yaml").write_text(MINUTE)
        replicas: list[DaemonProcess] = []
        for name in ("a", "b", "c"):
            port = free_port()
            config = {
                "server": {"host": "127.0.0.1", "port": port},
                "storage": {"url": f"{url}&application_name={APP}", "lease": "2s"},
                "rules": {"path": str(rules), "watch": False},
                "policies": {"quiet_hours": None, "frequency_caps": []},
                "logging": {"format": "json", "level": "info"},
                "channels": {
                    "webhook": {
                        "provider": "webhook",
                        "url": receiver.url,
                        "secret": receiver.secret,
                    }
                },
            }
            path = write_config(tmp_path / f"config-{name}.yaml", config)
            replicas.append(await group.start(path, port, name=name))
        await asyncio.gather(*(r.started() for r in replicas))
        a, b, c = replicas
        admin = await asyncpg.connect(url)

        async def post(replica: DaemonProcess, events: list[dict[str, Any]]) -> None:
            for _ in range(100):  # a replica busy or briefly without its database: again
                try:
                    status, body = await http_json(
                        session, "POST", f"{replica.url}/v1/events", json=events
                    )
                except (OSError, TimeoutError):
                    status, body = 0, "connection failed"
                if status == 202:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"{replica.name} never accepted the events: {status} {body}")

        async def terminate_connections() -> int:
            return int(
                await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = $1",
                    APP,
                )
            )

        favourited: set[str] = set()
        everyone: list[str] = []
        terminated = 0
        live = [a, b, c]
        try:
            for k in range(BATCHES):
                users = [user(k, n) for n in range(USERS_PER_BATCH)]
                everyone += users
                fans = users[:FAVOURITES_PER_BATCH]
                favourited.update(fans)
                product = f"p{k}"
                profiles = [
                    {"id": f"p-{u}", "type": "profile.updated", "user_id": u,
                     "data": {"email": f"{u}@shop.test"}}
                    for u in users
                ]  # fmt: skip
                carts = [
                    {"id": f"c-{u}", "type": "cart.updated", "user_id": u, "data": {"total": 5}}
                    for u in users
                ]
                favourites = [
                    {"id": f"f-{u}", "type": "favorite.added", "user_id": u,
                     "data": {"product_id": product}}
                    for u in fans
                ]  # fmt: skip
                # A user's events through different replicas, each posted to two of them.
                first, second, third = rng.sample(live, 3) if len(live) == 3 else [*live, live[0]]
                await asyncio.gather(
                    post(first, profiles),
                    post(second, profiles),
                    post(second, carts + favourites),
                    post(third, favourites),
                )
                # The price drop right after the favourites' 202, through yet another one.
                drop = {
                    "id": f"d-{product}",
                    "type": "product.price_dropped",
                    "data": {"product_id": product, "old_price": 10, "new_price": 8},
                }
                await post(rng.choice([r for r in live if r is not second]), [drop])
                if k in (1, 3):  # every replica's connections, its owner session too
                    terminated += await terminate_connections()
                if k == 5:  # right after posting to it: it holds claims
                    assert c.proc is not None
                    c.proc.send_signal(signal.SIGSTOP)
                    live = [a, b]
            # The broadcast, to every profile (all exist now), loaded by the live replicas:
            # real processes on the real clock, so its instant is set once the load is over
            # (a one-off whose instant passed before it was loaded never fires). c stays
            # stopped (its session alive) until every message is out: its claims move on
            # when its lease lapses.
            at = time.time() + BROADCAST_IN_S
            (rules / "all.yaml").write_text(broadcast(at))
            for replica in live:
                status, body = await http_json(session, "POST", f"{replica.url}/v1/rules/reload")
                assert status == 200, body
            assert time.time() < at, "the replicas took too long to load the broadcast"
            expected = len(everyone) * 2 + len(favourited)
            deadline = time.monotonic() + 90
            while len(set(receiver.accepted_ids())) < expected and time.monotonic() < deadline:
                receiver.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(receiver.arrived.wait(), 1.0)
            await c.kill()
            delivered = set(receiver.accepted_ids())
            bodies = {d.headers["webhook-id"]: d.json for d in receiver.deliveries}
            per_pair = Counter((bodies[m]["rule"], bodies[m]["user_id"]) for m in delivered)
            # The every-minute broadcast: no user got more than one message per fire time
            # (a run cut short by the stopped replica is resumed, not repeated).
            fires = {
                line["fire"]
                for r in replicas
                for line in r.events("job.started")
                if line.get("job") == "broadcast:chaos_minute"
            }
            minute = Counter({k: n for k, n in per_pair.items() if k[0] == "chaos_minute"})
            per_pair -= minute
            assert all(n <= len(fires) for n in minute.values()), (fires, minute.most_common(3))
            want = Counter(
                [("chaos_cart", u) for u in everyone]
                + [("chaos_all", u) for u in everyone]
                + [("chaos_drop", u) for u in favourited]
            )
            missing = want - per_pair
            extra = per_pair - want
            assert not missing and not extra, (
                f"missing {sum(missing.values())} {list(missing)[:5]}, "
                f"extra {sum(extra.values())} {list(extra)[:5]}"
            )

            async def stuck() -> dict[str, int]:
                row = await admin.fetchrow(
                    "SELECT (SELECT count(*) FROM messages WHERE status IN "
                    "('queued', 'sending', 'answered')) AS unsettled, "
                    "(SELECT count(*) FROM inbox) AS inbox, "
                    "(SELECT count(*) FROM instances WHERE status = 'active' "
                    " AND due_at IS NOT NULL) AS timers, "
                    "(SELECT count(*) FROM jobs WHERE run_at IS NOT NULL) AS runs"
                )
                assert row is not None
                return dict(row)

            left = await stuck()
            deadline = time.monotonic() + 15
            while any(left.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                left = await stuck()
            assert not any(left.values()), left
            sent = await admin.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'")
            assert sent == expected + sum(minute.values())
            repeats = len(receiver.accepted_ids()) - len(delivered)
            print(
                f"\nchaos: {expected} messages to {len(everyone)} users, each sent once, and "
                f"{sum(minute.values())} from {len(fires)} every-minute fire(s) "
                f"({repeats} provider calls repeated under the same idempotency key), "
                f"{terminated} connections terminated, "
                f"{time.monotonic() - started:.1f} s"
            )
            # Only a call c had out when it stopped can be repeated (a webhook channel's
            # concurrency, 10 by default).
            assert repeats <= 10
        finally:
            await admin.close()
