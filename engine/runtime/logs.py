"""structlog set-up: JSON lines off a terminal, pretty on one; always to stderr."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")
# A phone: "+" and 7-15 digits, a space, dot, hyphen or bracket or two between them
# (+7 999 000-11-22), or 11-15 digits standing alone (79990001122). Dates, times, durations,
# unix seconds (10 digits), UUIDs and ids with digits inside a word are left alone.
_PHONE = re.compile(
    r"(?<![\w+])\+\d(?:[\s().-]{0,2}\d){6,14}(?!\d)"
    r"|(?<![\w.:/-])[1-9]\d{10,14}(?!\w|[.-]\d)"
)
_ADDRESS_KEYS = frozenset(
    {"email", "phone", "to", "address", "addresses", "token", "chat_id", "endpoint", "whatsapp"}
)


def _masked_phone(match: re.Match[str]) -> str:
    return "***" + re.sub(r"\D", "", match.group())[-2:]


def mask(value: Any) -> Any:
    """Mask e-mail addresses and phone numbers so logs hold no personal data."""
    if isinstance(value, str):
        value = _EMAIL.sub(r"\1***@\2", value)
        return _PHONE.sub(_masked_phone, value)
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def _mask_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key in _ADDRESS_KEYS:
            event[key] = "***" if not isinstance(value, str) else mask(value)
        elif isinstance(value, str | list | tuple):
            event[key] = mask(value)  # the rendered `exception` text too
    return event


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure(level: str = "info", fmt: str = "auto") -> None:
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # After the traceback is rendered: an exception's message may hold an address.
            structlog.processors.format_exc_info,
            _mask_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        # sys.stderr as it is when a line is written, not as it was when logging was
        # configured (a CLI run inside tests, or a redirected stream, would leave it closed)
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
