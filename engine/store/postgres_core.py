"""What PostgresStore's parts share: the pool, the store's owner id (a session advisory
lock held for the store's life, and a lease its heartbeat renews) and the SQL that tells a
live claim from a void one."""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from engine.store.health import WriteHealth
from engine.store.rows import INSTANCE_COLUMNS, MESSAGE_COLUMNS

log = structlog.get_logger("kaskad.store")

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn = PoolConnectionProxy[asyncpg.Record]

# kaskad's two-int advisory locks are (LOCK_NS, n): n = 0 the migrations, n = -1 the inbox
# claim, n = -2 planning the scheduled jobs,
# n > 0 a store's owner id. Users' locks are single bigint keys, a separate lock space.
LOCK_NS = 0x6B61736B  # "kask"
CONNECT_TIMEOUT_S = 10.0
# The server drops a vanished client's session (and so its claims) within about a minute.
_KEEPALIVE = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}

INSTANCE_SQL = f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances"
MESSAGE_SQL = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages"

# A replica's lease: renewed every LEASE_S / 4 by its heartbeat; a replica that misses it
# (hung, stopped, its event loop blocked) loses its claims to the others.
LEASE_S = 10.0
# The heartbeat's housekeeping (folding the trend deltas) runs this often, in real time.
HOUSEKEEPING_S = 300.0
DB_NOW = "extract(epoch FROM clock_timestamp())::float8"

# Owner ids whose claims hold: their session is alive (they hold their (LOCK_NS, id)
# advisory lock in this database: a killed replica's claims are free at once) and their
# lease has not run out (a hung replica's are free when it does).
LIVE_OWNERS = (
    f"SELECT owner FROM replicas WHERE lease_until > {DB_NOW} AND owner IN ("
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
    f"AND classid = {LOCK_NS} AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
)
# Take or renew this store's lease ($1 owner, $2 seconds): how long ago it had run out
# (<= 0: it had not).
_RENEW = (
    f"WITH old AS (SELECT lease_until FROM replicas WHERE owner = $1) "
    f"INSERT INTO replicas (owner, lease_until) VALUES ($1, {DB_NOW} + $2) "
    "ON CONFLICT (owner) DO UPDATE SET lease_until = EXCLUDED.lease_until "
    f"RETURNING {DB_NOW} - coalesce((SELECT lease_until FROM old), {DB_NOW})"
)
# Leases of owners gone for a day are forgotten (owner ids are random: rows would pile up).
_FORGET = f"DELETE FROM replicas WHERE lease_until < {DB_NOW} - 86400"


def free(column: str, me: str) -> str:
    """SQL: the row is unclaimed, claimed by this store, or by a store that is gone."""
    return f"({column} IS NULL OR {column} = {me} OR {column} NOT IN ({LIVE_OWNERS}))"


def row_count(status: str) -> int:
    """The row count of a command status such as 'UPDATE 3'."""
    return int(status.rsplit(" ", 1)[-1])


# Errors after which the same statement is worth sending again on another connection.
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin shutdown (pg_terminate_backend)
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    # A terminated backend's notice read while a statement starts on that connection.
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    TimeoutError,
    OSError,
)
_RETRY_FOR_S = 60.0


async def retrying(pool: asyncpg.Pool[asyncpg.Record], sql: str, *args: Any) -> str:
    """Execute an idempotent statement, again on a fresh connection while the database is
    unreachable (up to a minute, backing off): a terminated connection must not leave the
    write undone. Real time: it bounds a network outage, whatever the engine's clock."""
    delay_s, waited_s = 0.05, 0.0
    while True:
        try:
            return str(await pool.execute(sql, *args))
        except TRANSIENT as exc:
            if waited_s >= _RETRY_FOR_S:
                raise
            log.warning("store.write_retried", error=repr(exc), in_s=delay_s)
        await asyncio.sleep(delay_s)
        waited_s += delay_s
        delay_s = min(2.0, delay_s * 2)


class PostgresCore(WriteHealth):
    poll_s: float | None = 1.0  # other replicas leave work here: idle processors look again
    """The state every part of PostgresStore works on."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        dsn: str,
        namespace: str,
        *,
        lease_s: float = LEASE_S,
    ) -> None:
        self.pool = pool
        self.owner = 0
        self.lease_s = lease_s
        self._heartbeat: asyncio.Task[None] | None = None
        self._dsn = dsn
        self._namespace = namespace
        self._owner_conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._owner_lock = asyncio.Lock()
        # Per task (the processor loop, an API request): the version of each user as its
        # last load_users read it; save checks these.
        self._loaded: weakref.WeakKeyDictionary[asyncio.Task[Any], dict[str, int]] = (
            weakref.WeakKeyDictionary()
        )

    async def _me(self) -> int:
        """This store's owner id, its session lock held (taken again if the session died)."""
        if self._owner_conn is not None and not self._owner_conn.is_closed():
            return self.owner
        async with self._owner_lock:
            if self._owner_conn is None or self._owner_conn.is_closed():
                lost = self._owner_conn is not None
                conn = await asyncpg.connect(
                    self._dsn, timeout=CONNECT_TIMEOUT_S, server_settings=_KEEPALIVE
                )
                owner = self.owner or random.randint(1, 2**31 - 1)
                while not await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", LOCK_NS, owner
                ):
                    owner = random.randint(1, 2**31 - 1)
                await conn.fetchval(_RENEW, owner, self.lease_s)
                if lost:
                    # Until now other replicas could take this store's claims as a dead one's.
                    log.warning("store.owner_session_renewed", owner=owner, was=self.owner)
                self._owner_conn, self.owner = conn, owner
        return self.owner

    def start_heartbeat(self) -> None:
        """Renew the lease every lease_s / 4 for the store's life."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="store-heartbeat")

    async def _beat(self) -> None:
        # Real time, whatever the engine's clock: the lease is judged on the database's
        # clock, so it must be renewed as real time passes (as a network timeout is).
        beats = 0
        while True:
            await asyncio.sleep(self.lease_s / 4)
            await self.beat(beats)
            beats += 1

    async def beat(self, n: int) -> None:
        """The heartbeat's n-th beat: renew the lease, and now and then the housekeeping
        that is due on real time rather than the engine's (each replica does it; it is
        safe to do twice)."""
        try:
            await self.renew_lease(forget=n % 1000 == 0)
            if (n + 1) % max(1, round(HOUSEKEEPING_S / (self.lease_s / 4))) == 0:
                await self.housekeeping()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is away: the next beat tries again
            log.warning("store.heartbeat_failed", error=repr(exc))

    async def housekeeping(self) -> None:
        """What the heartbeat does every HOUSEKEEPING_S (the mixins that need it override)."""

    async def renew_lease(self, *, forget: bool = False) -> float:
        """Renew this store's lease now; how long it had been lapsed (0: it had not). A
        lapsed lease means other replicas may have taken this store's claims: its saves of
        what they took are refused (ConcurrentUpdate), its own go on."""
        me = await self._me()
        async with self._owner_lock:
            conn = self._owner_conn
            assert conn is not None
            lapsed = float(await conn.fetchval(_RENEW, me, self.lease_s))
            if forget:
                await conn.execute(_FORGET)
        if lapsed > 0:
            log.warning("store.lease_lapsed", owner=me, lapsed_s=round(lapsed, 3))
        return max(0.0, lapsed)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._owner_conn is not None and not self._owner_conn.is_closed():
            await self._owner_conn.close()
        await self.pool.close()
