"""Row <-> model conversion shared by the SQL stores: columns are the dataclass fields."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from ..model import Instance, Message

INSTANCE_COLUMNS = tuple(f.name for f in dataclasses.fields(Instance))
MESSAGE_COLUMNS = tuple(f.name for f in dataclasses.fields(Message))
# Columns holding JSON text; `trigger` is never NULL.
_JSON_COLUMNS = frozenset({"state", "trigger", "payload", "recipient"})
_INSTANCE_JSON = tuple(c in _JSON_COLUMNS for c in INSTANCE_COLUMNS)
_MESSAGE_JSON = tuple(c in _JSON_COLUMNS for c in MESSAGE_COLUMNS)
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str | None:
    return None if value is None else _JSON(value)


def _row(obj: Any, columns: tuple[str, ...], is_json: tuple[bool, ...]) -> tuple[Any, ...]:
    return tuple(
        dumps(getattr(obj, c)) if j else getattr(obj, c)
        for c, j in zip(columns, is_json, strict=True)
    )


def _values(row: Sequence[Any], is_json: tuple[bool, ...]) -> list[Any]:
    return [json.loads(v) if j and v else v for v, j in zip(row, is_json, strict=True)]


def instance_row(i: Instance) -> tuple[Any, ...]:
    return _row(i, INSTANCE_COLUMNS, _INSTANCE_JSON)


def instance_from(row: Sequence[Any]) -> Instance:
    values = _values(row, _INSTANCE_JSON)
    values[INSTANCE_COLUMNS.index("trigger")] = values[INSTANCE_COLUMNS.index("trigger")] or {}
    return Instance(*values)


def message_row(m: Message) -> tuple[Any, ...]:
    return _row(m, MESSAGE_COLUMNS, _MESSAGE_JSON)


def message_from(row: Sequence[Any]) -> Message:
    return Message(*_values(row, _MESSAGE_JSON))
