"""One contract for both stores: every test runs on SQLite (a file) and PostgreSQL (a schema
of its own), and the answers must be the same. The PostgreSQL-only tests at the end prove
what replicas sharing one database rely on."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from engine.core.changes import Changes, Order, Touch
from engine.core.model import Instance, Message
from engine.core.waits import Waiting
from engine.core.workspace import FACTS
from engine.store import Store, open_store
from engine.store.base import StatsQuery
from engine.store.migrations import POSTGRES_MIGRATIONS
from engine.store.postgres import ConcurrentUpdate, PostgresStore
from tests.pgdb import pg_schema

T0 = 1_795_000_000.0  # 2026-11-18


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with pg_schema() as schema_url:
        yield schema_url


def inst(iid: str, user: str, *, due_at: float | None = None, **kw: Any) -> Instance:
    fields: dict[str, Any] = {
        "rule_id": "r1",
        "rule_version": "v1",
        "key": "",
        "started_at": T0,
        "trigger": {"type": "cart.updated", "data": {"total": 5}},
        **kw,
    }
    return Instance(iid, user_id=user, due_at=due_at, **fields)


def msg(mid: str, user: str, *, iid: str = "i1", step: str = "1", **kw: Any) -> Message:
    fields: dict[str, Any] = {
        "rule_id": "r1",
        "channel": "email",
        "template": "t",
        "variant": None,
        "category": "marketing",
        "status": "queued",
        "created_at": T0,
        **kw,
    }
    return Message(mid, instance_id=iid, user_id=user, step=step, **fields)


async def save(store: Store, **changes: Any) -> None:
    await store.save(Changes(**changes))


# -- profiles and interests -----------------------------------------------------------------


async def test_profiles_load_merge_and_page(store: Store) -> None:
    await save(store, profiles={"u2": {"user_id": "u2", "email": "a@x.test", "updated_at": T0}})
    await save(store, profiles={"u1": {"user_id": "u1", "updated_at": T0}, "U3": {"n": 1}})
    states = await store.load_users(["u1", "u2", "nobody"], messages_since=0, starts_since=0)
    assert states["u2"].profile == {"user_id": "u2", "email": "a@x.test", "updated_at": T0}
    assert not states["u2"].profile_dirty
    assert states["nobody"].profile_dirty and states["nobody"].profile["user_id"] == "nobody"
    # Ids page in byte order (upper case first), as SQLite compares text.
    assert await store.profile_ids("", 10) == ["U3", "u1", "u2"]
    assert await store.profile_ids("U3", 1) == ["u1"]


async def test_interests_by_kind_window_and_page(store: Store) -> None:
    await save(
        store,
        interests={
            ("p1", "favorite", "u1"): T0,
            ("p1", "cart", "u1"): T0,
            ("p1", "viewed", "u2"): T0 - 100,
            ("p1", "viewed", "u3"): T0 + 1,
            ("p2", "cart", "u4"): T0,
        },
    )
    kinds = ("favorite", "cart", "viewed")
    assert await store.interested_users("p1", kinds, T0, "", 10) == ["u1", "u3"]
    assert await store.interested_users("p1", kinds, T0 - 100, "u1", 1) == ["u2"]
    await save(store, cart_reset={"u1", "u4"}, interests={("p1", "favorite", "u1"): None})
    assert await store.interested_users("p1", kinds, 0, "", 10) == ["u2", "u3"]
    assert await store.interested_users("p2", ("cart",), 0, "", 10) == []
    await save(store, cart_reset={"u1"}, interests={("p2", "cart", "u1"): T0})
    assert await store.interested_users("p2", ("cart",), 0, "", 10) == ["u1"]


# -- instances and timers -------------------------------------------------------------------


async def test_facts_load_with_the_user_and_their_window_is_a_timer(store: Store) -> None:
    facts = {"seg": {"s1": {"v": "x", "c": {"0": [T0 - 5, T0]}}}, "int_at": T0}
    await save(
        store,
        facts={"u1": (facts, T0 + 30), "u2": ({"int_at": T0}, None)},
        instances={"i1": inst("i1", "u1", due_at=T0 + 20)},
    )
    states = await store.load_users(["u1", "u2", "u3"], messages_since=0, starts_since=0)
    assert (states["u1"].facts, states["u1"].facts_due) == (facts, T0 + 30)
    assert (states["u2"].facts, states["u2"].facts_due) == ({"int_at": T0}, None)
    assert (states["u3"].facts, states["u3"].facts_due) == ({}, None)
    assert await store.next_due() == T0 + 20
    assert await store.due_instances(T0 + 60, 10) == [
        (T0 + 20, "i1", "u1"),
        (T0 + 30, FACTS, "u1"),
    ]
    await save(store, facts={"u1": (facts, None)})  # the window was recomputed: no timer
    assert await store.due_instances(T0 + 60, 10) == [(T0 + 20, "i1", "u1")]
    await save(store, erased_users={"u1"})
    states = await store.load_users(["u1"], messages_since=0, starts_since=0)
    assert states["u1"].facts == {}


async def test_timers_due_in_order_and_active_instances(store: Store) -> None:
    assert await store.next_due() is None
    await save(
        store,
        instances={
            "i3": inst("i3", "u1", due_at=T0 + 30, started_at=T0 + 2),
            "i2": inst("i2", "u2", due_at=T0 + 10),
            "i1": inst("i1", "u1", due_at=T0 + 5, started_at=T0 + 1),
            "i4": inst("i4", "u1", status="completed", ended_at=T0, rule_id="r2"),
        },
    )
    assert await store.next_due() == T0 + 5
    assert await store.due_instances(T0 + 10, 10) == [(T0 + 5, "i1", "u1"), (T0 + 10, "i2", "u2")]
    assert await store.due_instances(T0 + 60, 1) == [(T0 + 5, "i1", "u1")]
    states = await store.load_users(["u1"], messages_since=0, starts_since=T0)
    active = states["u1"].instances
    assert [i.id for i in active] == ["i1", "i3"]
    assert active[0].trigger == {"type": "cart.updated", "data": {"total": 5}}
    assert states["u1"].last_starts == {("r1", ""): T0 + 2, ("r2", ""): T0}
    # The timer fired: the instance moved on and its next wake is later.
    fired = active[0]
    fired.due_at, fired.pc, fired.state = T0 + 500, 2, Waiting()
    await save(store, instances={"i1": fired})
    assert await store.due_instances(T0 + 60, 10) == [(T0 + 10, "i2", "u2"), (T0 + 30, "i3", "u1")]
    assert [(i.id, i.pc, i.state) for i in await store.instances_of("u1")] == [
        ("i3", 0, None),
        ("i1", 2, Waiting()),
        ("i4", 0, None),
    ]
    assert sorted(await store.active_versions()) == [("r1", "v1")]


# -- messages and sending -------------------------------------------------------------------


async def test_messages_filters_cursor_and_lookup(store: Store) -> None:
    await save(
        store,
        messages={
            "m1": msg("m1", "u1", created_at=T0, status="sent", provider_id="p-1"),
            "m2": msg("m2", "u1", created_at=T0 + 1, step="2", provider_id="p-1"),
            "m3": msg("m3", "u2", created_at=T0 + 1, iid="i2", rule_id="r2", status="sent"),
            "m4": msg("m4", "u2", created_at=T0 + 2, iid="i2", channel=None, status="skipped"),
        },
    )
    assert [m.id for m in await store.messages()] == ["m4", "m3", "m2", "m1"]
    assert [m.id for m in await store.messages(user_id="u1")] == ["m2", "m1"]
    assert [m.id for m in await store.messages(rule="r1", status="sent")] == ["m1"]
    assert [m.id for m in await store.messages(limit=2, before=(T0 + 1, "m3"))] == ["m2", "m1"]
    m2 = await store.message("m2")
    assert m2 is not None and m2.step == "2" and m2.channel == "email"
    assert await store.message("none") is None
    newest = await store.message_by_provider_id("p-1")
    assert newest is not None and newest.id == "m2"


async def test_a_message_replaces_another_of_its_step_and_channel(store: Store) -> None:
    """SQLite's INSERT OR REPLACE on messages_once: one row per (instance, step, channel)."""
    await save(store, messages={"m1": msg("m1", "u1")})
    await save(store, messages={"m2": msg("m2", "u1", status="skipped", reason="no_address")})
    assert [(m.id, m.status) for m in await store.messages()] == [("m2", "skipped")]


