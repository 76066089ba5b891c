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
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import weakref
from collections.abc import Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg
import structlog

from engine.core.changes import Changes
from engine.core.model import Instance, Message, UserState, new_profile
from engine.core.workspace import FACTS
from engine.store.base import ConcurrentUpdate, JobRow, new_secret
from engine.store.migrations import POSTGRES_MIGRATIONS
from engine.store.postgres_segments import PostgresSegments
from engine.store.postgres_stats import INSERT_ORDER, PostgresStats
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
from engine.store.urls import redact

log = structlog.get_logger("kaskad.store")

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = PoolConnectionProxy[asyncpg.Record]

# kaskad's two-int advisory locks are (_NS, n): n = 0 the migrations, n = -1 the inbox claim,
# n = -2 planning the scheduled jobs,
# n > 0 a store's owner id. Users' locks are single bigint keys, a separate lock space.
_NS = 0x6B61736B  # "kask"
_MIGRATE = 0
_INBOX_CLAIM = -1
_JOBS_PLAN = -2
_CONNECT_TIMEOUT_S = 10.0
# next_due while another live replica holds the earliest timer: look again this soon.
_RECHECK_S = 1.0
_POOL_MAX = 10
# The server drops a vanished client's session (and so its claims) within about a minute.
_KEEPALIVE = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}

_COLS_INSTANCE = ", ".join(INSTANCE_COLUMNS)
_COLS_MESSAGE = ", ".join(MESSAGE_COLUMNS)
_INSTANCE_SQL = f"SELECT {_COLS_INSTANCE} FROM instances"
_MESSAGE_SQL = f"SELECT {_COLS_MESSAGE} FROM messages"

