"""The holdout reads (SPEC 12) as SQL both stores run: the text and its parameters are
built together, in order, with the store's placeholder style ("?" or "$1", "$2", ...)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from engine.store.base import StatsQuery

Placeholder = Callable[[int], str]  # the n-th parameter (1-based) -> its placeholder


class Sql:
    """Parameters in order, each as the store's placeholder for it."""

    def __init__(self, placeholder: Placeholder) -> None:
        self.placeholder = placeholder
        self.params: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.params.append(value)
        return self.placeholder(len(self.params))

    def among(self, values: Collection[str]) -> str:
        """`IN (...)` of the values; `IN (NULL)` (nothing matches) for none."""
        if not values:
            return "IN (NULL)"
        return f"IN ({', '.join(self(v) for v in sorted(values))})"


def rule_holdout(
    q: StatsQuery, rules: Collection[str], placeholder: Placeholder
) -> tuple[str, list[Any]]:
    """(rule, group, users, goal conversions, order conversions, revenue) per rule and group
    (see Store.stats_holdout). A user converts by order when one came after an instance
    start, within the window; each order counts once however many instances it follows."""
    p = Sql(placeholder)
    since, until = p(q.since), p(q.until)
    rule = f" AND rule_id = {p(q.rule)}" if q.rule is not None else ""
    named = p.among(rules)
    held_since, held_until = p(q.since), p(q.until)
    window = p(q.window_s)
    sql = (
        "WITH i AS (SELECT rule_id, CASE WHEN holdout IS NULL THEN 'treatment' "
        "ELSE 'holdout' END AS grp, user_id, started_at, status FROM instances "
        f"WHERE started_at >= {since} AND started_at < {until}{rule} "
        "AND (holdout IS NULL OR holdout = 'rule') "
        f"AND (rule_id {named} OR rule_id IN (SELECT rule_id FROM instances "
        f"WHERE holdout = 'rule' AND started_at >= {held_since} AND started_at < {held_until}))), "
        "u AS (SELECT rule_id, grp, count(DISTINCT user_id) AS users, "
        "count(DISTINCT CASE WHEN status = 'converted' THEN user_id END) AS goals "
        "FROM i GROUP BY rule_id, grp), "
        "b AS (SELECT DISTINCT i.rule_id, i.grp, o.user_id, o.order_id, o.total "
        "FROM i JOIN orders o ON o.user_id = i.user_id AND o.at > i.started_at "
        f"AND o.at <= i.started_at + {window}), "
        "r AS (SELECT rule_id, grp, count(DISTINCT user_id) AS buyers, "
        "coalesce(sum(total), 0.0) AS revenue FROM b GROUP BY rule_id, grp) "
        "SELECT u.rule_id, u.grp, u.users, u.goals, coalesce(r.buyers, 0), "
        "coalesce(r.revenue, 0.0) FROM u LEFT JOIN r ON r.rule_id = u.rule_id AND r.grp = u.grp "
        "ORDER BY u.rule_id, u.grp"
    )
    return sql, p.params


def global_holdout(
    q: StatsQuery, rules: Collection[str], placeholder: Placeholder
) -> tuple[str, list[Any]]:
    """(group, users, order conversions, revenue) of the global holdout and everyone else
    (see Store.stats_global_holdout): orders within the window after the user's first
    start of a marketing rule in range."""
    p = Sql(placeholder)
    since, until = p(q.since), p(q.until)
    rule = f" AND rule_id = {p(q.rule)}" if q.rule is not None else ""
    marketing = p.among(rules)
    window = p(q.window_s)
    sql = (
        "WITH i AS (SELECT user_id, holdout, started_at FROM instances "
        f"WHERE started_at >= {since} AND started_at < {until}{rule} "
        f"AND rule_id {marketing} AND (holdout IS NULL OR holdout = 'global')), "
        "u AS (SELECT user_id, max(CASE WHEN holdout = 'global' THEN 1 ELSE 0 END) AS held, "
        "min(started_at) AS first FROM i GROUP BY user_id), "
        "g AS (SELECT held, count(*) AS users FROM u GROUP BY held), "
        "b AS (SELECT u.held, o.user_id, o.total FROM u JOIN orders o "
        f"ON o.user_id = u.user_id AND o.at > u.first AND o.at <= u.first + {window}), "
        "r AS (SELECT held, count(DISTINCT user_id) AS buyers, "
        "coalesce(sum(total), 0.0) AS revenue FROM b GROUP BY held) "
        "SELECT CASE WHEN g.held = 1 THEN 'holdout' ELSE 'treatment' END, g.users, "
        "coalesce(r.buyers, 0), coalesce(r.revenue, 0.0) FROM g LEFT JOIN r ON r.held = g.held "
        "ORDER BY g.held"
    )
    return sql, p.params