async def test_claims_outcomes_retries_and_answers(store: Store) -> None:
    await save(
        store,
        messages={
            "m1": msg("m1", "u1", created_at=T0 + 2, step="1"),
            "m2": msg("m2", "u1", created_at=T0 + 1, step="2", next_attempt_at=T0 + 5),
            "m3": msg("m3", "u2", created_at=T0, iid="i2", next_attempt_at=T0 + 100),
            "m4": msg("m4", "u2", created_at=T0, iid="i3", status="sent"),
        },
    )
    claimed = await store.claim_queued(T0 + 10, 10)
    assert [(m.id, m.status) for m in claimed] == [("m1", "sending"), ("m2", "sending")]
    assert await store.claim_queued(T0 + 10, 10) == []
    assert await store.counts() == {
        "active_instances": 0,
        "pending_timers": 0,
        "queued_messages": 3,
        "inbox": 0,
    }
    await store.reschedule("m2", 1, T0 + 20, "timeout")
    await store.record_outcome("m1", '{"kind": "accepted"}')
    await store.record_outcome("m3", '{"kind": "accepted"}')  # not in flight: ignored
    assert await store.answered() == [("m1", "u1", '{"kind": "accepted"}')]
    retried = await store.claim_queued(T0 + 20, 10)
    assert [(m.id, m.attempts, m.detail) for m in retried] == [("m2", 1, "timeout")]
    # A restart: what was in flight goes back to the queue.
    assert await store.requeue_in_flight() == 1
    assert [m.id for m in await store.claim_queued(T0 + 100, 1)] == ["m2"]


async def test_claims_narrowed_by_channel_and_age_and_released(store: Store) -> None:
    """The dispatcher's claims while a channel is paused: the others' messages, one probe
    of the paused channel, its expired messages; a stop puts unsent claims back."""
    await save(
        store,
        messages={
            "e1": msg("e1", "u1", iid="i1", created_at=T0),
            "e2": msg("e2", "u2", iid="i2", created_at=T0 + 5, next_attempt_at=T0 + 8),
            "s1": msg("s1", "u1", iid="i1", channel="sms", created_at=T0 + 1),
            "w1": msg("w1", "u3", iid="i3", channel="webhook", created_at=T0 + 2),
        },
    )
    others = await store.claim_queued(T0 + 10, 10, skip=["email", "webhook"])
    assert [m.id for m in others] == ["s1"]
    assert [m.id for m in await store.claim_queued(T0 + 10, 1, only="email")] == ["e1"]
    expired = await store.claim_queued(T0 + 10, 10, only="email", queued_before=T0 + 4)
    assert expired == []  # e1 is claimed already, e2 is younger
    await store.release(["e1", "s1", "w1"])  # w1 was never claimed: left as it is
    again = await store.claim_queued(T0 + 10, 10, only="email", queued_before=T0 + 5)
    assert [(m.id, m.status, m.attempts) for m in again] == [
        ("e1", "sending", 0),
        ("e2", "sending", 0),
    ]
    assert [m.id for m in await store.claim_queued(T0 + 10, 10)] == ["s1", "w1"]


