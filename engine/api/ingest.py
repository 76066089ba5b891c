"""POST /v1/events: one event, a JSON array, or NDJSON; 202 only after a durable commit."""

from __future__ import annotations

import structlog
from aiohttp import web

from engine.api.auth import bearer_text, ingest_auth
from engine.api.errors import error, too_many
from engine.api.ratelimit import TooManyFailures, address_key
from engine.api.state import STATE
from engine.runtime.intake import NDJSON_TYPES, TooMany, decode

log = structlog.get_logger("kaskad.ingest")


async def post_events(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = state.config.server
    metrics = state.metrics
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        metrics.rejected.labels("too_large").inc()
        return error(413, "too_large", f"body over {config.max_body_bytes} bytes")
    # A wrong ingest token counts against the address (its own count: not the dashboard's);
    # while it is over the limit, every token from it waits, the right one too.
    keys, token = [address_key(request, "ingest")], bearer_text(request)
    if token is not None:
        try:
            state.auth_failures.check(keys, state.clock.now())
        except TooManyFailures as exc:
            metrics.rejected.labels("unauthorized").inc()
            return too_many(exc)
    body = await request.read()
    auth = ingest_auth(request, body, state.config.auth, state.clock.now())
    if auth.denied:
        if token is not None:  # the right token is let in: this one was wrong
            state.auth_failures.failed(keys, state.clock.now())
        metrics.rejected.labels("unauthorized").inc()
        return error(401, "unauthorized", auth.denied)
    ctype = request.content_type
    if ctype not in NDJSON_TYPES and ctype not in (
        "application/json",
        "text/plain",
        "application/octet-stream",
    ):
        return error(
            415,
            "unsupported_media_type",
            "send application/json (an event or an array) or application/x-ndjson",
        )
    try:
        decoded = decode(body, ctype)
    except (ValueError, UnicodeDecodeError) as exc:
        metrics.rejected.labels("malformed").inc()
        return error(400, "malformed", str(exc))
    if not decoded.values:
        return error(400, "empty", "no events in the body")
    intake = state.intake
    now = state.clock.now()
    try:
        rows, problems = intake.validate(decoded, now)
    except TooMany as exc:
        metrics.rejected.labels("too_large").inc()
        return error(413, "too_many_events", str(exc))
    if problems:
        count = len(decoded.values)
        metrics.rejected.labels("invalid").inc(count)
        return error(
            400,
            "invalid_events",
            f"{len(problems)} of {count} events are invalid; none were accepted",
            [p.to_json() for p in problems],
        )
    if intake.overloaded():
        return error(
            429, "overloaded", "too many events waiting; retry later", headers={"Retry-After": "5"}
        )
    try:
        accepted, duplicates = await intake.accept(rows, now, batch_key=auth.batch_key)
    except Exception as exc:
        log.error("ingest.store_failed", error=repr(exc))
        metrics.rejected.labels("store_unavailable").inc(len(rows))
        return error(
            503,
            "store_unavailable",
            "events could not be stored; retry",
            headers={"Retry-After": "5"},
        )
    return web.json_response({"accepted": accepted, "duplicates": duplicates}, status=202)
