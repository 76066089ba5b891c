"""The store's actions by hand (issue 13) on SQLite and PostgreSQL alike: a rule's pause
survives reopening, a held rule's timers and sends wait, the audit log reads back (an
instance's action by its rule and by the instance); the dashboard sessions ended by
logout."""

from __future__ import annotations

import pytest

from engine.store import Store, open_store
from engine.store.controls import AuditRow, RuleControl
from engine.store.postgres import PostgresStore
from engine.store.sqlite import SqliteStore
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
    # Resumed: what came due meanwhile is due at once.
    await store.set_rule_control(RuleControl("r1", False, False, "mark", T0 + 90), "resume", "{}")
    assert await store.next_due() == T0 + 5
    assert await store.due_instances(T0 + 60, 10) == [(T0 + 5, "i1", "u1"), (T0 + 10, "i2", "u2")]
    assert [m.id for m in await store.claim_queued(T0 + 60, 10)] == ["m1"]


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
