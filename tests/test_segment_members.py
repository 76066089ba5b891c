"""Segment membership rows (SPEC 12, GET /v1/segments): written with the profile, removed on
leave and erase, read a page at a time; the same answers on SQLite and PostgreSQL, and
members already on profiles filled in by the migration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.core.changes import Changes
from engine.store import Store, open_store
from tests.helpers import roll_back_migrations

T0 = 1_795_000_000.0


def member(uid: str, *segments: str) -> dict[str, Any]:
    return {"user_id": uid, "segments": sorted(segments), "updated_at": T0}


async def test_members_enter_leave_page_and_erase(store: Store) -> None:
    users = ["u1", "u2", "U3", "u10"]
    await store.save(
        Changes(
            profiles={u: member(u, "baby") for u in users},
            segment_members={(u, "baby"): T0 + n for n, u in enumerate(users)},
        )
    )
    await store.save(
        Changes(profiles={"u2": member("u2", "baby", "vip")}, segment_members={("u2", "vip"): T0})
    )
    assert await store.segment_sizes(["baby", "vip", "none"]) == {"baby": 4, "vip": 1, "none": 0}
    # user id order, bytewise (upper case first) on both stores; `after` is the cursor
    assert await store.segment_users("baby", "", 2) == [("U3", T0 + 2), ("u1", T0)]
    assert await store.segment_users("baby", "u1", 2) == [("u10", T0 + 3), ("u2", T0 + 1)]
    assert await store.segment_users("baby", "u2", 2) == []
    # leaving: the row goes with the profile's change
    await store.save(Changes(profiles={"u1": member("u1")}, segment_members={("u1", "baby"): None}))
    assert [u for u, _ in await store.segment_users("baby", "", 10)] == ["U3", "u10", "u2"]
    # erasing: every membership of the user goes
    await store.save(Changes(erased_users={"u2"}))
    assert await store.segment_sizes(["baby", "vip"]) == {"baby": 2, "vip": 0}


async def test_an_entry_and_a_leave_in_one_unit_leave_the_last_word(store: Store) -> None:
    changes = Changes(profiles={"u1": member("u1")})
    changes.segment_members[("u1", "baby")] = T0
    changes.segment_members[("u1", "baby")] = None
    await store.save(changes)
    assert await store.segment_sizes(["baby"]) == {"baby": 0}


async def _roll_back_last_migration(url: str, tmp_path: Path) -> None:
    """The database as it was before segment_members existed (and what came after it)."""
    await roll_back_migrations(
        url, tmp_path / "kaskad.db", "CREATE TABLE segment_members", ["DROP TABLE segment_members"]
    )


async def test_the_migration_fills_in_members_already_on_profiles(
    store_url: str, tmp_path: Path
) -> None:
    store = await open_store(store_url)
    await store.save(
        Changes(
            profiles={
                "u1": member("u1", "baby", "vip"),
                "u2": {**member("u2", "baby"), "revenue": float("nan")},  # JSON with NaN
                "u3": {"user_id": "u3", "segments": "baby", "updated_at": T0},  # not a list
                "u4": {"user_id": "u4", "updated_at": T0},
            }
        )
    )
    await store.close()
    await _roll_back_last_migration(store_url, tmp_path)
    store = await open_store(store_url)
    try:
        assert await store.segment_sizes(["baby", "vip"]) == {"baby": 2, "vip": 1}
        assert await store.segment_users("baby", "", 10) == [("u1", T0), ("u2", T0)]
    finally:
        await store.close()
