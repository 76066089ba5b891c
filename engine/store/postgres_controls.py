"""PostgresStore's actions by hand (issue 13): rules paused, the audit log; and the dashboard
sessions ended by logout."""

from __future__ import annotations

import asyncpg

from engine.store.controls import (
    UPSERT_CONTROL,
    AuditRow,
    ControlRow,
    RuleControl,
    control_values,
    hold_ended,
)
from engine.store.postgres_core import PostgresCore

_DEADLOCK_TRIES = 3
# A hold ended (store/controls.py): the rule's timers due by its end ($1) move on by the
# time they spent held (since $2).
_UNHOLD = (
    "UPDATE instances SET due_at = CASE WHEN due_at >= $2 THEN $1 ELSE due_at + ($1 - $2) END "
    "WHERE rule_id = $3 AND status = 'active' AND due_at < $1"
)
_AUDIT = (
    "INSERT INTO audit (at, who, action, target, detail, instance_id) "
    "VALUES ($1, $2, $3, $4, $5, $6)"
)
_COLUMNS = "at, who, action, target, detail, instance_id"


class PostgresControls(PostgresCore):
    async def rule_controls(self) -> dict[str, RuleControl]:
        rows = await self.pool.fetch(
            "SELECT rule_id, paused, hold, changed_by, changed_at FROM rule_controls"
        )
        return {r[0]: RuleControl(r[0], bool(r[1]), bool(r[2]), r[3], r[4]) for r in rows}

    async def set_rule_control(self, control: RuleControl, action: str, detail: str) -> None:
        # Moving a held rule's timers locks their rows, in no order a replica's save of two
        # of them would share: a deadlock aborts one side, and this side tries again.
        for attempt in range(_DEADLOCK_TRIES):
            try:
                await self._set_rule_control(control, action, detail)
                return
            except asyncpg.exceptions.DeadlockDetectedError:
                if attempt == _DEADLOCK_TRIES - 1:
                    raise

    async def _set_rule_control(self, control: RuleControl, action: str, detail: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # The row locked: two replicas changing one rule's pause take turns, so a hold
            # ends (and its timers move) once.
            row = await conn.fetchrow(
                "SELECT paused, hold, held_since, changed_at FROM rule_controls "
                "WHERE rule_id = $1 FOR UPDATE",
                control.rule_id,
            )
            old: ControlRow | None = None if row is None else (row[0], row[1], row[2], row[3])
            since = hold_ended(old, control)
            if since is not None:
                await conn.execute(_UNHOLD, control.at, since, control.rule_id)
            await conn.execute(
                UPSERT_CONTROL.format(", ".join(f"${n}" for n in range(1, 7))),
                *control_values(old, control),
            )
            await conn.execute(
                _AUDIT, control.at, control.by, action, control.rule_id, detail, None
            )

    async def record_audit(self, row: AuditRow) -> None:
        await self.pool.execute(
            _AUDIT, row.at, row.who, row.action, row.target, row.detail, row.instance_id
        )

    async def audit(self, target: str | None = None, limit: int = 100) -> list[AuditRow]:
        if target is None:
            rows = await self.pool.fetch(
                f"SELECT {_COLUMNS} FROM audit ORDER BY id DESC LIMIT $1", limit
            )
        else:
            # On the target itself, or on an instance of it (the row's target is the rule).
            rows = await self.pool.fetch(
                f"SELECT {_COLUMNS} FROM audit WHERE target = $1 OR instance_id = $1 "
                "ORDER BY id DESC LIMIT $2",
                target,
                limit,
            )
        return [AuditRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def end_session(self, session: str, expires_at: float, now: float) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO ended_sessions (session, expires_at) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                session,
                expires_at,
            )
            await conn.execute("DELETE FROM ended_sessions WHERE expires_at < $1", now)

    async def ended_sessions(self, now: float) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT session FROM ended_sessions WHERE expires_at >= $1", now
        )
        return {r[0] for r in rows}

    async def instance_owner(self, instance_id: str) -> tuple[str, str, str] | None:
        row = await self.pool.fetchrow(
            "SELECT user_id, rule_id, status FROM instances WHERE id = $1", instance_id
        )
        return None if row is None else (row[0], row[1], row[2])
