"""The store's actions by hand (issue 13) on SQLite and PostgreSQL alike: a rule's pause
survives reopening, a held rule's timers and sends wait, the audit log reads back (an
instance's action by its rule and by the instance); the dashboard sessions ended by
logout."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.store import Store, open_store
from engine.store.controls import AuditRow, RuleControl
from engine.store.postgres import PostgresStore
from engine.store.sqlite import SqliteStore
from tests.pgdb import pg_schema
from tests.test_store_contract import T0, inst, msg, save


async def test_pause_resume_and_their_audit_rows(store: Store) -> None:
    assert await store.rule_controls() == {}
    assert await store.audit() == []
    await store.set_rule_control(
        RuleControl("r1", True, True, "mark", T0), "pause", '{"hold": true}'
    )
    await store.set_rule_control(RuleControl("r2", True, False, "ada", T0 + 1), "pause", "{}")
    await store.set_rule_control(RuleControl("r2", False, False, "ada", T0 + 2), "resume", "{}")
    await store.record_audit(AuditRow(T0 + 3, "mark", "test_send", "tpl", '{"outcome": "x"}'))
    assert await store.rule_controls() == {
        "r1": RuleControl("r1", True, True, "mark", T0),
        "r2": RuleControl("r2", False, False, "ada", T0 + 2),
    }
    assert await store.audit() == [
        AuditRow(T0 + 3, "mark", "test_send", "tpl", '{"outcome": "x"}'),
        AuditRow(T0 + 2, "ada", "resume", "r2", "{}"),
        AuditRow(T0 + 1, "ada", "pause", "r2", "{}"),
        AuditRow(T0, "mark", "pause", "r1", '{"hold": true}'),
    ]
    assert [a.action for a in await store.audit("r2")] == ["resume", "pause"]
    assert [a.action for a in await store.audit(None, 1)] == ["test_send"]


async def test_a_held_rule_keeps_its_timers_and_sends_until_resumed(store: Store) -> None:
    await save(
        store,
        instances={
            "i1": inst("i1", "u1", due_at=T0 + 5),
            "i2": inst("i2", "u2", due_at=T0 + 10, rule_id="r2"),
        },
        messages={
            "m1": msg("m1", "u1"),
            "m2": msg("m2", "u2", iid="i2", rule_id="r2"),
        },
    )
    assert await store.instance_owner("i2") == ("u2", "r2", "active")
    assert await store.instance_owner("nope") is None
    # Paused without hold: the running ones go on.
    await store.set_rule_control(RuleControl("r1", True, False, "mark", T0), "pause", "{}")
    assert await store.next_due() == T0 + 5
    # Held: its timer is neither due nor next, its sends are not claimed.
    await store.set_rule_control(RuleControl("r1", True, True, "mark", T0), "pause", "{}")
    assert await store.next_due() == T0 + 10
    assert await store.due_instances(T0 + 60, 10) == [(T0 + 10, "i2", "u2")]
    assert [m.id for m in await store.claim_queued(T0 + 60, 10)] == ["m2"]
    # Resumed: what came due meanwhile is due at once, as if it came due at the resume.
    await store.set_rule_control(RuleControl("r1", False, False, "mark", T0 + 90), "resume", "{}")
    assert await store.next_due() == T0 + 10
    assert await store.due_instances(T0 + 90, 10) == [
        (T0 + 10, "i2", "u2"),
        (T0 + 90, "i1", "u1"),
    ]
    assert [m.id for m in await store.claim_queued(T0 + 90, 10)] == ["m1"]


async def test_time_held_moves_the_timers_due_by_the_end_of_the_hold(store: Store) -> None:
    """A hold's end moves each timer of the rule due by then on by the time it spent held:
    the hold's start is kept across a repeated pause with hold and a reopening, and a pause
    that ends no hold moves nothing."""
    r1 = {"rule_id": "r1"}
    await save(
        store,
        instances={
            "early": inst("early", "u1", due_at=T0 - 30, **r1),  # 30 s late at the hold
            "during": inst("during", "u2", due_at=T0 + 50, **r1),
            "after": inst("after", "u3", due_at=T0 + 500, **r1),
            "none": inst("none", "u4", **r1),
            "other": inst("other", "u6", due_at=T0 + 50, rule_id="r2"),
        },
    )

    async def dues() -> dict[str, float | None]:
        states = await store.load_users(
            ["u1", "u2", "u3", "u4", "u6"], messages_since=0, starts_since=0
        )
        return {i.id: i.due_at for st in states.values() for i in st.instances}

    before = await dues()
    # Paused without hold, then resumed: nothing was held, nothing moves.
    await store.set_rule_control(RuleControl("r1", True, False, "mark", T0), "pause", "{}")
    await store.set_rule_control(RuleControl("r1", False, False, "mark", T0 + 5), "resume", "{}")
    # Held at T0, the pause repeated with hold at T0 + 60 (the hold began at T0).
    await store.set_rule_control(RuleControl("r1", True, True, "mark", T0), "pause", "{}")
    await store.set_rule_control(RuleControl("r1", True, True, "ada", T0 + 60), "pause", "{}")
    assert await dues() == before
    # The hold ends at T0 + 100 with a pause without hold.
    await store.set_rule_control(RuleControl("r1", True, False, "ada", T0 + 100), "pause", "{}")
    assert await dues() == {
        "early": T0 + 70,  # 30 s late at the hold, still 30 s late at its end
        "during": T0 + 100,  # came due during the hold: due at its end
        "after": T0 + 500,
        "none": None,
        "other": T0 + 50,
    }
    # Resuming the pause that holds nothing now moves nothing more.
    await store.set_rule_control(RuleControl("r1", False, False, "ada", T0 + 200), "resume", "{}")
    assert (await dues())["during"] == T0 + 100
    # A hold ended by a replica whose clock is behind the one that began it moves nothing back.
    await store.set_rule_control(RuleControl("r2", True, True, "mark", T0 + 60), "pause", "{}")
    await store.set_rule_control(RuleControl("r2", False, False, "ada", T0 + 55), "resume", "{}")
    assert (await dues())["other"] == T0 + 50


async def test_a_hold_set_before_the_upgrade_ends_from_when_it_was_set(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store held before rule_controls had held_since: the migration takes the hold's
    start from its last change, so the hold's end moves the timers from then."""
    import engine.store.postgres as pg
    import engine.store.sqlite as lite

    def before(migrations: list[str]) -> list[str]:
        return migrations[: next(i for i, m in enumerate(migrations) if "held_since" in m)]

    monkeypatch.setattr(lite, "SQLITE_MIGRATIONS", before(lite.SQLITE_MIGRATIONS))
    monkeypatch.setattr(pg, "POSTGRES_MIGRATIONS", before(pg.POSTGRES_MIGRATIONS))
    old = await open_store(store_url)
    try:
        await save(
            old,
            instances={
                "i1": inst("i1", "u1", due_at=T0 + 10),
                "i2": inst("i2", "u2", due_at=T0 - 30),
            },
        )
        held = (
            "INSERT INTO rule_controls (rule_id, paused, hold, changed_by, changed_at) "
            f"VALUES ('r1', 1, 1, 'mark', {T0})"
        )
        if isinstance(old, SqliteStore):
            await old.db.execute(held)
        else:
            assert isinstance(old, PostgresStore)
            await old.pool.execute(held)
    finally:
        await old.close()
    monkeypatch.undo()
    new = await open_store(store_url)
    try:
        await new.set_rule_control(RuleControl("r1", False, False, "ada", T0 + 90), "resume", "{}")
        assert await new.due_instances(T0 + 90, 10) == [
            (T0 + 60, "i2", "u2"),
            (T0 + 90, "i1", "u1"),
        ]
    finally:
        await new.close()


