"""The hourly trend rows (stats_hours, order_hours) on both stores: kept up to date by every
write path (saves, claims, outcomes, retention, erasure), they equal a recount from the
messages and orders, and the conversions and revenue /v1/stats computes."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from engine.core.changes import Changes, Order, Touch
from engine.core.model import Message
from engine.lang.policies_config import PoliciesConfig
from engine.measure.stats import compute_stats
from engine.store import Store, open_store
from engine.store.base import StatsQuery
from tests.helpers import roll_back_migrations

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 86400  # a UTC midnight
HOUR = 3600


def message(rnd: random.Random, n: int) -> Message:
    rule = rnd.choice(["r1", "r2", "r3"])
    return Message(
        f"m{n}",
        instance_id=f"i{n}",
        rule_id=rule,
        user_id=f"u{n % 7}",
        step=rnd.choice(["1", "3"]),
        channel=rnd.choice(["email", "sms", None]),
        template="t",
        variant=rnd.choice(["A", "B"]) if rule == "r1" else None,
        category="marketing",
        status=rnd.choice(["queued", "skipped", "sent", "failed"]),
        reason=None,
        created_at=T0 + rnd.random() * 3 * 86400,
    )


def touch(m: Message, at: float) -> Touch:
    return Touch(m.id, at, m.rule_id, m.step, m.channel, m.variant)


async def workload(store: Store, seed: int) -> None:
    """Messages saved, moved on by later saves, claims and outcomes; orders with touches of
    every kind and age; some messages deleted by retention, a user erased."""
    rnd = random.Random(seed)
    messages = [message(rnd, n) for n in range(300)]
    for start in range(0, 300, 100):
        batch = messages[start : start + 100]
        await store.save(Changes(messages={m.id: m for m in batch}))
    later: dict[str, Message] = {}
    for m in rnd.sample(messages, 120):
        if m.status in ("sent", "queued"):
            m.status, m.sent_at = "sent", m.created_at + 1
            if rnd.random() < 0.7:
                m.delivered_at, m.status = m.created_at + 2, "delivered"
            if rnd.random() < 0.5:
                m.opened_at, m.status = m.created_at + 3, "opened"
            if rnd.random() < 0.3:
                m.clicked_at, m.status = m.created_at + 4, "clicked"
            later[m.id] = m
    await store.save(Changes(messages=later))
    claimed = await store.claim_queued(T0 + 10 * 86400, 20)
    for m in claimed[:10]:
        await store.record_outcome(m.id, '{"kind": "accepted"}')
    orders = []
    for k in range(80):
        m = rnd.choice(messages)
        at = m.created_at + rnd.random() * 2 * 86400
        touches = {kind: touch(m, m.created_at + 4) for kind in ("click", "open", "send")}
        if rnd.random() < 0.3:
            touches = {"send": touch(m, m.created_at)}
        elif rnd.random() < 0.1:
            touches = {}
        total = rnd.choice([10.0, 99.5, None, 12.25])
        orders.append(
            Order(
                m.user_id,
                f"o{k}",
                at,
                total,
                rnd.choice(["EUR", "USD", None]),
                "online",
                touches=touches,
            )
        )
    await store.save(Changes(orders=orders))
    await store.save(Changes(orders=orders[:5]))  # sent again: counted once
    await store.delete_messages_before(T0 + 6 * HOUR, 1000)
    await store.save(Changes(erased_users={"u3"}))


async def recount(store: Store, since: float, until: float, touch: str, window_s: float) -> Any:
    """(messages by rule/channel/variant, attributed orders and revenue by the same) from
    the stats reads of the message log and the orders."""
    q = StatsQuery(since=since, until=until, rule=None, touch=touch, window_s=window_s)
    counts: Counter[tuple[str, ...]] = Counter()
    for (
        rid,
        _step,
        channel,
        variant,
        status,
        _r,
        n,
        sends,
        dl,
        op,
        cl,
    ) in await store.stats_messages(q):
        key = (rid, channel or "", variant or "")
        for name, value in (
            ("messages", n),
            ("sends", sends),
            ("skipped", n if status == "skipped" else 0),
            ("failed", n if status == "failed" else 0),
            ("delivered", dl),
            ("opened", op),
            ("clicked", cl),
        ):
            counts[(*key, name)] += value
    money: Counter[tuple[str, ...]] = Counter()
    for rid, _step, channel, variant, n, revenue in await store.stats_attributed(q):
        money[(rid, channel or "", variant or "", "orders")] += n
        money[(rid, channel or "", variant or "", "revenue")] += revenue
    return +counts, {k: round(v, 6) for k, v in money.items() if v}


async def rolled_up(
    store: Store, since: float, until: float, touch: str, window_s: float, bucket: int = 3600
) -> Any:
    names = ("messages", "sends", "skipped", "failed", "delivered", "opened", "clicked")
    counts: Counter[tuple[str, ...]] = Counter()
    rows = await store.trend_messages(since, until, None, bucket)
    for _b, rid, channel, variant, *numbers in rows:
        for name, value in zip(names, numbers, strict=True):
            counts[(rid, channel, variant, name)] += value
    money: Counter[tuple[str, ...]] = Counter()
    for _b, kind, rid, channel, variant, _cur, n, revenue in await store.trend_orders(
        since, until, None, touch, window_s, bucket
    ):
        if kind == touch:
            money[(rid, channel, variant, "orders")] += n
            money[(rid, channel, variant, "revenue")] += revenue
    return +counts, {k: round(v, 6) for k, v in money.items() if v}


async def test_trend_rows_equal_a_recount_after_every_kind_of_write(store: Store) -> None:
    await workload(store, seed=1)
    ranges = (
        (T0, T0 + 5 * 86400),
        (T0 + 7 * HOUR, T0 + 30 * HOUR),
        (T0 + 5 * HOUR, T0 + 3 * 86400 + 4 * HOUR),  # partial days at both ends
    )
    for since, until in ranges:
        for touch_kind, window_s in (("click", 86400.0), ("send", 3600.0), ("open", 7 * 86400.0)):
            expected = await recount(store, since, until, touch_kind, window_s)
            for bucket in (3600, 86400):
                got = await rolled_up(store, since, until, touch_kind, window_s, bucket)
                assert got == expected, (since, until, touch_kind, window_s, bucket)
            if until - since > 86400:
                assert expected[0] and expected[1]  # the test has something to compare


async def test_daily_buckets_and_all_orders(store: Store) -> None:
    await workload(store, seed=2)
    hourly = await store.trend_messages(T0, T0 + 5 * 86400, "r1", 3600)
    daily = await store.trend_messages(T0, T0 + 5 * 86400, "r1", 86400)
    assert {b % 86400 for b, *_ in daily} == {0} and {r[1] for r in daily} == {"r1"}
    per_rule = await store.trend_messages(T0, T0 + 5 * 86400, None, 86400, detail=False)
    assert {(r[2], r[3]) for r in per_rule} == {("", "")}
    assert sum(r[4] for r in per_rule if r[1] == "r1") == sum(r[4] for r in daily)
    orders_per_rule = await store.trend_orders(T0, T0 + 5 * 86400, "r2", "send", 1e6, 86400, False)
    orders_detail = await store.trend_orders(T0, T0 + 5 * 86400, "r2", "send", 1e6, 86400)
    assert sum(r[6] for r in orders_per_rule) == sum(r[6] for r in orders_detail) > 0
    assert sum(r[4] for r in daily) == sum(r[4] for r in hourly) > 0
    q = StatsQuery(since=T0, until=T0 + 5 * 86400, rule=None, touch="click", window_s=1.0)
    orders = await store.stats_orders(q)
    rows = await store.trend_orders(T0, T0 + 5 * 86400, None, "click", 1.0, 86400)
    every = [r for r in rows if r[1] == "all"]
    assert sum(r[6] for r in every) == sum(o[1] for o in orders)
    assert round(sum(r[7] for r in every), 6) == round(sum(o[2] for o in orders), 6)
    assert {r[5] for r in every} == {"EUR", "USD", ""}


async def test_conversions_and_revenue_agree_with_stats(store: Store) -> None:
    await workload(store, seed=3)
    policies = PoliciesConfig.model_validate({"attribution": {"window": "1d", "touch": "open"}})
    since, until = T0 + 2 * HOUR, T0 + 4 * 86400
    stats = await compute_stats(
        store, rules=None, policies=policies, since=since, until=until, now=T0 + 9 * 86400
    )
    rows = await store.trend_orders(since, until, None, "open", 86400.0, 86400)
    messages = await store.trend_messages(since, until, None, 86400)
    for rule in stats["rules"]:
        mine = [r for r in rows if r[2] == rule["rule"] and r[1] == "open"]
        assert sum(r[6] for r in mine) == rule["funnel"]["converted"]
        assert round(sum(r[7] for r in mine), 2) == rule["funnel"]["revenue"]
        sent = sum(r[5] for r in messages if r[1] == rule["rule"])
        assert sent == rule["funnel"]["sends"]
    assert sum(r["funnel"]["converted"] for r in stats["rules"]) > 0


async def test_the_migration_fills_the_rows_from_messages_and_orders_so_far(
    store_url: str, tmp_path: Path
) -> None:
    store = await open_store(store_url)
    await workload(store, seed=4)
    await store.close()
    await roll_back_migrations(store_url, tmp_path / "kaskad.db", "stats_hours", [])
    store = await open_store(store_url)
    try:
        since, until = T0 + 5 * HOUR, T0 + 4 * 86400
        expected = await recount(store, since, until, "click", 7 * 86400.0)
        assert expected[0] and expected[1]
        for bucket in (3600, 86400):
            got = await rolled_up(store, since, until, "click", 7 * 86400.0, bucket)
            assert got == expected, bucket
        # ... and the triggers are back: a new message counts.
        await store.save(Changes(messages={"new": message(random.Random(9), 999)}))
        after = await rolled_up(store, T0, T0 + 5 * 86400, "click", 7 * 86400.0)
        assert after == await recount(store, T0, T0 + 5 * 86400, "click", 7 * 86400.0)
    finally:
        await store.close()