# -- inbox and event ids --------------------------------------------------------------------


async def test_enqueue_dedups_then_batches_in_order(store: Store) -> None:
    body = [json.dumps({"type": "cart.updated", "user_id": f"u{i}"}) for i in range(4)]
    assert await store.enqueue([("e1", body[0]), ("e1", body[0]), (None, body[1])], T0) == (2, 1)
    assert await store.enqueue([("e1", body[0]), ("e2", body[2]), (None, body[3])], T0) == (2, 1)
    assert await store.inbox_size() == 4
    batch = await store.inbox_batch(3)
    assert [b for _, b, _ in batch] == [body[0], body[1], body[2]]
    seqs = [seq for seq, _, _ in batch]
    assert seqs == sorted(seqs)
    await save(store, inbox_done=seqs[:2], inbox_cursor=(seqs[2], "rule\x1fu7"))
    rest = await store.inbox_batch(10)
    assert [(b, c) for _, b, c in rest] == [(body[2], "rule\x1fu7"), (body[3], None)]
    assert await store.inbox_size() == 2
    # e2 was seen; e9 is new, once, and remembered from T0 + 10
    again = [("e2", body[0]), ("e9", body[0]), ("e9", body[0])]
    assert await store.enqueue(again, T0 + 10) == (1, 2)
    assert await store.enqueue([("e9", body[0])], T0 + 10) == (0, 1)
    assert await store.inbox_size() == 3
    assert await store.forget_events_before(T0 + 1) == 2  # e1 and e2; e9 is newer
    assert await store.enqueue([("e1", body[0]), ("e9", body[0])], T0 + 20) == (1, 1)


async def test_enqueue_remembers_a_batch_key_with_its_events(store: Store) -> None:
    body = [json.dumps({"type": "cart.updated", "user_id": f"u{i}"}) for i in range(3)]
    rows = [(None, body[0]), ("e1", body[1])]
    assert await store.enqueue(rows, T0, batch_key="sig:aa") == (2, 0)
    # The same batch again (a replayed signature): all duplicates, ids or not; none stored.
    assert await store.enqueue(rows, T0 + 1, batch_key="sig:aa") == (0, 2)
    assert await store.inbox_size() == 2
    # Another key: the events' ids are deduplicated as ever.
    assert await store.enqueue(rows, T0 + 2, batch_key="sig:bb") == (1, 1)
    # A batch that could not be stored leaves its key unknown: resending it is no replay.
    with pytest.raises((UnicodeEncodeError, asyncpg.DataError)):  # sqlite3's, asyncpg's
        await store.enqueue([(None, body[2]), (None, '"\ud800"')], T0, batch_key="sig:cc")
    assert await store.enqueue([(None, body[2])], T0, batch_key="sig:cc") == (1, 0)
    assert await store.inbox_size() == 4
    # The retention job forgets keys with the ids: sig:aa, e1 and sig:cc are gone.
    assert await store.forget_events_before(T0 + 1) == 3
    assert await store.enqueue(rows, T0 + 3, batch_key="sig:aa") == (2, 0)


# -- rules, erase, counts -------------------------------------------------------------------


async def test_rule_versions_are_kept_once(store: Store) -> None:
    await store.save_rule_version("v1", "r1", "rules/r1.yaml", "rule: r1\n", T0)
    await store.save_rule_version("v1", "r1", "rules/other.yaml", "changed", T0 + 1)
    assert await store.rule_source("v1") == ("rules/r1.yaml", "rule: r1\n")
    assert await store.rule_source("v2") is None


async def test_erase_keeps_counts_and_drops_personal_data(store: Store) -> None:
    await save(
        store,
        profiles={"u1": {"user_id": "u1", "email": "a@x.test"}},
        interests={("p1", "cart", "u1"): T0},
        instances={"i1": inst("i1", "u1", due_at=T0 + 10, state=Waiting())},
        messages={"m1": msg("m1", "u1", status="sent", payload={"text": "hi"}, detail="ok")},
    )
    await save(store, erased_users={"u1"})
    states = await store.load_users(["u1"], messages_since=0, starts_since=0)
    assert states["u1"].profile_dirty and states["u1"].instances == []
    assert await store.interested_users("p1", ("cart",), 0, "", 10) == []
    [erased] = await store.instances_of("u1")
    assert (erased.status, erased.trigger, erased.state, erased.due_at) == (
        "stopped",
        {},
        None,
        None,
    )
    [m] = await store.messages(user_id="u1")
    assert (m.status, m.payload, m.detail) == ("sent", None, None)
    counts = await store.counts()
    assert (counts["active_instances"], counts["pending_timers"]) == (0, 0)


# -- stats, orders, RFM ---------------------------------------------------------------------


