"""SqliteStore's delivery log: pages of messages by any mix of filters (each page one run of
an index, chosen here: SQLite keeps no statistics to choose by), and each message's history
(message_events), written with the message."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable
from typing import Any

from engine.core.model import Message
from engine.store.base import MessageFilter
from engine.store.history import OLD_COLUMNS, EventRow, events_of, sort_events
from engine.store.rows import message_from
from engine.store.sqlite_core import (
    CHUNK,
    MESSAGE_SQL,
    Op,
    SqliteCore,
    Statement,
    serialized,
)

INSERT_EVENTS = (
    "INSERT OR IGNORE INTO message_events (message_id, at, status, detail) VALUES (?, ?, ?, ?)"
)
# The filter column that leads each of the delivery log's indexes (migrations.py), tried in
# order, the most selective first: a status most messages reach is a poor lead, the rule
# a better one then.
_LEADS = (
    ("user_id", "messages_by_user"),
    ("reason", "messages_by_reason"),
    ("rare_status", "messages_by_status"),
    ("rule_id", "messages_by_rule"),
    ("status", "messages_by_status"),
    ("channel", "messages_by_channel"),
)
COMMON_STATUSES = frozenset({"sent", "delivered", "opened", "clicked"})


def page_sql(f: MessageFilter, before: tuple[float, str] | None) -> tuple[str, str, list[Any]]:
    """(index, WHERE clause, parameters) of a page of the delivery log."""
    values = {
        "user_id": f.user_id,
        "rule_id": f.rule,
        "status": f.status,
        "channel": f.channel,
        "reason": f.reason,
    }
    where: list[str] = []
    params: list[Any] = []
    for column, value in values.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    index = "messages_created"
    for lead, name in _LEADS:
        if lead == "rare_status":
            if f.status is not None and f.status not in COMMON_STATUSES:
                index = name
                break
        elif values[lead] is not None:
            index = name
            break
    if f.since is not None:
        where.append("created_at >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("created_at < ?")
        params.append(f.until)
    if before is not None:
        where.append("(created_at, id) < (?, ?)")
        params.extend(before)
    return index, (f" WHERE {' AND '.join(where)}" if where else ""), params


class SqliteMessages(SqliteCore):
    @serialized
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
        index, where, params = page_sql(f, before)
        rows = await self._rows(
            f"{MESSAGE_SQL} INDEXED BY {index}{where} ORDER BY created_at DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        return [message_from(r) for r in rows]

    @serialized
    async def message_history(self, message_id: str) -> list[tuple[float, str, str | None]]:
        rows = await self._rows(
            "SELECT at, status, detail FROM message_events WHERE message_id = ?", (message_id,)
        )
        return sort_events([(r[0], r[1], r[2]) for r in rows])

    def _history_ops(self, messages: Iterable[Message], now: float | None) -> list[Op]:
        """The history statements of saving these messages, for save's transaction: made in
        the connection's thread from the messages' stored rows, read in that transaction
        before the messages are written."""
        batch = list(messages)
        return [functools.partial(_history_statements, batch, now)]


def _history_statements(
    batch: list[Message], now: float | None, conn: sqlite3.Connection
) -> list[Statement]:
    old: dict[str, Any] = {}
    for start in range(0, len(batch), CHUNK):
        ids = [m.id for m in batch[start : start + CHUNK]]
        for row in conn.execute(
            f"SELECT id, {', '.join(OLD_COLUMNS)} FROM messages "
            f"WHERE id IN ({','.join('?' * len(ids))})",
            ids,
        ):
            old[row[0]] = row[1:]
    events: list[EventRow] = []
    for m in batch:
        events.extend(events_of(old.get(m.id), m, now))
    out: list[Statement] = []
    # A new message replaces any other of its (instance, step, channel) (the messages_once
    # index): that one's history goes with it.
    replacing = [
        (m.instance_id, m.step, m.channel, m.id)
        for m in batch
        if m.id not in old and m.channel is not None
    ]
    if replacing:
        out.append(
            (
                "DELETE FROM message_events WHERE message_id IN (SELECT id FROM messages "
                "WHERE instance_id = ? AND step = ? AND channel = ? AND id <> ?)",
                replacing,
                True,
            )
        )
    if events:
        out.append((INSERT_EVENTS, events, True))
    return out
