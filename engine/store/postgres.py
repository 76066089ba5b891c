"""The shared store: PostgreSQL through an asyncpg pool, for one replica or several.

Same tables, semantics and answers as SqliteStore. What replicas sharing one database add:

- Each store holds a session advisory lock on a random owner id for its whole life. Inbox
  rows, due timers and messages in flight are claimed under that id with
  `FOR UPDATE SKIP LOCKED`, in the transaction that marks them; a claim counts only while
  its owner's session lives, so a crashed replica's claims are free at once.
- An inbox claim never takes a user's event while an earlier one of that user is claimed by
  another live replica: each user's events are applied in arrival order.
- `save` takes the transaction advisory locks of its users in sorted order and refuses to
  write over a user changed since this task loaded it (ConcurrentUpdate: nothing written,
  the processor tries again on fresh state), so two replicas never lose each other's work.

Its parts by concern are mixins: postgres_core (pool, owner id, claims), postgres_stats,
postgres_jobs (timers, scheduled jobs), postgres_reads, postgres_inbox, postgres_queue
(the dispatch queue); here are opening, migrations and the unit of work (load, save).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg

from engine.core.changes import Changes
from engine.core.model import Message, UserState, new_profile
from engine.store.base import ConcurrentUpdate, new_secret
from engine.store.health import records_writes
from engine.store.migrations import POSTGRES_MIGRATIONS
from engine.store.postgres_bulk import upsert_arrays, upsert_rows
from engine.store.postgres_controls import PostgresControls
from engine.store.postgres_core import (
    CONNECT_TIMEOUT_S,
    INSTANCE_SQL,
    LOCK_NS,
    MESSAGE_SQL,
    free,
)
from engine.store.postgres_holdout import PostgresHoldout
from engine.store.postgres_inbox import PostgresInbox
from engine.store.postgres_jobs import PostgresJobs
from engine.store.postgres_journey import PostgresJourney
from engine.store.postgres_messages import PostgresMessages, save_history
from engine.store.postgres_outcomes import PostgresOutcomes
from engine.store.postgres_queue import PostgresQueue
from engine.store.postgres_reads import PostgresReads
from engine.store.postgres_segments import PostgresSegments
from engine.store.postgres_stats import INSERT_ORDER, PostgresStats
from engine.store.postgres_trends import PostgresTrends
from engine.store.postgres_users import PostgresUsers
from engine.store.rows import (
    INSTANCE_COLUMNS,
    MESSAGE_COLUMNS,
    dumps,
    instance_from,
    instance_row,
    message_from,
    message_row,
    order_row,
)
from engine.store.urls import PgSettings, redact

if TYPE_CHECKING:
    from engine.store.postgres_core import Conn

_MIGRATE = 0  # the advisory lock (LOCK_NS, 0): migrations


def _values(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


def _upsert(table: str, columns: tuple[str, ...], key: str, also: str = "") -> str:
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({_values(len(columns))}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}{also}"
    )


# A saved instance is settled: whatever timer claim it had is void. A saved message is
# written whole, as SQLite's INSERT OR REPLACE does (a stored answer goes with the old row);
# the claim of a message in flight stays with the store that sends it.
_UPSERT_INSTANCE = _upsert("instances", INSTANCE_COLUMNS, "id", ", claimed_by = NULL")
_UPSERT_INSTANCES = upsert_arrays("instances", INSTANCE_COLUMNS, "id", ", claimed_by = NULL")
_UPSERT_MESSAGE = _upsert("messages", MESSAGE_COLUMNS, "id", ", outcome = NULL")
_UPSERT_MESSAGES = upsert_arrays("messages", MESSAGE_COLUMNS, "id", ", outcome = NULL")


def _dsn(url: str) -> str:
    """asyncpg takes postgresql:// and postgres:// URLs as DSNs; SQLAlchemy's driver suffix
    (postgresql+asyncpg://) is accepted too."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql+asyncpg", "postgres+asyncpg"):
        return f"postgresql{sep}{rest}"
    return url


def _error_text(exc: BaseException, url: str) -> str:
    text = str(exc) or type(exc).__name__
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


class PostgresStore(
    PostgresJourney,
    PostgresTrends,
    PostgresStats,
    PostgresHoldout,
    PostgresSegments,
    PostgresJobs,
    PostgresMessages,
    PostgresReads,
    PostgresInbox,
    PostgresQueue,
    PostgresOutcomes,
    PostgresUsers,
    PostgresControls,
):
    @classmethod
    async def open(
        cls, url: str, settings: PgSettings | None = None, *, heartbeat: bool = True
    ) -> PostgresStore:
        safe = redact(url)
        dsn = _dsn(url)
        pg = settings or PgSettings()
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pg.pool_size,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=pg.command_timeout_s,
                server_settings={
                    "statement_timeout": str(max(1, round(pg.statement_timeout_s * 1000))),
                    # A replica that hangs inside a transaction (stopped, frozen) must not hold
                    # its row and user locks past its lease: the server ends that session.
                    "idle_in_transaction_session_timeout": str(int(2000 * pg.lease_s)),
                },
            )
        except asyncpg.InterfaceError as exc:  # a malformed DSN, among others
            raise ValueError(f"storage.url {safe}: {_error_text(exc, url)}") from None
        except (OSError, TimeoutError, ValueError, asyncpg.PostgresError) as exc:
            raise ConnectionError(
                f"storage.url {safe}: cannot connect: {_error_text(exc, url)}"
            ) from None
        try:
            namespace = await pool.fetchval("SELECT current_schema()")
            if namespace is None:
                raise ValueError(
                    f"storage.url {safe}: no schema of its search_path exists; create it first"
                )
            store = cls(pool, dsn, namespace, lease_s=pg.lease_s)
            await store._migrate()
            await store._me()
            if heartbeat:
                store.start_heartbeat()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        """Pending migrations in one transaction, under a lock: replicas starting at once
        migrate once (the others wait, then find nothing to do)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NS, _MIGRATE)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
            for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                if version > current:
                    await conn.execute(script)
                    await conn.execute(
                        "INSERT INTO schema_migrations "
                        "VALUES ($1, extract(epoch FROM clock_timestamp()))",
                        version,
                    )

    async def load_users(
        self, user_ids: list[str], *, messages_since: float, starts_since: float
    ) -> dict[str, UserState]:
        states: dict[str, UserState] = {}
        ids = list(user_ids)
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            versions: dict[str, int] = {
                r[0]: r[1]
                for r in await conn.fetch(
                    "SELECT user_id, version FROM user_versions WHERE user_id = ANY($1::text[])",
                    ids,
                )
            }
            profiles = {
                r[0]: json.loads(r[1])
                for r in await conn.fetch(
                    "SELECT user_id, data FROM profiles WHERE user_id = ANY($1::text[])", ids
                )
            }
            for uid in ids:
                profile = profiles.get(uid)
                state = UserState(uid, profile or new_profile(uid, 0.0))
                state.profile_dirty = profile is None
                states[uid] = state
            for uid, data, due_at in await conn.fetch(
                "SELECT user_id, data, due_at FROM user_facts WHERE user_id = ANY($1::text[])",
                ids,
            ):
                states[uid].facts, states[uid].facts_due = json.loads(data), due_at
            for row in await conn.fetch(
                f"{INSTANCE_SQL} WHERE user_id = ANY($1::text[]) AND status = 'active' "
                "ORDER BY started_at, id",
                ids,
            ):
                states[row[3]].instances.append(instance_from(tuple(row)))
            for row in await conn.fetch(
                f"{MESSAGE_SQL} WHERE user_id = ANY($1::text[]) AND created_at >= $2 "
                "ORDER BY created_at, id",
                ids,
                messages_since,
            ):
                states[row[3]].messages.append(message_from(tuple(row)))
            starts = (
                []
                if starts_since == math.inf  # no start is that recent: the caller starts none
                else await conn.fetch(
                    "SELECT user_id, rule_id, key, max(started_at) FROM instances "
                    "WHERE user_id = ANY($1::text[]) AND started_at >= $2 "
                    "GROUP BY user_id, rule_id, key",
                    ids,
                    starts_since,
                )
            )
            for uid, rule_id, key, last in starts:
                states[uid].last_starts[(rule_id, key)] = last
        task = asyncio.current_task()
        if task is not None:
            self._loaded[task] = {uid: versions.get(uid, 0) for uid in ids}
        return states

    @records_writes
    async def save(self, changes: Changes) -> None:
        if not changes:
            return
        me = await self._me()
        task = asyncio.current_task()
        loaded = self._loaded.get(task, {}) if task is not None else {}
        users = sorted(_users_of(changes))
        async with self.pool.acquire() as conn, conn.transaction():
            versions = await self._lock_users(conn, users, loaded) if users else {}
            if changes.erased_users:
                await _erase(conn, sorted(changes.erased_users))
            if changes.profiles:
                await conn.executemany(
                    "INSERT INTO profiles (user_id, data, updated_at) VALUES ($1, $2, $3) "
                    "ON CONFLICT (user_id) DO UPDATE SET data = EXCLUDED.data, "
                    "updated_at = EXCLUDED.updated_at",
                    [
                        (uid, dumps(p), p.get("updated_at", 0.0))
                        for uid, p in changes.profiles.items()
                    ],
                )
            if changes.cart_reset:
                await conn.execute(
                    "DELETE FROM interests WHERE user_id = ANY($1::text[]) AND kind = 'cart'",
                    sorted(changes.cart_reset),
                )
            upserts, deletes = changes.interest_rows()
            if deletes:
                await conn.executemany(
                    "DELETE FROM interests WHERE product_id = $1 AND kind = $2 AND user_id = $3",
                    deletes,
                )
            if upserts:
                await conn.executemany(
                    "INSERT INTO interests (product_id, kind, user_id, updated_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (product_id, kind, user_id) "
                    "DO UPDATE SET updated_at = EXCLUDED.updated_at",
                    upserts,
                )
            if changes.instances:
                await upsert_rows(
                    conn,
                    _UPSERT_INSTANCE,
                    _UPSERT_INSTANCES,
                    [instance_row(i) for i in changes.instances.values()],
                )
            if changes.facts:
                # Saved facts are settled: whatever timer claim they had is void.
                await conn.executemany(
                    "INSERT INTO user_facts (user_id, data, due_at, claimed_by) "
                    "VALUES ($1, $2, $3, NULL) ON CONFLICT (user_id) DO UPDATE SET "
                    "data = EXCLUDED.data, due_at = EXCLUDED.due_at, claimed_by = NULL",
                    [(uid, dumps(f), due) for uid, (f, due) in changes.facts.items()],
                )
            if changes.segment_members:
                await self._save_segment_members(conn, changes.segment_members)
            await self._save_user_rows(conn, changes)
            if changes.messages:
                await _save_messages(conn, list(changes.messages.values()), changes.now)
            if changes.orders:
                await conn.executemany(INSERT_ORDER, [order_row(o) for o in changes.orders])
            if changes.journey:
                await self._save_journey(conn, changes.journey)
            if changes.inbox_done:
                done = sorted(set(changes.inbox_done))
                gone = await conn.fetch(
                    "DELETE FROM inbox WHERE seq = ANY($1::bigint[]) "
                    f"AND {free('claimed_by', '$2')} RETURNING seq",
                    done,
                    me,
                )
                if len(gone) != len(done):
                    raise ConcurrentUpdate(
                        f"inbox rows {sorted(set(done) - {r[0] for r in gone})} were taken or "
                        "applied by another replica; nothing was written"
                    )
            if changes.inbox_cursor is not None:
                seq, cursor = changes.inbox_cursor
                status = await conn.execute(
                    f"UPDATE inbox SET cursor = $1 WHERE seq = $2 AND {free('claimed_by', '$3')}",
                    cursor,
                    seq,
                    me,
                )
                if status != "UPDATE 1":
                    raise ConcurrentUpdate(
                        f"inbox row {seq} was taken or applied by another replica; "
                        "nothing was written"
                    )
            if changes.job is not None:
                job = changes.job
                status = await conn.execute(
                    "UPDATE jobs SET cursor = $1, run_at = CASE WHEN $2 THEN NULL ELSE run_at END, "
                    "claimed_by = CASE WHEN $2 THEN NULL ELSE claimed_by END "
                    "WHERE name = $3 AND run_at = $4 AND claimed_by = $5",
                    None if job.done else job.cursor,
                    job.done,
                    job.name,
                    job.run_at,
                    me,
                )
                if status != "UPDATE 1":
                    raise ConcurrentUpdate(
                        f"job {job.name} run {job.run_at} was taken over by another replica; "
                        "nothing was written"
                    )
        if task is not None and versions:
            self._loaded.setdefault(task, {}).update(versions)

    async def _lock_users(
        self, conn: Conn, users: list[str], loaded: dict[str, int]
    ) -> dict[str, int]:
        """Lock the users (sorted keys: no deadlock between replicas), refuse if one changed
        since this task loaded it, and step their versions."""
        keys = sorted({_user_key(self._namespace, u) for u in users})
        await conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", keys)
        current = {
            r[0]: r[1]
            for r in await conn.fetch(
                "SELECT user_id, version FROM user_versions WHERE user_id = ANY($1::text[])", users
            )
        }
        stale = [u for u in users if u in loaded and current.get(u, 0) != loaded[u]]
        if stale:
            raise ConcurrentUpdate(
                f"users {stale[:5]} changed since they were loaded (another replica); "
                "nothing was written"
            )
        rows = await conn.fetch(
            "INSERT INTO user_versions (user_id, version) SELECT u, 1 FROM unnest($1::text[]) u "
            "ON CONFLICT (user_id) DO UPDATE SET version = user_versions.version + 1 "
            "RETURNING user_id, version",
            users,
        )
        return {r[0]: r[1] for r in rows}

    async def set_rfm(self, segments: dict[str, tuple[str, dict[str, int]]]) -> None:
        """Set `rfm` and `rfm_scores` of these profiles in place, the rest as it is; their
        versions step, so a replica's save of an older copy is refused, not lost."""
        users = sorted(segments)
        async with self.pool.acquire() as conn, conn.transaction():
            await self._lock_users(conn, users, {})
            updates = []
            for uid, data in await conn.fetch(
                "SELECT user_id, data FROM profiles WHERE user_id = ANY($1::text[])", users
            ):
                try:
                    profile = json.loads(data)
                except ValueError:
                    continue  # not JSON: left alone, as SQLite's json_valid() does
                if isinstance(profile, dict):
                    profile["rfm"], profile["rfm_scores"] = segments[uid]
                    updates.append((uid, dumps(profile)))
            await conn.executemany("UPDATE profiles SET data = $2 WHERE user_id = $1", updates)

    @records_writes
    async def write_probe(self) -> None:
        await self.pool.execute(
            "INSERT INTO secrets (name, value) VALUES ('write_probe', $1) "
            "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            new_secret(),
        )

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def secret(self, name: str) -> str:
        # Insert-if-absent then read: replicas starting together all read the one winner.
        await self.pool.execute(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            name,
            new_secret(),
        )
        value = await self.pool.fetchval("SELECT value FROM secrets WHERE name = $1", name)
        return str(value)


