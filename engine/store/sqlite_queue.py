"""SqliteStore's dispatch queue: messages claimed for sending, answered, retried."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from typing import Any

from engine.core.model import Message
from engine.store.controls import HELD_RULES
from engine.store.history import retry_detail
from engine.store.rows import MESSAGE_COLUMNS, message_from
from engine.store.sqlite_core import MESSAGE_SQL, SqliteCore, serialized
from engine.store.sqlite_messages import INSERT_EVENTS

_ATTEMPTS = MESSAGE_COLUMNS.index("attempts")


class SqliteQueue(SqliteCore):
    @serialized
    async def claim_queued(
        self,
        now: float,
        limit: int,
        *,
        skip: Collection[str] = (),
        only: str | None = None,
        queued_before: float | None = None,
    ) -> list[Message]:
        where, params = _queue_filter(skip, only, queued_before)
        sql = (
            f"{MESSAGE_SQL} WHERE status = 'queued' AND "
            f"(next_attempt_at IS NULL OR next_attempt_at <= ?){where} "
            "ORDER BY next_attempt_at, created_at LIMIT ?"
        )

        def claim(conn: sqlite3.Connection) -> list[Any]:
            # One trip to the connection's thread: the batch read and marked together.
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(sql, (now, *params, limit)).fetchall()
                conn.executemany(
                    "UPDATE messages SET status = 'sending' WHERE id = ?", [(r[0],) for r in rows]
                )
                conn.executemany(
                    INSERT_EVENTS,
                    [(r[0], now, "sending", f"attempt {r[_ATTEMPTS] + 1}") for r in rows],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return rows

        rows = await self._in_thread(claim)
        claimed = [message_from(r) for r in rows]
        for message in claimed:
            message.status = "sending"
        return claimed

    @serialized
    async def release(self, message_ids: list[str]) -> None:
        await self.db.executemany(
            "UPDATE messages SET status = 'queued' WHERE id = ? AND status = 'sending'",
            [(mid,) for mid in message_ids],
        )

    @serialized
    async def requeue_in_flight(self, keep: Collection[str] = ()) -> int:
        # One daemon per file: every message in flight is this process's.
        cur = await self.db.execute(
            "UPDATE messages SET status = 'queued' WHERE status = 'sending' "
            "AND id NOT IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(keep)),),
        )
        return cur.rowcount

    @serialized
    async def record_outcome(self, message_id: str, outcome: str) -> None:
        await self.db.execute(
            "UPDATE messages SET status = 'answered', outcome = ? "
            "WHERE id = ? AND status = 'sending'",
            (outcome, message_id),
        )

    @serialized
    async def answered(self) -> list[tuple[str, str, str]]:
        rows = await self._rows(
            "SELECT id, user_id, outcome FROM messages WHERE status = 'answered'"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    @serialized
    async def reschedule(
        self,
        message_id: str,
        attempts: int,
        next_attempt_at: float,
        detail: str,
        *,
        at: float | None = None,
    ) -> None:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            cur = await db.execute(
                "UPDATE messages SET status = 'queued', attempts = ?, next_attempt_at = ?, "
                "detail = ? WHERE id = ? AND status = 'sending'",
                (attempts, next_attempt_at, detail, message_id),
            )
            if cur.rowcount:
                await db.execute(
                    INSERT_EVENTS,
                    (
                        message_id,
                        next_attempt_at if at is None else at,
                        "retry",
                        retry_detail(detail, attempts),
                    ),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    @serialized
    async def delete_messages_before(self, when: float, limit: int) -> int:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            ids = [
                (r[0],)
                for r in await self._rows(
                    "SELECT id FROM messages WHERE created_at < ? "
                    "AND status NOT IN ('queued', 'sending', 'answered') "
                    "ORDER BY created_at LIMIT ?",
                    (when, limit),
                )
            ]
            await db.executemany("DELETE FROM message_events WHERE message_id = ?", ids)
            await db.executemany("DELETE FROM messages WHERE id = ?", ids)
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return len(ids)


def _queue_filter(
    skip: Collection[str], only: str | None, queued_before: float | None
) -> tuple[str, list[Any]]:
    """The dispatcher's narrowing of a claim, as " AND ..." SQL and its parameters."""
    # A held rule's sends wait until it is resumed (store/controls.py).
    where, params = f" AND rule_id NOT IN ({HELD_RULES})", list[Any]()
    if skip:
        where += f" AND channel NOT IN ({', '.join('?' * len(skip))})"
        params.extend(skip)
    if only is not None:
        where += " AND channel = ?"
        params.append(only)
    if queued_before is not None:
        where += " AND created_at <= ?"
        params.append(queued_before)
    return where, params