async def test_stats_orders_and_attribution(store: Store) -> None:
    clicked = msg(
        "m1", "u1", status="clicked", variant="A", sent_at=T0, opened_at=T0 + 5, clicked_at=T0 + 9
    )
    skipped = msg(
        "m2", "u2", iid="i2", status="skipped", reason="no_address", variant="B", channel=None
    )
    other = msg("m3", "u3", iid="i3", rule_id="r2", status="sent", sent_at=T0)
    await save(
        store,
        instances={
            "i1": inst("i1", "u1", variant="A", status="converted"),
            "i2": inst("i2", "u2", variant="B"),
            "i3": inst("i3", "u3", rule_id="r2"),
        },
        messages={"m1": clicked, "m2": skipped, "m3": other},
        orders=[
            Order(
                "u1",
                "o1",
                T0 + 100,
                50.0,
                "EUR",
                "online",
                "e1",
                {
                    "click": Touch("m1", T0 + 9, "r1", "1", "email", "A"),
                    "open": Touch("m1", T0 + 5, "r1", "1", "email", "A"),
                },
            ),
            Order("u1", "o1", T0 + 200, 999.0, "EUR", "online"),  # the same order again
            Order(
                "u2",
                "o2",
                T0 + 100,
                None,
                None,
                "offline",
                touches={"send": Touch("m2", T0, "r1", "1", None, "B")},
            ),
            Order(
                "u3",
                "o3",
                T0 + 100,
                20.0,
                None,
                "online",
                touches={"send": Touch("m3", T0, "r2", "1", "email", None)},
            ),
        ],
    )
    q = StatsQuery(since=T0 - 1, until=T0 + 1000, rule=None, touch="click", window_s=86400.0)
    expected = [
        ("r1", "1", None, "B", "skipped", "no_address", 1, 0, 0, 0, 0),
        ("r1", "1", "email", "A", "clicked", None, 1, 1, 0, 1, 1),
        ("r2", "1", "email", None, "sent", None, 1, 1, 0, 0, 0),
    ]
    assert sorted(await store.stats_messages(q), key=repr) == sorted(expected, key=repr)
    assert sorted(await store.stats_instances(q)) == [
        ("r1", "active", 1),
        ("r1", "converted", 1),
        ("r2", "active", 1),
    ]
    assert await store.stats_attributed(q) == [("r1", "1", "email", "A", 1, 50.0)]
    assert sorted(await store.stats_variants(q)) == [("r1", "A", 1, 1, 1), ("r1", "B", 1, 0, 0)]
    assert sorted(await store.stats_orders(q)) == [
        ("offline", 1, 0.0, 0, 0.0),
        ("online", 2, 70.0, 1, 50.0),
    ]
    by_send = StatsQuery(since=T0 - 1, until=T0 + 1000, rule="r2", touch="send", window_s=3600.0)
    assert await store.stats_attributed(by_send) == [("r2", "1", "email", None, 1, 20.0)]
    assert sorted(await store.stats_orders(by_send)) == [
        ("offline", 1, 0.0, 1, 0.0),
        ("online", 2, 70.0, 1, 20.0),
    ]
    [o1] = await store.orders_of("u1")
    assert (o1.order_id, o1.total, o1.at, o1.event_id) == ("o1", 50.0, T0 + 100, "e1")
    assert o1.touches == {
        "click": Touch("m1", T0 + 9, "r1", "1", "email", "A"),
        "open": Touch("m1", T0 + 5, "r1", "1", "email", "A"),
    }


async def test_ab_cohorts_match_their_definition_on_random_data(store: Store) -> None:
    # stats_variants reads through partial indexes (engine/store/cohort_sql.py); here it must
    # agree with the definition, counted in Python, for every rule filter, range and touch.
    rnd = random.Random(7)
    instances: dict[str, Instance] = {}
    messages: dict[str, Message] = {}
    orders: list[Order] = []
    for n in range(300):
        rule = rnd.choice(["r1", "r2", "r3"])
        variant = rnd.choice(["A", "B"]) if rule != "r3" else None
        user = f"u{rnd.randrange(60)}"
        iid = f"i{n}"
        instances[iid] = inst(
            iid, user, rule_id=rule, variant=variant, started_at=T0 + rnd.randrange(100)
        )
        for s in range(rnd.randrange(3)):
            clicked = T0 + 200 if rnd.random() < 0.3 else None
            messages[f"m{n}.{s}"] = msg(
                f"m{n}.{s}",
                user,
                iid=iid,
                step=str(s),
                rule_id=rule,
                variant=variant,
                clicked_at=clicked,
                status="clicked" if clicked else "sent",
            )
    for n in range(120):
        m = rnd.choice(list(messages.values()))
        touch = Touch(m.id, T0 + 200, m.rule_id, m.step, m.channel, m.variant)
        kinds = rnd.sample(["click", "open", "send"], rnd.randrange(1, 4))
        at = T0 + 200 + rnd.choice([10, 5000])
        orders.append(
            Order(m.user_id, f"o{n}", at, 5.0, "EUR", "online", None, {k: touch for k in kinds})
        )
    await save(store, instances=instances, messages=messages, orders=orders)
    assert await store.instance_rules() == ["r1", "r2", "r3"]

    def expected(q: StatsQuery) -> list[tuple[str, str, int, int, int]]:
        cohort: dict[tuple[str, str], set[str]] = {}
        clickers: dict[tuple[str, str], set[str]] = {}
        for i in instances.values():
            if i.variant is None or not q.since <= i.started_at < q.until:
                continue
            if q.rule is not None and i.rule_id != q.rule:
                continue
            key = (i.rule_id, i.variant)
            cohort.setdefault(key, set()).add(i.user_id)
            if any(m.instance_id == i.id and m.clicked_at for m in messages.values()):
                clickers.setdefault(key, set()).add(i.user_id)
        buyers = {
            (t.rule, t.variant, o.user_id)
            for o in orders
            if (t := o.touches.get(q.touch)) is not None and o.at - t.at <= q.window_s
        }
        return sorted(
            (
                r,
                v,
                len(users),
                len(clickers.get((r, v), ())),
                len({u for u in users if (r, v, u) in buyers}),
            )
            for (r, v), users in cohort.items()
        )

    for rule in (None, "r1", "r3"):
        for since, until in ((T0 - 1, T0 + 1000), (T0 + 20, T0 + 60), (T0 + 99, T0 + 100)):
            for touch in ("click", "open", "send"):
                q = StatsQuery(since, until, rule, touch, window_s=60.0)
                assert sorted(await store.stats_variants(q)) == expected(q), q