async def _save_messages(conn: Conn, messages: list[Message], now: float | None) -> None:
    """Upsert by id, with the messages' history; like SQLite's INSERT OR REPLACE, a message
    replaces any other row of its (instance, step, channel) (the messages_once index)."""
    latest: dict[tuple[str, str, str | None] | str, Message] = {}
    for m in messages:
        latest.pop(m.id, None)
        latest[(m.instance_id, m.step, m.channel) if m.channel is not None else m.id] = m
    rows = list(latest.values())
    await save_history(conn, rows, now)
    keyed = [m for m in rows if m.channel is not None]
    if keyed:
        await conn.execute(
            "WITH gone AS (DELETE FROM messages m USING unnest($1::text[], $2::text[], "
            "$3::text[], $4::text[]) AS n(id, instance_id, step, channel) WHERE m.instance_id "
            "= n.instance_id AND m.step = n.step AND m.channel = n.channel AND m.id <> n.id "
            "RETURNING m.id) DELETE FROM message_events e USING gone WHERE e.message_id = gone.id",
            [m.id for m in keyed],
            [m.instance_id for m in keyed],
            [m.step for m in keyed],
            [m.channel for m in keyed],
        )
    await upsert_rows(conn, _UPSERT_MESSAGE, _UPSERT_MESSAGES, [message_row(m) for m in rows])


