"""The dashboard's pages: overview, a rule, messages, a user, templates and a template."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from channels.kinds import find_kind
from engine.api.admin import timeline
from engine.api.dashboard.auth import page
from engine.api.dashboard.data import load_stats, merge_rules, since_context
from engine.api.dashboard.render import html
from engine.api.params import ident, path_id
from engine.api.state import STATE
from engine.core.preview import SAMPLE_FACTS, SAMPLE_USER, render_channels, sample_trigger


def _since_context(request: web.Request) -> tuple[float | None, dict[str, Any]]:
    return since_context(request.query.get("since"), request.app[STATE].clock.now())


@page
async def overview(request: web.Request) -> web.Response:
    state = request.app[STATE]
    since, context = _since_context(request)
    stats, stats_error = await load_stats(state, since=since)
    described = state.rules.describe()
    return html(
        request,
        "overview.html",
        400 if context["notice"] else 200,
        rules=merge_rules(described, stats),
        problems=described.get("problems", []),
        stats=stats,
        stats_error=stats_error,
        **context,
    )


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
        **context,
    )


@page
async def users_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = request.query.get("q", "").strip()
    found: dict[str, Any] | None = None
    similar: list[str] = []
    if query:
        ident(query, "q")
        found = await timeline(state.store, query, state.config.policies.attribution)
        if not found["timeline"]:
            found = None
        similar = [u for u in await state.store.profile_ids(query, 20) if u.startswith(query)]
    return html(request, "users.html", q=query, found=found, similar=similar)


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


@page
async def template_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["name"]
    template = state.rules.current.templates.get(name)
    if template is None:
        return html(
            request, "error.html", 404, title="No such template", message=f"No template '{name}'."
        )
    sample = sample_trigger(state.rules.current, name)
    channels = []
    for item in render_channels(template, SAMPLE_USER, sample.trigger, state.config, SAMPLE_FACTS):
        fields = []
        for key, value in (item.fields or {}).items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            kind = find_kind(item.channel)
            is_html = kind is not None and key in kind.fields and kind.fields[key].kind == "html"
            fields.append({"key": key, "text": text, "html": is_html})
        channels.append({"channel": item.channel, "fields": fields, "error": item.error})
    return html(
        request, "template.html", template=template, channels=channels, origin=sample.origin
    )