async def test_stats_holdout_groups_conversions_and_revenue(store: Store) -> None:
    # r1 holds out u3 and u4; r2 has no holdout; u5 is in the global holdout (on r1 and m2);
    # u6 started r1 after the range.
    await save(
        store,
        instances={
            "i1": inst("i1", "u1", status="converted"),
            "i1b": inst("i1b", "u1", started_at=T0 + 50),  # u1 again: one user, one order
            "i2": inst("i2", "u2"),
            "i3": inst("i3", "u3", holdout="rule", status="converted"),
            "i4": inst("i4", "u4", holdout="rule"),
            "i5": inst("i5", "u5", holdout="global"),
            "i6": inst("i6", "u6", started_at=T0 + 5000),
            "j1": inst("j1", "u1", rule_id="r2"),
            "j5": inst("j5", "u5", rule_id="m2", holdout="global", started_at=T0 + 10),
            "j7": inst("j7", "u7", rule_id="m2", holdout="rule"),  # left out of global
            "j8": inst("j8", "u8", rule_id="other"),  # not a marketing rule
        },
        orders=[
            Order("u1", "o1", T0 + 100, 40.0, None, "online"),
            Order("u1", "o2", T0 + 200, 60.0, None, "online"),
            Order("u1", "late", T0 + 90_000, 5.0, None, "online"),  # after the window
            Order("u2", "before", T0 - 10, 7.0, None, "online"),  # before the start
            Order("u3", "o3", T0 + 300, None, None, "offline"),
            Order("u5", "o5", T0 + 400, 30.0, None, "online"),
            Order("u7", "o7", T0 + 400, 1.0, None, "online"),
            Order("u8", "o8", T0 + 400, 2.0, None, "online"),
        ],
    )
    q = StatsQuery(since=T0 - 1, until=T0 + 1000, rule=None, touch="click", window_s=86400.0)
    # m2 held u7 out: it has a holdout, named or not.
    assert await store.stats_holdout(q, ["r1"]) == [
        ("m2", "holdout", 1, 0, 1, 1.0),
        ("r1", "holdout", 2, 1, 1, 0.0),
        ("r1", "treatment", 2, 1, 1, 100.0),
    ]
    # r2 is named (a rule with a holdout but none held out yet): its treatment counts.
    assert await store.stats_holdout(q, ["r2"]) == [
        ("m2", "holdout", 1, 0, 1, 1.0),
        ("r1", "holdout", 2, 1, 1, 0.0),
        ("r1", "treatment", 2, 1, 1, 100.0),
        ("r2", "treatment", 1, 0, 1, 100.0),
    ]
    only_r2 = StatsQuery(since=T0 - 1, until=T0 + 1000, rule="r2", touch="click", window_s=86400.0)
    assert await store.stats_holdout(only_r2, []) == []
    assert await store.stats_global_holdout(q, ["r1", "r2", "m2"]) == [
        ("treatment", 2, 1, 100.0),
        ("holdout", 1, 1, 30.0),
    ]
    assert await store.stats_global_holdout(q, []) == []
    short = StatsQuery(since=T0 - 1, until=T0 + 1000, rule="r1", touch="click", window_s=150.0)
    assert await store.stats_holdout(short, []) == [
        ("r1", "holdout", 2, 1, 0, 0.0),
        ("r1", "treatment", 2, 1, 1, 100.0),  # o2 is 150s after i1b's start
    ]
    assert await store.stats_global_holdout(short, ["r1"]) == [
        ("treatment", 2, 1, 40.0),
        ("holdout", 1, 0, 0.0),
    ]


async def test_rfm_scores_by_quintile(store: Store) -> None:
    def p(uid: str, **facts: Any) -> dict[str, Any]:
        return {"user_id": uid, **facts}

    await save(
        store,
        profiles={
            "u1": p("u1", orders_count=1, revenue=50.0, last_order_at="2026-11-23T10:00:00Z"),
            "u2": p(
                "u2",
                orders_count=3,
                revenue=10,
                last_order_at="2026-11-20T10:00:00Z",
                rfm="loyal",
                rfm_scores={"r": 1},
            ),
            "u3": p("u3", orders_count=0, revenue=0),
            "u4": p("u4"),
        },
    )
    assert sorted(await store.rfm_scores()) == [
        ("u1", 4, 2, 4, None, None),
        ("u2", 2, 4, 2, "loyal", {"r": 1}),
    ]