async def test_a_resume_deadlocked_with_a_save_tries_again() -> None:
    """PostgreSQL: a replica's save holding one held timer's row and waiting for another's
    the resume has moved already: the deadlock aborts the resume, which tries again once
    the save is done (and moves nothing the save set)."""
    async with pg_schema() as url:
        store = await PostgresStore.open(url)
        other = await asyncpg.connect(url)
        try:
            await save(
                store,
                instances={
                    "i1": inst("i1", "u1", due_at=T0 + 10),
                    "i2": inst("i2", "u2", due_at=T0 + 20),
                },
            )
            await store.set_rule_control(RuleControl("r1", True, True, "mark", T0), "pause", "{}")
            resume = RuleControl("r1", False, False, "ada", T0 + 90)
            async with other.transaction():
                # This side waits on: the resume's side finds the deadlock, and gives way.
                await other.execute("SET LOCAL deadlock_timeout = '1min'")
                await other.execute("UPDATE instances SET due_at = $1 WHERE id = 'i2'", T0 + 500)
                task = asyncio.ensure_future(store.set_rule_control(resume, "resume", "{}"))
                waiting = None
                while waiting is None:  # the resume has moved i1 and waits for i2's row
                    await other.execute("SELECT pg_stat_clear_snapshot()")
                    waiting = await other.fetchval(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE 'UPDATE instances SET due_at = CASE%'"
                    )
                await other.execute("UPDATE instances SET due_at = $1 WHERE id = 'i1'", T0 + 600)
            await task
            assert await store.due_instances(T0 + 600, 10) == [
                (T0 + 500, "i2", "u2"),
                (T0 + 600, "i1", "u1"),
            ]
            assert (await store.rule_controls())["r1"].hold is False
        finally:
            await other.close()
            await store.close()


