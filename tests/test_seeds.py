"""The eight seed scenarios of SPEC 11, each proven by its exact timeline and branches."""

from __future__ import annotations

import hashlib

from tests.helpers import brief, ev, profile, run_simulation, shipped_rules

CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}


def _variant(rule: str, user: str) -> str:
    digest = hashlib.sha256(f"{rule}:{user}".encode()).digest()
    return "A" if int.from_bytes(digest[:8], "big") / 2**64 * 100 < 50 else "B"


def _promo_template(user: str) -> str:
    return "cart_promo" if _variant("abandoned_cart", user) == "A" else "cart_promo_b"


# -- 1. abandoned cart, shop A -------------------------------------------------------------


def _cart_a(*extra: dict) -> list[dict]:
    return [
        profile("u1", "2026-11-23T09:00:00Z", email="u1@shop.test", whatsapp="79990001122"),
        ev("cart.updated", "u1", "2026-11-23T10:00:00Z", CART),
        *extra,
    ]


def test_abandoned_cart_full_chain_promo_not_opened() -> None:
    records = run_simulation(shipped_rules("abandoned_cart"), _cart_a())
    assert brief(records) == [
        ("2026-11-23T11:00:00Z", "abandoned_cart", "u1", "1", "email", "sent", None),
        ("2026-11-26T11:00:00Z", "abandoned_cart", "u1", "3", "email", "sent", None),
        ("2026-11-27T11:00:00Z", "abandoned_cart", "u1", "3", "whatsapp", "sent", None),
    ]
    assert records[0]["template"] == "cart_reminder" and records[0]["variant"] is None
    assert records[1]["template"] == _promo_template("u1")
    assert records[1]["variant"] == records[2]["variant"] == _variant("abandoned_cart", "u1")
    assert records[2]["template"] == "cart_promo_whatsapp"


def test_abandoned_cart_promo_opened_stops_the_cascade() -> None:
    opened = ev(
        "message.opened",
        "u1",
        "2026-11-26T15:00:00Z",
        {"rule": "abandoned_cart", "channel": "email"},
    )
    records = run_simulation(shipped_rules("abandoned_cart"), _cart_a(opened))
    assert [r["channel"] for r in records] == ["email", "email"]


def test_abandoned_cart_open_after_the_window_is_too_late() -> None:
    late = ev(
        "message.opened",
        "u1",
        "2026-11-27T11:00:01Z",
        {"rule": "abandoned_cart", "channel": "email"},
    )
    records = run_simulation(shipped_rules("abandoned_cart"), _cart_a(late))
    assert [r["channel"] for r in records] == ["email", "email", "whatsapp"]


def test_abandoned_cart_order_mid_chain_ends_it() -> None:
    order = ev("order.created", "u1", "2026-11-24T12:00:00Z", {"order_id": "o1", "total": 30})
    records = run_simulation(shipped_rules("abandoned_cart"), _cart_a(order))
    assert brief(records) == [
        ("2026-11-23T11:00:00Z", "abandoned_cart", "u1", "1", "email", "sent", None),
    ]


def test_abandoned_cart_order_mid_cascade_cancels_the_fallback() -> None:
    order = ev("order.created", "u1", "2026-11-26T20:00:00Z", {"order_id": "o1", "total": 30})
    records = run_simulation(shipped_rules("abandoned_cart"), _cart_a(order))
    assert [r["channel"] for r in records] == ["email", "email"]


def test_abandoned_cart_restarts_on_each_cart_update() -> None:
    again = ev("cart.updated", "u1", "2026-11-23T10:40:00Z", {**CART, "total": 60})
    records = run_simulation(shipped_rules("abandoned_cart"), _cart_a(again))
    assert records[0]["time"] == "2026-11-23T11:40:00Z"
    assert len(records) == 3


def test_abandoned_cart_cleared_cart_exits() -> None:
    cleared = ev("cart.cleared", "u1", "2026-11-23T10:30:00Z")
    assert run_simulation(shipped_rules("abandoned_cart"), _cart_a(cleared)) == []


def test_abandoned_cart_empty_cart_does_not_trigger() -> None:
    records = run_simulation(
        shipped_rules("abandoned_cart"),
        [ev("cart.updated", "u1", "2026-11-23T10:00:00Z", {"items": [], "total": 0})],
    )
    assert records == []


