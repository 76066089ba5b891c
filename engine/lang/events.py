"""The event envelope: validation with errors by field (and by index in a batch)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import isfinite
from typing import Any

from channels.kinds import kinds
from engine.clock import iso, parse_time
from engine.errors import EventError

# Event types (and rule, segment ids): always `fullmatch`, never `match` with `$`, which
# takes a trailing newline ("cart.updated\n").
TYPE_RE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
# Money fields (order totals, amounts, balances, prices) at most this far from 0: far past
# any shop's figure, far below where sums of them stop being exact or finite.
MAX_MONEY = 1e15
MONEY_FIELDS = ("total", "amount", "balance", "price", "old_price", "new_price")
MONEY_RANGE = "must be a number from -1e15 to 1e15"
NOT_FINITE = "must be a finite number (NaN and Infinity are not JSON numbers)"
MAX_EVENT_BYTES = 64 * 1024
MAX_ID_CHARS = 200  # event ids and user ids
# Levels of objects and arrays in one event, the event itself the first: far more than any
# shop sends, far below where a recursive parser or encoder gives up.
MAX_NESTING = 64
_ID_RULE = f"must be a non-empty string of at most {MAX_ID_CHARS} characters"

# Product events have no user: they fan out to interested users.
PRODUCT_EVENTS = frozenset({"product.price_dropped", "product.back_in_stock"})
MESSAGE_EVENTS = frozenset(
    {
        "message.delivered",
        "message.opened",
        "message.clicked",
        "message.failed",
        "message.unsubscribed",
    }
)
STANDARD_TYPES = frozenset(
    {
        "profile.updated",
        "product.viewed",
        "search.performed",
        "cart.updated",
        "cart.cleared",
        "favorite.added",
        "favorite.removed",
        "product.subscribed",
        "product.unsubscribed",
        "order.created",
        "points.accrued",
        "points.expiring",
        "bonus.credited",
    }
    | PRODUCT_EVENTS
    | MESSAGE_EVENTS
)
_ENVELOPE_KEYS = frozenset({"id", "type", "user_id", "time", "data"})


# The fields of an event's context that need no formatting (all but "time").
LIGHT_FIELDS = frozenset({"id", "type", "user_id", "data"})


@dataclass(slots=True)
class Event:
    type: str
    time: float
    user_id: str | None = None
    id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    _context: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def light_context(self) -> dict[str, Any]:
        """The context without its time (LIGHT_FIELDS), for tests that read nothing else."""
        return {"id": self.id, "type": self.type, "user_id": self.user_id, "data": self.data}

    @property
    def context(self) -> dict[str, Any]:
        """The event as expressions and templates see it (time as ISO text)."""
        if self._context is None:
            self._context = {
                "id": self.id,
                "type": self.type,
                "user_id": self.user_id,
                "time": iso(self.time),
                "data": self.data,
            }
        return self._context

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        out["type"] = self.type
        if self.user_id is not None:
            out["user_id"] = self.user_id
        out["time"] = iso(self.time)
        out["data"] = self.data
        return out


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why a string cannot be kept, else None: the stores keep UTF-8 text, which has no lone
    surrogates (JSON can spell them: "\\ud800"), and PostgreSQL's text has no NUL."""
    if "\x00" in text:
        return "holds a NUL character (\\u0000)"
    if not text.isascii():
        found = _SURROGATE.search(text)
        if found is not None:
            return f"holds a lone surrogate ({ascii(found.group())[1:-1]}), which is not text"
    return None


def check_id(value: str, field: str) -> None:
    """An id (event id, user id): 1 to MAX_ID_CHARS characters that can be kept."""
    if not value or len(value) > MAX_ID_CHARS:
        raise EventError(field, _ID_RULE)
    problem = text_problem(value)
    if problem is not None:
        raise EventError(field, problem)


