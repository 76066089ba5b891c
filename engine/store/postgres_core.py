"""What PostgresStore's parts share: the pool, the store's owner id (a session advisory
lock held for the store's life) and the SQL that tells a live claim from a void one."""

from __future__ import annotations

import asyncio
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

# Owner ids whose session is alive: they hold their (LOCK_NS, id) advisory lock in this
# database.
LIVE_OWNERS = (
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
    f"AND classid = {LOCK_NS} AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def free(column: str, me: str) -> str:
    """SQL: the row is unclaimed, claimed by this store, or by a store that is gone."""
    return f"({column} IS NULL OR {column} = {me} OR {column} NOT IN ({LIVE_OWNERS}))"


def row_count(status: str) -> int:
    """The row count of a command status such as 'UPDATE 3'."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresCore(WriteHealth):
    """The state every part of PostgresStore works on."""

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
                if lost:
                    # Until now other replicas could take this store's claims as a dead one's.
                    log.warning("store.owner_session_renewed", owner=owner, was=self.owner)
                self._owner_conn, self.owner = conn, owner
        return self.owner

    async def close(self) -> None:
        if self._owner_conn is not None and not self._owner_conn.is_closed():
            await self._owner_conn.close()
        await self.pool.close()
