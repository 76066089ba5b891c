"""Parameters and JSON bodies checked at the edge: ids a store can keep, numbers in range,
JSON a parser can read.

A bad parameter raises InvalidParameter, which the error middleware answers with a 400 that
names it; nothing unusable reaches the processor or the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine.api.errors import InvalidParameter
from engine.errors import EventError
from engine.lang.events import MAX_NESTING, check_id


def ident(value: str, name: str) -> str:
    """An id (user, rule, status...): 1 to MAX_ID_CHARS characters, no NUL."""
    try:
        check_id(value, name)
    except EventError as exc:
        raise InvalidParameter(name, exc.message) from None
    return value


def path_id(request: web.Request, name: str = "user_id") -> str:
    return ident(request.match_info[name], name)


def query_id(query: Mapping[str, str], name: str) -> str | None:
    """An optional id from the query string: absent or empty is None."""
    value = query.get(name)
    return ident(value, name) if value else None


def query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    # int() would take '١٢' or 10**4000 digits; a count is a few ASCII digits.
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not low <= int(text) <= high:
        raise InvalidParameter(name, f"must be an integer {low}-{high}")
    return int(text)


def read_json(body: bytes) -> Any:
    """A JSON body; ValueError with a message for the sender when it is not one."""
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:  # the stdlib parser recurses per level, ~1000 at most
        raise ValueError(f"invalid JSON: nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ValueError(f"invalid JSON: {exc}") from None
