"""The embedded store: one SQLite file through aiosqlite (WAL), or :memory: for simulate.

Its parts by concern are mixins: sqlite_stats (stats, orders, RFM), sqlite_jobs (timers,
scheduled jobs), sqlite_reads, sqlite_inbox, sqlite_queue (the dispatch queue); here are
opening, migrations and the unit of work (load_users, save)."""

from __future__ import annotations

import asyncio
import functools
import math
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from engine.core.changes import Changes
from engine.core.model import Instance, Message, UserState, new_profile
from engine.store.base import new_secret
from engine.store.filelock import hold_lock, release_lock
from engine.store.health import records_writes
from engine.store.migrations import SQLITE_MIGRATIONS
from engine.store.rows import (
    INSTANCE_COLUMNS,
    MESSAGE_COLUMNS,
    dumps,
    instance_from,
    instance_row,
    message_from,
    message_row,
    stored_json,
)
from engine.store.sqlite_controls import SqliteControls
from engine.store.sqlite_core import CHUNK, INSTANCE_SQL, MESSAGE_SQL, Op, serialized
from engine.store.sqlite_holdout import SqliteHoldout
from engine.store.sqlite_inbox import SqliteInbox
from engine.store.sqlite_jobs import SqliteJobs
from engine.store.sqlite_journey import SqliteJourney
from engine.store.sqlite_messages import SqliteMessages
from engine.store.sqlite_outcomes import SqliteOutcomes
from engine.store.sqlite_queue import SqliteQueue
from engine.store.sqlite_reads import SqliteReads
from engine.store.sqlite_segments import SqliteSegments
from engine.store.sqlite_stats import SqliteStats
from engine.store.sqlite_trends import SqliteTrends
from engine.store.sqlite_users import SqliteUsers
from engine.store.urls import sqlite_path

# An instance's identity (rule, user, key, start) never changes: an update in place leaves
# the primary key and the instances_starts index alone, where INSERT OR REPLACE deletes and
# re-inserts the row and every index entry (the bulk of a timer batch's write).
_INSTANCE_FIXED = frozenset({"id", "rule_id", "user_id", "key", "started_at"})
_INSTANCE_UPSERT = (
    f"INSERT INTO instances ({', '.join(INSTANCE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(INSTANCE_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in INSTANCE_COLUMNS if c not in _INSTANCE_FIXED)
)
# The same for messages (a message is written when queued and again when settled): its
# identity stays, so the user, created, rule and once indexes are left alone. As INSERT OR
# REPLACE did, the stored answer goes (outcome), and another row of the message's
# (instance, step, channel) is deleted first (the messages_once index).
_MESSAGE_FIXED = frozenset({"id", "instance_id", "rule_id", "user_id", "step", "created_at"})
_MESSAGE_UPSERT = (
    f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))}) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in MESSAGE_COLUMNS if c not in _MESSAGE_FIXED)
    + ", outcome = NULL"
)
_MESSAGE_ONCE = (
    "DELETE FROM messages WHERE instance_id = ? AND step = ? AND channel = ? AND id <> ?"
)