async def _erase(conn: Conn, users: list[str]) -> None:
    for table in ("profiles", "interests", "user_facts", "segment_members"):
        await conn.execute(f"DELETE FROM {table} WHERE user_id = ANY($1::text[])", users)
    # Keep counts for stats, drop the personal content.
    await conn.execute(
        "UPDATE message_events e SET detail = NULL FROM messages m "
        "WHERE m.user_id = ANY($1::text[]) AND e.message_id = m.id",
        users,
    )
    await conn.execute(
        "UPDATE messages SET payload = NULL, detail = NULL WHERE user_id = ANY($1::text[])",
        users,
    )
    await conn.execute(
        "UPDATE instances SET trigger = '{}', state = NULL, due_at = NULL, claimed_by = NULL, "
        "status = CASE status WHEN 'active' THEN 'stopped' ELSE status END "
        "WHERE user_id = ANY($1::text[])",
        users,
    )


def _users_of(changes: Changes) -> set[str]:
    """Every user whose rows this unit of work writes."""
    users = set(changes.profiles) | changes.cart_reset | changes.erased_users
    users.update(i.user_id for i in changes.instances.values())
    users.update(m.user_id for m in changes.messages.values())
    users.update(key[2] for key in changes.interests)
    users.update(o.user_id for o in changes.orders)
    users.update(changes.facts)
    users.update(uid for uid, _ in changes.segment_members)
    users.update(changes.addresses)
    users.update(e.user_id for e in changes.user_events)
    return users


def _user_key(namespace: str, user_id: str) -> int:
    """A user's advisory lock key: 64 bits of a hash of the schema and the id."""
    digest = hashlib.blake2b(
        f"{namespace}\x1f{user_id}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)
