"""PostgresStore's segment membership rows (SPEC 12), as SqliteSegments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = PoolConnectionProxy[asyncpg.Record]


class PostgresSegments:
    """A mixin of PostgresStore: it has the pool."""

    pool: asyncpg.Pool[asyncpg.Record]

    @staticmethod
    async def _save_segment_members(
        conn: Conn | Any, moves: dict[tuple[str, str], float | None]
    ) -> None:
        """Inside save's transaction: (user, segment) -> since, or None when left."""
        left = sorted((seg, uid) for (uid, seg), since in moves.items() if since is None)
        entered = sorted(
            (seg, uid, since) for (uid, seg), since in moves.items() if since is not None
        )
        if left:
            await conn.executemany(
                "DELETE FROM segment_members WHERE segment_id = $1 AND user_id = $2", left
            )
        if entered:
            await conn.executemany(
                "INSERT INTO segment_members (segment_id, user_id, since) VALUES ($1, $2, $3) "
                "ON CONFLICT (segment_id, user_id) DO UPDATE SET since = EXCLUDED.since",
                entered,
            )

    async def segment_sizes(self, segment_ids: list[str]) -> dict[str, int]:
        sizes = dict.fromkeys(segment_ids, 0)
        for seg, count in await self.pool.fetch(
            "SELECT segment_id, count(*) FROM segment_members "
            "WHERE segment_id = ANY($1::text[]) GROUP BY segment_id",
            segment_ids,
        ):
            sizes[seg] = count
        return sizes

    async def segment_users(
        self, segment_id: str, after: str, limit: int
    ) -> list[tuple[str, float]]:
        rows = await self.pool.fetch(
            "SELECT user_id, since FROM segment_members WHERE segment_id = $1 "
            "AND user_id > $2 ORDER BY user_id LIMIT $3",
            segment_id,
            after,
            limit,
        )
        return [(r[0], r[1]) for r in rows]
