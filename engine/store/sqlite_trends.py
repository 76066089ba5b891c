"""SqliteStore's trend reads: the hourly rows (trends_sql) summed into buckets."""

from __future__ import annotations

from engine.store.base import TrendMessages, TrendOrders
from engine.store.sqlite_core import serialized
from engine.store.sqlite_stats import SqliteStats
from engine.store.trends_sql import (
    WINDOW_SETTING,
    orders_rollup,
    read_errors,
    read_messages,
    read_orders,
)


class SqliteTrends(SqliteStats):
    async def trend_messages(
        self, since: float, until: float, rule: str | None, bucket: int
    ) -> list[TrendMessages]:
        params: list[object] = [since, until] + ([rule] if rule is not None else [])
        rows = await self._read(read_messages(bucket, rule is not None, "sqlite"), params)
        return [tuple(r) for r in rows]

    async def trend_orders(
        self, since: float, until: float, rule: str | None, touch: str, window_s: float, bucket: int
    ) -> list[TrendOrders]:
        await self._attribution_window(window_s)
        params: list[object] = [since, until, touch] + ([rule] if rule is not None else [])
        rows = await self._read(read_orders(bucket, rule is not None, "sqlite"), params)
        return [tuple(r) for r in rows]

    async def instance_errors(self, since: float, until: float) -> dict[str, int]:
        rows = await self._read(read_errors("sqlite"), (since, until))
        return {r[0]: r[1] for r in rows}

    async def _attribution_window(self, window_s: float) -> None:
        rows = await self._read(
            "SELECT value FROM stats_settings WHERE name = ?", (WINDOW_SETTING,)
        )
        if not rows or rows[0][0] != window_s:
            await self._rebuild_order_hours(window_s)

    @serialized
    async def _rebuild_order_hours(self, window_s: float) -> None:
        """order_hours again from the orders, attributed within another window."""
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            await self.db.execute(
                "INSERT OR REPLACE INTO stats_settings VALUES (?, ?)", (WINDOW_SETTING, window_s)
            )
            await self.db.execute("DELETE FROM order_hours")
            await self.db.execute(
                f"INSERT INTO order_hours {orders_rollup('orders', '1', 'sqlite')}"
            )
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
