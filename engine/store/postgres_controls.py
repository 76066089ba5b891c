"""PostgresStore's actions by hand (issue 13): rules paused, the audit log; and the dashboard
sessions ended by logout."""

from __future__ import annotations

from engine.store.controls import AuditRow, RuleControl
from engine.store.postgres_core import PostgresCore

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
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO rule_controls (rule_id, paused, hold, changed_by, changed_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (rule_id) DO UPDATE SET "
                "paused = excluded.paused, hold = excluded.hold, "
                "changed_by = excluded.changed_by, changed_at = excluded.changed_at",
                control.rule_id,
                int(control.paused),
                int(control.hold),
                control.by,
                control.at,
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