class SqliteStore(
    SqliteJourney,
    SqliteTrends,
    SqliteStats,
    SqliteHoldout,
    SqliteSegments,
    SqliteJobs,
    SqliteMessages,
    SqliteReads,
    SqliteInbox,
    SqliteQueue,
    SqliteOutcomes,
    SqliteUsers,
    SqliteControls,
):
    """The store on SQLite; its parts by concern are the mixins (sqlite_*.py)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self._lock = asyncio.Lock()
        self._reader: aiosqlite.Connection | None = None  # stats reads (a file database)
        self._reader_tried = False
        self._file_lock: int | None = None  # the daemon's hold on the file (filelock)

    @classmethod
    async def open(cls, url: str, *, exclusive: bool = False) -> SqliteStore:
        """exclusive: the daemon's store; a second daemon on the file is refused
        (DatabaseInUse). The CLI's readers and writers open it beside the daemon."""
        path = sqlite_path(url)
        file_lock = None
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                file_lock = hold_lock(path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except BaseException:
            release_lock(file_lock)
            raise
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged event survives power loss, not only a process crash.
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            # A message INSERT OR REPLACE replaces fires the delete triggers (trends_sql).
            await db.execute("PRAGMA recursive_triggers=ON")
            store = cls(db)
            await store._migrate()
        except BaseException:
            # Not a database, or no room: close the connection's thread, or it keeps the
            # process alive after the failed start.
            await db.close()
            release_lock(file_lock)
            raise
        store._file_lock = file_lock
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
                for statement in _statements(script):
                    await self.db.execute(statement)
                await self.db.execute("INSERT INTO schema_version VALUES (?)", (version,))
                await self.db.execute("COMMIT")
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        try:
            await self.db.close()
        finally:
            release_lock(self._file_lock)
            self._file_lock = None

    @serialized
    async def load_users(
        self, user_ids: list[str], *, messages_since: float, starts_since: float
    ) -> dict[str, UserState]:
        # Every query of every chunk in one trip to the connection's thread; decoded here.
        chunks = [user_ids[k : k + CHUNK] for k in range(0, len(user_ids), CHUNK)]
        raw = await self._in_thread(
            functools.partial(_read_users, chunks, messages_since, starts_since)
        )
        states: dict[str, UserState] = {}
        for chunk, (profile_rows, instances, facts, messages, starts) in zip(
            chunks, raw, strict=True
        ):
            profiles = {uid: stored_json(data) for uid, data in profile_rows}
            for uid in chunk:
                profile = profiles.get(uid)
                state = UserState(uid, profile or new_profile(uid, 0.0))
                state.profile_dirty = profile is None
                states[uid] = state
            for row in instances:
                states[row[3]].instances.append(instance_from(row))
            for uid, data, due_at in facts:
                states[uid].facts, states[uid].facts_due = stored_json(data), due_at
            for row in messages:
                states[row[3]].messages.append(message_from(row))
            for uid, rule_id, key, last in starts:
                states[uid].last_starts[(rule_id, key)] = last
        return states

    @records_writes
    @serialized
    async def save(self, changes: Changes) -> None:
        if not changes:
            return
        # Every statement of the unit, then one trip to the connection's thread for all.
        ops: list[Op] = []

        def many(sql: str, rows: list[Any]) -> None:
            if rows:
                ops.append((sql, rows, True))

        if changes.erased_users:
            ops += _erase_ops(changes.erased_users)
        many(
            "INSERT INTO profiles (user_id, data, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET data = excluded.data, "
            "updated_at = excluded.updated_at",
            [(uid, dumps(p), p.get("updated_at", 0.0)) for uid, p in changes.profiles.items()],
        )
        many(
            "DELETE FROM interests WHERE user_id = ? AND kind = 'cart'",
            [(uid,) for uid in changes.cart_reset],
        )
        upserts, deletes = changes.interest_rows()
        many("DELETE FROM interests WHERE product_id = ? AND kind = ? AND user_id = ?", deletes)
        many(
            "INSERT INTO interests (product_id, kind, user_id, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET updated_at = "
            "excluded.updated_at",
            upserts,
        )
        many(_INSTANCE_UPSERT, [instance_row(i) for i in changes.instances.values()])
        many(
            "INSERT INTO user_facts (user_id, data, due_at) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET data = excluded.data, "
            "due_at = excluded.due_at",
            [(uid, dumps(f), due) for uid, (f, due) in changes.facts.items()],
        )
        if changes.segment_members:
            ops += self._segment_member_ops(changes.segment_members)
        ops += self._user_row_ops(changes)
        if changes.messages:
            # The last of a batch's messages of one (instance, step, channel) stands, as it
            # did when each replaced the one before.
            latest: dict[tuple[str, str, str | None] | str, Message] = {}
            for m in changes.messages.values():
                latest.pop(m.id, None)
                key = (m.instance_id, m.step, m.channel) if m.channel is not None else m.id
                latest.pop(key, None)
                latest[key] = m
            messages = list(latest.values())
            # Their status history, from their stored rows (read in the transaction).
            ops += self._history_ops(messages, changes.now)
            many(
                _MESSAGE_ONCE,
                [
                    (m.instance_id, m.step, m.channel, m.id)
                    for m in messages
                    if m.channel is not None
                ],
            )
            many(_MESSAGE_UPSERT, [message_row(m) for m in messages])
        if changes.orders:
            ops += self._order_ops(changes.orders)
        if changes.journey:
            ops += self._journey_ops(changes.journey)
        many("DELETE FROM inbox WHERE seq = ?", [(s,) for s in changes.inbox_done])
        if changes.inbox_cursor is not None:
            seq, cursor = changes.inbox_cursor
            ops.append(("UPDATE inbox SET cursor = ? WHERE seq = ?", (cursor, seq), False))
        if changes.job is not None:
            job = changes.job
            ops.append(
                (
                    "UPDATE jobs SET cursor = ?, run_at = CASE WHEN ? THEN NULL ELSE run_at END "
                    "WHERE name = ? AND run_at = ?",
                    (None if job.done else job.cursor, job.done, job.name, job.run_at),
                    False,
                )
            )
        await self._script(ops)

    @records_writes
    @serialized
    async def write_probe(self) -> None:
        await self.db.execute(
            "INSERT INTO secrets (name, value) VALUES ('write_probe', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (new_secret(),),
        )

    @serialized
    async def ping(self) -> None:
        await self._rows("SELECT 1")

    @serialized
    async def secret(self, name: str) -> str:
        # Insert-if-absent then read: whoever inserted first, every reader gets that value.
        await self.db.execute(
            "INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (name, new_secret()),
        )
        rows = await self._rows("SELECT value FROM secrets WHERE name = ?", (name,))
        return str(rows[0][0])


def _read_users(
    chunks: list[list[str]], messages_since: float, starts_since: float, conn: sqlite3.Connection
) -> list[tuple[list[Any], ...]]:
    """load_users' queries, in the connection's thread: per chunk of ids, the profiles,
    active instances, facts, recent messages and (unless none can matter) last starts."""
    out: list[tuple[list[Any], ...]] = []
    for chunk in chunks:
        marks = ",".join("?" * len(chunk))
        profiles = conn.execute(
            f"SELECT user_id, data FROM profiles WHERE user_id IN ({marks})", chunk
        ).fetchall()
        instances = conn.execute(
            f"{INSTANCE_SQL} WHERE user_id IN ({marks}) AND status = 'active' "
            "ORDER BY started_at, id",
            chunk,
        ).fetchall()
        facts = conn.execute(
            f"SELECT user_id, data, due_at FROM user_facts WHERE user_id IN ({marks})", chunk
        ).fetchall()
        messages = conn.execute(
            f"{MESSAGE_SQL} WHERE user_id IN ({marks}) AND created_at >= ? ORDER BY created_at, id",
            [*chunk, messages_since],
        ).fetchall()
        starts = (
            []  # no start can be that recent: the caller starts none (timers)
            if starts_since == math.inf
            else conn.execute(
                f"SELECT user_id, rule_id, key, max(started_at) FROM instances "
                f"WHERE user_id IN ({marks}) AND started_at >= ? GROUP BY user_id, rule_id, key",
                [*chunk, starts_since],
            ).fetchall()
        )
        out.append((profiles, instances, facts, messages, starts))
    return out


def _erase_ops(users: set[str]) -> list[Op]:
    params = [(u,) for u in users]
    ops: list[Op] = [
        (f"DELETE FROM {table} WHERE user_id = ?", params, True)
        for table in ("profiles", "interests", "user_facts", "segment_members")
    ]
    # Keep counts for stats, drop the personal content.
    ops.append(
        (
            "UPDATE message_events SET detail = NULL WHERE message_id IN "
            "(SELECT id FROM messages WHERE user_id = ?)",
            params,
            True,
        )
    )
    erase = "UPDATE messages SET payload = NULL, detail = NULL WHERE user_id = ?"
    ops.append((erase, params, True))
    ops.append(
        (
            "UPDATE instances SET trigger = '{}', state = NULL, due_at = NULL, "
            "status = CASE status WHEN 'active' THEN 'stopped' ELSE status END "
            "WHERE user_id = ?",
            params,
            True,
        )
    )
    return ops


__all__ = ["Instance", "Message", "SqliteStore", "sqlite_path"]


def _statements(script: str) -> list[str]:
    """The script's statements, a trigger's body (`BEGIN ...; END`) kept whole."""
    out: list[str] = []
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending)
    return out
