"""Row <-> model conversion shared by the SQL stores: columns are the dataclass fields."""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable, Sequence
from typing import Any

from engine.core.changes import TOUCHES, Order, Touch
from engine.core.model import Instance, Message
from engine.core.waits import state_from, state_json

INSTANCE_COLUMNS = tuple(f.name for f in dataclasses.fields(Instance))
MESSAGE_COLUMNS = tuple(f.name for f in dataclasses.fields(Message))
# Columns holding JSON text; `trigger` is never NULL.
_JSON_COLUMNS = frozenset({"state", "trigger", "payload", "recipient"})
_INSTANCE_JSON = tuple(c in _JSON_COLUMNS for c in INSTANCE_COLUMNS)
_MESSAGE_JSON = tuple(c in _JSON_COLUMNS for c in MESSAGE_COLUMNS)
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str | None:
    return None if value is None else _JSON(value)


# Instances are read and written per timer and per event: their two JSON columns by index,
# the rest as is (without a loop over every column).
_TRIGGER = INSTANCE_COLUMNS.index("trigger")
_STATE = INSTANCE_COLUMNS.index("state")
_instance_values = operator.attrgetter(*INSTANCE_COLUMNS)
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def stored_json(text: str) -> Any:
    """JSON text this store wrote (compact, one value): parsed without json.loads' checks
    for surrounding whitespace, which it never has; anything else takes the full path."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def instance_row(i: Instance) -> tuple[Any, ...]:
    values = list(_instance_values(i))
    values[_TRIGGER] = _JSON(values[_TRIGGER])
    if values[_STATE] is not None:
        values[_STATE] = _JSON(state_json(values[_STATE]))
    return tuple(values)


def instance_from(row: Sequence[Any]) -> Instance:
    values = list(row)
    trigger, state = values[_TRIGGER], values[_STATE]
    values[_TRIGGER] = stored_json(trigger) if trigger else {}
    values[_STATE] = state_from(stored_json(state)) if state else None
    return Instance(*values)


# Messages likewise (written when queued and again when settled, read with their users).
_MESSAGE_JSON_AT = tuple(i for i, j in enumerate(_MESSAGE_JSON) if j)
_message_values = operator.attrgetter(*MESSAGE_COLUMNS)


def message_row(m: Message) -> tuple[Any, ...]:
    values = list(_message_values(m))
    for i in _MESSAGE_JSON_AT:
        if values[i] is not None:
            values[i] = _JSON(values[i])
    return tuple(values)


def message_from(row: Sequence[Any]) -> Message:
    values = list(row)
    for i in _MESSAGE_JSON_AT:
        if values[i]:
            values[i] = stored_json(values[i])
    return Message(*values)


# An order's row: its fields, then each touch kind's message as {kind}_id, {kind}_at,
# {kind}_rule, ... (NULLs when the user had no such touch).
_ORDER_FIELDS = tuple(f.name for f in dataclasses.fields(Order) if f.name != "touches")
_TOUCH_FIELDS = tuple(f.name for f in dataclasses.fields(Touch))
ORDER_COLUMNS = _ORDER_FIELDS + tuple(
    f"{kind}_{'id' if f == 'message_id' else f}" for kind in TOUCHES for f in _TOUCH_FIELDS
)


def touch_kind(kind: str) -> str:
    """A touch kind as a column prefix (from a fixed table: never text from a request)."""
    if kind not in TOUCHES:
        raise ValueError(f"unknown attribution touch '{kind}'")
    return kind


def order_row(o: Order) -> tuple[Any, ...]:
    row: list[Any] = [getattr(o, f) for f in _ORDER_FIELDS]
    for kind in TOUCHES:
        t = o.touches.get(kind)
        row += [None] * len(_TOUCH_FIELDS) if t is None else [getattr(t, f) for f in _TOUCH_FIELDS]
    return tuple(row)


def order_from(row: Sequence[Any]) -> Order:
    n, width = len(_ORDER_FIELDS), len(_TOUCH_FIELDS)
    order = Order(*row[:n])
    for i, kind in enumerate(TOUCHES):
        part = row[n + width * i : n + width * (i + 1)]
        if part[0] is not None:
            order.touches[kind] = Touch(*part)
    return order
