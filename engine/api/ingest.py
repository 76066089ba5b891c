"""POST /v1/events: one event, a JSON array, or NDJSON; 202 only after a durable commit."""

from __future__ import annotations

import json
from typing import Any

import orjson
import structlog
from aiohttp import web

from ..clock import iso
from ..events import BatchProblem, Event, parse_batch
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


# A body is parsed with orjson and each event written back with it (a third of the stdlib's
# cost). orjson reads a few inputs differently from json.loads, so those take the stdlib
# path, which decodes exactly as before: integers of 19 digits or more (orjson makes floats
# of those past 64 bits; a digit run that long anywhere sends the body there), and what it
# refuses (NaN, 1e999, lone surrogates, invalid JSON, whose error the stdlib words).
# Every digit as "0", any other byte as a space: a run of 19 digits becomes one substring.
_AS_ZEROS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_RUN = b"0" * 19
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _has_long_digits(body: bytes) -> bool:
    """A run of 19 digits somewhere (two C passes; a regex search costs more than orjson)."""
    return _LONG_RUN in body.translate(_AS_ZEROS)


def _fast_decode(body: bytes) -> list[Any] | None:
    """The events of a body that is one JSON value (an event or an array), or None for the
    stdlib path (NDJSON and everything orjson would not read as json.loads does)."""
    if _has_long_digits(body):
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, list) else [value]


def inbox_rows(
    events: list[Event], values: list[Any] | None, received_at: float
) -> list[tuple[str | None, str]]:
    """(id, compact JSON) of each valid event for the inbox: the event as sent, its time
    written in when it had none (the receive time), so the engine reads the same event
    from it. `values`: the decoded events when orjson read the body; else each event's
    canonical JSON through the stdlib."""
    if values is None:
        return [(e.id, _JSON(e.to_json())) for e in events]
    stamp = iso(received_at)
    rows: list[tuple[str | None, str]] = []
    for event, value in zip(events, values, strict=True):
        if value.get("time") is None:
            value = {**value, "time": stamp}
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # nested past orjson's 254 levels: the stdlib's turn
            text = _JSON(event.to_json())
        rows.append((event.id, text))
    return rows


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
    fast = None if ctype in NDJSON_TYPES else _fast_decode(body)
    try:
        values = _decode(body, ctype) if fast is None else fast
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
    if not problems:
        rows = inbox_rows(events, fast, now)
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
