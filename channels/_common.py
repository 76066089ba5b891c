"""Helpers every channel adapter shares: config checks, answer parsing, the HTTP preamble."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from .base import Limits, OutboundMessage, Outcome

# Keys every channel takes; the engine reads them, the adapter only tolerates them.
COMMON_KEYS = frozenset(
    {"provider", "timeout_s", "rate_per_s", "concurrency", "max_retries", "retry_for"}
)
# How an unknown key's suggestion is written; {} is the suggested key.
DID_YOU_MEAN = " (did you mean '{}'?)"
# The older form, kept where tests and users already rely on it.
DID_YOU_MEAN_SEMICOLON = "; did you mean '{}'?"
DETAIL_CHARS = 200
MAX_TTL_S = 2_419_200  # 28 days, the longest FCM and the push services keep a message
# What a failed HTTP call may raise; each means "try again later".
NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


def check_keys(
    name: str, keys: Mapping[str, Any], known: frozenset[str], *, hint: str = DID_YOU_MEAN
) -> None:
    """ValueError for the first key of `channels.NAME` that is neither known nor common."""
    for key in keys:
        if key not in known and key not in COMMON_KEYS:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            suggestion = hint.format(close[0]) if close else ""
            raise ValueError(f"channels.{name}.{key}: unknown key{suggestion}")


def optional_text(keys: Mapping[str, Any], key: str, where: Callable[[str], str]) -> str | None:
    """An optional text key; None when unset or empty (an unset ${VAR} substitutes to "")."""
    value = keys.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where(key)}: expected text, got {type(value).__name__}")
    return value


def http_url(value: Any, where: str) -> str:
    """An http(s) URL as yarl (and so aiohttp) parses it, port included; returned as given."""
    try:
        url = URL(str(value))
    except ValueError:
        raise ValueError(f"{where}: expected an http(s) URL, got {value!r}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{where}: expected an http(s) URL, got {value!r}")
    return str(value)


def base_url(value: Any, where: str) -> str:
    """An http(s) base URL with a host (urlsplit's reading), without its trailing slash."""
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: expected an http(s) URL, got {value!r}")
    return str(value).rstrip("/")


def ttl_s(name: str, value: Any) -> int:
    """`channels.NAME.ttl_s`: whole seconds, as a number or as "${VAR}" text."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TTL_S:
        raise ValueError(f"channels.{name}.ttl_s: expected whole seconds 0-2419200 (28 days)")
    return value


def parse_json(raw: bytes) -> Any:
    """The JSON value of an answer body; None when it is not JSON (or nested absurdly deep)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        return None


def json_object(raw: bytes) -> dict[str, Any] | None:
    """The answer body when it is a JSON object, else None."""
    value = parse_json(raw)
    return value if isinstance(value, dict) else None


def snippet(raw: bytes) -> str:
    """The start of an answer body, for an outcome's detail."""
    return raw[:DETAIL_CHARS].decode("utf-8", errors="replace").strip() or "(empty body)"


def seconds(value: Any) -> float | None:
    """A finite number of seconds (negative counts as 0) from a number or its text, else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, number) if math.isfinite(number) else None


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date), else None."""
    if not value:
        return None
    delay_s = seconds(value)
    if delay_s is not None:
        return delay_s
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    delay_s = when.timestamp() - now
    return max(0.0, delay_s) if math.isfinite(delay_s) else None


def http_session(name: str, provider: str, session: Any) -> aiohttp.ClientSession:
    """The registry's session argument, for a provider that cannot work without one."""
    if not isinstance(session, aiohttp.ClientSession):
        raise ValueError(f"channels.{name}: the {provider} provider needs an HTTP session")
    return session


class HttpChannel:
    """An adapter on the daemon's shared aiohttp session whose send() never raises.

    Subclasses set `provider`, `_log` and `keys` (their own config keys, checked here), and
    implement `_send`.
    """

    provider: str
    _log: ClassVar[Any]  # the module's structlog logger
    keys: ClassVar[frozenset[str]]

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        session: aiohttp.ClientSession,
        limits: Limits | None,
    ) -> None:
        check_keys(name, config, self.keys, hint=DID_YOU_MEAN_SEMICOLON)
        self.name = name
        self.limits = limits or Limits()
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=self.limits.timeout_s)

    async def close(self) -> None:
        return None  # the session is shared: its owner closes it

    async def send(self, message: OutboundMessage) -> Outcome:
        try:
            outcome = await self._send(message)
        except Exception as exc:  # send never raises: a bug here must not stop the dispatcher
            self._log.error("send.crashed", channel=self.name, error=type(exc).__name__)
            return Outcome.retry(detail=f"unexpected error: {type(exc).__name__}")
        if outcome.kind == "config_error":
            self._log.warning("channel.config_error", channel=self.name, detail=outcome.detail)
        return outcome

    async def _send(self, message: OutboundMessage) -> Outcome:
        raise NotImplementedError