# Owner ids whose session is alive: they hold their (_NS, id) advisory lock in this database.
_LIVE = (
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
    f"AND classid = {_NS} AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _free(column: str, me: str) -> str:
    """SQL: the row is unclaimed, claimed by this store, or by a store that is gone."""
    return f"({column} IS NULL OR {column} = {me} OR {column} NOT IN ({_LIVE}))"


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
_UPSERT_MESSAGE = _upsert("messages", MESSAGE_COLUMNS, "id", ", outcome = NULL")


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


class PostgresStore(PostgresStats, PostgresSegments):
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], dsn: str, namespace: str) -> None:
        self.pool = pool
        self.owner = 0
        self._dsn = dsn
        self._namespace = namespace
        self._owner_conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._owner_lock = asyncio.Lock()
        # Per task (the processor loop, an API request): the version of each user as its
        # last load_users read it; save checks these.
        self._loaded: weakref.WeakKeyDictionary[asyncio.Task[Any], dict[str, int]] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        safe = redact(url)
        dsn = _dsn(url)
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=_POOL_MAX, timeout=_CONNECT_TIMEOUT_S
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
            store = cls(pool, dsn, namespace)
            await store._migrate()
            await store._me()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        """Pending migrations in one transaction, under a lock: replicas starting at once
        migrate once (the others wait, then find nothing to do)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _NS, _MIGRATE)
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

    async def _me(self) -> int:
        """This store's owner id, its session lock held (taken again if the session died)."""
        if self._owner_conn is not None and not self._owner_conn.is_closed():
            return self.owner
        async with self._owner_lock:
            if self._owner_conn is None or self._owner_conn.is_closed():
                lost = self._owner_conn is not None
                conn = await asyncpg.connect(
                    self._dsn, timeout=_CONNECT_TIMEOUT_S, server_settings=_KEEPALIVE
                )
                owner = self.owner or random.randint(1, 2**31 - 1)
                while not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _NS, owner):
                    owner = random.randint(1, 2**31 - 1)
                if lost:
                    # Until now other replicas could take this store's claims as a dead one's.
                    log.warning("store.owner_session_renewed", owner=owner, was=self.owner)
                self._owner_conn, self.owner = conn, owner
        return self.owner

    async def close(self) -> None:
        if self._owner_conn is not None and not self._owner_conn.is_closed():
            await self._owner_conn.close()
        await self.pool.close()

    # -- units of work ---------------------------------------------------------------------

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
                f"{_INSTANCE_SQL} WHERE user_id = ANY($1::text[]) AND status = 'active' "
                "ORDER BY started_at, id",
                ids,
            ):
                states[row[3]].instances.append(instance_from(tuple(row)))
            for row in await conn.fetch(
                f"{_MESSAGE_SQL} WHERE user_id = ANY($1::text[]) AND created_at >= $2 "
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
                await conn.executemany(
                    _UPSERT_INSTANCE, [instance_row(i) for i in changes.instances.values()]
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
            if changes.messages:
                await _save_messages(conn, list(changes.messages.values()))
            if changes.orders:
                await conn.executemany(INSERT_ORDER, [order_row(o) for o in changes.orders])
            if changes.inbox_done:
                done = sorted(set(changes.inbox_done))
                gone = await conn.fetch(
                    "DELETE FROM inbox WHERE seq = ANY($1::bigint[]) "
                    f"AND {_free('claimed_by', '$2')} RETURNING seq",
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
                    f"UPDATE inbox SET cursor = $1 WHERE seq = $2 AND {_free('claimed_by', '$3')}",
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

    # -- events ----------------------------------------------------------------------------

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
        """Claims the oldest free rows; a user's row waits while an earlier row of that user
        is claimed by another live replica (claims go one at a time, so each sees the last)."""
        me = await self._me()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _NS, _INBOX_CLAIM)
            rows = await conn.fetch(
                "WITH batch AS (SELECT i.seq FROM inbox i "
                f"WHERE {_free('i.claimed_by', '$1')} AND NOT EXISTS (SELECT 1 FROM inbox j "
                "WHERE j.user_id = i.user_id AND j.seq < i.seq "
                f"AND NOT {_free('j.claimed_by', '$1')}) "
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
        return _count(await self.pool.execute("DELETE FROM events_seen WHERE seen_at < $1", when))

    # -- timers ----------------------------------------------------------------------------

    async def next_due(self) -> float | None:
        me = await self._me()
        row = await self.pool.fetchrow(
            f"SELECT due_at, held, extract(epoch FROM clock_timestamp())::float8 FROM ("
            f"(SELECT due_at, NOT {_free('claimed_by', '$1')} AS held FROM instances "
            "WHERE due_at IS NOT NULL ORDER BY due_at, id LIMIT 1) UNION ALL "
            f"(SELECT due_at, NOT {_free('claimed_by', '$1')} FROM user_facts "
            "WHERE due_at IS NOT NULL ORDER BY due_at LIMIT 1)) t ORDER BY due_at LIMIT 1",
            me,
        )
        if row is None:
            return None
        due_at, held_elsewhere, db_now = row
        # Another replica is firing it: its save moves the timer; look again shortly.
        return max(float(due_at), db_now + _RECHECK_S) if held_elsewhere else float(due_at)

    async def due_instances(self, until: float, limit: int) -> list[tuple[float, str, str]]:
        """Claims them: another replica skips them until this store saves or dies."""
        me = await self._me()
        rows = await self.pool.fetch(
            "WITH due AS (SELECT id FROM instances WHERE due_at IS NOT NULL AND due_at <= $1 "
            f"AND {_free('claimed_by', '$3')} ORDER BY due_at, id LIMIT $2 "
            "FOR UPDATE SKIP LOCKED) "
            "UPDATE instances i SET claimed_by = $3 FROM due WHERE i.id = due.id "
            "RETURNING i.due_at, i.id, i.user_id",
            until,
            limit,
            me,
        )
        facts = await self.pool.fetch(
            "WITH due AS (SELECT user_id FROM user_facts WHERE due_at IS NOT NULL "
            f"AND due_at <= $1 AND {_free('claimed_by', '$3')} ORDER BY due_at LIMIT $2 "
            "FOR UPDATE SKIP LOCKED) "
            "UPDATE user_facts f SET claimed_by = $3 FROM due WHERE f.user_id = due.user_id "
            "RETURNING f.due_at, f.user_id",
            until,
            limit,
            me,
        )
        timers = [(r[0], r[1], r[2]) for r in rows] + [(r[0], FACTS, r[1]) for r in facts]
        return sorted(timers)[:limit]

    # -- scheduled jobs --------------------------------------------------------------------

    async def plan_jobs(self, plans: dict[str, tuple[str, float | None]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # One planner at a time, so replicas starting together agree.
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _NS, _JOBS_PLAN)
            current = {r[0]: r[1] for r in await conn.fetch("SELECT name, spec FROM jobs")}
            gone = sorted(set(current) - set(plans))
            if gone:
                await conn.execute("DELETE FROM jobs WHERE name = ANY($1::text[])", gone)
            for name, (spec, due_at) in plans.items():
                if current.get(name) == spec:
                    continue
                await conn.execute(
                    "INSERT INTO jobs (name, spec, due_at, run_at, cursor, claimed_by) "
                    "VALUES ($1, $2, $3, NULL, NULL, NULL) ON CONFLICT (name) DO UPDATE SET "
                    "spec = EXCLUDED.spec, due_at = EXCLUDED.due_at, run_at = NULL, "
                    "cursor = NULL, claimed_by = NULL",
                    name,
                    spec,
                    due_at,
                )

    async def due_jobs(self, now: float) -> list[JobRow]:
        me = await self._me()
        rows = await self.pool.fetch(
            "SELECT name, spec, due_at, run_at, cursor FROM jobs "
            f"WHERE (run_at IS NULL AND due_at <= $1) OR (run_at IS NOT NULL AND "
            f"(claimed_by = $2 OR {_free('claimed_by', '$2')})) "
            "ORDER BY coalesce(run_at, due_at), name",
            now,
            me,
        )
        return [JobRow(*row) for row in rows]

    async def start_job(self, name: str, due_at: float, next_due: float | None) -> bool:
        me = await self._me()
        status = await self.pool.execute(
            "UPDATE jobs SET run_at = due_at, due_at = $1, cursor = '', claimed_by = $2 "
            "WHERE name = $3 AND due_at = $4 AND run_at IS NULL",
            next_due,
            me,
            name,
            due_at,
        )
        return bool(status == "UPDATE 1")

    async def resume_job(self, name: str, run_at: float) -> bool:
        me = await self._me()
        status = await self.pool.execute(
            f"UPDATE jobs SET claimed_by = $1 WHERE name = $2 AND run_at = $3 "
            f"AND {_free('claimed_by', '$1')}",
            me,
            name,
            run_at,
        )
        return bool(status == "UPDATE 1")

    async def next_job_due(self) -> float | None:
        me = await self._me()
        value = await self.pool.fetchval(
            "SELECT min(CASE WHEN run_at IS NULL THEN due_at "
            f"WHEN {_free('claimed_by', '$1')} THEN run_at END) FROM jobs",
            me,
        )
        return None if value is None else float(value)

    # -- reads -----------------------------------------------------------------------------

    async def interested_users(
        self, product_id: str, kinds: tuple[str, ...], viewed_since: float, after: str, limit: int
    ) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT user_id FROM interests "
            "WHERE product_id = $1 AND kind = ANY($2::text[]) "
            "AND (kind <> 'viewed' OR updated_at >= $3) AND user_id > $4 "
            "ORDER BY user_id LIMIT $5",
            product_id,
            list(kinds),
            viewed_since,
            after,
            limit,
        )
        return [r[0] for r in rows]

    async def profile_ids(self, after: str, limit: int) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT user_id FROM profiles WHERE user_id > $1 ORDER BY user_id LIMIT $2",
            after,
            limit,
        )
        return [r[0] for r in rows]

    async def messages(
        self,
        *,
        user_id: str | None = None,
        rule: str | None = None,
        status: str | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> list[Message]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("user_id", user_id), ("rule_id", rule), ("status", status)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        if before is not None:
            params.extend(before)
            n = len(params)
            where.append(f"(created_at < ${n - 1} OR (created_at = ${n - 1} AND id < ${n}))")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self.pool.fetch(
            f"{_MESSAGE_SQL}{clause} ORDER BY created_at DESC, id DESC LIMIT ${len(params) + 1}",
            *params,
            limit,
        )
        return [message_from(tuple(r)) for r in rows]

    async def message(self, message_id: str) -> Message | None:
        row = await self.pool.fetchrow(f"{_MESSAGE_SQL} WHERE id = $1", message_id)
        return message_from(tuple(row)) if row is not None else None

    async def message_by_provider_id(self, provider_id: str) -> Message | None:
        row = await self.pool.fetchrow(
            f"{_MESSAGE_SQL} WHERE provider_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
            provider_id,
        )
        return message_from(tuple(row)) if row is not None else None

    async def instances_of(self, user_id: str, limit: int = 200) -> list[Instance]:
        rows = await self.pool.fetch(
            f"{_INSTANCE_SQL} WHERE user_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2",
            user_id,
            limit,
        )
        return [instance_from(tuple(r)) for r in rows]

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

    # -- sends -----------------------------------------------------------------------------

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
        )
        narrowing = (list(skip), only, queued_before)
        async with self.pool.acquire() as conn, conn.transaction():
            orphans: list[asyncpg.Record] = []
            if queued_before is None:
                orphans = await conn.fetch(
                    "WITH q AS (SELECT id FROM messages WHERE status = 'sending' "
                    f"AND claimed_by <> $4 AND claimed_by NOT IN ({_LIVE}) "
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
        claimed = [message_from(tuple(r)) for r in [*orphans, *rows]]
        claimed.sort(
            key=lambda m: (m.next_attempt_at is not None, m.next_attempt_at or 0.0, m.created_at)
        )
        return claimed

    async def release(self, message_ids: list[str]) -> None:
        await self.pool.execute(
            "UPDATE messages SET status = 'queued', claimed_by = NULL "
            "WHERE id = ANY($1::text[]) AND status = 'sending'",
            message_ids,
        )

    async def requeue_in_flight(self) -> int:
        """Messages in flight here or at a store that is gone go back to the queue (those
        of live replicas stay theirs)."""
        me = await self._me()
        return _count(
            await self.pool.execute(
                "UPDATE messages SET status = 'queued', claimed_by = NULL "
                f"WHERE status = 'sending' AND {_free('claimed_by', '$1')}",
                me,
            )
        )

    async def record_outcome(self, message_id: str, outcome: str) -> None:
        await self.pool.execute(
            "UPDATE messages SET status = 'answered', outcome = $1 "
            "WHERE id = $2 AND status = 'sending'",
            outcome,
            message_id,
        )

    async def answered(self) -> list[tuple[str, str, str]]:
        """Answers whose sender is this store or gone (a live replica applies its own)."""
        me = await self._me()
        rows = await self.pool.fetch(
            "SELECT id, user_id, outcome FROM messages WHERE status = 'answered' "
            f"AND {_free('claimed_by', '$1')}",
            me,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def reschedule(
        self, message_id: str, attempts: int, next_attempt_at: float, detail: str
    ) -> None:
        await self.pool.execute(
            "UPDATE messages SET status = 'queued', attempts = $1, next_attempt_at = $2, "
            "detail = $3, claimed_by = NULL WHERE id = $4 AND status = 'sending'",
            attempts,
            next_attempt_at,
            detail,
            message_id,
        )

    # -- rules, gauges ---------------------------------------------------------------------

    async def save_rule_version(
        self, version: str, rule_id: str, path: str, source: str, now: float
    ) -> None:
        await self.pool.execute(
            "INSERT INTO rule_versions (version, rule_id, path, source, loaded_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            version,
            rule_id,
            path,
            source,
            now,
        )

    async def rule_source(self, version: str) -> tuple[str, str] | None:
        row = await self.pool.fetchrow(
            "SELECT path, source FROM rule_versions WHERE version = $1", version
        )
        return (row[0], row[1]) if row is not None else None

    async def active_versions(self) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT rule_id, rule_version FROM instances WHERE status = 'active'"
        )
        return [(r[0], r[1]) for r in rows]

    async def counts(self) -> dict[str, int]:
        row = await self.pool.fetchrow(
            "SELECT (SELECT count(*) FROM instances WHERE status = 'active'), "
            "(SELECT count(*) FROM instances WHERE due_at IS NOT NULL), "
            "(SELECT count(*) FROM messages WHERE status IN ('queued', 'sending')), "
            "(SELECT count(*) FROM inbox)"
        )
        assert row is not None
        active, timers, queued, inbox = row
        return {
            "active_instances": active,
            "pending_timers": timers,
            "queued_messages": queued,
            "inbox": inbox,
        }

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


async def _save_messages(conn: Conn, messages: list[Message]) -> None:
    """Upsert by id; like SQLite's INSERT OR REPLACE, a message replaces any other row of
    its (instance, step, channel) (the messages_once index)."""
    latest: dict[tuple[str, str, str | None] | str, Message] = {}
    for m in messages:
        latest.pop(m.id, None)
        latest[(m.instance_id, m.step, m.channel) if m.channel is not None else m.id] = m
    rows = list(latest.values())
    keyed = [m for m in rows if m.channel is not None]
    if keyed:
        await conn.execute(
            "DELETE FROM messages m USING unnest($1::text[], $2::text[], $3::text[], "
            "$4::text[]) AS n(id, instance_id, step, channel) WHERE m.instance_id = "
            "n.instance_id AND m.step = n.step AND m.channel = n.channel AND m.id <> n.id",
            [m.id for m in keyed],
            [m.instance_id for m in keyed],
            [m.step for m in keyed],
            [m.channel for m in keyed],
        )
    await conn.executemany(_UPSERT_MESSAGE, [message_row(m) for m in rows])


async def _erase(conn: Conn, users: list[str]) -> None:
    for table in ("profiles", "interests", "user_facts", "segment_members"):
        await conn.execute(f"DELETE FROM {table} WHERE user_id = ANY($1::text[])", users)
    # Keep counts for stats, drop the personal content.
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
    return users


def _user_key(namespace: str, user_id: str) -> int:
    """A user's advisory lock key: 64 bits of a hash of the schema and the id."""
    digest = hashlib.blake2b(
        f"{namespace}\x1f{user_id}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _user_of(body: str) -> str | None:
    """The user of an inbox row (None for product events), for per-user order."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    user = event.get("user_id") if isinstance(event, dict) else None
    return user if isinstance(user, str) else None


def _count(status: str) -> int:
    """The row count of a command status such as 'UPDATE 3'."""
    return int(status.rsplit(" ", 1)[-1])


__all__ = ["ConcurrentUpdate", "PostgresStore"]
