"""PostgresStore's inbox: events enqueued once (by id and batch key), claimed by one live
replica at a time, each user's events in arrival order."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from engine.store.health import records_writes
from engine.store.postgres_core import LOCK_NS, PostgresCore, free, row_count

if TYPE_CHECKING:
    from engine.store.postgres_core import Conn

_INBOX_CLAIM = -1  # the advisory lock (LOCK_NS, -1): one inbox claim at a time


class PostgresInbox(PostgresCore):
    @records_writes
    async def enqueue(
        self, events: list[tuple[str | None, str]], now: float, *, batch_key: str | None = None
    ) -> tuple[int, int]:
        async with self.pool.acquire() as conn, conn.transaction():
            # The key first, then the ids in sorted order: concurrent batches take their
            # locks in one order. A replica enqueueing the same key waits for this commit.
            if batch_key is not None and not await conn.fetchval(
                "INSERT INTO events_seen (id, seen_at) VALUES ($1, $2) "
                "ON CONFLICT (id) DO NOTHING RETURNING true",
                batch_key,
                now,
            ):
                return 0, len(events)
            ids = [eid for eid, _ in events if eid is not None]
            seen = await _remember(conn, ids, now) if ids else set()
            bodies: list[str] = []
            users: list[str | None] = []
            taken: set[str] = set()
            duplicates = 0
            for eid, body in events:
                if eid is not None and (eid in seen or eid in taken):
                    duplicates += 1
                    continue
                if eid is not None:
                    taken.add(eid)
                bodies.append(body)
                users.append(_user_of(body))
            if bodies:
                # Rows numbered in the batch's order (the identity is drawn row by row).
                await conn.execute(
                    "INSERT INTO inbox (body, user_id, received_at) SELECT b, u, $3 "
                    "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(b, u, n) "
                    "ORDER BY n",
                    bodies,
                    users,
                    now,
                )
        return len(bodies), duplicates

    async def inbox_batch(self, limit: int) -> list[tuple[int, str, str | None]]:
        """Claims the oldest free rows (claims go one at a time, so each sees the last):

        - a user's row waits while an earlier row of that user is claimed by another live
          replica: each user's events are applied in arrival order;
        - a product event (no user) waits until every earlier row is applied or claimed by
          this store (a watermark), so its fan-out sees every interest recorded before it,
          whichever replica took those events; rows after the first product event free to
          this store wait for it (one replica applies the inbox in order)."""
        me = await self._me()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NS, _INBOX_CLAIM)
            rows = await conn.fetch(
                "WITH bar AS (SELECT coalesce(min(seq), 9223372036854775807) AS seq "
                f"FROM inbox WHERE user_id IS NULL AND {free('claimed_by', '$1')}), "
                "batch AS (SELECT i.seq FROM inbox i "
                f"WHERE {free('i.claimed_by', '$1')} AND i.seq <= (SELECT seq FROM bar) "
                "AND (CASE WHEN i.user_id IS NULL THEN NOT EXISTS (SELECT 1 FROM inbox k "
                "WHERE k.seq < i.seq AND k.claimed_by IS DISTINCT FROM $1) "
                "ELSE NOT EXISTS (SELECT 1 FROM inbox j "
                "WHERE j.user_id = i.user_id AND j.seq < i.seq "
                f"AND NOT {free('j.claimed_by', '$1')}) END) "
                "ORDER BY i.seq LIMIT $2 FOR UPDATE OF i SKIP LOCKED) "
                "UPDATE inbox SET claimed_by = $1 FROM batch WHERE inbox.seq = batch.seq "
                "RETURNING inbox.seq, inbox.body, inbox.cursor",
                me,
                limit,
            )
        return sorted((r[0], r[1], r[2]) for r in rows)

    async def inbox_size(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM inbox"))

    async def forget_events_before(self, when: float) -> int:
        status = await self.pool.execute("DELETE FROM events_seen WHERE seen_at < $1", when)
        return row_count(status)


async def _remember(conn: Conn, ids: list[str], now: float) -> set[str]:
    """Record event ids; those already recorded are returned. Concurrent callers with the
    same id: one records it, the other waits for its commit and gets it as seen."""
    if not ids:
        return set()
    unique = sorted(set(ids))  # one order for every caller: concurrent batches never deadlock
    fresh = {
        r[0]
        for r in await conn.fetch(
            "INSERT INTO events_seen (id, seen_at) SELECT unnest($1::text[]), $2 "
            "ON CONFLICT (id) DO NOTHING RETURNING id",
            unique,
            now,
        )
    }
    return set(unique) - fresh


def _user_of(body: str) -> str | None:
    """The user of an inbox row (None for product events), for per-user order."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    user = event.get("user_id") if isinstance(event, dict) else None
    return user if isinstance(user, str) else None
