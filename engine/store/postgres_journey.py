"""PostgresStore's journey counts, as SqliteJourney."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import asyncpg

from engine.core.changes import JourneyKey
from engine.store.base import JourneyCounts, StatsQuery

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = PoolConnectionProxy[asyncpg.Record]


class PostgresJourney:
    """A mixin of PostgresStore: it has the pool."""

    pool: asyncpg.Pool[asyncpg.Record]

    @staticmethod
    async def _save_journey(conn: Conn | Any, counts: Counter[JourneyKey]) -> None:
        """Inside save's transaction; in key order, so replicas lock rows in one order."""
        await conn.executemany(
            "INSERT INTO journey_counts (rule_id, step, edge, hour, n) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (rule_id, hour, step, edge) "
            "DO UPDATE SET n = journey_counts.n + EXCLUDED.n",
            [(*key, n) for key, n in sorted(counts.items(), key=_lock_order) if n],
        )

    async def journey_counts(self, q: StatsQuery) -> list[JourneyCounts]:
        params: list[Any] = [q.since // 3600 * 3600, q.until]
        rule = ""
        if q.rule is not None:
            rule, params = "rule_id = $3 AND ", [*params, q.rule]
        rows = await self.pool.fetch(
            "SELECT rule_id, step, edge, sum(n) FROM journey_counts "
            f"WHERE {rule}hour >= $1 AND hour < $2 GROUP BY rule_id, step, edge",
            *params,
        )
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]


def _lock_order(item: tuple[JourneyKey, int]) -> tuple[str, float, str, str]:
    (rule, step, edge, hour), _ = item
    return (rule, hour, step, edge)
