"""SqliteStore's holdout reads (SPEC 12): a rule's control group and the global holdout
against the rest."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from engine.store import holdout_sql
from engine.store.base import GlobalHoldoutCounts, HoldoutCounts, StatsQuery


def _mark(_: int) -> str:
    return "?"


class SqliteHoldout:
    _read: Callable[..., Awaitable[list[Any]]]

    async def stats_holdout(self, q: StatsQuery, rules: Collection[str]) -> list[HoldoutCounts]:
        sql, params = holdout_sql.rule_holdout(q, rules, _mark)
        rows = await self._read(sql, params)
        return [(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), float(r[5])) for r in rows]

    async def stats_global_holdout(
        self, q: StatsQuery, rules: Collection[str]
    ) -> list[GlobalHoldoutCounts]:
        sql, params = holdout_sql.global_holdout(q, rules, _mark)
        rows = await self._read(sql, params)
        return [(r[0], int(r[1]), int(r[2]), float(r[3])) for r in rows]