async def test_set_rfm_changes_only_the_segment(store: Store) -> None:
    await save(store, profiles={"u1": {"user_id": "u1", "email": "a@x.test", "rfm": "new"}})
    await store.set_rfm({"u1": ("loyal", {"r": 4, "f": 3, "m": 3}), "nobody": ("lost", {})})
    states = await store.load_users(["u1", "nobody"], messages_since=0, starts_since=0)
    assert states["u1"].profile == {
        "user_id": "u1",
        "email": "a@x.test",
        "rfm": "loyal",
        "rfm_scores": {"r": 4, "f": 3, "m": 3},
    }
    assert states["nobody"].profile_dirty


async def test_a_secret_is_made_once_and_shared(store_url: str) -> None:
    """Generated on first use and kept: two stores on one database (replicas) asking at the
    same time get the same value, and so does a store opened after both closed (a restart);
    each name has its own."""
    a = await open_store(store_url)
    b = await open_store(store_url)
    try:
        first, concurrent = await asyncio.gather(a.secret("tracking"), b.secret("tracking"))
        assert first == concurrent and len(bytes.fromhex(first)) == 32
        assert await a.secret("tracking") == first
        assert await b.secret("another") != first
    finally:
        await asyncio.gather(a.close(), b.close())
    restarted = await open_store(store_url)
    try:
        assert await restarted.secret("tracking") == first
    finally:
        await restarted.close()


# -- PostgreSQL: replicas sharing one database ----------------------------------------------


