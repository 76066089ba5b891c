"""SqliteStore's inbox: events enqueued once (by id and batch key), read in order."""

from __future__ import annotations

import json

from engine.store.health import records_writes
from engine.store.sqlite_core import SqliteCore, serialized


class SqliteInbox(SqliteCore):
    @records_writes
    @serialized
    async def enqueue(
        self, events: list[tuple[str | None, str]], now: float, *, batch_key: str | None = None
    ) -> tuple[int, int]:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            if batch_key is not None and not await self._rows(
                "INSERT INTO events_seen (id, seen_at) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING RETURNING id",
                (batch_key, now),
            ):
                await db.execute("ROLLBACK")
                return 0, len(events)
            ids = [eid for eid, _ in events if eid is not None]
            # One statement remembers the ids and names those it had not seen: a repeat in
            # the same batch conflicts with its first occurrence, so it is not new either.
            new = (
                {
                    r[0]
                    for r in await self._rows(
                        "INSERT INTO events_seen (id, seen_at) SELECT value, ? "
                        "FROM json_each(?) WHERE true ON CONFLICT DO NOTHING RETURNING id",
                        (now, json.dumps(ids)),
                    )
                }
                if ids
                else set()
            )
            fresh: list[tuple[str, float]] = []
            duplicates = 0
            for eid, body in events:
                if eid is not None:
                    if eid not in new:
                        duplicates += 1
                        continue
                    new.discard(eid)  # its next occurrence in the batch is a duplicate
                fresh.append((body, now))
            await db.executemany("INSERT INTO inbox (body, received_at) VALUES (?, ?)", fresh)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return len(fresh), duplicates

    @serialized
    async def inbox_batch(self, limit: int) -> list[tuple[int, str, str | None]]:
        rows = await self._rows(
            "SELECT seq, body, cursor FROM inbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [(r[0], r[1], r[2]) for r in rows]

    @serialized
    async def inbox_size(self) -> int:
        return int((await self._rows("SELECT count(*) FROM inbox"))[0][0])

    @serialized
    async def forget_events_before(self, when: float) -> int:
        cur = await self.db.execute("DELETE FROM events_seen WHERE seen_at < ?", (when,))
        return cur.rowcount
