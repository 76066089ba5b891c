"""The daemon on PostgreSQL (storage.url: postgresql://...): the HTTP flows of test_api on
an in-process daemon whose store is a fresh schema, a restart that keeps the state, and two
real daemon processes sharing one database that fire each timer and send each message once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from engine.cli import main as cli_main
from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.store.postgres import PostgresStore
from engine.store.postgres_core import HOUSEKEEPING_S
from tests.pgdb import pg_schema

from . import test_api, test_segments_api
from .helpers import START, Client, make_config
from .proc import Daemons, free_port, http_json, http_session, poll, write_config


@pytest.fixture
async def storage_url() -> AsyncIterator[str]:
    """Every daemon fixture of this module (`client`) keeps its state in PostgreSQL."""
    async with pg_schema() as url:
        yield url


# The same flows as on SQLite, collected here so they run on the PostgreSQL store.
test_cart_to_message_to_order = test_api.test_cart_to_message_to_order
test_messages_pagination_and_admin_auth = test_api.test_messages_pagination_and_admin_auth
test_profiles_read_merge_erase = test_api.test_profiles_read_merge_erase
test_health_readiness_metrics = test_api.test_health_readiness_metrics
test_segments_sizes_and_pages = test_segments_api.test_segments_list_sizes_and_pages_of_members


async def test_the_store_is_postgres(client: Client) -> None:
    assert type(client.daemon.store).__name__ == "PostgresStore"
    status, body = await client.post_events([test_api.cart("u1", "e1"), test_api.cart("u1", "e1")])
    assert (status, body) == (202, {"accepted": 1, "duplicates": 1})


async def test_a_restart_keeps_timers_and_messages(
    tmp_path: Path, rules_dir: Path, storage_url: str
) -> None:
    config = make_config(tmp_path, rules_dir, storage_url=storage_url)
    clock = VirtualClock(START)
    first = Daemon(config, clock, background=False)
    await first.start()
    async with aiohttp.ClientSession() as session:
        c = Client(first, session)
        await c.post_events([test_api.profile("u1"), test_api.cart("u1"), test_api.cart("u2")])
        await first.pump()
    await first.stop()
    clock.advance_to(START + 3600)
    second = Daemon(config, clock, background=False)
    await second.start()
    try:
        async with aiohttp.ClientSession() as session:
            c = Client(second, session)
            await second.pump()  # the 1 h timer set before the restart fires now
            _, body = await c.admin("GET", "/v1/messages?rule=abandoned_cart")
            assert sorted((m["user_id"], m["status"], m["reason"]) for m in body["messages"]) == [
                ("u1", "sent", None),
                ("u2", "skipped", "no_address"),  # no profile, no address
            ]
            _, body = await c.admin("GET", "/v1/profiles/u1")
            assert body["email"] == "u1@x.test"
            _, body = await c.admin("GET", "/v1/users/u2/timeline")
            cart_chain = [i for i in body["instances"] if i["rule"] == "abandoned_cart"]
            assert [i["status"] for i in cart_chain] == ["active"]  # on to its next step
    finally:
        await second.stop()


async def test_kaskad_rfm_sets_segments_beside_the_daemon(
    client: Client, tmp_path: Path, storage_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kaskad rfm` on PostgreSQL writes the segment in place (Store.set_rfm): the running
    daemon reads it with the rest of the profile kept, and its next save of the user (its
    copy now stale) keeps it too."""
    order = {"type": "order.created", "user_id": "u1", "data": {"order_id": "o1", "total": 9}}
    assert (await client.post_events([test_api.profile("u1"), order]))[0] == 202
    await client.daemon.pump()
    config = tmp_path / "cli.yaml"
    config.write_text(f'storage: {{url: "{storage_url}"}}\n')
    assert await asyncio.to_thread(cli_main, ["rfm", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "1 customers scored, 1 profiles updated",
        "  need_attention         1",
    ]
    _, body = await client.admin("GET", "/v1/profiles/u1")
    assert (body["rfm"], body["rfm_scores"]) == ("need_attention", {"r": 3, "f": 3, "m": 3})
    assert (body["email"], body["orders_count"]) == ("u1@x.test", 1)
    assert (await client.post_events([test_api.profile("u1", locale="de")]))[0] == 202
    await client.daemon.pump()
    _, body = await client.admin("GET", "/v1/profiles/u1")
    assert (body["rfm"], body["locale"], body["orders_count"]) == ("need_attention", "de", 1)


RULE = """\
rule: pg_cart
trigger: {event: cart.updated}
steps:
  - wait: 1s
  - send: {template: t, cascade: [email]}
"""
TEMPLATE = """\
template: t
email: {subject: "Your cart", text: "{{ trigger.data.total }} in your cart"}
"""
USERS = 60


async def test_two_daemons_on_one_database_send_each_message_once(
    tmp_path: Path, storage_url: str
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cart.yaml").write_text(RULE)
    (rules / "t.yaml").write_text(TEMPLATE)
    users = [f"u{n}" for n in range(USERS)]
    async with Daemons() as group, http_session() as session:
        replicas = []
        for name in ("a", "b"):
            port = free_port()
            config = {
                "server": {"host": "127.0.0.1", "port": port},
                "storage": {"url": storage_url},
                "rules": {"path": str(rules), "watch": False},
                "policies": {"quiet_hours": None, "frequency_caps": []},
                "logging": {"format": "json", "level": "info"},
            }
            path = write_config(tmp_path / f"config-{name}.yaml", config)
            replicas.append(await group.start(path, port, name=name))
        await asyncio.gather(*(r.started() for r in replicas))

        async def post(url: str, batch: list[str]) -> None:
            events = [
                e
                for u in batch
                for e in (
                    {"id": f"p-{u}", "type": "profile.updated", "user_id": u,
                     "data": {"email": f"{u}@shop.test"}},
                    {"id": f"c-{u}", "type": "cart.updated", "user_id": u,
                     "data": {"total": 5}},
                )
            ]  # fmt: skip
            status, body = await http_json(session, "POST", f"{url}/v1/events", json=events)
            assert status == 202, body

        # Each user's events go to both replicas (a webhook retried elsewhere): one counts.
        await asyncio.gather(
            *(post(r.url, users[n::5]) for n in range(5) for r in replicas),
        )

        async def all_sent() -> list[dict[str, str]] | None:
            status, body = await http_json(
                session, "GET", f"{replicas[0].url}/v1/messages?rule=pg_cart&limit=1000"
            )
            assert status == 200, body
            sent = [m for m in body["messages"] if m["status"] == "sent"]
            return sent if len(sent) >= USERS else None

        sent = await poll(all_sent, within=20, what=f"{USERS} sent messages")
        assert sorted(m["user_id"] for m in sent) == sorted(users)
        # Both stop cleanly, and their logs are read to the end.
        assert await asyncio.gather(*(r.terminate() for r in replicas)) == [0, 0]
        # Every provider call (the sandbox's answers, in both logs) happened once.
        calls = Counter(line["message"] for r in replicas for line in r.events("send.outcome"))
        assert len(calls) == USERS and set(calls.values()) == {1}, calls.most_common(3)


async def test_the_heartbeat_folds_the_trend_deltas_every_five_minutes(
    client: Client, storage_url: str
) -> None:
    """PostgreSQL's writers append trend deltas; the store's heartbeat folds them into the
    hourly and daily rows every HOUSEKEEPING_S of real time, not only when the dashboard
    reads them (its beats are called here, as the heartbeat task calls them)."""
    store = client.daemon.store
    assert isinstance(store, PostgresStore)
    await client.post_events([test_api.profile("u1"), test_api.cart("u1")])
    await client.advance(3600)  # abandoned_cart's email goes out
    conn = await asyncpg.connect(storage_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM stats_delta") > 0
        per_fold = round(HOUSEKEEPING_S / (store.lease_s / 4))
        await store.beat(per_fold - 2)  # a beat between folds renews the lease only
        assert await conn.fetchval("SELECT count(*) FROM stats_delta") > 0
        await store.beat(per_fold - 1)  # the last beat of HOUSEKEEPING_S folds
        assert await conn.fetchval("SELECT count(*) FROM stats_delta") == 0
        sends = await conn.fetchval(
            "SELECT sum(sends) FROM stats_days WHERE rule_id = 'abandoned_cart'"
        )
        assert sends == 1
    finally:
        await conn.close()