def test_abandoned_cart_unreachable_fallback_is_skipped_with_reason() -> None:
    events = [
        profile("u1", "2026-11-23T09:00:00Z", email="u1@shop.test"),
        ev("cart.updated", "u1", "2026-11-23T10:00:00Z", CART),
    ]
    records = run_simulation(shipped_rules("abandoned_cart"), events)
    assert brief(records)[-1] == (
        "2026-11-27T11:00:00Z",
        "abandoned_cart",
        "u1",
        "3",
        "whatsapp",
        "skipped",
        "no_address",
    )


def test_abandoned_cart_no_email_is_skipped_no_address() -> None:
    records = run_simulation(
        shipped_rules("abandoned_cart"), [ev("cart.updated", "u9", "2026-11-23T10:00:00Z", CART)]
    )
    assert [(r["step"], r["channel"], r["status"], r["reason"]) for r in records] == [
        ("1", "email", "skipped", "no_address"),
        ("3", "whatsapp", "skipped", "no_address"),
    ]


def test_quiet_hours_defer_marketing_to_the_morning_in_user_timezone() -> None:
    events = [
        profile("u1", "2026-11-23T09:00:00Z", email="u1@shop.test", timezone="Europe/Moscow"),
        # 20:30 UTC is 23:30 in Moscow: the reminder falls in quiet hours.
        ev("cart.updated", "u1", "2026-11-23T19:30:00Z", CART),
    ]
    config = "policies: {frequency_caps: [], quiet_hours: {from: '21:00', to: '09:00'}}"
    records = run_simulation(shipped_rules("abandoned_cart"), events, config)
    assert brief(records)[0] == (
        "2026-11-24T06:00:00Z",  # 09:00 Moscow
        "abandoned_cart",
        "u1",
        "1",
        "email",
        "sent",
        "quiet_hours_deferred",
    )


def test_order_during_quiet_hours_deferral_cancels_the_send() -> None:
    events = [
        profile("u1", "2026-11-23T09:00:00Z", email="u1@shop.test"),
        ev("cart.updated", "u1", "2026-11-23T21:30:00Z", CART),
        ev("order.created", "u1", "2026-11-24T07:00:00Z", {"order_id": "o", "total": 30}),
    ]
    config = "policies: {frequency_caps: []}"
    records = run_simulation(shipped_rules("abandoned_cart"), events, config)
    assert brief(records) == [
        ("2026-11-24T07:00:00Z", "abandoned_cart", "u1", "1", "email", "skipped", "exited"),
    ]


def test_frequency_cap_across_rules() -> None:
    events = [
        profile("u1", "2026-11-22T09:00:00Z", email="u1@shop.test"),
        ev("product.viewed", "u1", "2026-11-22T10:00:00Z", {"product_id": "p1"}),
        ev("cart.updated", "u1", "2026-11-23T10:30:00Z", CART),
    ]
    config = "policies: {quiet_hours: null, frequency_caps: [{per: 1d, max: 1}]}"
    rules = shipped_rules("abandoned_cart", "viewed_not_bought")
    records = run_simulation(rules, events, config, until=1795500000.0)
    assert brief(records) == [
        ("2026-11-23T10:00:00Z", "viewed_not_bought", "u1", "1", "email", "sent", None),
        ("2026-11-23T11:30:00Z", "abandoned_cart", "u1", "1", "email", "skipped", "frequency_cap"),
    ]


def test_cart_recovery_group_sends_one_chain_per_cart() -> None:
    """Both cart rules are in the group cart_recovery: abandoned_cart (priority 10) runs,
    abandoned_cart_quick is not started (one group_busy per trigger), so a cart gets one
    reminder, not two."""
    rules = shipped_rules("abandoned_cart", "abandoned_cart_quick")
    again = ev("cart.updated", "u1", "2026-11-23T10:30:00Z", CART)
    records = run_simulation(rules, _cart_a(again), until=1795500000.0)
    assert brief(records) == [
        (
            "2026-11-23T10:00:00Z",
            "abandoned_cart_quick",
            "u1",
            "trigger",
            None,
            "skipped",
            "group_busy",
        ),
        (
            "2026-11-23T10:30:00Z",
            "abandoned_cart_quick",
            "u1",
            "trigger",
            None,
            "skipped",
            "group_busy",
        ),
        ("2026-11-23T11:30:00Z", "abandoned_cart", "u1", "1", "email", "sent", None),
    ]


