"""The dashboard's pages: overview, a rule, messages, templates (a user:
users.py, a template: preview.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.dashboard.act import rule_actions
from engine.api.dashboard.auth import page
from engine.api.dashboard.data import load_stats, merge_rules, since_context
from engine.api.dashboard.render import html
from engine.api.dashboard.trend_charts import rule_trends
from engine.api.params import path_id
from engine.api.state import STATE


def _since_context(request: web.Request) -> tuple[float | None, dict[str, Any]]:
    return since_context(request.query.get("since"), request.app[STATE].clock.now())


@page
async def rule_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rule_id = path_id(request, "rule")
    since, context = _since_context(request)
    stats, stats_error = await load_stats(state, rule=rule_id, since=since)
    rows = [r for r in merge_rules(state.rules.describe(), stats) if r["id"] == rule_id]
    if not rows:
        return html(
            request, "error.html", 404, title="No such rule", message=f"No rule '{rule_id}'."
        )
    loaded = state.rules.current.rules.get(rule_id)
    recent = await state.store.messages(rule=rule_id, limit=20)
    return html(
        request,
        "rule.html",
        400 if context["notice"] else 200,
        row=rows[0],
        rule=loaded,
        stats_error=stats_error,
        messages=recent,
        trends=await rule_trends(state, rule_id, since),
        act=await rule_actions(request, rule_id),
        **context,
    )


@page
async def templates_page(request: web.Request) -> web.Response:
    ruleset = request.app[STATE].rules.current
    used: dict[str, list[str]] = {}
    for rule in ruleset.rules.values():
        for name in rule.templates:
            used.setdefault(name, []).append(rule.id)
    templates = [
        {"name": t.name, "path": t.path, "channels": sorted(t.channels), "rules": used.get(n, [])}
        for n, t in sorted(ruleset.templates.items())
    ]
    return html(request, "templates.html", templates=templates)
