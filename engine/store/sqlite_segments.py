"""SqliteStore's segment membership rows (SPEC 12): written with the profile that holds the
same list, read by GET /v1/segments without touching a profile."""

from __future__ import annotations

import asyncio

import aiosqlite

from engine.store.sqlite_core import Op

_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit


class SqliteSegments:
    """A mixin of SqliteStore: it has the connection and the lock that orders its use."""

    db: aiosqlite.Connection
    _lock: asyncio.Lock

    def _segment_member_ops(self, moves: dict[tuple[str, str], float | None]) -> list[Op]:
        """Inside save's transaction: (user, segment) -> since, or None when left."""
        left = [(seg, uid) for (uid, seg), since in moves.items() if since is None]
        entered = [(seg, uid, since) for (uid, seg), since in moves.items() if since is not None]
        ops: list[Op] = []
        if left:
            ops.append(
                ("DELETE FROM segment_members WHERE segment_id = ? AND user_id = ?", left, True)
            )
        if entered:
            ops.append(
                (
                    "INSERT INTO segment_members (segment_id, user_id, since) VALUES (?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET since = excluded.since",
                    entered,
                    True,
                )
            )
        return ops

    async def segment_sizes(self, segment_ids: list[str]) -> dict[str, int]:
        sizes = dict.fromkeys(segment_ids, 0)
        async with self._lock:
            for start in range(0, len(segment_ids), _CHUNK):
                chunk = segment_ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for seg, count in await self.db.execute_fetchall(
                    "SELECT segment_id, count(*) FROM segment_members "
                    f"WHERE segment_id IN ({marks}) GROUP BY segment_id",
                    chunk,
                ):
                    sizes[seg] = count
        return sizes

    async def segment_users(
        self, segment_id: str, after: str, limit: int
    ) -> list[tuple[str, float]]:
        async with self._lock:
            rows = await self.db.execute_fetchall(
                "SELECT user_id, since FROM segment_members WHERE segment_id = ? "
                "AND user_id > ? ORDER BY user_id LIMIT ?",
                (segment_id, after, limit),
            )
        return [(uid, since) for uid, since in rows]