def test_ab_split_is_stable_and_near_even() -> None:
    users = [f"user{i}" for i in range(400)]
    events = [profile(u, "2026-11-23T09:00:00Z", email=f"{u}@shop.test") for u in users] + [
        ev("cart.updated", u, "2026-11-23T10:00:00Z", CART) for u in users
    ]
    records = run_simulation(shipped_rules("abandoned_cart"), events)
    promo = [r for r in records if r["step"] == "3" and r["channel"] == "email"]
    assert len(promo) == 400
    for r in promo:
        assert r["variant"] == _variant("abandoned_cart", r["user_id"])
        assert r["template"] == _promo_template(r["user_id"])
    share_a = sum(r["variant"] == "A" for r in promo) / len(promo)
    assert 0.42 < share_a < 0.58


# -- 2. abandoned cart, shop B -------------------------------------------------------------


def test_quick_cart_reminder_then_similar_products() -> None:
    events = _cart_a()
    records = run_simulation(shipped_rules("abandoned_cart_quick"), events)
    assert [(r["time"], r["template"]) for r in records] == [
        ("2026-11-23T10:15:00Z", "cart_reminder_quick"),
        ("2026-11-24T10:15:00Z", "cart_similar"),
    ]


def test_quick_cart_order_before_the_second_email() -> None:
    order = ev("order.created", "u1", "2026-11-23T18:00:00Z", {"order_id": "o1", "total": 30})
    records = run_simulation(shipped_rules("abandoned_cart_quick"), _cart_a(order))
    assert [r["template"] for r in records] == ["cart_reminder_quick"]


# -- 3. viewed / searched / favourited -----------------------------------------------------


def test_viewed_not_bought_push_else_email_and_cooldown() -> None:
    view = {"product_id": "p7", "name": "Lamp", "url": "https://shop.example/p/p7", "price": 5}
    events = [
        profile("app", "2026-11-23T09:00:00Z", email="a@shop.test", push_tokens=["tok-1"]),
        profile("web", "2026-11-23T09:00:00Z", email="w@shop.test"),
        ev("product.viewed", "app", "2026-11-23T10:00:00Z", view),
        ev("product.viewed", "web", "2026-11-23T10:00:00Z", view),
        # A second view within the 3-day cooldown, after the first chain ended: no new chain.
        ev("product.viewed", "web", "2026-11-25T10:00:00Z", view),
    ]
    records = run_simulation(shipped_rules("viewed_not_bought"), events)
    assert brief(records) == [
        ("2026-11-24T10:00:00Z", "viewed_not_bought", "app", "1", "mobile_push", "sent", None),
        ("2026-11-24T10:00:00Z", "viewed_not_bought", "web", "1", "email", "sent", None),
    ]


def test_viewed_then_carted_exits() -> None:
    events = [
        profile("u1", "2026-11-23T09:00:00Z", email="a@shop.test"),
        ev("product.viewed", "u1", "2026-11-23T10:00:00Z", {"product_id": "p7"}),
        ev("cart.updated", "u1", "2026-11-23T10:05:00Z", CART),
    ]
    assert run_simulation(shipped_rules("viewed_not_bought"), events) == []


def test_searched_not_bought() -> None:
    events = [
        profile("u1", "2026-11-23T09:00:00Z", email="a@shop.test"),
        ev("search.performed", "u1", "2026-11-23T10:00:00Z", {"query": "kettle", "results": 12}),
        ev("search.performed", "u1", "2026-11-23T10:01:00Z", {"query": "zzz", "results": 0}),
    ]
    records = run_simulation(shipped_rules("searched_not_bought"), events)
    assert [(r["time"], r["template"]) for r in records] == [
        ("2026-11-23T12:00:00Z", "search_followup")
    ]


