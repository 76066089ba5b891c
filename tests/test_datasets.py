"""Dataset converters, the synthetic stream and the abandoned-cart reference (bench/)."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # bench/ is not part of the installed package (only engine and channels are).
    sys.path.insert(0, str(ROOT))

from bench.abandoned_cart_reference import Send, expected_sends  # noqa: E402
from bench.datasets import generate_stream, otto_events, rees46_events, write_jsonl  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "otto_events.jsonl"
SHARED = Path("/work/shared/data")
# The raw samples live outside the repo (REES46 must never be committed): tests that need
# them skip when they are absent, e.g. on CI.
OTTO_RAW = Path(os.environ.get("KASKAD_OTTO_RAW", SHARED / "otto_recsys_fixture_20sessions.jsonl"))
REES46_RAW = Path(
    os.environ.get("KASKAD_REES46_RAW", SHARED / "rees46_multicat_2019-10-01_head.csv")
)

TYPE_RE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
ITEM_KEYS = ["product_id", "name", "url", "price", "qty"]


@pytest.fixture(scope="module")
def otto_raw() -> Path:
    if not OTTO_RAW.is_file():
        pytest.skip(f"raw OTTO sample not found at {OTTO_RAW} (set KASKAD_OTTO_RAW)")
    return OTTO_RAW


@pytest.fixture(scope="module")
def fixture_events() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------- envelope checking


def assert_envelope(event: dict[str, Any]) -> None:
    """The kaskad envelope contract, plus the data shape of the standard types used here."""
    product_event = event["type"] == "product.price_dropped"
    keys = ["id", "type", "user_id", "time", "data"]
    if product_event:
        keys.remove("user_id")  # product events concern everyone, not one user
    assert list(event) == keys, event
    assert isinstance(event["id"], str) and event["id"], event
    assert TYPE_RE.fullmatch(event["type"]), event
    assert product_event or isinstance(event["user_id"], str), event
    assert TIME_RE.fullmatch(event["time"]), event
    datetime.fromisoformat(event["time"])  # a real date, not just the right shape
    assert isinstance(event["data"], dict), event
    check = DATA_CHECKS.get(event["type"])
    assert check is not None, f"unexpected type {event['type']}"
    check(event["data"])


def _product(data: dict[str, Any]) -> None:
    assert list(data) == ["product_id", "name", "url", "price", "category"], data
    assert isinstance(data["product_id"], str) and data["url"].startswith("https://"), data
    assert isinstance(data["price"], float) and data["price"] >= 0, data


def _items(items: list[dict[str, Any]], total: float) -> None:
    assert items, "an order or cart update needs items"
    for item in items:
        assert list(item) == ITEM_KEYS, item
        assert isinstance(item["product_id"], str) and item["qty"] >= 1, item
    assert total == round(sum(item["price"] * item["qty"] for item in items), 2)


def _cart(data: dict[str, Any]) -> None:
    assert list(data) == ["items", "total"], data
    _items(data["items"], data["total"])


def _order(data: dict[str, Any]) -> None:
    assert list(data) == ["order_id", "total", "items", "source"], data
    assert data["source"] == "online" and isinstance(data["order_id"], str), data
    _items(data["items"], data["total"])


def _profile(data: dict[str, Any]) -> None:
    assert data["email"].endswith("@example.test"), data
    assert data["timezone"] and data["locale"], data
    assert all(isinstance(token, str) for token in data["push_tokens"]), data
    assert set(data["consent"]) == {"email", "sms", "push"}, data
    assert data["consent"]["sms"] == ("phone" in data), data
    for subscription in data.get("webpush", []):
        assert set(subscription) == {"endpoint", "keys"}, subscription
        assert set(subscription["keys"]) == {"p256dh", "auth"}, subscription


def _price_drop(data: dict[str, Any]) -> None:
    assert list(data) == ["product_id", "old_price", "new_price", "name", "url"], data
    assert isinstance(data["product_id"], str), data
    assert 0 < data["new_price"] < data["old_price"], data


def _favorite(data: dict[str, Any]) -> None:
    assert list(data) == ["product_id"] and isinstance(data["product_id"], str), data


def _search(data: dict[str, Any]) -> None:
    assert list(data) == ["query", "results"] and isinstance(data["query"], str), data


def _cleared(data: dict[str, Any]) -> None:
    assert data == {}


DATA_CHECKS = {
    "profile.updated": _profile,
    "product.viewed": _product,
    "cart.updated": _cart,
    "cart.cleared": _cleared,
    "favorite.added": _favorite,
    "search.performed": _search,
    "order.created": _order,
    "product.price_dropped": _price_drop,
}


def assert_sorted_by_time(events: list[dict[str, Any]]) -> None:
    times = [event["time"] for event in events]
    assert times == sorted(times)


# ------------------------------------------------------------------------------------- OTTO


def raw_otto_counts(path: Path) -> Counter[str]:
    """Expected event counts, computed straight from the raw file."""
    sessions = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [(session["session"], row) for session in sessions for row in session["events"]]
    kinds = Counter(row["type"] for _, row in rows)
    # README: clicks 800, carts 52, orders 10 (rows); one order = the orders rows of one ts.
    assert kinds == {"clicks": 800, "carts": 52, "orders": 10}
    orders = {(session, row["ts"]) for session, row in rows if row["type"] == "orders"}
    return Counter(
        {
            "profile.updated": len(sessions),
            "product.viewed": kinds["clicks"],
            "cart.updated": kinds["carts"],
            "order.created": len(orders),
        }
    )


def test_otto_counts_per_type_match_the_raw_file(otto_raw: Path) -> None:
    expected = raw_otto_counts(otto_raw)
    assert expected["order.created"] == 5
    assert Counter(event["type"] for event in otto_events(otto_raw)) == expected

    without_profiles = Counter(e["type"] for e in otto_events(otto_raw, with_profiles=False))
    assert without_profiles == expected - Counter({"profile.updated": expected["profile.updated"]})


def test_committed_otto_fixture_equals_a_fresh_conversion(otto_raw: Path) -> None:
    fresh = io.StringIO()
    write_jsonl(otto_events(otto_raw), fresh)
    assert FIXTURE.read_text(encoding="utf-8") == fresh.getvalue()


def test_otto_fixture_ids_unique_times_sorted_envelopes_valid(
    fixture_events: list[dict[str, Any]],
) -> None:
    assert len(fixture_events) == 877
    ids = [event["id"] for event in fixture_events]
    assert len(set(ids)) == len(ids)
    assert_sorted_by_time(fixture_events)
    for event in fixture_events:
        assert_envelope(event)


def test_otto_profiles_come_one_second_before_each_users_first_event(
    fixture_events: list[dict[str, Any]],
) -> None:
    first_seen: dict[str, dict[str, Any]] = {}
    for event in fixture_events:
        first_seen.setdefault(event["user_id"], event)
    for user_id, first in first_seen.items():
        assert first["type"] == "profile.updated", user_id
        assert first["data"]["email"] == f"{user_id}@example.test"
        first_activity = next(
            e for e in fixture_events if e["user_id"] == user_id and e is not first
        )
        gap = datetime.fromisoformat(first_activity["time"]) - datetime.fromisoformat(first["time"])
        assert gap == timedelta(seconds=1)


def test_otto_order_groups_rows_of_one_ts_and_empties_those_products_from_the_cart(
    fixture_events: list[dict[str, Any]],
) -> None:
    user = [e for e in fixture_events if e["user_id"] == "otto-0" and e["type"] != "product.viewed"]
    by_id = {event["id"]: event for event in user}
    # Session 0, rows 8-9: two orders rows with one ts; 461689 was in the cart, 305831 not.
    order = by_id["otto-0-8"]
    assert order["data"]["order_id"] == "otto-0-o1"
    assert [item["product_id"] for item in order["data"]["items"]] == ["305831", "461689"]
    assert order["data"]["total"] == 36.0 + 94.0  # synthetic prices 5 + aid % 200
    next_cart = next(e for e in user[user.index(order) :] if e["type"] == "cart.updated")
    assert [item["product_id"] for item in next_cart["data"]["items"]] == ["1649869", "789245"]


def test_otto_carting_an_article_again_increments_its_qty(
    fixture_events: list[dict[str, Any]],
) -> None:
    carts = [e for e in fixture_events if e["user_id"] == "otto-0" and e["type"] == "cart.updated"]
    qty = [
        next(i["qty"] for i in cart["data"]["items"] if i["product_id"] == "974651")
        for cart in carts
        if any(i["product_id"] == "974651" for i in cart["data"]["items"])
    ]
    assert qty[:4] == [1, 2, 3, 3]  # carted three times in a row, then another product


# ----------------------------------------------------------------------------------- REES46


def test_rees46_conversion_keeps_the_duplicate_rows_as_duplicate_ids() -> None:
    if not REES46_RAW.is_file():
        pytest.skip(f"REES46 sample not found at {REES46_RAW} (never committed: no licence)")
    events = rees46_events(REES46_RAW)
    counts = Counter(event["type"] for event in events)
    assert counts["product.viewed"] == 17_055
    assert counts["cart.updated"] == 165
    assert counts["order.created"] == 214  # 214 purchase rows, none share user+session+second
    assert counts["profile.updated"] == 4_504
    ids = Counter(event["id"] for event in events)
    assert sum(n - 1 for n in ids.values()) == 5  # the README's 5 exact duplicate rows
    assert_sorted_by_time(events)
    for event in events:
        assert_envelope(event)


# --------------------------------------------------------------------------- synthetic stream


def test_generator_is_lazy_deterministic_and_sized() -> None:
    stream = generate_stream(2_000, n_users=50, days=2, seed=42)
    assert isinstance(stream, Iterator)  # streamed, not a list
    first = list(stream)
    assert len(first) == 2_000
    assert first == list(generate_stream(2_000, n_users=50, days=2, seed=42))
    assert first != list(generate_stream(2_000, n_users=50, days=2, seed=43))
    assert list(generate_stream(0, n_users=5, days=1, seed=1)) == []


def test_generator_time_order_envelopes_and_profile_first() -> None:
    start = "2026-11-02T00:00:00Z"
    events = list(generate_stream(20_000, n_users=300, days=3, seed=7, start=start))
    assert_sorted_by_time(events)
    assert events[0]["time"] >= start
    # Sessions may run a few minutes past the span, no more.
    assert events[-1]["time"] < "2026-11-05T01:00:00Z"
    assert len({event["id"] for event in events}) == len(events)
    seen: set[str] = set()
    for event in events:
        assert_envelope(event)
        if "user_id" in event:
            if event["user_id"] not in seen:
                assert event["type"] == "profile.updated", event
            seen.add(event["user_id"])


def test_generator_has_roughly_the_target_mix_and_skewed_products() -> None:
    events = generate_stream(200_000, n_users=2_000, days=7, seed=3)
    activity = [e for e in events if e["type"] != "profile.updated"]
    share = {kind: n / len(activity) for kind, n in Counter(e["type"] for e in activity).items()}
    target = {
        "product.viewed": 0.95,
        "search.performed": 0.015,
        "cart.updated": 0.015,
        "favorite.added": 0.005,
        "order.created": 0.01,
        "cart.cleared": 0.002,
        "product.price_dropped": 0.001,
    }
    assert set(share) == set(target)
    for kind, expected in target.items():
        assert share[kind] == pytest.approx(expected, rel=0.25), kind
    views = Counter(e["data"]["product_id"] for e in activity if e["type"] == "product.viewed")
    top_ten = sum(n for _, n in views.most_common(10))
    assert top_ten > 0.15 * sum(views.values())  # Zipf-like: a few products dominate
    assert len(views) > 3_000  # ... over a long tail from the ~5,000-product catalogue


# -------------------------------------------------------------------------- abandoned cart ref

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MINUTE, DAY = timedelta(minutes=1), timedelta(days=1)


def at(offset: timedelta) -> str:
    return (T0 + offset).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(
    event_id: str, event_type: str, offset: timedelta, user: str = "u1", **data: Any
) -> dict[str, Any]:
    return {"id": event_id, "type": event_type, "user_id": user, "time": at(offset), "data": data}


def cart(event_id: str, offset: timedelta, total: float = 30.0, user: str = "u1") -> dict[str, Any]:
    url = "https://shop.example/p/p1"
    item = {"product_id": "p1", "name": "Kettle", "url": url, "price": total, "qty": 1}
    return event(event_id, "cart.updated", offset, user, items=[item], total=total)


def both_steps(offset: timedelta, user: str = "u1") -> list[Send]:
    return [(at(offset), user, 1), (at(offset + DAY), user, 2)]


REFERENCE_CASES: dict[str, tuple[list[dict[str, Any]], list[Send]]] = {
    "order within 15 min: nothing": (
        [cart("c1", 0 * MINUTE), event("o1", "order.created", 10 * MINUTE)],
        [],
    ),
    "no order: step 1 at +15 min, step 2 a day later": (
        [cart("c1", 0 * MINUTE)],
        both_steps(15 * MINUTE),
    ),
    "second cart update restarts the timer": (
        [cart("c1", 0 * MINUTE), cart("c2", 10 * MINUTE, total=60.0)],
        both_steps(25 * MINUTE),
    ),
    "cart.cleared cancels": (
        [cart("c1", 0 * MINUTE), event("x1", "cart.cleared", 5 * MINUTE)],
        [],
    ),
    "an order at the due instant wins": (
        [cart("c1", 0 * MINUTE), event("o1", "order.created", 15 * MINUTE)],
        [],
    ),
    "an order after step 1 cancels step 2": (
        [cart("c1", 0 * MINUTE), event("o1", "order.created", 2 * 60 * MINUTE)],
        [(at(15 * MINUTE), "u1", 1)],
    ),
    "a duplicate id counts once": (
        [cart("c1", 0 * MINUTE), cart("c1", 10 * MINUTE)],
        both_steps(15 * MINUTE),
    ),
    "an empty cart does not trigger": (
        [cart("c1", 0 * MINUTE, total=0.0)],
        [],
    ),
    "users are independent": (
        [
            cart("a1", 0 * MINUTE, user="a"),
            cart("b1", 5 * MINUTE, user="b"),
            event("o", "order.created", 6 * MINUTE, user="a"),
        ],
        both_steps(20 * MINUTE, user="b"),
    ),
}


@pytest.mark.parametrize(
    ("events", "expected"), REFERENCE_CASES.values(), ids=list(REFERENCE_CASES)
)
def test_abandoned_cart_reference(events: list[dict[str, Any]], expected: list[Send]) -> None:
    assert expected_sends(events) == expected


def test_abandoned_cart_reference_stops_at_the_horizon() -> None:
    events = [cart("c1", 0 * MINUTE)]
    assert expected_sends(events, horizon=T0 + DAY) == [(at(15 * MINUTE), "u1", 1)]
    assert expected_sends(events, horizon=T0 + 15 * MINUTE + DAY) == both_steps(15 * MINUTE)
    assert expected_sends(events, first_delay_s=60, second_delay_s=120) == [
        (at(1 * MINUTE), "u1", 1),
        (at(3 * MINUTE), "u1", 2),
    ]


def test_abandoned_cart_reference_on_the_otto_fixture_is_consistent(
    fixture_events: list[dict[str, Any]],
) -> None:
    sends = expected_sends(fixture_events)
    steps = Counter(step for _, _, step in sends)
    # Every step 2 follows a step 1 of the same user; sends only go to users who carted.
    assert 0 < steps[2] <= steps[1]
    carted = {e["user_id"] for e in fixture_events if e["type"] == "cart.updated"}
    assert {user for _, user, _ in sends} <= carted
    assert sends == sorted(sends)
