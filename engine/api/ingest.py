"""POST /v1/events: one event, a JSON array, or NDJSON; 202 only after a durable commit."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from ..events import BatchProblem, parse_batch
from .auth import ingest_denied
from .errors import error
from .state import STATE

log = structlog.get_logger("kaskad.ingest")
NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)


def _decode(body: bytes, content_type: str) -> list[Any]:
    """The JSON values in a body; ValueError names the line of a bad one."""
    text = body.decode("utf-8")
    if content_type in NDJSON_TYPES:
        return _lines(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # NDJSON sent as application/json
            return _lines(text)
        raise ValueError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return value if isinstance(value, list) else [value]


def _lines(text: str) -> list[Any]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON on line {number}: {exc.msg}") from None
    return out


def oversized(rows: list[tuple[str | None, str]], limit: int) -> list[BatchProblem]:
    """Events over the per-event limit, measured in UTF-8 bytes of their stored JSON."""
    out = []
    for index, (_, text) in enumerate(rows):
        if len(text) > limit // 4 and len(text.encode()) > limit:
            size = len(text.encode())
            out.append(
                BatchProblem(index, "(event)", f"is {size} bytes, over the limit of {limit}")
            )
    return out


async def post_events(request: web.Request) -> web.Response:
    state = request.app[STATE]
    config = state.config.server
    metrics = state.metrics
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        metrics.rejected.labels("too_large").inc()
        return error(413, "too_large", f"body over {config.max_body_bytes} bytes")
    body = await request.read()
    denied = ingest_denied(request, body, state.config.auth, state.clock.now())
    if denied:
        metrics.rejected.labels("unauthorized").inc()
        return error(401, "unauthorized", denied)
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
        values = _decode(body, ctype)
    except (ValueError, UnicodeDecodeError) as exc:
        metrics.rejected.labels("malformed").inc()
        return error(400, "malformed", str(exc))
    if not values:
        return error(400, "empty", "no events in the body")
    if len(values) > config.max_batch_events:
        metrics.rejected.labels("too_large").inc()
        return error(
            413,
            "too_many_events",
            f"{len(values)} events, over the limit of {config.max_batch_events}",
        )
    now = state.clock.now()
    # Each event is serialised once, for the inbox; its size is checked on that text.
    events, problems = parse_batch(values, received_at=now, max_bytes=None)
    rows = [
        (e.id, json.dumps(e.to_json(), separators=(",", ":"), ensure_ascii=False)) for e in events
    ]
    if not problems:
        problems = oversized(rows, config.max_event_bytes)
    if problems:
        metrics.rejected.labels("invalid").inc(len(values))
        return error(
            400,
            "invalid_events",
            f"{len(problems)} of {len(values)} events are invalid; none were accepted",
            [p.to_json() for p in problems],
        )
    if state.processor.counters_inbox_estimate() > state.max_inbox:
        return error(
            429, "overloaded", "too many events waiting; retry later", headers={"Retry-After": "5"}
        )
    try:
        accepted, duplicates = await state.store.enqueue(rows, now)
    except Exception as exc:
        log.error("ingest.store_failed", error=repr(exc))
        metrics.rejected.labels("store_unavailable").inc(len(values))
        return error(
            503,
            "store_unavailable",
            "events could not be stored; retry",
            headers={"Retry-After": "5"},
        )
    state.processor.note_enqueued(accepted)
    state.processor.wake.set()
    metrics.accepted.inc(accepted)
    metrics.duplicates.inc(duplicates)
    return web.json_response({"accepted": accepted, "duplicates": duplicates}, status=202)
