"""PostgresStore's delivery log: pages of messages by any mix of filters (the planner picks
among the (filter, created_at, id) indexes by its statistics), and each message's history
(message_events), written with the message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.core.model import Message
from engine.store.base import MessageFilter
from engine.store.history import OLD_COLUMNS, EventRow, events_of, sort_events
from engine.store.postgres_core import MESSAGE_SQL, PostgresCore
from engine.store.rows import message_from

if TYPE_CHECKING:
    from engine.store.postgres_core import Conn

INSERT_EVENTS = (
    "INSERT INTO message_events (message_id, at, status, detail) "
    "SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[]) "
    "ON CONFLICT DO NOTHING"
)


async def insert_events(conn: Conn, events: list[EventRow]) -> None:
    if events:
        await conn.execute(
            INSERT_EVENTS,
            [e[0] for e in events],
            [e[1] for e in events],
            [e[2] for e in events],
            [e[3] for e in events],
        )


async def save_history(conn: Conn, messages: list[Message], now: float | None) -> None:
    """The history rows of saving these messages (inside save's transaction)."""
    rows = await conn.fetch(
        f"SELECT id, {', '.join(OLD_COLUMNS)} FROM messages WHERE id = ANY($1::text[])",
        [m.id for m in messages],
    )
    old = {r[0]: tuple(r)[1:] for r in rows}
    events: list[EventRow] = []
    for m in messages:
        events.extend(events_of(old.get(m.id), m, now))
    await insert_events(conn, events)


def page_sql(
    f: MessageFilter, before: tuple[float, str] | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of a page of the delivery log."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("user_id", f.user_id),
        ("rule_id", f.rule),
        ("status", f.status),
        ("channel", f.channel),
        ("reason", f.reason),
    ):
        if value is not None:
            params.append(value)
            where.append(f"{column} = ${len(params)}")
    if f.since is not None:
        params.append(f.since)
        where.append(f"created_at >= ${len(params)}")
    if f.until is not None:
        params.append(f.until)
        where.append(f"created_at < ${len(params)}")
    if before is not None:
        params.extend(before)
        n = len(params)
        where.append(f"(created_at, id) < (${n - 1}::float8, ${n}::text)")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    params.append(limit)
    sql = f"{MESSAGE_SQL}{clause} ORDER BY created_at DESC, id DESC LIMIT ${len(params)}"
    return sql, params


class PostgresMessages(PostgresCore):
    async def messages(
        self,
        *,
        user_id: str | None = None,
        rule: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
        channel: str | None = None,
        reason: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Message]:
        f = MessageFilter(user_id, rule, status, channel, reason, since, until)
        sql, params = page_sql(f, before, limit)
        return [message_from(tuple(r)) for r in await self.pool.fetch(sql, *params)]

    async def message_history(self, message_id: str) -> list[tuple[float, str, str | None]]:
        rows = await self.pool.fetch(
            "SELECT at, status, detail FROM message_events WHERE message_id = $1", message_id
        )
        return sort_events([(r[0], r[1], r[2]) for r in rows])
