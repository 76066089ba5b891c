"""The embedded store: one SQLite file through aiosqlite (WAL), or :memory: for simulate."""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Callable, Collection, Coroutine
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from engine.core.changes import Changes, Order
from engine.core.model import Instance, Message, UserState, new_profile
from engine.core.workspace import FACTS
from engine.store.base import (
    AttributedCounts,
    JobRow,
    MessageCounts,
    OrderCounts,
    RfmRow,
    StatsQuery,
    VariantCounts,
    new_secret,
)
from engine.store.migrations import SQLITE_MIGRATIONS
from engine.store.rows import (
    INSTANCE_COLUMNS,
    MESSAGE_COLUMNS,
    ORDER_COLUMNS,
    dumps,
    instance_from,
    instance_row,
    message_from,
    message_row,
    order_from,
    order_row,
    stored_json,
    touch_kind,
)
from engine.store.sqlite_segments import SqliteSegments
from engine.store.urls import sqlite_path

_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
_INSTANCE_SQL = f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances"
_MESSAGE_SQL = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages"
# An instance's identity (rule, user, key, start) never changes: an update in place leaves
# the primary key and the instances_starts index alone, where INSERT OR REPLACE deletes and
# re-inserts the row and every index entry (the bulk of a timer batch's write).
_INSTANCE_FIXED = frozenset({"id", "rule_id", "user_id", "key", "started_at"})
_INSTANCE_UPSERT = (
    f"INSERT INTO instances ({', '.join(INSTANCE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(INSTANCE_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in INSTANCE_COLUMNS if c not in _INSTANCE_FIXED)
)


P = ParamSpec("P")
R = TypeVar("R")


