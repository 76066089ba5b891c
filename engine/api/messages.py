"""GET /v1/messages (the delivery log, SPEC 9, with the dashboard's filters) and
GET /v1/messages/{message_id} (one message: content, links, history).

The filters are checked here for both the API and the dashboard: a bad value is a 400 that
names it, never an empty page that hides the typo."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from datetime import date

from aiohttp import web

from channels.kinds import kind_names
from engine.api.errors import InvalidParameter, error
from engine.api.message_view import message_detail, message_json
from engine.api.params import path_id, query_id, query_int
from engine.api.state import STATE
from engine.clock import parse_time
from engine.core.model import MESSAGE_STATUSES, Message
from engine.lang.events import text_problem
from engine.store.base import MessageFilter

# Every status a stored message can have: the engine's, and the dispatcher's in between.
STATUSES = (*MESSAGE_STATUSES, "sending", "answered")
_REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
_DAY = 86400.0


def _time(query: Mapping[str, str], name: str, *, end: bool) -> float | None:
    """An ISO 8601 date or time; a date alone as `to` means the end of that day."""
    text = query.get(name, "").strip()
    if not text:
        return None
    problem = (
        f"must be an ISO 8601 date or time (2026-11-01, 2026-11-01T10:00:00Z), not {text[:40]!r}"
    )
    if len(text) > 40 or not text.isascii():
        raise InvalidParameter(name, problem)
    try:
        day_only = len(text) == 10 and date.fromisoformat(text) is not None
        value = parse_time(text)
    except (ValueError, OverflowError):
        raise InvalidParameter(name, problem) from None
    if not math.isfinite(value):
        raise InvalidParameter(name, problem)
    return value + _DAY if end and day_only else value


def message_filter(query: Mapping[str, str]) -> MessageFilter:
    """The delivery log's filters from a query string: user_id, rule, status, channel,
    reason, from (inclusive) and to (exclusive); InvalidParameter names a bad one."""
    status = query_id(query, "status")
    if status is not None and status not in STATUSES:
        raise InvalidParameter("status", f"must be one of {', '.join(STATUSES)}")
    channel = query_id(query, "channel")
    if channel is not None and channel not in kind_names():
        raise InvalidParameter("channel", f"must be one of {', '.join(kind_names())}")
    reason = query_id(query, "reason")
    if reason is not None and not _REASON.fullmatch(reason):
        raise InvalidParameter(
            "reason", "must be a reason such as no_consent: a-z, digits and _, 64 at most"
        )
    since = _time(query, "from", end=False)
    until = _time(query, "to", end=True)
    if since is not None and until is not None and until <= since:
        raise InvalidParameter("to", "must be after from")
    return MessageFilter(
        user_id=query_id(query, "user_id"),
        rule=query_id(query, "rule"),
        status=status,
        channel=channel,
        reason=reason,
        since=since,
        until=until,
    )


def cursor_encode(created_at: float, message_id: str) -> str:
    """The cursor of the page after the message with this time and id."""
    raw = json.dumps([created_at, message_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(text: str) -> tuple[float, str]:
    """(created_at, message id) of a cursor cursor_encode made; ValueError otherwise."""
    if not text.isascii() or len(text) > 400:
        raise ValueError("not a cursor")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    value = json.loads(raw)  # short: it cannot nest deep enough to recurse far
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("not a cursor")
    created, mid = value
    if (
        isinstance(created, bool)
        or not isinstance(created, int | float)
        or not math.isfinite(created)
        or not isinstance(mid, str)
        or text_problem(mid) is not None
    ):
        raise ValueError("not a cursor")
    return float(created), mid


def query_cursor(query: Mapping[str, str]) -> tuple[float, str] | None:
    if not query.get("cursor"):
        return None
    try:
        return cursor_decode(query["cursor"])
    except ValueError:
        raise InvalidParameter("cursor", "is not one this API gave out") from None


async def message_page(
    request: web.Request, limit: int
) -> tuple[list[Message], str | None, MessageFilter]:
    """A page of the delivery log for the request's filters and cursor, and the next
    page's cursor (None: this is the last)."""
    f = message_filter(request.query)
    before = query_cursor(request.query)
    messages = await request.app[STATE].store.messages(
        user_id=f.user_id,
        rule=f.rule,
        status=f.status,
        channel=f.channel,
        reason=f.reason,
        since=f.since,
        until=f.until,
        limit=limit + 1,
        before=before,
    )
    more = len(messages) > limit
    messages = messages[:limit]
    last = messages[-1] if more and messages else None
    return messages, cursor_encode(last.created_at, last.id) if last else None, f


async def get_messages(request: web.Request) -> web.Response:
    limit = query_int(request.query, "limit", 100, 1, 1000)
    messages, next_cursor, _ = await message_page(request, limit)
    return web.json_response(
        {"messages": [message_json(m) for m in messages], "next_cursor": next_cursor}
    )


async def get_message(request: web.Request) -> web.Response:
    state = request.app[STATE]
    mid = path_id(request, "message_id")
    message = await state.store.message(mid)
    if message is None:
        return error(404, "not_found", f"no message '{mid}'")
    return web.json_response(await message_detail(state.store, message, state.tracker))
