"""The user search index (profile_addresses) and the per-user event log (user_events), on
both stores: lookups by normalised email and phone, the log's cap and retention, erasure,
and the migration that fills the index from profiles already stored."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.addresses import addresses_of, normalize, search_keys
from engine.core.changes import Changes, UserEvent
from engine.store import Store, open_store
from engine.store.user_log import EVENT_DATA_MAX, USER_EVENTS_KEEP

T0 = 1_795_000_000.0


def ev(user: str, n: int, etype: str = "product.viewed", **data: Any) -> UserEvent:
    return UserEvent(user, T0 + n, etype, f"e-{user}-{n}", {"n": n, **data})


def test_normalize_email_and_phone() -> None:
    assert normalize("email", " Ann@Example.COM ") == "ann@example.com"
    assert normalize("email", "no-at-sign") is None
    assert normalize("phone", "+1 (555) 000-1234") == "+15550001234"
    assert normalize("phone", "0049 30 1234") == "+49301234"
    assert normalize("phone", "call me") is None
    profile = {"email": "A@B.test", "phone": "+1 555", "whatsapp": "+1-555", "x": "+1"}
    assert addresses_of(profile) == [("email", "a@b.test"), ("phone", "+1555")]
    assert search_keys("u-1") == [] and search_keys("A@b.test") == [("email", "a@b.test")]


async def test_addresses_are_found_replaced_and_erased(store: Store) -> None:
    await store.save(
        Changes(
            addresses={
                "u1": [("email", "ann@x.test"), ("phone", "+15550001")],
                "u2": [("email", "ann@x.test")],
            }
        )
    )
    assert await store.find_users("email", "ann@x.test") == ["u1", "u2"]
    assert await store.find_users("phone", "+15550001") == ["u1"]
    # A profile's new addresses replace its old ones.
    await store.save(Changes(addresses={"u1": [("email", "bob@x.test")]}))
    assert await store.find_users("email", "ann@x.test") == ["u2"]
    assert await store.find_users("phone", "+15550001") == []
    assert await store.find_users("email", "bob@x.test") == ["u1"]
    await store.save(Changes(erased_users={"u1"}))
    assert await store.find_users("email", "bob@x.test") == []


async def test_event_log_newest_first_capped_and_by_type(store: Store) -> None:
    await store.save(Changes(user_events=[ev("u1", n) for n in range(150)]))
    await store.save(
        Changes(
            user_events=[
                ev("u1", n, "cart.updated" if n % 2 else "product.viewed") for n in range(150, 260)
            ]
            + [ev("u2", 0, "order.created", order_id="o1")]
        )
    )
    log = await store.user_events("u1", limit=10 * USER_EVENTS_KEEP)  # all that is kept
    assert len(log) == USER_EVENTS_KEEP
    assert [e.data["n"] for e in log if e.data] == list(range(259, 259 - USER_EVENTS_KEEP, -1))
    assert log[0].type == "cart.updated" and log[0].event_id == "e-u1-259"
    carts = await store.user_events("u1", types=["cart.updated"], limit=2)
    assert [e.data and e.data["n"] for e in carts] == [259, 257]
    other = await store.user_events("u2")
    assert [(e.type, e.at, e.data) for e in other] == [
        ("order.created", T0, {"n": 0, "order_id": "o1"})
    ]
    assert await store.user_events("nobody") == []


async def test_event_log_drops_big_data_retention_and_erase(store: Store) -> None:
    big = "x" * EVENT_DATA_MAX
    await store.save(Changes(user_events=[ev("u1", 0), ev("u1", 10, blob=big), ev("u2", 5)]))
    log = await store.user_events("u1")
    assert [(e.at, e.data is None) for e in log] == [(T0 + 10, True), (T0, False)]
    assert await store.forget_user_events_before(T0 + 6) == 2
    assert [e.at for e in await store.user_events("u1")] == [T0 + 10]
    assert await store.user_events("u2") == []
    await store.save(Changes(erased_users={"u1"}))
    assert await store.user_events("u1") == []


async def test_migration_fills_the_index_from_stored_profiles(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.store.postgres as pg
    import engine.store.sqlite as lite

    def before(migrations: list[str]) -> list[str]:  # the store before profile_addresses
        return migrations[
            : next(i for i, m in enumerate(migrations) if "CREATE TABLE profile_addresses" in m)
        ]

    monkeypatch.setattr(lite, "SQLITE_MIGRATIONS", before(lite.SQLITE_MIGRATIONS))
    monkeypatch.setattr(pg, "POSTGRES_MIGRATIONS", before(pg.POSTGRES_MIGRATIONS))
    profiles = {
        "u1": {"user_id": "u1", "email": " Ann@X.test", "phone": "0049 (30) 12-34"},
        "u2": {"user_id": "u2", "whatsapp": "+49301234", "email": "not an address"},
        "u3": {"user_id": "u3", "phone": "++1234", "email": 5},
        "u4": {"user_id": "u4", "phone": "+1 555 0001", "n": float("nan")},
    }
    old = await open_store(store_url)
    try:
        await old.save(Changes(profiles=profiles))
    finally:
        await old.close()
    monkeypatch.undo()
    new = await open_store(store_url)
    try:
        assert await new.find_users("email", "ann@x.test") == ["u1"]
        assert await new.find_users("phone", "+49301234") == ["u1", "u2"]
        assert await new.find_users("phone", "+15550001") == ["u4"]
        # The SQL and core/addresses agree on every stored address.
        for uid, profile in profiles.items():
            for kind, key in addresses_of(profile):
                assert uid in await new.find_users(kind, key), (uid, kind, key)
        assert await new.find_users("phone", "++1234") == []
    finally:
        await new.close()