def test_favorite_reminder_per_product_and_unfavourite_exit() -> None:
    events = [
        profile("u1", "2026-11-23T09:00:00Z", email="a@shop.test"),
        ev("favorite.added", "u1", "2026-11-23T10:00:00Z", {"product_id": "p1"}),
        ev("favorite.added", "u1", "2026-11-23T10:00:00Z", {"product_id": "p2"}),
        ev("favorite.removed", "u1", "2026-11-24T10:00:00Z", {"product_id": "p2"}),
    ]
    records = run_simulation(shipped_rules("favorite_reminder"), events)
    assert brief(records) == [
        ("2026-11-25T10:00:00Z", "favorite_reminder", "u1", "1", "email", "sent", None),
    ]


# -- 4. price drop and back in stock -------------------------------------------------------


def test_price_drop_fans_out_to_interested_users_only() -> None:
    drop = {"product_id": "p1", "old_price": 100, "new_price": 80, "name": "Kettle"}
    events = [
        profile("sub", "2026-11-23T09:00:00Z", email="s@shop.test", push_tokens=["t"]),
        profile("fav", "2026-11-23T09:00:00Z", email="f@shop.test"),
        profile("cart", "2026-11-23T09:00:00Z", email="c@shop.test"),
        profile("viewer", "2026-11-23T09:00:00Z", email="v@shop.test"),
        profile("other", "2026-11-23T09:00:00Z", email="o@shop.test"),
        ev(
            "product.subscribed",
            "sub",
            "2026-11-23T09:10:00Z",
            {"product_id": "p1", "kind": "price_drop"},
        ),
        ev("favorite.added", "fav", "2026-11-23T09:10:00Z", {"product_id": "p1"}),
        ev("cart.updated", "cart", "2026-11-23T09:10:00Z", CART),
        ev("product.viewed", "viewer", "2026-11-23T09:10:00Z", {"product_id": "p1"}),
        ev("favorite.added", "other", "2026-11-23T09:10:00Z", {"product_id": "p2"}),
        ev("product.price_dropped", None, "2026-11-23T12:00:00Z", drop),
        # A price rise is not a drop.
        ev(
            "product.price_dropped",
            None,
            "2026-11-23T13:00:00Z",
            {**drop, "old_price": 80, "new_price": 90},
        ),
    ]
    records = run_simulation(shipped_rules("price_drop"), events)
    assert sorted((r["user_id"], r["channel"], r["time"]) for r in records) == [
        ("cart", "email", "2026-11-23T12:00:00Z"),
        ("fav", "email", "2026-11-23T12:00:00Z"),
        ("sub", "mobile_push", "2026-11-23T12:00:00Z"),
    ]


def test_back_in_stock_only_to_its_subscribers() -> None:
    events = [
        profile("sub", "2026-11-23T09:00:00Z", email="s@shop.test"),
        profile("pd", "2026-11-23T09:00:00Z", email="p@shop.test"),
        ev(
            "product.subscribed",
            "sub",
            "2026-11-23T09:10:00Z",
            {"product_id": "p1", "kind": "back_in_stock"},
        ),
        ev(
            "product.subscribed",
            "pd",
            "2026-11-23T09:10:00Z",
            {"product_id": "p1", "kind": "price_drop"},
        ),
        ev("product.back_in_stock", None, "2026-11-23T12:00:00Z", {"product_id": "p1"}),
    ]
    records = run_simulation(shipped_rules("back_in_stock"), events)
    assert [(r["user_id"], r["channel"]) for r in records] == [("sub", "email")]


# -- 5. points expiry ----------------------------------------------------------------------


def _points(*extra: dict, phone_only: bool = False) -> list[dict]:
    contact = {"phone": "+79990001122"} if phone_only else {"whatsapp": "79990001122"}
    return [
        profile("u1", "2026-11-01T09:00:00Z", timezone="Europe/Moscow", **contact),
        ev(
            "points.accrued",
            "u1",
            "2026-11-02T09:00:00Z",
            {"amount": 500, "balance": 500, "expires_at": "2026-12-31"},
        ),
        *extra,
    ]


def test_points_expiry_week_before_and_on_the_day() -> None:
    records = run_simulation(shipped_rules("points_expiry"), _points())
    assert [(r["time"], r["channel"], r["template"]) for r in records] == [
        ("2026-12-24T07:00:00Z", "whatsapp", "points_expiry"),  # 10:00 Moscow
        ("2026-12-31T07:00:00Z", "whatsapp", "points_expiry_today"),
    ]


