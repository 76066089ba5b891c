"""SqliteStore's trend reads: the hourly and daily rows (trends_sql) summed into buckets."""

from __future__ import annotations

from typing import Any

from engine.store.base import TrendMessages, TrendOrders
from engine.store.sqlite_core import serialized
from engine.store.sqlite_stats import SqliteStats
from engine.store.trends_sql import (
    DAY,
    RULE_IDS,
    WINDOW_SETTING,
    hour_range,
    read_errors,
    read_messages,
    read_orders,
    rebuild_orders,
    spans,
)


def _spans(since: float, until: float, bucket: int) -> list[tuple[str, int, int]]:
    low, high = hour_range(since, until)
    return spans(low, high) if bucket % DAY == 0 else [("hours", low, high)]


class SqliteTrends(SqliteStats):
    async def trend_messages(
        self, since: float, until: float, rule: str | None, bucket: int, detail: bool = True
    ) -> list[TrendMessages]:
        out: list[Any] = []
        for grain, low, high in _spans(since, until, bucket):
            params = [low, high] + ([rule] if rule is not None else [])
            sql = read_messages(grain, bucket, rule is not None, "sqlite", detail)
            out += [tuple(r) for r in await self._read(sql, params)]
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
        await self._attribution_window(window_s)
        out: list[Any] = []
        for grain, low, high in _spans(since, until, bucket):
            params = [low, high, touch] + ([rule] if rule is not None else [])
            sql = read_orders(grain, bucket, rule is not None, "sqlite", detail)
            out += [tuple(r) for r in await self._read(sql, params)]
        return out

    async def instance_rules(self) -> list[str]:
        return [r[0] for r in await self._read(RULE_IDS)]

    async def instance_errors(self, since: float, until: float) -> dict[str, int]:
        rows = await self._read(read_errors("sqlite"), (since, until))
        return {r[0]: r[1] for r in rows}

    async def _attribution_window(self, window_s: float) -> None:
        rows = await self._read(
            "SELECT value FROM stats_settings WHERE name = ?", (WINDOW_SETTING,)
        )
        if not rows or rows[0][0] != window_s:
            await self._rebuild_order_rows(window_s)

    @serialized
    async def _rebuild_order_rows(self, window_s: float) -> None:
        """order_* again from the orders, attributed within another window."""
        await self.db.execute("BEGIN IMMEDIATE")
        try:
            await self.db.execute(
                "INSERT OR REPLACE INTO stats_settings VALUES (?, ?)", (WINDOW_SETTING, window_s)
            )
            for sql in rebuild_orders("sqlite"):
                await self.db.execute(sql)
            await self.db.execute("COMMIT")
        except BaseException:
            await self.db.execute("ROLLBACK")
            raise
