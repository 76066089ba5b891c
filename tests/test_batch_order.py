"""Changes within one batch apply in event order: the state after a batch equals the state
after the same events one by one (interests, profiles, orders, instances, messages)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from engine.clock import VirtualClock, parse_time
from engine.core.runner import Engine
from engine.core.workspace import IdGen
from engine.lang.config import parse_config
from engine.lang.ruleset import load_ruleset
from engine.runtime.metrics import Metrics
from engine.runtime.processor import Processor
from engine.store.sqlite import SqliteStore

START = parse_time("2026-11-23T10:00:00Z")
USERS = ("u1", "u2")
PRODUCTS = ("p1", "p2", "p3")
RULES = {
    "fav.yaml": """\
rule: fav
trigger: {event: favorite.added}
mode: restart
goal: {event: order.created}
exit_on: [{event: favorite.removed}]
steps:
  - wait: 1h
  - send: {template: t, cascade: [email]}
""",
    "t.yaml": """\
template: t
email: {subject: hi, text: "{{ trigger.data.product_id }}"}
""",
}


def _event(kind: str, user: str, product: str, extra: int) -> dict[str, Any]:
    data: dict[str, Any]
    if kind in ("favorite.added", "favorite.removed", "product.viewed"):
        data = {"product_id": product}
    elif kind in ("product.subscribed", "product.unsubscribed"):
        data = {"product_id": product, "kind": ("price_drop", "back_in_stock")[extra % 2]}
    elif kind == "cart.updated":
        chosen = [p for n, p in enumerate(PRODUCTS) if extra >> n & 1]
        data = {"items": [{"product_id": p, "qty": 1} for p in chosen], "total": len(chosen)}
    elif kind == "order.created":
        data = {"order_id": f"o{extra % 3}", "total": extra}
    elif kind == "profile.updated":
        data = {"email": f"{user}@x.test", "consent": {"email": extra % 2 == 0}}
    else:
        data = {}
    return {"type": kind, "user_id": user, "data": data}


EVENTS = st.lists(
    st.builds(
        _event,
        st.sampled_from(
            [
                "favorite.added",
                "favorite.removed",
                "cart.updated",
                "cart.cleared",
                "product.subscribed",
                "product.unsubscribed",
                "product.viewed",
                "order.created",
                "profile.updated",
            ]
        ),
        st.sampled_from(USERS),
        st.sampled_from(PRODUCTS),
        st.integers(0, 7),
    ),
    min_size=1,
    max_size=25,
)


async def _state(rules_dir: Path, events: list[dict[str, Any]], batch: bool) -> dict[str, Any]:
    store = await SqliteStore.open("sqlite:///:memory:")
    try:
        config = parse_config("policies: {quiet_hours: null, frequency_caps: []}")
        engine = Engine(load_ruleset([rules_dir]), config, lambda m: None, ids=IdGen())
        processor = Processor(engine, store, VirtualClock(START))
        rows = [(None, json.dumps(e)) for e in events]
        if batch:
            await store.enqueue(rows, START)
            await processor.drain()
        else:
            for row in rows:
                await store.enqueue([row], START)
                await processor.drain()

        async def table(sql: str) -> list[Any]:
            return sorted(map(tuple, await store.db.execute_fetchall(sql)))

        return {
            "interests": await table("SELECT product_id, kind, user_id, updated_at FROM interests"),
            "profiles": await table("SELECT user_id, data FROM profiles"),
            "orders": await table("SELECT user_id, order_id, total FROM orders"),
            "instances": await table(
                "SELECT id, rule_id, user_id, status, pc, due_at, end_reason FROM instances"
            ),
            "messages": await table("SELECT id, instance_id, status, reason FROM messages"),
        }
    finally:
        await store.close()


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(events=EVENTS)
def test_a_batch_leaves_the_state_its_events_leave_one_by_one(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    for name, text in RULES.items():
        (tmp_path / name).write_text(text)
    one_batch = asyncio.run(_state(tmp_path, events, batch=True))
    one_by_one = asyncio.run(_state(tmp_path, events, batch=False))
    assert one_batch == one_by_one


def test_favourite_then_unfavourite_in_one_batch_leaves_no_interest(tmp_path: Path) -> None:
    """The case the review found: the removal was applied before the addition."""
    for name, text in RULES.items():
        (tmp_path / name).write_text(text)
    events = [
        _event("favorite.added", "u1", "p1", 0),
        _event("favorite.removed", "u1", "p1", 0),
        _event("cart.updated", "u1", "p2", 0b010),
        _event("cart.cleared", "u1", "p2", 0),
    ]
    state = asyncio.run(_state(tmp_path, events, batch=True))
    assert state["interests"] == []


UNREADABLE = [
    '{"type": "cart.updated", "user_id": "u1", "data": {"total": NaN}}',  # an older version
    '{"type": "cart.updated", "user_id": "u1", "data": {"x": Infinity}}',
    "not JSON",
    "[1, 2]",
    '{"type": "cart.updated"}',
    '{"type": "profile.updated", "user_id": "u1", "data": {"consent": []}}',
]


async def test_an_unreadable_inbox_row_is_logged_counted_and_skipped() -> None:
    store = await SqliteStore.open("sqlite:///:memory:")
    try:
        config = parse_config("policies: {quiet_hours: null, frequency_caps: []}")
        engine = Engine(load_ruleset([]), config, lambda m: None, ids=IdGen())
        metrics = Metrics()
        processor = Processor(engine, store, VirtualClock(START), metrics=metrics)
        good = [
            json.dumps({"type": "profile.updated", "user_id": u, "data": {"email": f"{u}@x.t"}})
            for u in USERS
        ]
        rows = [(None, text) for text in [good[0], *UNREADABLE, good[1]]]
        await store.enqueue(rows, START)
        with capture_logs() as logs:
            await processor.drain()
        assert await store.inbox_size() == 0
        profiles = await store.db.execute_fetchall("SELECT user_id FROM profiles ORDER BY 1")
        assert [r[0] for r in profiles] == list(USERS)
        unreadable = [e for e in logs if e["event"] == "inbox.unreadable"]
        assert len(unreadable) == len(UNREADABLE), logs
        assert all(e["log_level"] == "error" and e["error"] for e in unreadable)
        assert metrics.registry.get_sample_value("kaskad_inbox_unreadable_total") == len(UNREADABLE)
    finally:
        await store.close()
