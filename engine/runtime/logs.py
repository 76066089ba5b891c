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
_PHONE = re.compile(r"\+?\d[\d\s-]{6,}(\d{2})")
_ADDRESS_KEYS = frozenset(
    {"email", "phone", "to", "address", "addresses", "token", "chat_id", "endpoint", "whatsapp"}
)


def mask(value: Any) -> Any:
    """Mask e-mail addresses and phone numbers so logs hold no personal data."""
    if isinstance(value, str):
        value = _EMAIL.sub(r"\1***@\2", value)
        return _PHONE.sub(r"***\1", value)
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def _mask_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key in _ADDRESS_KEYS:
            event[key] = "***" if not isinstance(value, str) else mask(value)
        elif isinstance(value, str) and ("@" in value or "+" in value):
            event[key] = mask(value)
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
            _mask_processor,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        # sys.stderr as it is when a line is written, not as it was when logging was
        # configured (a CLI run inside tests, or a redirected stream, would leave it closed)
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
