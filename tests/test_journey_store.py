"""The store's journey counts (engine/core/journey.py), the same on SQLite and PostgreSQL:
added to in save's transaction, read per rule and range by the hour."""

from __future__ import annotations

import asyncio
from collections import Counter

from engine.core.changes import Changes, JobProgress, JourneyKey
from engine.core.model import Instance
from engine.measure.stats import MAX_TIME, MIN_TIME
from engine.store import open_store
from engine.store.base import StatsQuery, Store

H = 3600.0
T = 1_800_000_000.0 // H * H  # an hour's start


def query(since: float = MIN_TIME, until: float = MAX_TIME, rule: str | None = None) -> StatsQuery:
    return StatsQuery(since=since, until=until, rule=rule, touch="click", window_s=0.0)


def changes(counts: dict[JourneyKey, int], instance: str | None = None) -> Changes:
    out = Changes(journey=Counter(counts))
    if instance is not None:
        out.instances[instance] = Instance(
            id=instance,
            rule_id="cart",
            rule_version="v",
            user_id="u1",
            key="",
            started_at=T,
            trigger={},
        )
    return out


async def test_counts_add_up_across_saves_and_read_by_rule_and_hour(store: Store) -> None:
    await store.save(
        changes(
            {
                ("cart", "", "start", T): 2,
                ("cart", "0", "reached", T): 2,
                ("cart", "1", "then", T): 1,
                ("cart", "1", "else", T): 1,
                ("promo", "0", "reached", T): 5,
            },
            instance="i1",
        )
    )
    await store.save(
        changes(
            {("cart", "0", "reached", T): 3, ("cart", "0", "end:converted", T + 2 * H): 1},
            instance="i2",
        )
    )
    rows = sorted(await store.journey_counts(query()))
    assert rows == [
        ("cart", "", "start", 2),
        ("cart", "0", "end:converted", 1),
        ("cart", "0", "reached", 5),
        ("cart", "1", "else", 1),
        ("cart", "1", "then", 1),
        ("promo", "0", "reached", 5),
    ]
    assert sorted(await store.journey_counts(query(rule="promo"))) == [("promo", "0", "reached", 5)]
    # a range starting inside an hour counts that hour whole; `until` is exclusive
    assert sorted(await store.journey_counts(query(since=T + 2 * H + 59, rule="cart"))) == [
        ("cart", "0", "end:converted", 1)
    ]
    assert await store.journey_counts(query(until=T, rule="cart")) == []
    assert await store.journey_counts(query(since=T + 3 * H)) == []
    assert len(await store.journey_counts(query(since=T - 1, until=T + H, rule="cart"))) == 4


async def test_a_failed_save_adds_nothing(store: Store) -> None:
    bad = changes({("cart", "0", "reached", T): 1}, instance="i1")
    # written after the counts, and no value a database takes: the transaction fails
    bad.job = JobProgress("broadcast:x", T, object())  # type: ignore[arg-type]
    try:
        await store.save(bad)
    except Exception:
        pass
    else:
        raise AssertionError("the save should have failed")
    assert await store.journey_counts(query()) == []


async def test_concurrent_saves_of_the_same_counts_all_count(store_url: str) -> None:
    stores = [await open_store(store_url) for _ in range(2 if "postgres" in store_url else 1)]
    try:
        await asyncio.gather(
            *(
                s.save(changes({("cart", "0", "reached", T): 1, ("cart", "", "start", T): 1}))
                for s in stores
                for _ in range(5)
            )
        )
        rows = sorted(await stores[0].journey_counts(query()))
        n = 5 * len(stores)
        assert rows == [("cart", "", "start", n), ("cart", "0", "reached", n)]
    finally:
        for s in stores:
            await s.close()
