"""What SqliteStore's parts share: the connection, its lock, and one-trip reads."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

from engine.store.health import WriteHealth
from engine.store.rows import INSTANCE_COLUMNS, MESSAGE_COLUMNS

CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit
INSTANCE_SQL = f"SELECT {', '.join(INSTANCE_COLUMNS)} FROM instances"
MESSAGE_SQL = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages"

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="SqliteCore")


def serialized(
    fn: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """One operation at a time on the shared connection: SQLite has one writer, and a
    transaction begun by one task must never see another task's statements inside it."""

    async def locked(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        async with self._lock:
            return await fn(self, *args, **kwargs)

    functools.update_wrapper(locked, fn)
    return locked


class SqliteCore(WriteHealth):
    """The state every part of SqliteStore works on (set by SqliteStore.__init__)."""

    poll_s: float | None = None  # one daemon per file: nobody else leaves work in it
    db: aiosqlite.Connection
    _lock: asyncio.Lock
    _reader: aiosqlite.Connection | None  # stats reads (a file database)
    _reader_tried: bool

    async def _rows(self, sql: str, params: Any = ()) -> list[Any]:
        # One trip to the connection's thread (execute, fetch and close in one call).
        return list(await self.db.execute_fetchall(sql, params))

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run fn on the connection in its own thread: a whole unit of statements for one
        trip (each trip hands the GIL to that thread and back, which is what costs under a
        busy event loop). aiosqlite's queue, so it runs in order with every other call."""
        conn = self.db._conn  # aiosqlite runs fn in the thread that owns it
        result: R = await self.db._execute(fn, conn)  # type: ignore[no-untyped-call]
        return result

    async def _script(self, ops: list[Op]) -> None:
        """Write statements in one transaction (BEGIN IMMEDIATE ... COMMIT), one trip."""
        await self._in_thread(functools.partial(run_ops, ops))


# A write statement of a unit: (sql, parameters, executemany?).
Statement = tuple[str, Any, bool]
# Or statements that depend on what the store holds: made in the connection's thread, inside
# the unit's transaction, from its reads (one trip, and nothing changes between the read
# and the write).
Deferred = Callable[[sqlite3.Connection], list[Statement]]
Op = Statement | Deferred


def run_ops(ops: list[Op], conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            for sql, params, many in op(conn) if callable(op) else (op,):
                if many:
                    conn.executemany(sql, params)
                else:
                    conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
