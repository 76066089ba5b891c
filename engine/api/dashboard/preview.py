"""The dashboard's template page: a template rendered for every channel it has, with sample
data that fits the trigger of a rule sending it (`?rule=`), or with a real user's profile
and their last event of that trigger type from the event log (`?user=`)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from channels.kinds import find_kind
from engine.api.dashboard.auth import page
from engine.api.dashboard.render import html
from engine.api.params import query_id
from engine.api.state import STATE
from engine.core.preview import Rendered, rules_sending
from engine.runtime.preview_data import sample_input, user_input


def _shown(items: list[Rendered]) -> list[dict[str, Any]]:
    channels = []
    for item in items:
        fields = []
        for key, value in (item.fields or {}).items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            kind = find_kind(item.channel)
            is_html = kind is not None and key in kind.fields and kind.fields[key].kind == "html"
            fields.append({"key": key, "text": text, "html": is_html})
        channels.append({"channel": item.channel, "fields": fields, "error": item.error})
    return channels


@page
async def template_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["name"]
    template = state.rules.current.templates.get(name)
    if template is None:
        return html(
            request, "error.html", 404, title="No such template", message=f"No template '{name}'."
        )
    rule_id = query_id(request.query, "rule")
    user_id = query_id(request.query, "user")
    rules = rules_sending(state.rules.current, name)
    status, notice = 200, None
    data = None
    if user_id is not None:
        data = await user_input(
            state.store, state.clock, state.rules.current, name, user_id, rule_id
        )
        if data is None:
            status = 404
            notice = f"No user '{user_id}' (no profile is stored): showing the sample data."
        else:
            notice = data.notice
    if data is None:
        data = sample_input(state.rules.current, name, rule_id)
    return html(
        request,
        "template.html",
        status,
        template=template,
        channels=_shown(data.render(template, state.config)),
        origin=data.origin,
        real_user=user_id if status == 200 else None,
        user_param=user_id or "",
        rules=rules,
        rule_param=rule_id if rule_id in rules else (rules[0] if rules else None),
        notice=notice,
    )