def check_text(value: Any, path: str = "", depth: int = 1) -> None:
    """Every string and key in `value` can be kept, every number is finite (the stdlib
    parser reads NaN, Infinity and 1e999) and it nests at most MAX_NESTING levels; else
    EventError naming the first place that fails (`data.items[0].name`)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EventError(path or "(event)", NOT_FINITE)
        return
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise EventError(path or "(event)", problem)
        return
    if not isinstance(value, dict | list):
        return
    if depth > MAX_NESTING:
        raise EventError(path or "(event)", f"nests deeper than {MAX_NESTING} levels")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str | dict | list):
                check_text(item, f"{path}[{i}]", depth + 1)
            elif isinstance(item, float) and not isfinite(item):
                raise EventError(f"{path}[{i}]", NOT_FINITE)
        return
    for key, item in value.items():
        problem = text_problem(key)
        if problem is not None:
            raise EventError(path or "(event)", f"has a key that {problem}")
        if isinstance(item, str | dict | list):
            check_text(item, f"{path}.{key}" if path else key, depth + 1)
        elif isinstance(item, float) and not isfinite(item):
            raise EventError(f"{path}.{key}" if path else key, NOT_FINITE)


def _check_data(etype: str, data: dict[str, Any]) -> None:
    """Type checks for the standard fields the engine itself relies on."""
    if etype in PRODUCT_EVENTS or etype in {"product.subscribed", "product.unsubscribed"}:
        _require_id(data, "product_id")
    if etype in {"favorite.added", "favorite.removed", "product.viewed"}:
        _require_id(data, "product_id")
    if etype in {"product.subscribed", "product.unsubscribed"}:
        kind = data.get("kind")
        if kind not in ("price_drop", "back_in_stock"):
            raise EventError("data.kind", "must be 'price_drop' or 'back_in_stock'")
    if etype == "cart.updated":
        items = data.get("items", [])
        if not isinstance(items, list):
            raise EventError("data.items", "must be a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise EventError(f"data.items[{i}]", "must be an object")
            if "product_id" in item and not isinstance(item["product_id"], str | int):
                raise EventError(f"data.items[{i}].product_id", "must be a string")
    for money in MONEY_FIELDS:
        value = data.get(money)
        if value is not None and not _plain_money(value):
            _check_money(value, f"data.{money}")
    if etype in ("cart.updated", "order.created") and isinstance(data.get("items"), list):
        for i, item in enumerate(data["items"]):
            price = item.get("price") if isinstance(item, dict) else None
            if price is not None and not _plain_money(price):
                _check_money(price, f"data.items[{i}].price")
    if etype == "profile.updated":
        _check_profile(data)
    if (
        etype in MESSAGE_EVENTS
        and "message_id" not in data
        and not (isinstance(data.get("rule"), str) and isinstance(data.get("channel"), str))
    ):
        raise EventError("data", "needs 'message_id', or 'rule' and 'channel'")


def _plain_money(value: Any) -> bool:
    """The usual money figure, checked fast: an int or float within MAX_MONEY of 0 (NaN
    fails the comparison); anything else is for _check_money to name."""
    kind = value.__class__
    return (kind is int or kind is float) and -MAX_MONEY <= value <= MAX_MONEY


def _check_money(value: Any, field: str) -> None:
    """A money figure: a finite number at most MAX_MONEY from 0 (stats sum them)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EventError(field, "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise EventError(field, NOT_FINITE)
    if not -MAX_MONEY <= value <= MAX_MONEY:
        raise EventError(field, MONEY_RANGE)


def _require_id(data: dict[str, Any], name: str) -> None:
    value = data.get(name)
    if value is None:
        raise EventError(f"data.{name}", "is required")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise EventError(f"data.{name}", "must be a string")
    if isinstance(value, int):
        data[name] = str(value)


def _check_profile(data: dict[str, Any]) -> None:
    for name in ("timezone", "locale"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise EventError(f"data.{name}", "must be a string or null")
    for name in ("consent", "attributes"):
        value = data.get(name)
        if value is not None and not isinstance(value, dict):
            raise EventError(f"data.{name}", "must be an object")
    for channel, flag in (data.get("consent") or {}).items():
        if not isinstance(flag, bool):
            raise EventError(f"data.consent.{channel}", "must be true or false")
    # Address fields: each channel kind says what its addresses look like (channels/kinds).
    for kind in kinds():
        for key in kind.profile_keys():
            value = data.get(key)
            problem = None if value is None else kind.check_address(value)
            if problem:
                raise EventError(f"data.{key}{problem[0]}", problem[1])
    tz = data.get("timezone")
    if tz:
        from engine.lang.localtime import zone

        try:
            zone(tz)
        except ValueError as exc:
            raise EventError("data.timezone", str(exc)) from None


def parse_event(
    obj: Any, *, received_at: float, max_bytes: int | None = None, deep: bool = False
) -> Event:
    """Validate one envelope; raises EventError naming the field.

    `deep`: also check every string, key and level of nesting (check_text), as for events
    from the network; the engine reads back events that were checked when they came in."""
    if not isinstance(obj, dict):
        raise EventError("(event)", "must be a JSON object")
    if deep:
        check_text(obj)
    if max_bytes is not None:
        size = len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())
        if size > max_bytes:
            raise EventError("(event)", f"is {size} bytes, over the limit of {max_bytes}")
    if not _ENVELOPE_KEYS.issuperset(obj):  # the usual case in one C call; else name the key
        for key in obj:
            if key not in _ENVELOPE_KEYS:
                raise EventError(
                    key, "unknown envelope field; allowed: id, type, user_id, time, data"
                )
    etype = obj.get("type")
    if etype is None:
        raise EventError("type", "is required")
    if not isinstance(etype, str) or (etype not in STANDARD_TYPES and not TYPE_RE.fullmatch(etype)):
        raise EventError("type", "must match [a-z0-9_]+(.[a-z0-9_]+)*, e.g. cart.updated")
    eid = obj.get("id")
    if eid is not None:
        if not isinstance(eid, str):
            raise EventError("id", _ID_RULE)
        check_id(eid, "id")
    user_id = obj.get("user_id")
    if etype in PRODUCT_EVENTS:
        if user_id is not None:
            raise EventError("user_id", f"must be absent: {etype} is a product event")
    elif user_id is None:
        raise EventError("user_id", "is required")
    elif isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
        raise EventError("user_id", "must be a non-empty string")
    else:
        check_id(user_id if isinstance(user_id, str) else _int_text(user_id), "user_id")
    raw_time = obj.get("time")
    if raw_time is None:
        when = received_at
    elif not isinstance(raw_time, str):
        raise EventError("time", "must be an ISO 8601 string, e.g. 2026-11-23T10:00:00Z")
    else:
        try:
            when = parse_time(raw_time)
        except ValueError:
            raise EventError(
                "time", f"'{raw_time}' is not ISO 8601, e.g. 2026-11-23T10:00:00Z"
            ) from None
    data = obj.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EventError("data", "must be an object")
    try:
        _check_data(etype, data)
    except EventError:
        raise
    return Event(
        type=etype,
        time=when,
        user_id=None if user_id is None else str(user_id),
        id=eid,
        data=data,
    )


def _int_text(value: int) -> str:
    """The digits of an integer id; one too long for str() is over any id limit anyway."""
    try:
        return str(value)
    except ValueError:  # past sys.get_int_max_str_digits()
        return "0" * (MAX_ID_CHARS + 1)


@dataclass(frozen=True)
class BatchProblem:
    index: int
    field: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


def parse_batch(
    objs: Iterable[Any],
    *,
    received_at: float,
    max_bytes: int | None = MAX_EVENT_BYTES,
    deep: bool = True,
) -> tuple[list[Event], list[BatchProblem]]:
    """Validate every event; the caller rejects the batch whole if any problem is found."""
    events: list[Event] = []
    problems: list[BatchProblem] = []
    for i, obj in enumerate(objs):
        try:
            events.append(parse_event(obj, received_at=received_at, max_bytes=max_bytes, deep=deep))
        except EventError as exc:
            problems.append(BatchProblem(i, exc.field, exc.message))
    return events, problems
