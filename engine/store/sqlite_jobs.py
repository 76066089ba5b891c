"""SqliteStore's timers and scheduled jobs: what is due, and each job's run claimed once."""

from __future__ import annotations

from engine.core.workspace import FACTS
from engine.store.base import JobRow
from engine.store.controls import HELD_RULES
from engine.store.sqlite_core import SqliteCore, serialized


class SqliteJobs(SqliteCore):
    @serialized
    async def next_due(self) -> float | None:
        rows = await self._rows(
            "SELECT min(due) FROM (SELECT due_at AS due FROM (SELECT due_at FROM instances "
            f"WHERE due_at IS NOT NULL AND rule_id NOT IN ({HELD_RULES}) "
            "ORDER BY due_at LIMIT 1) UNION ALL SELECT min(due_at) FROM user_facts "
            "WHERE due_at IS NOT NULL)"
        )
        return rows[0][0] if rows else None

    @serialized
    async def due_instances(self, until: float, limit: int) -> list[tuple[float, str, str]]:
        return [
            (r[0], r[1], r[2])
            for r in await self._rows(
                "SELECT due_at, key, user_id FROM ("
                "SELECT due_at, id AS key, user_id FROM instances "
                "WHERE due_at IS NOT NULL AND due_at <= ? "
                f"AND rule_id NOT IN ({HELD_RULES}) "
                f"UNION ALL SELECT due_at, '{FACTS}', user_id FROM user_facts "
                "WHERE due_at IS NOT NULL AND due_at <= ?) ORDER BY due_at, key LIMIT ?",
                (until, until, limit),
            )
        ]

    # -- scheduled jobs --------------------------------------------------------------------

    @serialized
    async def plan_jobs(self, plans: dict[str, tuple[str, float | None]]) -> None:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            current = {name: spec for name, spec in await self._rows("SELECT name, spec FROM jobs")}
            for name in set(current) - set(plans):
                await db.execute("DELETE FROM jobs WHERE name = ?", (name,))
            for name, (spec, due_at) in plans.items():
                if current.get(name) == spec:
                    continue
                await db.execute(
                    "INSERT INTO jobs (name, spec, due_at, run_at, cursor) "
                    "VALUES (?, ?, ?, NULL, NULL) ON CONFLICT (name) DO UPDATE SET "
                    "spec = excluded.spec, due_at = excluded.due_at, run_at = NULL, "
                    "cursor = NULL",
                    (name, spec, due_at),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    @serialized
    async def due_jobs(self, now: float) -> list[JobRow]:
        # One process per SQLite file: a run found unfinished was cut short; resume it.
        return [
            JobRow(*row)
            for row in await self._rows(
                "SELECT name, spec, due_at, run_at, cursor FROM jobs "
                "WHERE run_at IS NOT NULL OR due_at <= ? ORDER BY coalesce(run_at, due_at), name",
                (now,),
            )
        ]

    @serialized
    async def start_job(self, name: str, due_at: float, next_due: float | None) -> bool:
        cur = await self.db.execute(
            "UPDATE jobs SET run_at = due_at, due_at = ?, cursor = '' "
            "WHERE name = ? AND due_at = ? AND run_at IS NULL",
            (next_due, name, due_at),
        )
        return cur.rowcount == 1

    async def resume_job(self, name: str, run_at: float) -> bool:
        return True

    @serialized
    async def next_job_due(self) -> float | None:
        rows = await self._rows("SELECT min(coalesce(run_at, due_at)) FROM jobs")
        return rows[0][0] if rows else None