async def session_gone(store: PostgresStore, owner: int) -> None:
    """Until the server has ended a closed store's session (its lock is gone), under 5 s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    query = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
        "AND objid::bigint = $1"
    )
    while await store.pool.fetchval(query, owner):
        assert loop.time() < deadline, f"the session of owner {owner} is still there"


async def two_stores(url: str) -> tuple[PostgresStore, PostgresStore]:
    a, b = await asyncio.gather(PostgresStore.open(url), PostgresStore.open(url))
    assert a.owner != b.owner
    return a, b


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    a, b = await two_stores(pg_url)
    try:
        rows = await a.pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, len(POSTGRES_MIGRATIONS) + 1))
    finally:
        await asyncio.gather(a.close(), b.close())
    again = await PostgresStore.open(pg_url)  # nothing left to do
    await again.close()


async def test_two_stores_claim_disjoint_timers_and_sends(pg_url: str) -> None:
    a, b = await two_stores(pg_url)
    try:
        await a.save(
            Changes(
                instances={
                    f"i{n:03}": inst(f"i{n:03}", f"u{n}", due_at=T0 + n) for n in range(200)
                },
                messages={f"m{n:03}": msg(f"m{n:03}", f"u{n}", iid=f"i{n:03}") for n in range(200)},
            )
        )

        async def fire(store: PostgresStore) -> list[str]:
            batch = await store.due_instances(T0 + 1000, 7)
            fired = {iid: inst(iid, uid, status="completed") for _, iid, uid in batch}
            if fired:
                await store.save(Changes(instances=fired))
            return list(fired)

        async def send(store: PostgresStore) -> list[str]:
            return [m.id for m in await store.claim_queued(T0 + 1000, 7)]

        async def drain(step: Any, store: PostgresStore, got: list[str]) -> list[str]:
            while batch := await step(store):
                got.extend(batch)
            return got

        # One claim each, one after the other: b skips what a holds. Then both at once.
        a_due, b_due = await a.due_instances(T0 + 1000, 7), await b.due_instances(T0 + 1000, 7)
        ta, tb = [i for _, i, _ in a_due], [i for _, i, _ in b_due]
        assert len(ta) == len(tb) == 7 and not set(ta) & set(tb)
        sa, sb = await send(a), await send(b)
        assert len(sa) == len(sb) == 7 and not set(sa) & set(sb)
        for store, mine in ((a, a_due), (b, b_due)):
            done = {iid: inst(iid, uid, status="completed") for _, iid, uid in mine}
            await store.save(Changes(instances=done))
        await asyncio.gather(
            drain(fire, a, ta), drain(fire, b, tb), drain(send, a, sa), drain(send, b, sb)
        )
        assert not set(ta) & set(tb) and len(ta) + len(tb) == 200
        assert not set(sa) & set(sb) and len(sa) + len(sb) == 200
        # b requeues what it had in flight, never what a (alive) has.
        assert await b.requeue_in_flight() == len(sb)
        assert {m.id for m in await b.claim_queued(T0 + 1000, 500)} == set(sb)
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_an_event_sent_to_two_replicas_at_once_is_accepted_once(pg_url: str) -> None:
    a, b = await two_stores(pg_url)
    try:
        events = [(f"e{n}", json.dumps({"type": "x", "user_id": f"u{n}"})) for n in range(300)]
        answers = await asyncio.gather(
            *(
                store.enqueue(batch, T0)
                for _ in range(3)
                for store, batch in ((a, events), (b, events[::-1]))
            )
        )
        assert sum(accepted for accepted, _ in answers) == 300
        assert sum(duplicates for _, duplicates in answers) == 5 * 300
        assert await a.inbox_size() == 300
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_batch_key_sent_to_two_replicas_at_once_is_accepted_once(pg_url: str) -> None:
    a, b = await two_stores(pg_url)
    try:
        events = [(None, json.dumps({"type": "x", "user_id": f"u{n}"})) for n in range(50)]
        answers = await asyncio.gather(
            *(store.enqueue(events, T0, batch_key="sig:ab") for _ in range(3) for store in (a, b))
        )
        assert sorted(answers) == [(0, 50)] * 5 + [(50, 0)]
        assert await a.inbox_size() == 50
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_inbox_claims_keep_each_users_events_in_order(pg_url: str) -> None:
    a, b = await two_stores(pg_url)
    try:
        events = [
            (f"e{n}", json.dumps({"type": "x", "user_id": user}))
            for n, user in enumerate(["u1", "u2", "u1", "u3", None])
        ]
        assert await a.enqueue(events, T0) == (5, 0)
        first = await a.inbox_batch(2)  # u1's first event and u2's
        # b may not take u1's second event while a holds u1's first.
        # Nor the product event (no user): its fan-out must see what every earlier event
        # did (a watermark: every earlier row applied or claimed by the claimer).
        rest = await b.inbox_batch(10)
        assert [json.loads(body).get("user_id") for _, body, _ in rest] == ["u3"]
        await a.save(Changes(inbox_done=[seq for seq, _, _ in first]))
        again = await b.inbox_batch(10)  # its own claims again, and u1's second event
        assert [json.loads(body).get("user_id") for _, body, _ in again] == ["u1", "u3"]
        # Every earlier row is b's now: the product event goes to b, after them (the
        # processor applies it alone, once they are done).
        assert [json.loads(body).get("user_id") for _, body, _ in await b.inbox_batch(10)] == [
            "u1",
            "u3",
            None,
        ]
        # A row claimed by another live store cannot be marked done here.
        with pytest.raises(ConcurrentUpdate):
            await a.save(Changes(inbox_done=[again[0][0]]))
        await b.save(Changes(inbox_done=[seq for seq, _, _ in again]))
        assert await a.inbox_size() == 1
        with pytest.raises(ConcurrentUpdate):  # applied already: never twice
            await b.save(Changes(inbox_done=[again[0][0]]))
        assert await a.inbox_batch(10) == []  # b holds the product event
        product = await b.inbox_batch(10)
        assert [json.loads(body).get("user_id") for _, body, _ in product] == [None]
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_dead_stores_claims_are_free_at_once(pg_url: str) -> None:
    a, b = await two_stores(pg_url)
    try:
        await a.save(
            Changes(
                instances={"i1": inst("i1", "u1", due_at=T0)},
                messages={"m1": msg("m1", "u1"), "m2": msg("m2", "u1", step="2")},
            )
        )
        assert await a.enqueue([(None, json.dumps({"type": "x", "user_id": "u1"}))], T0) == (1, 0)
        assert len(await a.inbox_batch(10)) == 1
        assert len(await a.due_instances(T0, 10)) == 1
        assert len(await a.due_instances(T0, 10)) == 1  # its own claim, after a failed pass
        assert len(await a.claim_queued(T0, 10)) == 2
        await a.record_outcome("m2", '{"kind": "accepted"}')
        # While a lives, its claims are its own.
        assert (await b.inbox_batch(10), await b.due_instances(T0, 10)) == ([], [])
        assert (await b.claim_queued(T0, 10), await b.answered()) == ([], [])
        assert await b.next_due() is not None  # looks again soon, for a's timer
    finally:
        await a.close()  # as a crash: the session ends, its lock goes
    try:
        await session_gone(b, a.owner)
        assert len(await b.inbox_batch(10)) == 1
        assert await b.due_instances(T0, 10) == [(T0, "i1", "u1")]
        assert await b.answered() == [("m2", "u1", '{"kind": "accepted"}')]
        assert await b.requeue_in_flight() == 1  # m1 was in flight at a
        assert [m.id for m in await b.claim_queued(T0, 10)] == ["m1"]
    finally:
        await b.close()


async def test_a_hung_stores_claims_lapse_with_its_lease(pg_url: str) -> None:
    """A replica that stops renewing its lease (SIGSTOP, a frozen VM: its session lives on)
    loses its claims to the others; when it comes back, what they took is theirs and its
    late writes to it are refused, while its lease is renewed for what is left."""
    a, b = await asyncio.gather(
        PostgresStore.open(pg_url, heartbeat=False), PostgresStore.open(pg_url)
    )
    try:
        await a.save(
            Changes(
                instances={"i1": inst("i1", "u1", due_at=T0)},
                messages={"m1": msg("m1", "u1"), "m2": msg("m2", "u1", step="2")},
            )
        )
        assert await a.enqueue([(None, json.dumps({"type": "x", "user_id": "u1"}))], T0) == (1, 0)
        claimed = await a.inbox_batch(10)
        assert len(claimed) == 1
        assert len(await a.due_instances(T0, 10)) == 1
        assert len(await a.claim_queued(T0, 10)) == 2
        assert (await b.inbox_batch(10), await b.due_instances(T0, 10)) == ([], [])
        assert await b.claim_queued(T0, 10) == []
        # a misses its heartbeats: its lease runs out (set so, rather than waited for).
        await b.pool.execute("UPDATE replicas SET lease_until = 0 WHERE owner = $1", a.owner)
        assert len(await b.inbox_batch(10)) == 1
        assert await b.due_instances(T0, 10) == [(T0, "i1", "u1")]
        assert sorted(m.id for m in await b.claim_queued(T0, 10)) == ["m1", "m2"]
        # a wakes up: its lease is renewed, it says how long it had lapsed, and the
        # answer of a call it had out does not overwrite b's claim of the message.
        assert await a.renew_lease() > 0
        await a.record_outcome("m1", '{"kind": "accepted"}')
        assert (await b.message("m1")).status == "sending"  # type: ignore[union-attr]
        with pytest.raises(ConcurrentUpdate):
            await a.save(Changes(inbox_done=[seq for seq, _, _ in claimed]))
        await b.record_outcome("m1", '{"kind": "accepted"}')
        assert (await b.message("m1")).status == "answered"  # type: ignore[union-attr]
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_outcome_writes_survive_a_terminated_connection(pg_url: str) -> None:
    """pg_terminate_backend on the connection writing a send's answer, mid-statement: the
    answer is still written (again, on a fresh connection), not left `sending`."""
    store = await PostgresStore.open(pg_url)
    admin = await asyncpg.connect(pg_url)
    try:
        await store.save(Changes(messages={"m1": msg("m1", "u1"), "m2": msg("m2", "u1", step="2")}))
        assert len(await store.claim_queued(T0, 10)) == 2
        for write in (
            store.record_outcome("m1", '{"kind": "accepted"}'),
            store.reschedule("m2", 1, T0 + 60, "retry"),
        ):
            async with admin.transaction():
                await admin.execute("SELECT 1 FROM messages FOR UPDATE")  # the write waits
                task = asyncio.ensure_future(write)
                pid = None
                while pid is None:  # the write's backend, waiting on the row lock
                    await admin.execute("SELECT pg_stat_clear_snapshot()")
                    pid = await admin.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE '%UPDATE messages SET%' AND pid <> pg_backend_pid()"
                    )
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            await task
        assert (await store.message("m1")).status == "answered"  # type: ignore[union-attr]
        assert (await store.message("m2")).status == "queued"  # type: ignore[union-attr]
    finally:
        await admin.close()
        await store.close()


async def test_a_dead_stores_sends_follow_the_channel_filters(pg_url: str) -> None:
    """An orphan (in flight at a replica that died) of a paused channel waits like the
    channel's queued messages; an expiry claim never takes one (its call may have gone)."""
    a, b = await two_stores(pg_url)
    try:
        await a.save(Changes(messages={"m1": msg("m1", "u1")}))
        assert len(await a.claim_queued(T0, 10)) == 1
    finally:
        await a.close()
    try:
        await session_gone(b, a.owner)
        assert await b.claim_queued(T0, 10, skip=["email"]) == []
        assert await b.claim_queued(T0, 10, only="email", queued_before=T0) == []
        assert [m.id for m in await b.claim_queued(T0, 10, only="email")] == ["m1"]
    finally:
        await b.close()


