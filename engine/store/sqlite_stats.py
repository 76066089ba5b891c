"""SqliteStore's stats, orders and RFM: reads are GROUP BY queries (nothing is loaded row
by row), on their own connection for a file database."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite

from engine.core.changes import Order
from engine.store import cohort_sql
from engine.store.base import (
    AttributedCounts,
    MessageCounts,
    OrderCounts,
    RfmRow,
    StatsQuery,
    VariantCounts,
)
from engine.store.rows import ORDER_COLUMNS, dumps, order_from, order_row, touch_kind
from engine.store.sqlite_core import Op, SqliteCore, serialized


class SqliteStats(SqliteCore):
    def _order_ops(self, orders: list[Order]) -> list[Op]:
        sql = (
            f"INSERT OR IGNORE INTO orders ({', '.join(ORDER_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(ORDER_COLUMNS))})"
        )
        return [(sql, [order_row(o) for o in orders], True)]

    async def _read(self, sql: str, params: Any = ()) -> list[Any]:
        """A long read (stats, RFM): on its own connection for a file database, so WAL lets
        the engine write meanwhile; through the shared connection for :memory:."""
        reader = await self._stats_reader()
        if reader is None:
            async with self._lock:
                return await self._rows(sql, params)
        async with reader.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _stats_reader(self) -> aiosqlite.Connection | None:
        if not self._reader_tried:
            async with self._lock:
                if not self._reader_tried:
                    rows = await self._rows("SELECT file FROM pragma_database_list WHERE seq = 0")
                    path = rows[0][0] if rows else ""
                    if path:
                        reader = await aiosqlite.connect(path, isolation_level=None)
                        await reader.execute("PRAGMA query_only=ON")
                        await reader.execute("PRAGMA busy_timeout=5000")
                        self._reader = reader
                    self._reader_tried = True
        return self._reader

    async def stats_messages(self, q: StatsQuery) -> list[MessageCounts]:
        rule, params = _rule_filter(q, "rule_id")
        # `+created_at`: scan the covering index messages_stats in GROUP BY order rather
        # than fetch each row of a wide range through messages_created.
        rows = await self._read(
            "SELECT rule_id, step, channel, variant, status, reason, count(*), count(sent_at), "
            "count(delivered_at), count(opened_at), count(clicked_at) FROM messages "
            f"WHERE +created_at >= ? AND +created_at < ?{rule} "
            "GROUP BY rule_id, step, channel, variant, status, reason",
            [q.since, q.until, *params],
        )
        return [tuple(r) for r in rows]

    async def stats_instances(self, q: StatsQuery) -> list[tuple[str, str, int]]:
        rule, params = _rule_filter(q, "rule_id")
        rows = await self._read(
            "SELECT rule_id, status, count(*) FROM instances "
            f"WHERE started_at >= ? AND started_at < ?{rule} GROUP BY rule_id, status",
            [q.since, q.until, *params],
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def stats_attributed(self, q: StatsQuery) -> list[AttributedCounts]:
        k = touch_kind(q.touch)
        rule, params = _rule_filter(q, f"{k}_rule")
        rows = await self._read(
            f"SELECT {k}_rule, {k}_step, {k}_channel, {k}_variant, count(*), "
            "coalesce(sum(total), 0.0) FROM orders "
            f"WHERE +at >= ? AND +at < ? AND {k}_id IS NOT NULL AND at - {k}_at <= ?{rule} "
            f"GROUP BY {k}_rule, {k}_step, {k}_channel, {k}_variant",
            [q.since, q.until, q.window_s, *params],
        )
        return [tuple(r) for r in rows]

    async def stats_variants(self, q: StatsQuery) -> list[VariantCounts]:
        sql, params = cohort_sql.variant_cohorts(q, lambda _n: "?")
        return [tuple(r) for r in await self._read(sql, params)]

    async def stats_orders(self, q: StatsQuery) -> list[OrderCounts]:
        k = touch_kind(q.touch)
        attributed = f"({k}_id IS NOT NULL AND at - {k}_at <= ?)"
        rows = await self._read(
            "SELECT source, count(*), coalesce(sum(total), 0.0), "
            f"coalesce(sum({attributed}), 0), "
            f"coalesce(sum(CASE WHEN {attributed} THEN total END), 0.0) "
            "FROM orders WHERE +at >= ? AND +at < ? GROUP BY source",
            [q.window_s, q.window_s, q.since, q.until],
        )
        return [tuple(r) for r in rows]

    async def orders_of(self, user_id: str, limit: int = 200) -> list[Order]:
        rows = await self._read(
            f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE user_id = ? "
            "ORDER BY at DESC, order_id DESC LIMIT ?",
            (user_id, limit),
        )
        return [order_from(r) for r in rows]

    async def rfm_scores(self) -> list[RfmRow]:
        # Quintiles by mid-rank among the n profiles with orders: a value whose equal values
        # take ranks lo..lo+ties-1 scores 1 + floor(5 * (lo + (ties - 1) / 2 - 0.5) / n),
        # in integers below. Equal values share a score; one customer, or all alike, get 3.
        # Recency orders by the ISO time of the last order (older = lower score).
        def score(value: str) -> str:
            return (
                f"1 + (10 * rank() OVER (ORDER BY {value}) + 5 * count(*) OVER "
                f"(PARTITION BY {value}) - 10) / (2 * n)"
            )

        # Python's encoder may have written NaN or Infinity, which SQLite's JSON refuses:
        # such a profile is read with them as null (RFM reads numbers and times only).
        rows = await self._read(
            "WITH j AS (SELECT user_id, CASE WHEN json_valid(data) THEN data ELSE "
            "replace(replace(replace(data, 'NaN', 'null'), '-Infinity', 'null'), "
            "'Infinity', 'null') END AS data FROM profiles), "
            "p AS (SELECT user_id, json_extract(data, '$.last_order_at') AS last, "
            "CAST(json_extract(data, '$.orders_count') AS INTEGER) AS freq, "
            "coalesce(CAST(json_extract(data, '$.revenue') AS REAL), 0.0) AS money, "
            "json_extract(data, '$.rfm') AS rfm, json_extract(data, '$.rfm_scores') AS scores "
            "FROM j WHERE json_valid(data) AND "
            "CAST(json_extract(data, '$.orders_count') AS INTEGER) > 0), "
            "n AS (SELECT count(*) AS n FROM p) "
            f"SELECT user_id, {score('last')}, {score('freq')}, {score('money')}, rfm, scores "
            "FROM p, n ORDER BY user_id"
        )
        return [(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else None) for r in rows]

    @serialized
    async def set_rfm(self, segments: dict[str, tuple[str, dict[str, int]]]) -> None:
        """Set `rfm` and `rfm_scores` in place (json_set), so a writer in another process
        (`kaskad rfm` beside a running daemon) never overwrites the rest of a profile."""
        await self.db.executemany(
            "UPDATE profiles SET data = json_set(data, '$.rfm', ?, '$.rfm_scores', json(?)) "
            "WHERE user_id = ? AND json_valid(data)",
            [(name, dumps(scores), uid) for uid, (name, scores) in segments.items()],
        )


def _rule_filter(q: StatsQuery, column: str) -> tuple[str, list[Any]]:
    return (f" AND {column} = ?", [q.rule]) if q.rule is not None else ("", [])