def _serialized(
    fn: Callable[Concatenate[SqliteStore, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[SqliteStore, P], Coroutine[Any, Any, R]]:
    """One operation at a time on the shared connection: SQLite has one writer, and a
    transaction begun by one task must never see another task's statements inside it."""

    async def locked(self: SqliteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        async with self._lock:
            return await fn(self, *args, **kwargs)

    functools.update_wrapper(locked, fn)
    return locked


class SqliteStore(SqliteSegments):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._lock = asyncio.Lock()
        self._reader: aiosqlite.Connection | None = None  # stats reads (a file database)
        self._reader_tried = False

    @classmethod
    async def open(cls, url: str) -> SqliteStore:
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged event survives power loss, not only a process crash.
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db)
            await store._migrate()
        except BaseException:
            # Not a database, or no room: close the connection's thread, or it keeps the
            # process alive after the failed start.
            await db.close()
            raise
        return store

    async def _migrate(self) -> None:
        await self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
        async with self.db.execute("SELECT max(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
            if version <= current:
                continue
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        await self.db.execute(statement)
                await self.db.execute("INSERT INTO schema_version VALUES (?)", (version,))
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        await self.db.close()

    async def _rows(self, sql: str, params: Any = ()) -> list[Any]:
        # One trip to the connection's thread (execute, fetch and close in one call).
        return list(await self.db.execute_fetchall(sql, params))

    @_serialized
    async def load_users(
        self, user_ids: list[str], *, messages_since: float, starts_since: float
    ) -> dict[str, UserState]:
        states: dict[str, UserState] = {}
        for start in range(0, len(user_ids), _CHUNK):
            chunk = user_ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            profiles = {
                uid: stored_json(data)
                for uid, data in await self._rows(
                    f"SELECT user_id, data FROM profiles WHERE user_id IN ({marks})", chunk
                )
            }
            for uid in chunk:
                profile = profiles.get(uid)
                state = UserState(uid, profile or new_profile(uid, 0.0))
                state.profile_dirty = profile is None
                states[uid] = state
            for row in await self._rows(
                f"{_INSTANCE_SQL} WHERE user_id IN ({marks}) AND status = 'active' "
                "ORDER BY started_at, id",
                chunk,
            ):
                states[row[3]].instances.append(instance_from(row))
            for uid, data, due_at in await self._rows(
                f"SELECT user_id, data, due_at FROM user_facts WHERE user_id IN ({marks})", chunk
            ):
                states[uid].facts, states[uid].facts_due = stored_json(data), due_at
            for row in await self._rows(
                f"{_MESSAGE_SQL} WHERE user_id IN ({marks}) AND created_at >= ? "
                "ORDER BY created_at, id",
                [*chunk, messages_since],
            ):
                states[row[3]].messages.append(message_from(row))
            if starts_since == math.inf:
                continue  # no start can be that recent: the caller starts none (timers)
            for uid, rule_id, key, last in await self._rows(
                f"SELECT user_id, rule_id, key, max(started_at) FROM instances "
                f"WHERE user_id IN ({marks}) AND started_at >= ? GROUP BY user_id, rule_id, key",
                [*chunk, starts_since],
            ):
                states[uid].last_starts[(rule_id, key)] = last
        return states

    @_serialized
    async def save(self, changes: Changes) -> None:
        if not changes:
            return
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            if changes.erased_users:
                await self._erase(changes.erased_users)
            if changes.profiles:
                await db.executemany(
                    "INSERT INTO profiles (user_id, data, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (user_id) DO UPDATE SET data = excluded.data, "
                    "updated_at = excluded.updated_at",
                    [
                        (uid, dumps(p), p.get("updated_at", 0.0))
                        for uid, p in changes.profiles.items()
                    ],
                )
            if changes.cart_reset:
                await db.executemany(
                    "DELETE FROM interests WHERE user_id = ? AND kind = 'cart'",
                    [(uid,) for uid in changes.cart_reset],
                )
            upserts, deletes = changes.interest_rows()
            if deletes:
                await db.executemany(
                    "DELETE FROM interests WHERE product_id = ? AND kind = ? AND user_id = ?",
                    deletes,
                )
            if upserts:
                await db.executemany(
                    "INSERT INTO interests (product_id, kind, user_id, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET updated_at = "
                    "excluded.updated_at",
                    upserts,
                )
            if changes.instances:
                await db.executemany(
                    _INSTANCE_UPSERT, [instance_row(i) for i in changes.instances.values()]
                )
            if changes.facts:
                await db.executemany(
                    "INSERT INTO user_facts (user_id, data, due_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (user_id) DO UPDATE SET data = excluded.data, "
                    "due_at = excluded.due_at",
                    [(uid, dumps(f), due) for uid, (f, due) in changes.facts.items()],
                )
            if changes.segment_members:
                await self._save_segment_members(changes.segment_members)
            if changes.messages:
                await db.executemany(
                    f"INSERT OR REPLACE INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})",
                    [message_row(m) for m in changes.messages.values()],
                )
            if changes.orders:
                await self._save_orders(changes.orders)
            if changes.inbox_done:
                await db.executemany(
                    "DELETE FROM inbox WHERE seq = ?", [(s,) for s in changes.inbox_done]
                )
            if changes.inbox_cursor is not None:
                seq, cursor = changes.inbox_cursor
                await db.execute("UPDATE inbox SET cursor = ? WHERE seq = ?", (cursor, seq))
            if changes.job is not None:
                job = changes.job
                await db.execute(
                    "UPDATE jobs SET cursor = ?, run_at = CASE WHEN ? THEN NULL ELSE run_at END "
                    "WHERE name = ? AND run_at = ?",
                    (None if job.done else job.cursor, job.done, job.name, job.run_at),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def _erase(self, users: set[str]) -> None:
        params = [(u,) for u in users]
        for table in ("profiles", "interests", "user_facts", "segment_members"):
            await self.db.executemany(f"DELETE FROM {table} WHERE user_id = ?", params)
        # Keep counts for stats, drop the personal content.
        await self.db.executemany(
            "UPDATE messages SET payload = NULL, detail = NULL WHERE user_id = ?", params
        )
        await self.db.executemany(
            "UPDATE instances SET trigger = '{}', state = NULL, due_at = NULL, "
            "status = CASE status WHEN 'active' THEN 'stopped' ELSE status END "
            "WHERE user_id = ?",
            params,
        )

    async def _remember_event_ids(self, ids: list[str], now: float) -> set[str]:
        if not ids:
            return set()
        seen: set[str] = set()
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            seen.update(
                r[0]
                for r in await self._rows(
                    f"SELECT id FROM events_seen WHERE id IN ({marks})", chunk
                )
            )
        fresh, batch_seen = [], set()
        for eid in ids:
            if eid in seen or eid in batch_seen:
                continue
            batch_seen.add(eid)
            fresh.append((eid, now))
        await self.db.executemany("INSERT OR IGNORE INTO events_seen VALUES (?, ?)", fresh)
        return seen

    @_serialized
    async def next_due(self) -> float | None:
        rows = await self._rows(
            "SELECT min(due) FROM (SELECT min(due_at) AS due FROM instances "
            "WHERE due_at IS NOT NULL UNION ALL SELECT min(due_at) FROM user_facts "
            "WHERE due_at IS NOT NULL)"
        )
        return rows[0][0] if rows else None

    @_serialized
    async def due_instances(self, until: float, limit: int) -> list[tuple[float, str, str]]:
        return [
            (r[0], r[1], r[2])
            for r in await self._rows(
                "SELECT due_at, key, user_id FROM ("
                "SELECT due_at, id AS key, user_id FROM instances "
                "WHERE due_at IS NOT NULL AND due_at <= ? "
                f"UNION ALL SELECT due_at, '{FACTS}', user_id FROM user_facts "
                "WHERE due_at IS NOT NULL AND due_at <= ?) ORDER BY due_at, key LIMIT ?",
                (until, until, limit),
            )
        ]

    # -- scheduled jobs --------------------------------------------------------------------

    @_serialized
    async def plan_jobs(self, plans: dict[str, tuple[str, float | None]]) -> None:
        db = self.db
        await db.execute("BEGIN IMMEDIATE")
        try:
            current = {name: spec for name, spec in await self._rows("SELECT name, spec FROM jobs")}
            for name in set(current) - set(plans):
                await db.execute("DELETE FROM jobs WHERE name = ?", (name,))
            for name, (spec, due_at) in plans.items():
                if current.get(name) == spec:
                    continue
                await db.execute(
                    "INSERT INTO jobs (name, spec, due_at, run_at, cursor) "
                    "VALUES (?, ?, ?, NULL, NULL) ON CONFLICT (name) DO UPDATE SET "
                    "spec = excluded.spec, due_at = excluded.due_at, run_at = NULL, "
                    "cursor = NULL",
                    (name, spec, due_at),
                )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    @_serialized
    async def due_jobs(self, now: float) -> list[JobRow]:
        # One process per SQLite file: a run found unfinished was cut short; resume it.
        return [
            JobRow(*row)
            for row in await self._rows(
                "SELECT name, spec, due_at, run_at, cursor FROM jobs "
                "WHERE run_at IS NOT NULL OR due_at <= ? ORDER BY coalesce(run_at, due_at), name",
                (now,),
            )
        ]

    @_serialized
    async def start_job(self, name: str, due_at: float, next_due: float | None) -> bool:
        cur = await self.db.execute(
            "UPDATE jobs SET run_at = due_at, due_at = ?, cursor = '' "
            "WHERE name = ? AND due_at = ? AND run_at IS NULL",
            (next_due, name, due_at),
        )
        return cur.rowcount == 1

    async def resume_job(self, name: str, run_at: float) -> bool:
        return True

    @_serialized
    async def next_job_due(self) -> float | None:
        rows = await self._rows("SELECT min(coalesce(run_at, due_at)) FROM jobs")
        return rows[0][0] if rows else None

    @_serialized
    async def interested_users(
        self, product_id: str, kinds: tuple[str, ...], viewed_since: float, after: str, limit: int
    ) -> list[str]:
        marks = ",".join("?" * len(kinds))
        return [
            r[0]
            for r in await self._rows(
                "SELECT DISTINCT user_id FROM interests "
                f"WHERE product_id = ? AND kind IN ({marks}) "
                "AND (kind != 'viewed' OR updated_at >= ?) AND user_id > ? "
                "ORDER BY user_id LIMIT ?",
                (product_id, *kinds, viewed_since, after, limit),
            )
        ]

    @_serialized
    async def profile_ids(self, after: str, limit: int) -> list[str]:
        return [
            r[0]
            for r in await self._rows(
                "SELECT user_id FROM profiles WHERE user_id > ? ORDER BY user_id LIMIT ?",
                (after, limit),
            )
        ]

    @_serialized
    async def messages(
        self,
        *,
        user_id: str | None = None,
        rule: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> list[Message]:
        where, params = _filters(user_id=user_id, rule_id=rule, status=status)
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params.extend([before[0], before[0], before[1]])
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._rows(
            f"{_MESSAGE_SQL}{clause} ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit]
        )
        return [message_from(r) for r in rows]

    @_serialized
    async def message(self, message_id: str) -> Message | None:
        rows = await self._rows(f"{_MESSAGE_SQL} WHERE id = ?", (message_id,))
        return message_from(rows[0]) if rows else None

    @_serialized
    async def message_by_provider_id(self, provider_id: str) -> Message | None:
        rows = await self._rows(
            f"{_MESSAGE_SQL} WHERE provider_id = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            (provider_id,),
        )
        return message_from(rows[0]) if rows else None

    @_serialized
    async def instances_of(self, user_id: str, limit: int = 200) -> list[Instance]:
        rows = await self._rows(
            f"{_INSTANCE_SQL} WHERE user_id = ? ORDER BY started_at DESC, id DESC LIMIT ?",
            (user_id, limit),
        )
        return [instance_from(r) for r in rows]

    @_serialized
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

    @_serialized
    async def inbox_batch(self, limit: int) -> list[tuple[int, str, str | None]]:
        rows = await self._rows(
            "SELECT seq, body, cursor FROM inbox ORDER BY seq LIMIT ?", (limit,)
        )
        return [(r[0], r[1], r[2]) for r in rows]

    @_serialized
    async def inbox_size(self) -> int:
        return int((await self._rows("SELECT count(*) FROM inbox"))[0][0])

    @_serialized
    async def claim_queued(
        self,
        now: float,
        limit: int,
        *,
        skip: Collection[str] = (),
        only: str | None = None,
        queued_before: float | None = None,
    ) -> list[Message]:
        db = self.db
        where, params = _queue_filter(skip, only, queued_before)
        await db.execute("BEGIN IMMEDIATE")
        try:
            rows = await self._rows(
                f"{_MESSAGE_SQL} WHERE status = 'queued' AND "
                f"(next_attempt_at IS NULL OR next_attempt_at <= ?){where} "
                "ORDER BY next_attempt_at, created_at LIMIT ?",
                (now, *params, limit),
            )
            await db.executemany(
                "UPDATE messages SET status = 'sending' WHERE id = ?", [(r[0],) for r in rows]
            )
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        claimed = [message_from(r) for r in rows]
        for message in claimed:
            message.status = "sending"
        return claimed

    @_serialized
    async def release(self, message_ids: list[str]) -> None:
        await self.db.executemany(
            "UPDATE messages SET status = 'queued' WHERE id = ? AND status = 'sending'",
            [(mid,) for mid in message_ids],
        )

    @_serialized
    async def requeue_in_flight(self) -> int:
        cur = await self.db.execute(
            "UPDATE messages SET status = 'queued' WHERE status = 'sending'"
        )
        return cur.rowcount

    @_serialized
    async def record_outcome(self, message_id: str, outcome: str) -> None:
        await self.db.execute(
            "UPDATE messages SET status = 'answered', outcome = ? "
            "WHERE id = ? AND status = 'sending'",
            (outcome, message_id),
        )

    @_serialized
    async def answered(self) -> list[tuple[str, str, str]]:
        rows = await self._rows(
            "SELECT id, user_id, outcome FROM messages WHERE status = 'answered'"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    @_serialized
    async def reschedule(
        self, message_id: str, attempts: int, next_attempt_at: float, detail: str
    ) -> None:
        await self.db.execute(
            "UPDATE messages SET status = 'queued', attempts = ?, next_attempt_at = ?, "
            "detail = ? WHERE id = ? AND status = 'sending'",
            (attempts, next_attempt_at, detail, message_id),
        )

    @_serialized
    async def save_rule_version(
        self, version: str, rule_id: str, path: str, source: str, now: float
    ) -> None:
        await self.db.execute(
            "INSERT OR IGNORE INTO rule_versions VALUES (?, ?, ?, ?, ?)",
            (version, rule_id, path, source, now),
        )

    @_serialized
    async def rule_source(self, version: str) -> tuple[str, str] | None:
        rows = await self._rows(
            "SELECT path, source FROM rule_versions WHERE version = ?", (version,)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    @_serialized
    async def active_versions(self) -> list[tuple[str, str]]:
        rows = await self._rows(
            "SELECT DISTINCT rule_id, rule_version FROM instances WHERE status = 'active'"
        )
        return [(r[0], r[1]) for r in rows]

    @_serialized
    async def counts(self) -> dict[str, int]:
        rows = await self._rows(
            "SELECT (SELECT count(*) FROM instances WHERE status = 'active'), "
            "(SELECT count(*) FROM instances WHERE due_at IS NOT NULL), "
            "(SELECT count(*) FROM messages WHERE status IN ('queued', 'sending')), "
            "(SELECT count(*) FROM inbox)"
        )
        active, timers, queued, inbox = rows[0]
        return {
            "active_instances": active,
            "pending_timers": timers,
            "queued_messages": queued,
            "inbox": inbox,
        }

    @_serialized
    async def forget_events_before(self, when: float) -> int:
        cur = await self.db.execute("DELETE FROM events_seen WHERE seen_at < ?", (when,))
        return cur.rowcount

    @_serialized
    async def ping(self) -> None:
        await self._rows("SELECT 1")

    @_serialized
    async def secret(self, name: str) -> str:
        # Insert-if-absent then read: whoever inserted first, every reader gets that value.
        await self.db.execute(
            "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (name, new_secret()),
        )
        rows = await self._rows("SELECT value FROM secrets WHERE name = ?", (name,))
        return str(rows[0][0])

    # -- stats, orders, RFM (reads are GROUP BY queries: nothing is loaded row by row) -----

    async def _save_orders(self, orders: list[Order]) -> None:
        await self.db.executemany(
            f"INSERT OR IGNORE INTO orders ({', '.join(ORDER_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(ORDER_COLUMNS))})",
            [order_row(o) for o in orders],
        )

    async def _read(self, sql: str, params: Any = ()) -> list[Any]:
        """A long read (stats, RFM): on its own connection for a file database, so WAL lets
        the engine write meanwhile; through the shared connection for :memory:."""
        reader = await self._stats_reader()
        if reader is None:
            async with self._lock:
                return await self._rows(sql, params)
        async with reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _stats_reader(self) -> aiosqlite.Connection | None:
        if not self._reader_tried:
            async with self._lock:
                if not self._reader_tried:
                    rows = await self._rows("SELECT file FROM pragma_database_list WHERE seq = 0")
                    path = rows[0][0] if rows else ""
                    if path:
                        reader = await aiosqlite.connect(path, isolation_level=None)
                        await reader.execute("PRAGMA query_only=ON")
                        await reader.execute("PRAGMA busy_timeout=5000")
                        self._reader = reader
                    self._reader_tried = True
        return self._reader

    async def stats_messages(self, q: StatsQuery) -> list[MessageCounts]:
        rule, params = _rule_filter(q, "rule_id")
        # `+created_at`: scan the covering index messages_stats in GROUP BY order rather
        # than fetch each row of a wide range through messages_created.
        rows = await self._read(
            "SELECT rule_id, step, channel, variant, status, reason, count(*), count(sent_at), "
            "count(delivered_at), count(opened_at), count(clicked_at) FROM messages "
            f"WHERE +created_at >= ? AND +created_at < ?{rule} "
            "GROUP BY rule_id, step, channel, variant, status, reason",
            [q.since, q.until, *params],
        )
        return [tuple(r) for r in rows]

    async def stats_instances(self, q: StatsQuery) -> list[tuple[str, str, int]]:
        rule, params = _rule_filter(q, "rule_id")
        rows = await self._read(
            "SELECT rule_id, status, count(*) FROM instances "
            f"WHERE started_at >= ? AND started_at < ?{rule} GROUP BY rule_id, status",
            [q.since, q.until, *params],
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def stats_attributed(self, q: StatsQuery) -> list[AttributedCounts]:
        k = touch_kind(q.touch)
        rule, params = _rule_filter(q, f"{k}_rule")
        rows = await self._read(
            f"SELECT {k}_rule, {k}_step, {k}_channel, {k}_variant, count(*), "
            "coalesce(sum(total), 0.0) FROM orders "
            f"WHERE +at >= ? AND +at < ? AND {k}_id IS NOT NULL AND at - {k}_at <= ?{rule} "
            f"GROUP BY {k}_rule, {k}_step, {k}_channel, {k}_variant",
            [q.since, q.until, q.window_s, *params],
        )
        return [tuple(r) for r in rows]

    async def stats_variants(self, q: StatsQuery) -> list[VariantCounts]:
        k = touch_kind(q.touch)
        rule, params = _rule_filter(q, "i.rule_id")
        # Per instance: did one of its messages get a click (the (instance_id, ...) index of
        # messages), does its user have an order attributed to this rule and variant (the
        # orders key starts with user_id)?
        rows = await self._read(
            "SELECT i.rule_id, i.variant, count(DISTINCT i.user_id), "
            "count(DISTINCT CASE WHEN EXISTS (SELECT 1 FROM messages m WHERE "
            "m.instance_id = i.id AND m.clicked_at IS NOT NULL) THEN i.user_id END), "
            "count(DISTINCT CASE WHEN EXISTS (SELECT 1 FROM orders o WHERE "
            f"o.user_id = i.user_id AND o.{k}_rule = i.rule_id AND o.{k}_variant = i.variant "
            f"AND o.at - o.{k}_at <= ?) THEN i.user_id END) "
            "FROM instances i WHERE i.variant IS NOT NULL AND i.started_at >= ? "
            f"AND i.started_at < ?{rule} GROUP BY i.rule_id, i.variant",
            [q.window_s, q.since, q.until, *params],
        )
        return [tuple(r) for r in rows]

    async def stats_orders(self, q: StatsQuery) -> list[OrderCounts]:
        k = touch_kind(q.touch)
        attributed = f"({k}_id IS NOT NULL AND at - {k}_at <= ?)"
        rows = await self._read(
            "SELECT source, count(*), coalesce(sum(total), 0.0), "
            f"coalesce(sum({attributed}), 0), "
            f"coalesce(sum(CASE WHEN {attributed} THEN total END), 0.0) "
            "FROM orders WHERE +at >= ? AND +at < ? GROUP BY source",
            [q.window_s, q.window_s, q.since, q.until],
        )
        return [tuple(r) for r in rows]

    async def orders_of(self, user_id: str, limit: int = 200) -> list[Order]:
        rows = await self._read(
            f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE user_id = ? "
            "ORDER BY at DESC, order_id DESC LIMIT ?",
            (user_id, limit),
        )
        return [order_from(r) for r in rows]

    async def rfm_scores(self) -> list[RfmRow]:
        # Quintiles by mid-rank among the n profiles with orders: a value whose equal values
        # take ranks lo..lo+ties-1 scores 1 + floor(5 * (lo + (ties - 1) / 2 - 0.5) / n),
        # in integers below. Equal values share a score; one customer, or all alike, get 3.
        # Recency orders by the ISO time of the last order (older = lower score).
        def score(value: str) -> str:
            return (
                f"1 + (10 * rank() OVER (ORDER BY {value}) + 5 * count(*) OVER "
                f"(PARTITION BY {value}) - 10) / (2 * n)"
            )

        # Python's encoder may have written NaN or Infinity, which SQLite's JSON refuses:
        # such a profile is read with them as null (RFM reads numbers and times only).
        rows = await self._read(
            "WITH j AS (SELECT user_id, CASE WHEN json_valid(data) THEN data ELSE "
            "replace(replace(replace(data, 'NaN', 'null'), '-Infinity', 'null'), "
            "'Infinity', 'null') END AS data FROM profiles), "
            "p AS (SELECT user_id, json_extract(data, '$.last_order_at') AS last, "
            "CAST(json_extract(data, '$.orders_count') AS INTEGER) AS freq, "
            "coalesce(CAST(json_extract(data, '$.revenue') AS REAL), 0.0) AS money, "
            "json_extract(data, '$.rfm') AS rfm, json_extract(data, '$.rfm_scores') AS scores "
            "FROM j WHERE json_valid(data) AND "
            "CAST(json_extract(data, '$.orders_count') AS INTEGER) > 0), "
            "n AS (SELECT count(*) AS n FROM p) "
            f"SELECT user_id, {score('last')}, {score('freq')}, {score('money')}, rfm, scores "
            "FROM p, n ORDER BY user_id"
        )
        return [(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None) for r in rows]

    @_serialized
    async def set_rfm(self, segments: dict[str, tuple[str, dict[str, int]]]) -> None:
        """Set `rfm` and `rfm_scores` in place (json_set), so a writer in another process
        (`kaskad rfm` beside a running daemon) never overwrites the rest of a profile."""
        await self.db.executemany(
            "UPDATE profiles SET data = json_set(data, '$.rfm', ?, '$.rfm_scores', json(?)) "
            "WHERE user_id = ? AND json_valid(data)",
            [(name, dumps(scores), uid) for uid, (name, scores) in segments.items()],
        )


def _rule_filter(q: StatsQuery, column: str) -> tuple[str, list[Any]]:
    return (f" AND {column} = ?", [q.rule]) if q.rule is not None else ("", [])


def _queue_filter(
    skip: Collection[str], only: str | None, queued_before: float | None
) -> tuple[str, list[Any]]:
    """The dispatcher's narrowing of a claim, as " AND ..." SQL and its parameters."""
    where, params = "", list[Any]()
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


def _filters(**values: Any) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in values.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params


__all__ = ["Instance", "Message", "SqliteStore", "sqlite_path"]
