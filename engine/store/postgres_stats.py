"""The PostgreSQL store's stats, orders and RFM reads: the GROUP BY queries of
SqliteStore's, in PostgreSQL's dialect."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

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
from engine.store.rows import ORDER_COLUMNS, order_from, touch_kind

_COLS_ORDER = ", ".join(ORDER_COLUMNS)
# An order counts once: sent again, the first one stays (SQLite's INSERT OR IGNORE).
INSERT_ORDER = (
    f"INSERT INTO orders ({_COLS_ORDER}) "
    f"VALUES ({', '.join(f'${n}' for n in range(1, len(ORDER_COLUMNS) + 1))}) "
    "ON CONFLICT (user_id, order_id) DO NOTHING"
)


class PostgresStats:
    pool: asyncpg.Pool[asyncpg.Record]

    async def stats_messages(self, q: StatsQuery) -> list[MessageCounts]:
        rule, params = _rule_filter(q, "rule_id", 3)
        rows = await self.pool.fetch(
            "SELECT rule_id, step, channel, variant, status, reason, count(*), count(sent_at), "
            "count(delivered_at), count(opened_at), count(clicked_at) FROM messages "
            f"WHERE created_at >= $1 AND created_at < $2{rule} "
            "GROUP BY rule_id, step, channel, variant, status, reason",
            q.since,
            q.until,
            *params,
        )
        return [tuple(r) for r in rows]

    async def stats_instances(self, q: StatsQuery) -> list[tuple[str, str, int]]:
        rule, params = _rule_filter(q, "rule_id", 3)
        rows = await self.pool.fetch(
            "SELECT rule_id, status, count(*) FROM instances "
            f"WHERE started_at >= $1 AND started_at < $2{rule} GROUP BY rule_id, status",
            q.since,
            q.until,
            *params,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def stats_attributed(self, q: StatsQuery) -> list[AttributedCounts]:
        k = touch_kind(q.touch)
        rule, params = _rule_filter(q, f"{k}_rule", 4)
        rows = await self.pool.fetch(
            f"SELECT {k}_rule, {k}_step, {k}_channel, {k}_variant, count(*), "
            "coalesce(sum(total), 0.0) FROM orders "
            f"WHERE at >= $1 AND at < $2 AND {k}_id IS NOT NULL AND at - {k}_at <= $3{rule} "
            f"GROUP BY {k}_rule, {k}_step, {k}_channel, {k}_variant",
            q.since,
            q.until,
            q.window_s,
            *params,
        )
        return [tuple(r) for r in rows]

    async def stats_variants(self, q: StatsQuery) -> list[VariantCounts]:
        sql, params = cohort_sql.variant_cohorts(q, lambda n: f"${n}")
        return [tuple(r) for r in await self.pool.fetch(sql, *params)]

    async def stats_orders(self, q: StatsQuery) -> list[OrderCounts]:
        k = touch_kind(q.touch)
        attributed = f"{k}_id IS NOT NULL AND at - {k}_at <= $1"
        rows = await self.pool.fetch(
            "SELECT source, count(*), coalesce(sum(total), 0.0), "
            f"count(*) FILTER (WHERE {attributed}), "
            f"coalesce(sum(total) FILTER (WHERE {attributed}), 0.0) "
            "FROM orders WHERE at >= $2 AND at < $3 GROUP BY source",
            q.window_s,
            q.since,
            q.until,
        )
        return [tuple(r) for r in rows]

    async def orders_of(self, user_id: str, limit: int = 200) -> list[Order]:
        rows = await self.pool.fetch(
            f"SELECT {_COLS_ORDER} FROM orders WHERE user_id = $1 "
            "ORDER BY at DESC, order_id DESC LIMIT $2",
            user_id,
            limit,
        )
        return [order_from(tuple(r)) for r in rows]

    async def rfm_scores(self) -> list[RfmRow]:
        # As SqliteStore: quintiles by mid-rank among the n profiles with orders, a value
        # whose equal values take ranks lo..lo+ties-1 scoring
        # 1 + floor(5 * (lo + (ties - 1) / 2 - 0.5) / n) in integers; recency orders by the
        # ISO time of the last order (older = lower score, none = lowest).
        def score(value: str) -> str:
            return (
                f"1 + (10 * rank() OVER (ORDER BY {value} NULLS FIRST) + 5 * count(*) OVER "
                f"(PARTITION BY {value}) - 10) / (2 * n)"
            )

        rows = await self.pool.fetch(
            f"WITH d AS (SELECT user_id, {_PROFILE_JSONB} AS d FROM profiles), "
            "p AS (SELECT user_id, (d ->> 'last_order_at') COLLATE \"C\" AS last, "
            f"{_sql_int('orders_count')} AS freq, "
            f"coalesce({_sql_real('revenue')}, 0.0) AS money, "
            "d ->> 'rfm' AS rfm, d ->> 'rfm_scores' AS scores FROM d), "
            "w AS (SELECT * FROM p WHERE freq > 0), n AS (SELECT count(*) AS n FROM w) "
            f"SELECT user_id, {score('last')}, {score('freq')}, {score('money')}, rfm, scores "
            "FROM w, n ORDER BY user_id"
        )
        return [
            (r[0], int(r[1]), int(r[2]), int(r[3]), r[4], json.loads(r[5]) if r[5] else None)
            for r in rows
        ]


# Profiles are JSON text; Python's encoder may have written NaN or Infinity, which jsonb
# refuses: read those as null (a string holding them is read the same way, which RFM, that
# reads numbers and times only, does not mind).
_PROFILE_JSONB = (
    "(CASE WHEN data LIKE '%NaN%' OR data LIKE '%Infinity%' "
    "THEN regexp_replace(data, '(?<=[:,\\[])-?(NaN|Infinity)(?=[,}\\]])', 'null', 'g') "
    "ELSE data END)::jsonb"
)


def _sql_int(key: str) -> str:
    """SQLite's CAST(json_extract(data, '$.key') AS INTEGER): numbers truncated, a string's
    leading integer (else 0), anything else NULL."""
    return (
        f"(CASE jsonb_typeof(d -> '{key}') WHEN 'number' THEN trunc((d ->> '{key}')::numeric) "
        f"WHEN 'string' THEN coalesce(substring(d ->> '{key}' FROM '^\\s*[-+]?[0-9]+')::numeric"
        ", 0) END)"
    )


def _sql_real(key: str) -> str:
    """SQLite's CAST(json_extract(data, '$.key') AS REAL), as _sql_int."""
    return (
        f"(CASE jsonb_typeof(d -> '{key}') WHEN 'number' THEN (d ->> '{key}')::float8 "
        f"WHEN 'string' THEN coalesce(substring(d ->> '{key}' "
        "FROM '^\\s*[-+]?(?:[0-9]+\\.?[0-9]*|\\.[0-9]+)(?:[eE][-+]?[0-9]+)?')::float8, 0.0) END)"
    )


def _rule_filter(q: StatsQuery, column: str, n: int) -> tuple[str, list[Any]]:
    return (f" AND {column} = ${n}", [q.rule]) if q.rule is not None else ("", [])
