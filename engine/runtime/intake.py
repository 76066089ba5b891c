"""The one way in for events: HTTP ingest, MQTT and reactions decode, validate and store
through here, and the processor is told once they are durable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from engine.clock import Clock, iso
from engine.errors import EventError
from engine.lang.config import ServerConfig
from engine.lang.events import (
    MAX_NESTING,
    BatchProblem,
    Event,
    check_text,
    parse_batch,
    parse_event,
)
from engine.runtime.metrics import Metrics
from engine.runtime.processor import Processor
from engine.store.base import Store

log = structlog.get_logger("kaskad.intake")

NDJSON_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    }
)
Row = tuple[str | None, str]  # (event id, compact JSON) as the inbox keeps it


TOO_DEEP = f"JSON nested too deeply: an event may nest at most {MAX_NESTING} levels"


def _decode_text(body: bytes, content_type: str) -> list[Any]:
    """The JSON values in a body through the stdlib; ValueError names the line of a bad one."""
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
    except RecursionError:  # the stdlib parser recurses per level: ~1000 is its end
        raise ValueError(TOO_DEEP) from None
    return value if isinstance(value, list) else [value]


def _lines(text: str) -> list[Any]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"invalid JSON on line {number}: {exc.msg}") from None
            except RecursionError:
                raise ValueError(f"line {number}: {TOO_DEEP}") from None
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


@dataclass(slots=True)
class Decoded:
    """The JSON values of a body; `fast`: orjson read them, so each can be written back as
    it came (the stdlib path writes each event's canonical JSON instead)."""

    values: list[Any]
    fast: bool


def decode(body: bytes, content_type: str) -> Decoded:
    """One event, a JSON array or NDJSON; ValueError (or UnicodeDecodeError) when malformed."""
    fast = None if content_type in NDJSON_TYPES else _fast_decode(body)
    if fast is not None:
        return Decoded(fast, True)
    return Decoded(_decode_text(body, content_type), False)


def _suspect(text: str) -> bool:
    """Whether an event's JSON (from orjson) may hold what check_text refuses: orjson reads
    no lone surrogate, so a NUL, or more brackets than levels allowed (a bracket in a string
    counts too: then the event is checked for nothing)."""
    return "\\u0000" in text or text.count("{") + text.count("[") > MAX_NESTING


def inbox_rows(
    events: list[Event], decoded: Decoded, received_at: float
) -> tuple[list[Row], list[BatchProblem]]:
    """(id, compact JSON) of each valid event for the inbox: the event as sent, its time
    written in when it had none (the receive time), so the engine reads the same event
    from it. An event of the fast path is checked whole (check_text) only when its JSON
    looks suspect; the stdlib path's events were checked when they were parsed."""
    if not decoded.fast:
        return [(e.id, _JSON(e.to_json())) for e in events], []
    stamp = iso(received_at)
    rows: list[Row] = []
    problems: list[BatchProblem] = []
    for index, (event, value) in enumerate(zip(events, decoded.values, strict=True)):
        if value.get("time") is None:
            value = {**value, "time": stamp}
        try:
            text: str | None = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # nested past orjson's 254 levels
            text = None
        if text is None or _suspect(text):
            try:
                check_text(value)
            except EventError as exc:
                problems.append(BatchProblem(index, exc.field, exc.message))
                continue
        rows.append((event.id, text if text is not None else _JSON(event.to_json())))
    return rows, problems


def oversized(rows: list[Row], limit: int) -> list[BatchProblem]:
    """Events over the per-event limit, measured in UTF-8 bytes of their stored JSON."""
    out = []
    for index, (_, text) in enumerate(rows):
        if len(text) > limit // 4 and len(text.encode()) > limit:
            size = len(text.encode())
            out.append(
                BatchProblem(index, "(event)", f"is {size} bytes, over the limit of {limit}")
            )
    return out


class TooMany(ValueError):
    """A batch over `server.max_batch_events`."""


class Intake:
    def __init__(
        self,
        store: Store,
        processor: Processor,
        clock: Clock,
        limits: ServerConfig,
        metrics: Metrics,
        *,
        max_inbox: int = 200_000,
    ) -> None:
        self.store = store
        self.processor = processor
        self.clock = clock
        self.limits = limits
        self.metrics = metrics
        self.max_inbox = max_inbox

    def validate(self, decoded: Decoded, now: float) -> tuple[list[Row], list[BatchProblem]]:
        """The inbox rows of a decoded body, or every problem by index and field (the caller
        rejects the batch whole). Raises TooMany over the batch limit."""
        values = decoded.values
        if len(values) > self.limits.max_batch_events:
            raise TooMany(f"{len(values)} events, over the limit of {self.limits.max_batch_events}")
        # orjson's events are checked whole only when their JSON looks suspect (inbox_rows).
        events, problems = parse_batch(
            values, received_at=now, max_bytes=None, deep=not decoded.fast
        )
        if problems:
            return [], problems
        # Each event is serialised once, for the inbox; its size is checked on that text.
        rows, problems = inbox_rows(events, decoded, now)
        if problems:
            return [], problems
        problems = oversized(rows, self.limits.max_event_bytes)
        return ([], problems) if problems else (rows, [])

    def overloaded(self) -> bool:
        """Too many events wait for the engine: senders are told to come back later."""
        return self.processor.inbox_estimate() > self.max_inbox

    async def accept(
        self, rows: list[Row], now: float, *, batch_key: str | None = None
    ) -> tuple[int, int]:
        """Store the rows durably, then tell the processor: (accepted, duplicates).

        `batch_key`: a batch whose key was stored before is all duplicates (Store.enqueue).
        Raises whatever the store raises: the caller decides what the sender is told.
        """
        accepted, duplicates = await self.store.enqueue(rows, now, batch_key=batch_key)
        self.processor.accepted(accepted)
        self.metrics.accepted.inc(accepted)
        self.metrics.duplicates.inc(duplicates)
        return accepted, duplicates

    async def accept_events(self, events: list[dict[str, Any]]) -> int:
        """Events kaskad makes itself (reactions, receipts): one that does not validate is
        logged and left out. How many were new."""
        now = self.clock.now()
        rows: list[Row] = []
        for obj in events:
            try:
                event = parse_event(obj, received_at=now, deep=True)
            except EventError as exc:  # e.g. a provider id too long for an event id
                log.warning(
                    "reaction.invalid", type=obj.get("type"), field=exc.field, error=str(exc)
                )
                continue
            rows.append((event.id, _JSON(event.to_json())))
        if not rows:
            return 0
        accepted, _ = await self.accept(rows, now)
        return accepted