def test_points_expiry_falls_back_to_sms_without_whatsapp() -> None:
    # whatsapp takes the phone when no WhatsApp number is known; consent off for WhatsApp.
    events = _points(phone_only=True)
    events[0]["data"]["consent"] = {"whatsapp": False}
    records = run_simulation(shipped_rules("points_expiry"), events)
    assert [r["channel"] for r in records] == ["sms", "sms"]


def test_points_expiry_skipped_when_balance_spent() -> None:
    spent = ev("points.redeemed", "u1", "2026-12-01T09:00:00Z", {"amount": 500, "balance": 0})
    assert run_simulation(shipped_rules("points_expiry"), _points(spent)) == []


# -- 6. licence expiry ---------------------------------------------------------------------


def test_license_expiry_reminders_and_renewal() -> None:
    issued = {"license_id": "L1", "expires_at": "2027-01-15"}
    events = [
        profile("u1", "2026-11-01T09:00:00Z", email="a@shop.test"),
        ev("license.issued", "u1", "2026-11-02T09:00:00Z", issued),
        profile("u2", "2026-11-01T09:00:00Z", email="b@shop.test"),
        ev("license.issued", "u2", "2026-11-02T09:00:00Z", issued),
        ev("license.renewed", "u2", "2027-01-10T09:00:00Z", {"license_id": "L1"}),
    ]
    records = run_simulation(shipped_rules("license_expiry"), events)
    assert [(r["time"], r["user_id"], r["template"]) for r in records] == [
        ("2027-01-08T10:00:00Z", "u1", "license_expiry"),
        ("2027-01-08T10:00:00Z", "u2", "license_expiry"),
        ("2027-01-15T10:00:00Z", "u1", "license_expiry_today"),
    ]


# -- 7. bonus credited ---------------------------------------------------------------------


def test_bonus_credited_is_transactional_push_else_sms() -> None:
    events = [
        profile("app", "2026-11-23T09:00:00Z", push_tokens=["t"], phone="+79990001122"),
        profile("sms", "2026-11-23T09:00:00Z", phone="+79990001133", consent={"sms": False}),
        # Night time and a cap of zero: a transactional message ignores both.
        ev("bonus.credited", "app", "2026-11-23T23:30:00Z", {"amount": 100, "balance": 300}),
        ev("bonus.credited", "sms", "2026-11-23T23:30:00Z", {"amount": 100, "balance": 300}),
    ]
    config = "policies: {frequency_caps: [{per: 1d, max: 0}]}"
    records = run_simulation(shipped_rules("bonus_credited"), events, config)
    assert brief(records) == [
        ("2026-11-23T23:30:00Z", "bonus_credited", "app", "0", "mobile_push", "sent", None),
        ("2026-11-23T23:30:00Z", "bonus_credited", "sms", "0", "sms", "sent", None),
    ]


# -- 8. weekly promo broadcast -------------------------------------------------------------


def test_weekly_promo_broadcast_cascade_by_opens() -> None:
    msk = {"timezone": "Europe/Moscow"}
    events = [
        profile(
            "champ",
            "2026-11-23T09:00:00Z",
            email="c@shop.test",
            push_tokens=["t"],
            telegram_chat_id=42,
            rfm="champions",
            **msk,
        ),
        profile(
            "opener",
            "2026-11-23T09:00:00Z",
            email="o@shop.test",
            push_tokens=["t2"],
            rfm="loyal",
            **msk,
        ),
        profile("sleepy", "2026-11-23T09:00:00Z", email="s@shop.test", rfm="hibernating", **msk),
        ev(
            "message.opened",
            "opener",
            "2026-11-24T09:00:00Z",
            {"rule": "weekly_promo", "channel": "email"},
        ),
    ]
    records = run_simulation(shipped_rules("weekly_promo"), events, until=1795600000.0)
    assert brief(records) == [
        ("2026-11-24T08:00:00Z", "weekly_promo", "champ", "0", "email", "sent", None),
        ("2026-11-24T08:00:00Z", "weekly_promo", "opener", "0", "email", "sent", None),
        ("2026-11-24T10:00:00Z", "weekly_promo", "champ", "0", "mobile_push", "sent", None),
        # No web push subscription: straight on to Telegram after the push's 2 hours.
        ("2026-11-24T12:00:00Z", "weekly_promo", "champ", "0", "telegram", "sent", None),
    ]
