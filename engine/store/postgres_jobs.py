"""PostgresStore's timers and scheduled jobs: due timers claimed under the owner id, each
job's run started once across replicas (a compare-and-set on its fire time)."""

from __future__ import annotations

from engine.core.workspace import FACTS
from engine.store.base import JobRow
from engine.store.controls import HELD_RULES
from engine.store.postgres_core import LOCK_NS, PostgresCore, free

# next_due while another live replica holds the earliest timer: look again this soon.
_RECHECK_S = 1.0
_JOBS_PLAN = -2  # the advisory lock (LOCK_NS, -2): planning the scheduled jobs


class PostgresJobs(PostgresCore):
    async def next_due(self) -> float | None:
        me = await self._me()
        row = await self.pool.fetchrow(
            f"SELECT due_at, held, extract(epoch FROM clock_timestamp())::float8 FROM ("
            f"(SELECT due_at, NOT {free('claimed_by', '$1')} AS held FROM instances "
            f"WHERE due_at IS NOT NULL AND rule_id NOT IN ({HELD_RULES}) "
            "ORDER BY due_at, id LIMIT 1) UNION ALL "
            f"(SELECT due_at, NOT {free('claimed_by', '$1')} FROM user_facts "
            "WHERE due_at IS NOT NULL ORDER BY due_at LIMIT 1)) t ORDER BY due_at LIMIT 1",
            me,
        )
        if row is None:
            return None
        due_at, held_elsewhere, db_now = row
        # Another replica is firing it: its save moves the timer; look again shortly.
        return max(float(due_at), db_now + _RECHECK_S) if held_elsewhere else float(due_at)

    async def due_instances(self, until: float, limit: int) -> list[tuple[float, str, str]]:
        """Claims them: another replica skips them until this store saves or dies. The
        instances' and the facts' timers in one statement (one round trip); each claimed
        row is found by its key (an index scan, never a scan of the table)."""
        me = await self._me()
        rows = await self.pool.fetch(
            "WITH i AS (UPDATE instances SET claimed_by = $3 WHERE id = ANY(ARRAY("
            "SELECT id FROM instances WHERE due_at IS NOT NULL AND due_at <= $1 "
            f"AND {free('claimed_by', '$3')} AND rule_id NOT IN ({HELD_RULES}) "
            "ORDER BY due_at, id LIMIT $2 "
            "FOR UPDATE SKIP LOCKED)) RETURNING due_at, id, user_id), "
            "f AS (UPDATE user_facts SET claimed_by = $3 WHERE user_id = ANY(ARRAY("
            "SELECT user_id FROM user_facts WHERE due_at IS NOT NULL "
            f"AND due_at <= $1 AND {free('claimed_by', '$3')} ORDER BY due_at LIMIT $2 "
            f"FOR UPDATE SKIP LOCKED)) RETURNING due_at, '{FACTS}'::text, user_id) "
            "SELECT * FROM i UNION ALL SELECT * FROM f",
            until,
            limit,
            me,
        )
        return sorted((r[0], r[1], r[2]) for r in rows)[:limit]

    # -- scheduled jobs --------------------------------------------------------------------

    async def plan_jobs(self, plans: dict[str, tuple[str, float | None]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # One planner at a time, so replicas starting together agree.
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NS, _JOBS_PLAN)
            current = {r[0]: r[1] for r in await conn.fetch("SELECT name, spec FROM jobs")}
            gone = sorted(set(current) - set(plans))
            if gone:
                await conn.execute("DELETE FROM jobs WHERE name = ANY($1::text[])", gone)
            for name, (spec, due_at) in plans.items():
                if current.get(name) == spec:
                    continue
                await conn.execute(
                    "INSERT INTO jobs (name, spec, due_at, run_at, cursor, claimed_by) "
                    "VALUES ($1, $2, $3, NULL, NULL, NULL) ON CONFLICT (name) DO UPDATE SET "
                    "spec = EXCLUDED.spec, due_at = EXCLUDED.due_at, run_at = NULL, "
                    "cursor = NULL, claimed_by = NULL",
                    name,
                    spec,
                    due_at,
                )

    async def due_jobs(self, now: float) -> list[JobRow]:
        me = await self._me()
        rows = await self.pool.fetch(
            "SELECT name, spec, due_at, run_at, cursor FROM jobs "
            f"WHERE (run_at IS NULL AND due_at <= $1) OR (run_at IS NOT NULL AND "
            f"(claimed_by = $2 OR {free('claimed_by', '$2')})) "
            "ORDER BY coalesce(run_at, due_at), name",
            now,
            me,
        )
        return [JobRow(*row) for row in rows]

    async def start_job(self, name: str, due_at: float, next_due: float | None) -> bool:
        me = await self._me()
        status = await self.pool.execute(
            "UPDATE jobs SET run_at = due_at, due_at = $1, cursor = '', claimed_by = $2 "
            "WHERE name = $3 AND due_at = $4 AND run_at IS NULL",
            next_due,
            me,
            name,
            due_at,
        )
        return bool(status == "UPDATE 1")

    async def resume_job(self, name: str, run_at: float) -> bool:
        me = await self._me()
        status = await self.pool.execute(
            f"UPDATE jobs SET claimed_by = $1 WHERE name = $2 AND run_at = $3 "
            f"AND {free('claimed_by', '$1')}",
            me,
            name,
            run_at,
        )
        return bool(status == "UPDATE 1")

    async def next_job_due(self) -> float | None:
        me = await self._me()
        value = await self.pool.fetchval(
            "SELECT min(CASE WHEN run_at IS NULL THEN due_at "
            f"WHEN {free('claimed_by', '$1')} THEN run_at END) FROM jobs",
            me,
        )
        return None if value is None else float(value)
