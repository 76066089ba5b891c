"""The A/B cohort read (Store.stats_variants) as SQL both stores run.

Each part starts from the few rows that can count, through an index made for it, rather
than testing every instance of the range (1M messages: 0.07 s for a rule instead of 0.4 s):

- users: the instances with a variant started in range (`instances_variant_started`,
  partial: A/B instances only);
- clickers: the clicked messages (`messages_clicked`, partial), each joined to its
  instance for the variant and the start time (CROSS JOIN keeps SQLite's planner on that
  order; PostgreSQL plans it as an inner join);
- converters: the orders whose touch of this kind carries a variant (`orders_<touch>_
  variant`, partial), within the window, whose user has an instance of that rule and
  variant started in range (`instances_starts`).
"""

from __future__ import annotations

from typing import Any

from engine.store.base import StatsQuery
from engine.store.holdout_sql import Placeholder, Sql
from engine.store.rows import touch_kind


def variant_cohorts(q: StatsQuery, placeholder: Placeholder) -> tuple[str, list[Any]]:
    """(rule, variant, users, clickers, converters) per rule and variant, in that order."""
    k = touch_kind(q.touch)
    p = Sql(placeholder)

    def rule(column: str) -> str:
        return f" AND {column} = {p(q.rule)}" if q.rule is not None else ""

    users = (
        "SELECT rule_id, variant, count(DISTINCT user_id) AS n FROM instances "
        f"WHERE variant IS NOT NULL AND started_at >= {p(q.since)} "
        f"AND started_at < {p(q.until)}{rule('rule_id')} GROUP BY rule_id, variant"
    )
    clickers = (
        "SELECT i.rule_id, i.variant, count(DISTINCT i.user_id) AS n "
        "FROM messages m CROSS JOIN instances i WHERE m.clicked_at IS NOT NULL"
        f"{rule('m.rule_id')} AND i.id = m.instance_id AND i.variant IS NOT NULL "
        f"AND i.started_at >= {p(q.since)} AND i.started_at < {p(q.until)} "
        "GROUP BY i.rule_id, i.variant"
    )
    converters = (
        f"SELECT o.{k}_rule AS rule_id, o.{k}_variant AS variant, "
        "count(DISTINCT o.user_id) AS n FROM orders o "
        f"WHERE o.{k}_variant IS NOT NULL{rule(f'o.{k}_rule')} "
        f"AND o.at - o.{k}_at <= {p(q.window_s)} AND EXISTS (SELECT 1 FROM instances i "
        f"WHERE i.user_id = o.user_id AND i.rule_id = o.{k}_rule "
        f"AND i.variant = o.{k}_variant AND i.started_at >= {p(q.since)} "
        f"AND i.started_at < {p(q.until)}) GROUP BY o.{k}_rule, o.{k}_variant"
    )
    sql = (
        f"WITH u AS ({users}), c AS ({clickers}), x AS ({converters}) "
        "SELECT u.rule_id, u.variant, u.n, coalesce(c.n, 0), coalesce(x.n, 0) FROM u "
        "LEFT JOIN c ON c.rule_id = u.rule_id AND c.variant = u.variant "
        "LEFT JOIN x ON x.rule_id = u.rule_id AND x.variant = u.variant "
        "ORDER BY u.rule_id, u.variant"
    )
    return sql, p.params
