"""The overview (`/`): every rule in one sortable, filterable table with a sparkline, the
overall trends, and the global holdout; read from the hourly rows (engine.measure.trends),
never from the message log, so it stays fast with many rules and messages.

Sorting and filtering are links and a GET form (no script): `sort` (id, state, sends,
conversions, revenue, errors), `dir` (asc, desc), `state`, `channel` (one the rule's
steps send on), `group`, `q` (text in the rule id). Rules with no messages nor conversions
in the range are listed apart, folded in a <details>.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from markupsafe import Markup

from engine.api.dashboard.auth import page
from engine.api.dashboard.data import merge_rules, since_context
from engine.api.dashboard.render import html, query_url
from engine.api.dashboard.trend_charts import trend_panels
from engine.api.errors import InvalidParameter
from engine.api.state import STATE, AppState
from engine.lang.policies_config import Attribution
from engine.lang.rules import Rule
from engine.measure.holdout import measure_holdouts
from engine.measure.stats import MAX_TIME, MIN_TIME, clamp
from engine.measure.trend_svg import sparkline
from engine.measure.trends import HOUR, Series, Trends, load_trends
from engine.store.base import StatsQuery

log = structlog.get_logger("kaskad.dashboard")

SORTS = ("id", "state", "sends", "conversions", "revenue", "errors")
FILTERS = ("state", "channel", "group", "q")
MAX_FILTER_CHARS = 200


@dataclass
class RuleRow:
    id: str
    name: str
    state: str
    errors: list[str]
    group: str | None = None
    channels: set[str] = field(default_factory=set)
    sends: int = 0
    conversions: int = 0
    revenue: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    stopped: int = 0
    spark: Markup = field(default_factory=Markup)
    quiet: bool = True

    @property
    def error_count(self) -> int:
        return self.failed + self.stopped + len(self.errors)

    def key(self, sort: str) -> Any:
        if sort == "id":
            return self.id
        if sort == "state":
            return (self.state, self.id)
        if sort == "revenue":
            return sum(self.revenue.values())
        if sort == "errors":
            return self.error_count
        return getattr(self, sort)


def parse_params(query: Any) -> dict[str, str]:
    params: dict[str, str] = {}
    for name in FILTERS:
        value = query.get(name, "").strip()
        if len(value) > MAX_FILTER_CHARS:
            raise InvalidParameter(name, f"at most {MAX_FILTER_CHARS} characters")
        if value:
            params[name] = value
    sort = query.get("sort") or "id"
    if sort not in SORTS:
        raise InvalidParameter("sort", f"one of {', '.join(SORTS)}")
    direction = query.get("dir") or ("asc" if sort in ("id", "state") else "desc")
    if direction not in ("asc", "desc"):
        raise InvalidParameter("dir", "asc or desc")
    return {**params, "sort": sort, "dir": direction}


def rule_rows(
    loaded: Mapping[str, Rule],
    t: Trends,
    errors: dict[str, int],
    described: dict[str, Any],
    with_instances: Collection[str] = (),
) -> list[RuleRow]:
    """Every loaded, broken or gone-with-data rule (messages or orders in the range, or
    instances of any time, as in /v1/stats) with its numbers over the range."""
    rows: dict[str, RuleRow] = {}
    for r in merge_rules(described, None):
        rows[r["id"]] = RuleRow(r["id"], r["name"], r["state"], list(r["errors"]))
    for d in described.get("rules", []):
        rows[d["id"]].channels |= set(d.get("channels") or ())
    for rid in set(t.rules) | set(errors) | set(with_instances):
        rows.setdefault(rid, RuleRow(rid, rid, "deleted", []))
    per = "hour" if t.bucket == HOUR else "day"
    for rid, row in rows.items():
        rule = loaded.get(rid)
        row.group = rule.group if rule is not None else None
        s = t.rules.get(rid, Series())
        row.channels |= s.channels
        row.sends, row.conversions = s.total("sends"), s.total("conversions")
        row.revenue, row.failed = s.revenue_total(), s.total("failed")
        row.stopped = errors.get(rid, 0)
        row.quiet = s.quiet and not row.stopped
        if not s.quiet:
            row.spark = sparkline(
                t.values(s, "sends"),
                title=f"Sends per {per} of {rid}: {row.sends} in all",
            )
    return list(rows.values())


def select(rows: list[RuleRow], params: dict[str, str]) -> list[RuleRow]:
    text = params.get("q", "").lower()
    out = [
        r
        for r in rows
        if (not text or text in r.id.lower())
        and ("state" not in params or r.state == params["state"])
        and ("channel" not in params or params["channel"] in r.channels)
        and ("group" not in params or r.group == params["group"])
    ]
    out.sort(key=lambda r: r.id)
    out.sort(key=lambda r: r.key(params["sort"]), reverse=params["dir"] == "desc")
    return out


async def _holdout(state: AppState, since: float | None, now: float) -> dict[str, Any] | None:
    """The global holdout, when there is one (its control group's rows are few)."""
    policies = state.config.policies
    if policies.global_holdout_pct <= 0:
        return None
    q = StatsQuery(
        since=clamp(since) if since is not None else MIN_TIME,
        until=MAX_TIME,
        rule=None,
        touch=policies.attribution.touch,
        window_s=policies.attribution.window_s,
    )
    _, global_holdout = await measure_holdouts(state.store, q, state.rules.current, policies)
    return global_holdout


def overview_context(
    *,
    t: Trends,
    errors: dict[str, int],
    described: dict[str, Any],
    loaded: Mapping[str, Rule],
    params: dict[str, str],
    since_param: str | None,
    attribution: Attribution,
    global_holdout: dict[str, Any] | None,
    with_instances: Collection[str] = (),
) -> dict[str, Any]:
    """What overview.html shows (apart from the frame's since/notice)."""
    rows = rule_rows(loaded, t, errors, described, with_instances)
    shown = select(rows, params)
    base = {k: v for k, v in params.items() if k in FILTERS}
    since = since_param if since_param != "all" else None

    def sort_link(column: str) -> str:
        same = params["sort"] == column
        direction = ("desc" if params["dir"] == "asc" else "asc") if same else None
        return query_url("/", since=since, sort=column, dir=direction, **base)

    return {
        "rows": [r for r in shown if not r.quiet],
        "quiet": [r for r in shown if r.quiet],
        "total": len(rows),
        "params": params,
        "sort_link": sort_link,
        "choices": {
            "state": sorted({r.state for r in rows}),
            "channel": sorted({c for r in rows for c in r.channels}),
            "group": sorted({r.group for r in rows if r.group}),
        },
        "problems": described.get("problems", []),
        "panels": trend_panels(t, t.overall, "all rules"),
        "per": "hour" if t.bucket == HOUR else "day",
        "orders": t.orders,
        "overall": t.overall,
        "attribution": attribution,
        "global_holdout": global_holdout,
    }


@page
async def overview(request: web.Request) -> web.Response:
    state = request.app[STATE]
    now = state.clock.now()
    since, context = since_context(request.query.get("since"), now)
    params = parse_params(request.query)
    described = state.rules.describe()
    problem: str | None = None
    try:
        t = await load_trends(
            state.store, policies=state.config.policies, since=since, until=now, detail=False
        )
        errors = await state.store.instance_errors(
            clamp(since) if since is not None else MIN_TIME, MAX_TIME
        )
        global_holdout = await _holdout(state, since, now)
        with_instances = await state.store.instance_rules()
    except Exception as exc:
        log.exception("dashboard.overview_failed")
        problem = f"Statistics could not be read ({type(exc).__name__}); see the log."
        t = Trends(HOUR, [], {}, Series(), Series(), {})
        errors, global_holdout, with_instances = {}, None, []
    body = overview_context(
        t=t,
        errors=errors,
        described=described,
        loaded=state.rules.current.rules,
        params=params,
        since_param=context["since_param"],
        attribution=state.config.policies.attribution,
        global_holdout=global_holdout,
        with_instances=with_instances,
    )
    return html(
        request,
        "overview.html",
        400 if context["notice"] else 200,
        stats_error=problem,
        **body,
        **context,
    )