async def test_a_save_over_newer_state_is_refused(pg_url: str) -> None:
    a, b = await two_stores(pg_url)
    try:
        await a.save(Changes(profiles={"u1": {"user_id": "u1", "n": 0}}))

        async def load(store: PostgresStore) -> dict[str, Any]:
            states = await store.load_users(["u1"], messages_since=0, starts_since=0)
            return states["u1"].profile

        seen_by_a = await load(a)
        seen_by_b = await load(b)
        await b.save(Changes(profiles={"u1": {**seen_by_b, "n": 2}}))
        with pytest.raises(ConcurrentUpdate, match="u1"):
            await a.save(Changes(profiles={"u1": {**seen_by_a, "n": 1}}))
        assert (await load(b))["n"] == 2
        # Loaded again, the same work goes through; b's view is now the stale one.
        await a.save(Changes(profiles={"u1": {**await load(a), "n": 3}}))
        assert (await load(a))["n"] == 3
        with pytest.raises(ConcurrentUpdate):
            await b.save(Changes(messages={"m1": msg("m1", "u1")}))
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_bad_urls_say_which_without_the_password() -> None:
    with pytest.raises(ConnectionError) as refused:
        await open_store("postgresql://kaskad:s3cret@127.0.0.1:1/kaskad")
    assert "postgresql://kaskad:***@127.0.0.1:1/kaskad" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ValueError, match="unsupported storage url 'mysql://u:\\*\\*\\*@db/x'"):
        await open_store("mysql://u:pw@db/x")


async def test_a_missing_schema_is_named(pg_url: str) -> None:
    url = pg_url.replace("search_path=", "search_path=nowhere_")
    with pytest.raises(ValueError, match="no schema of its search_path exists"):
        await open_store(url)
    with pytest.raises(ConnectionError, match='database "no_such_db" does not exist'):
        await open_store(pg_url.replace("/test?", "/no_such_db?"))
    same = await open_store(pg_url.replace("postgresql://", "postgres://"))
    await same.close()


async def test_rfm_reads_profiles_with_non_finite_numbers(pg_url: str) -> None:
    """Python writes NaN into JSON text, which jsonb refuses; RFM must still run."""
    store = await open_store(pg_url)
    try:
        facts = {"orders_count": 2, "revenue": 5.0, "last_order_at": "2026-11-23T10:00:00Z"}
        await store.save(
            Changes(profiles={"u1": {**facts, "attributes": {"a": float("nan"), "b": "NaN"}}})
        )
        assert await store.rfm_scores() == [("u1", 3, 3, 3, None, None)]
    finally:
        await store.close()
