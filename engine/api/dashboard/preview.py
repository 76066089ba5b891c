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
from engine.api.dashboard.users import load_profile
from engine.api.params import query_id
from engine.api.state import STATE, AppState
from engine.clock import iso
from engine.core.preview import (
    SAMPLE_FACTS,
    SAMPLE_USER,
    Rendered,
    render_channels,
    rules_sending,
    sample_trigger,
)
from engine.lang.templates import Template


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


async def _for_user(
    state: AppState, template: Template, user_id: str, rule_id: str | None
) -> tuple[list[Rendered] | None, str, str | None]:
    """(rendered or None for no such user, where the trigger comes from, a notice)."""
    profile = await load_profile(state, user_id)
    if profile is None:
        return None, "", None
    ruleset = state.rules.current
    sample = sample_trigger(ruleset, template.name, user_id, rule_id)
    etype = sample.trigger.get("type")
    notice = None
    trigger = sample.trigger
    origin = f"sample data: {sample.origin}"
    if etype == "schedule" or not isinstance(etype, str):
        origin = f"{sample.origin} (a broadcast has no event of the user's)"
    else:
        last = await state.store.user_events(user_id, types=[etype], limit=1)
        if last and last[0].data is not None:
            e = last[0]
            trigger = {
                "id": e.event_id,
                "type": e.type,
                "user_id": user_id,
                "time": iso(e.at),
                "data": e.data,
            }
            origin = f"the user's last {etype} event ({iso(e.at)})"
        else:
            notice = (
                f"User {user_id} has no {etype} event in the event log (the newest 200 within "
                "the event retention): the sample event is used with their profile."
            )
    rendered = render_channels(template, {}, trigger, state.config, profile=profile)
    return rendered, origin, notice


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
    rendered: list[Rendered] | None = None
    origin = ""
    if user_id is not None:
        rendered, origin, notice = await _for_user(state, template, user_id, rule_id)
        if rendered is None:
            status = 404
            notice = f"No user '{user_id}' (no profile is stored): showing the sample data."
    if rendered is None:
        sample = sample_trigger(state.rules.current, name, rule_id=rule_id)
        rendered = render_channels(
            template, SAMPLE_USER, sample.trigger, state.config, SAMPLE_FACTS
        )
        origin = sample.origin
    return html(
        request,
        "template.html",
        status,
        template=template,
        channels=_shown(rendered),
        origin=origin,
        real_user=user_id if status == 200 else None,
        user_param=user_id or "",
        rules=rules,
        rule_param=rule_id if rule_id in rules else (rules[0] if rules else None),
        notice=notice,
    )
