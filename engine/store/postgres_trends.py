"""PostgresStore's trend reads: the deltas folded into the hourly rows, then those summed
into buckets (trends_sql)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from engine.store.base import TrendMessages, TrendOrders
from engine.store.postgres_core import LOCK_NS
from engine.store.trends_sql import (
    FOLD_MESSAGES,
    FOLD_ORDERS,
    WINDOW_SETTING,
    orders_rollup,
    read_errors,
    read_messages,
    read_orders,
)

if TYPE_CHECKING:
    from engine.store.postgres_core import Conn

_TRENDS_FOLD = -3  # the advisory lock (LOCK_NS, -3): folding the trend deltas


class PostgresTrends:
    pool: asyncpg.Pool[asyncpg.Record]

    async def trend_messages(
        self, since: float, until: float, rule: str | None, bucket: int
    ) -> list[TrendMessages]:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await _fold(conn)
            args = [since, until] + ([rule] if rule is not None else [])
            rows = await conn.fetch(read_messages(bucket, rule is not None, "postgres"), *args)
        return [tuple(r) for r in rows]

    async def trend_orders(
        self, since: float, until: float, rule: str | None, touch: str, window_s: float, bucket: int
    ) -> list[TrendOrders]:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await _fold(conn)
                stored = await conn.fetchval(
                    "SELECT value FROM stats_settings WHERE name = $1", WINDOW_SETTING
                )
                if stored != window_s:
                    await _rebuild_orders(conn, window_s)
            args = [since, until, touch] + ([rule] if rule is not None else [])
            rows = await conn.fetch(read_orders(bucket, rule is not None, "postgres"), *args)
        return [tuple(r) for r in rows]

    async def instance_errors(self, since: float, until: float) -> dict[str, int]:
        rows = await self.pool.fetch(read_errors("postgres"), since, until)
        return {r[0]: r[1] for r in rows}


async def _fold(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NS, _TRENDS_FOLD)
    await conn.execute(FOLD_MESSAGES)
    await conn.execute(FOLD_ORDERS)


async def _rebuild_orders(conn: Conn, window_s: float) -> None:
    """order_hours again from the orders, attributed within another window: no order is
    written meanwhile (SHARE waits for the writers in flight, whose deltas are then in)."""
    await conn.execute("LOCK TABLE orders IN SHARE MODE")
    await conn.execute(
        "INSERT INTO stats_settings VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        WINDOW_SETTING,
        window_s,
    )
    await conn.execute("DELETE FROM order_hours_delta")
    await conn.execute("DELETE FROM order_hours")
    await conn.execute(f"INSERT INTO order_hours {orders_rollup('orders', '1', 'postgres')}")
