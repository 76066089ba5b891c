"""SqliteStore's actions by hand (issue 13): rules paused, the audit log; and the dashboard
sessions ended by logout."""

from __future__ import annotations

from engine.store.controls import (
    UPSERT_CONTROL,
    AuditRow,
    ControlRow,
    RuleControl,
    control_values,
    hold_ended,
)
from engine.store.sqlite_core import SqliteCore, serialized

# A hold ended (store/controls.py): the rule's timers due by its end move on by the time
# they spent held.
_UNHOLD = (
    "UPDATE instances SET due_at = CASE WHEN due_at >= :since THEN :at "
    "ELSE due_at + (:at - :since) END "
    "WHERE rule_id = :rule AND status = 'active' AND due_at < :at"
)
_AUDIT = (
    "INSERT INTO audit (at, who, action, target, detail, instance_id) VALUES (?, ?, ?, ?, ?, ?)"
)

# An action on the target itself, or on an instance of it (the row's target is the rule).
_ON_TARGET = "WHERE target = ? OR instance_id = ? "


class SqliteControls(SqliteCore):
    @serialized
    async def rule_controls(self) -> dict[str, RuleControl]:
        rows = await self._rows(
            "SELECT rule_id, paused, hold, changed_by, changed_at FROM rule_controls"
        )
        return {r[0]: RuleControl(r[0], bool(r[1]), bool(r[2]), r[3], r[4]) for r in rows}

    @serialized
    async def set_rule_control(self, control: RuleControl, action: str, detail: str) -> None:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            rows = await self._rows(
                "SELECT paused, hold, held_since, changed_at FROM rule_controls WHERE rule_id = ?",
                (control.rule_id,),
            )
            old: ControlRow | None = (
                (rows[0][0], rows[0][1], rows[0][2], rows[0][3]) if rows else None
            )
            since = hold_ended(old, control)
            if since is not None:
                await db.execute(
                    _UNHOLD, {"since": since, "at": control.at, "rule": control.rule_id}
                )
            await db.execute(
                UPSERT_CONTROL.format(", ".join("?" * 6)), control_values(old, control)
            )
            await db.execute(
                _AUDIT, (control.at, control.by, action, control.rule_id, detail, None)
            )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    @serialized
    async def record_audit(self, row: AuditRow) -> None:
        await self.db.execute(
            _AUDIT, (row.at, row.who, row.action, row.target, row.detail, row.instance_id)
        )

    @serialized
    async def audit(self, target: str | None = None, limit: int = 100) -> list[AuditRow]:
        where, params = ("", []) if target is None else (_ON_TARGET, [target, target])
        rows = await self._rows(
            f"SELECT at, who, action, target, detail, instance_id FROM audit {where}"
            "ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [AuditRow(*r) for r in rows]

    @serialized
    async def end_session(self, session: str, expires_at: float, now: float) -> None:
        await self.db.execute(
            "INSERT INTO ended_sessions (session, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (session, expires_at),
        )
        await self.db.execute("DELETE FROM ended_sessions WHERE expires_at < ?", (now,))

    @serialized
    async def ended_sessions(self, now: float) -> set[str]:
        rows = await self._rows("SELECT session FROM ended_sessions WHERE expires_at >= ?", (now,))
        return {r[0] for r in rows}

    @serialized
    async def instance_owner(self, instance_id: str) -> tuple[str, str, str] | None:
        rows = await self._rows(
            "SELECT user_id, rule_id, status FROM instances WHERE id = ?", (instance_id,)
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None
