"""PostgresStore's dispatch queue: messages claimed for sending under the owner id (a gone
replica's messages in flight are taken over), answered, retried.

The writes that follow a provider call (answer, reschedule, release) are tried again when
the database connection fails (a terminated backend, a failover): a message must not stay
`sending` because one connection died. Each is written only while the message is still this
store's: one a hung replica lost to another is left to the one that took it."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from engine.core.model import Message
from engine.store.controls import HELD_RULES
from engine.store.history import retry_detail
from engine.store.postgres_core import LIVE_OWNERS, PostgresCore, free, retrying, row_count
from engine.store.postgres_messages import insert_events
from engine.store.rows import MESSAGE_COLUMNS, message_from


class PostgresQueue(PostgresCore):
    async def claim_queued(
        self,
        now: float,
        limit: int,
        *,
        skip: Collection[str] = (),
        only: str | None = None,
        queued_before: float | None = None,
    ) -> list[Message]:
        """Queued messages due now, and those in flight at a store that is gone, marked as
        in flight here (the same channel filters apply to both; an expiry claim takes no
        orphans: their call may have gone out)."""
        me = await self._me()
        # $1-$3 in both queries: the channels to skip, the one channel, the latest creation.
        channels = (
            "AND channel <> ALL($1::text[]) AND ($2::text IS NULL OR channel = $2) "
            "AND ($3::float8 IS NULL OR created_at <= $3) "
            f"AND rule_id NOT IN ({HELD_RULES}) "  # a held rule's sends wait (controls.py)
        )
        narrowing = (list(skip), only, queued_before)
        async with self.pool.acquire() as conn, conn.transaction():
            orphans: list[asyncpg.Record] = []
            if queued_before is None:
                orphans = await conn.fetch(
                    "WITH q AS (SELECT id FROM messages WHERE status = 'sending' "
                    f"AND claimed_by <> $4 AND claimed_by NOT IN ({LIVE_OWNERS}) "
                    f"{channels}ORDER BY created_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) "
                    "UPDATE messages m SET claimed_by = $4 FROM q WHERE m.id = q.id "
                    f"RETURNING {', '.join(f'm.{c}' for c in MESSAGE_COLUMNS)}",
                    *narrowing,
                    me,
                    limit,
                )
            rows = await conn.fetch(
                "WITH q AS (SELECT id FROM messages WHERE status = 'queued' "
                f"AND (next_attempt_at IS NULL OR next_attempt_at <= $4) {channels}"
                "ORDER BY next_attempt_at NULLS FIRST, created_at LIMIT $5 "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE messages m SET status = 'sending', claimed_by = $6 FROM q "
                f"WHERE m.id = q.id RETURNING {', '.join(f'm.{c}' for c in MESSAGE_COLUMNS)}",
                *narrowing,
                now,
                limit - len(orphans),
                me,
            )
            await insert_events(
                conn,
                [(r["id"], now, "sending", f"attempt {r['attempts'] + 1}") for r in rows]
                + [(r["id"], now, "sending", "taken over from a gone replica") for r in orphans],
            )
        claimed = [message_from(tuple(r)) for r in [*orphans, *rows]]
        claimed.sort(
            key=lambda m: (m.next_attempt_at is not None, m.next_attempt_at or 0.0, m.created_at)
        )
        return claimed

    async def release(self, message_ids: list[str]) -> None:
        me = await self._me()
        await retrying(
            self.pool,
            "UPDATE messages SET status = 'queued', claimed_by = NULL "
            "WHERE id = ANY($1::text[]) AND status = 'sending' AND claimed_by = $2",
            message_ids,
            me,
        )

    async def requeue_in_flight(self, keep: Collection[str] = ()) -> int:
        """Messages in flight here (but `keep`) or at a store that is gone go back to the
        queue (those of live replicas stay theirs)."""
        me = await self._me()
        return row_count(
            await self.pool.execute(
                "UPDATE messages SET status = 'queued', claimed_by = NULL "
                f"WHERE status = 'sending' AND {free('claimed_by', '$1')} "
                "AND id <> ALL($2::text[])",
                me,
                sorted(keep),
            )
        )

    async def record_outcome(self, message_id: str, outcome: str) -> None:
        me = await self._me()
        await retrying(
            self.pool,
            "UPDATE messages SET status = 'answered', outcome = $1 "
            "WHERE id = $2 AND status = 'sending' AND claimed_by = $3",
            outcome,
            message_id,
            me,
        )

    async def answered(self) -> list[tuple[str, str, str]]:
        """Answers whose sender is this store or gone (a live replica applies its own)."""
        me = await self._me()
        rows = await self.pool.fetch(
            "SELECT id, user_id, outcome FROM messages WHERE status = 'answered' "
            f"AND {free('claimed_by', '$1')}",
            me,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def reschedule(
        self,
        message_id: str,
        attempts: int,
        next_attempt_at: float,
        detail: str,
        *,
        at: float | None = None,
    ) -> None:
        me = await self._me()
        await retrying(
            self.pool,
            "WITH m AS (UPDATE messages SET status = 'queued', attempts = $1, "
            "next_attempt_at = $2, detail = $3, claimed_by = NULL WHERE id = $4 "
            "AND status = 'sending' AND claimed_by = $5 RETURNING id) "
            "INSERT INTO message_events (message_id, at, status, detail) "
            "SELECT id, $6, 'retry', $7 FROM m ON CONFLICT DO NOTHING",
            attempts,
            next_attempt_at,
            detail,
            message_id,
            me,
            next_attempt_at if at is None else at,
            retry_detail(detail, attempts),
        )

    async def delete_messages_before(self, when: float, limit: int) -> int:
        gone = await self.pool.fetchval(
            "WITH gone AS (DELETE FROM messages WHERE id IN (SELECT id FROM messages "
            "WHERE created_at < $1 AND status NOT IN ('queued', 'sending', 'answered') "
            "ORDER BY created_at LIMIT $2) RETURNING id), "
            "events AS (DELETE FROM message_events e USING gone WHERE e.message_id = gone.id) "
            "SELECT count(*) FROM gone",
            when,
            limit,
        )
        return int(gone)