async def test_an_instance_action_is_found_by_its_rule_and_by_its_instance(store: Store) -> None:
    end = AuditRow(T0, "mark", "end_instance", "r1", '{"instance": "i1"}', "i1")
    await store.record_audit(end)
    await store.record_audit(AuditRow(T0 + 1, "mark", "pause", "r1", "{}"))
    await store.record_audit(AuditRow(T0 + 2, "mark", "test_send", "tpl", "{}"))
    assert [a.action for a in await store.audit("r1")] == ["pause", "end_instance"]
    assert await store.audit("i1") == [end]
    assert await store.audit("i2") == []
    assert (await store.audit())[-1] == end


async def test_ended_sessions_are_kept_until_their_cookies_expire(store: Store) -> None:
    assert await store.ended_sessions(T0) == set()
    await store.end_session("a" * 64, T0 + 100, T0)
    await store.end_session("a" * 64, T0 + 100, T0)  # twice: one row
    await store.end_session("b" * 64, T0 + 10, T0)
    assert await store.ended_sessions(T0) == {"a" * 64, "b" * 64}
    assert await store.ended_sessions(T0 + 11) == {"a" * 64}  # b's cookie has expired
    # The next logout forgets the expired ones.
    await store.end_session("c" * 64, T0 + 200, T0 + 150)
    assert await store.ended_sessions(T0) == {"c" * 64}


async def test_the_migration_finds_the_instance_of_earlier_end_instance_rows(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.store.postgres as pg
    import engine.store.sqlite as lite

    def before(migrations: list[str]) -> list[str]:  # the store before audit.instance_id
        return migrations[: next(i for i, m in enumerate(migrations) if "audit_instance" in m)]

    monkeypatch.setattr(lite, "SQLITE_MIGRATIONS", before(lite.SQLITE_MIGRATIONS))
    monkeypatch.setattr(pg, "POSTGRES_MIGRATIONS", before(pg.POSTGRES_MIGRATIONS))
    rows = [
        (T0, "end_instance", "r1", '{"instance": "i1", "user_id": "u1"}'),
        (T0 + 1, "pause", "r1", '{"hold": false}'),
    ]
    old = await open_store(store_url)
    try:
        for at, action, target, detail in rows:  # as the code before wrote them
            if isinstance(old, SqliteStore):
                await old.db.execute(
                    "INSERT INTO audit (at, who, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                    (at, "mark", action, target, detail),
                )
            else:
                assert isinstance(old, PostgresStore)
                await old.pool.execute(
                    "INSERT INTO audit (at, who, action, target, detail) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    at,
                    "mark",
                    action,
                    target,
                    detail,
                )
    finally:
        await old.close()
    monkeypatch.undo()
    new = await open_store(store_url)
    try:
        assert [a.action for a in await new.audit("i1")] == ["end_instance"]
        assert [a.action for a in await new.audit("r1")] == ["pause", "end_instance"]
    finally:
        await new.close()
