"""SqliteStore's journey counts (engine/core/journey.py): added to inside save's
transaction, read per rule and range from the primary key (rule, hour, ...)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine.core.changes import JourneyKey
from engine.store.base import JourneyCounts, StatsQuery
from engine.store.sqlite_core import Op
from engine.store.sqlite_stats import SqliteStats


class SqliteJourney(SqliteStats):
    """Reads through SqliteStats' reader connection."""

    def _journey_ops(self, counts: Counter[JourneyKey]) -> list[Op]:
        """Statements for save's transaction."""
        return [
            (
                "INSERT INTO journey_counts (rule_id, step, edge, hour, n) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (rule_id, hour, step, edge) DO UPDATE SET n = n + excluded.n",
                [(*key, n) for key, n in sorted(counts.items()) if n],
                True,
            )
        ]

    async def journey_counts(self, q: StatsQuery) -> list[JourneyCounts]:
        # The hour a range starts in counts whole (the rows are hours).
        params: list[Any] = [q.since // 3600 * 3600, q.until]
        rule = ""
        if q.rule is not None:
            rule, params = "rule_id = ? AND ", [q.rule, *params]
        rows = await self._read(
            "SELECT rule_id, step, edge, sum(n) FROM journey_counts "
            f"WHERE {rule}hour >= ? AND hour < ? GROUP BY rule_id, step, edge",
            params,
        )
        return [(r[0], r[1], r[2], int(r[3])) for r in rows]
