"""PostgresStore's trend reads: the deltas folded into the hourly and daily rows, then
those summed into buckets (trends_sql)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import asyncpg

from engine.store.base import TrendMessages, TrendOrders
from engine.store.postgres_core import LOCK_NS
from engine.store.trends_sql import (
    DAY,
    FOLD_MESSAGES,
    FOLD_ORDERS,
    RULE_IDS,
    WINDOW_SETTING,
    hour_range,
    read_errors,
    read_messages,
    read_orders,
    rebuild_orders,
    spans,
)

if TYPE_CHECKING:
    from engine.store.postgres_core import Conn

_TRENDS_FOLD = -3  # the advisory lock (LOCK_NS, -3): folding the trend deltas


def _spans(since: float, until: float, bucket: int) -> list[tuple[str, int, int]]:
    low, high = hour_range(since, until)
    return spans(low, high) if bucket % DAY == 0 else [("hours", low, high)]


class PostgresTrends:
    pool: asyncpg.Pool[asyncpg.Record]

    async def trend_messages(
        self, since: float, until: float, rule: str | None, bucket: int, detail: bool = True
    ) -> list[TrendMessages]:
        out: list[Any] = []
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await _fold(conn)
            for grain, low, high in _spans(since, until, bucket):
                args = [low, high] + ([rule] if rule is not None else [])
                sql = read_messages(grain, bucket, rule is not None, "postgres", detail)
                out += [tuple(r) for r in await conn.fetch(sql, *args)]
        return out

    async def trend_orders(
        self,
        since: float,
        until: float,
        rule: str | None,
        touch: str,
        window_s: float,
        bucket: int,
        detail: bool = True,
    ) -> list[TrendOrders]:
        out: list[Any] = []
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await _fold(conn)
                stored = await conn.fetchval(
                    "SELECT value FROM stats_settings WHERE name = $1", WINDOW_SETTING
                )
                if stored != window_s:
                    await _rebuild_orders(conn, window_s)
            for grain, low, high in _spans(since, until, bucket):
                args = [low, high, touch] + ([rule] if rule is not None else [])
                sql = read_orders(grain, bucket, rule is not None, "postgres", detail)
                out += [tuple(r) for r in await conn.fetch(sql, *args)]
        return out

    async def housekeeping(self) -> None:
        """The heartbeat folds the deltas every few minutes, so the dashboard's first read
        after a quiet spell does not fold hours of them."""
        async with self.pool.acquire() as conn, conn.transaction():
            await _fold(conn)

    async def instance_rules(self) -> list[str]:
        return [r[0] for r in await self.pool.fetch(RULE_IDS)]

    async def instance_errors(self, since: float, until: float) -> dict[str, int]:
        rows = await self.pool.fetch(read_errors("postgres"), since, until)
        return {r[0]: r[1] for r in rows}


async def _fold(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NS, _TRENDS_FOLD)
    await conn.execute(FOLD_MESSAGES)
    await conn.execute(FOLD_ORDERS)


async def _rebuild_orders(conn: Conn, window_s: float) -> None:
    """order_* again from the orders, attributed within another window: no order is
    written meanwhile (SHARE waits for the writers in flight, whose deltas are then in)."""
    await conn.execute("LOCK TABLE orders IN SHARE MODE")
    await conn.execute(
        "INSERT INTO stats_settings VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        WINDOW_SETTING,
        window_s,
    )
    await conn.execute("DELETE FROM order_delta")
    for sql in rebuild_orders("postgres"):
        await conn.execute(sql)
