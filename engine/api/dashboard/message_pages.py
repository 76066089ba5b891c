"""The dashboard's delivery log: /ui/messages (filters and cursor pages, as GET
/v1/messages) and /ui/messages/{id} (one message: what was sent, where its links lead,
every status change)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from channels.kinds import kind_names
from engine.api.dashboard.auth import page
from engine.api.dashboard.render import html, query_url
from engine.api.errors import InvalidParameter
from engine.api.message_view import content_fields, message_detail, tracked_links
from engine.api.messages import STATUSES, message_page
from engine.api.params import path_id
from engine.api.state import STATE

PAGE_SIZE = 50
# The query parameters a page of the log keeps in its links (the cursor apart).
FILTERS = ("rule", "channel", "status", "reason", "user_id", "from", "to")
# Reasons offered in the filter's list (any other well-formed one may be typed in).
KNOWN_REASONS = (
    "address_invalid",
    "exited",
    "expired",
    "frequency_cap",
    "group_busy",
    "no_address",
    "no_consent",
    "not_in_template",
    "provider_rejected",
    "quiet_hours_deferred",
    "retries_exhausted",
    "template_error",
)


@page
async def messages_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    values = {name: request.query.get(name, "") for name in FILTERS}
    context: dict[str, Any] = {
        "values": values,
        "statuses": STATUSES,
        "channels": list(kind_names()),
        "reasons": KNOWN_REASONS,
        "rule_ids": sorted(state.rules.current.rules),
        "limit": PAGE_SIZE,
        "first_url": query_url("/ui/messages", **values),
        "paged": bool(request.query.get("cursor")),
    }
    try:
        messages, cursor, _ = await message_page(request, PAGE_SIZE)
    except InvalidParameter as exc:
        # The form stays, with the problem named: the marketer fixes the one value.
        return html(
            request, "messages.html", 400, messages=[], next_url=None, notice=str(exc), **context
        )
    next_url = query_url("/ui/messages", **values, cursor=cursor) if cursor else None
    return html(request, "messages.html", messages=messages, next_url=next_url, **context)


@page
async def message_detail_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    mid = path_id(request, "message_id")
    message = await state.store.message(mid)
    if message is None:
        return html(
            request, "error.html", 404, title="No such message", message=f"No message '{mid}'."
        )
    detail = await message_detail(state.store, message, state.tracker)
    fields = content_fields(message, tracked_links(message.payload, state.tracker))
    return html(request, "message.html", m=detail, fields=fields)
