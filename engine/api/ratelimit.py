"""Failed authentications counted per key (a client address, an account name): after
`limit` failures within `window_s`, more attempts are refused until the oldest one is that
old. The dashboard's login form, and a wrong Bearer token on the admin API, the dashboard
and /metrics, count against the client's address (`ip:`); a wrong ingest token against its
own (`ingest:`). In memory, per process; the times come from the daemon's clock (virtual in
tests)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 60.0
# A flood of addresses cannot grow the table without bound: past this many keys the
# expired go, then the oldest, down to nine tenths (so a flood prunes once per many).
_MAX_KEYS = 100_000


class TooManyFailures(Exception):
    """Too many recent failures: answer 429 with Retry-After (whole seconds)."""

    def __init__(self, wait_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(wait_s))
        super().__init__(f"too many failed attempts; retry in {self.retry_after_s} s")


def address_key(request: web.Request, kind: str = "ip") -> str:
    """The limiter's key of the request's client address."""
    return f"{kind}:{request.remote or '?'}"


@dataclass
class Failures:
    limit: int = LOGIN_FAILURES
    window_s: float = LOGIN_WINDOW_S
    max_keys: int = _MAX_KEYS
    _times: dict[str, deque[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        """How many keys have failures counted."""
        return len(self._times)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._times.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        return times

    def retry_after(self, keys: list[str], now: float) -> float | None:
        """Seconds until any of these keys may try again, None when all may now."""
        waits = []
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.limit:
                waits.append(times[-self.limit] + self.window_s - now)
        return max(waits) if waits else None

    def check(self, keys: list[str], now: float) -> None:
        """Raise TooManyFailures while any of these keys is over the limit."""
        wait = self.retry_after(keys, now)
        if wait is not None:
            raise TooManyFailures(wait)

    def failed(self, keys: list[str], now: float) -> None:
        if len(self._times) > self.max_keys:
            for key in list(self._times):
                self._recent(key, now)
            keep = self.max_keys - self.max_keys // 10
            for key in list(self._times)[: max(0, len(self._times) - keep)]:
                del self._times[key]  # first seen longest ago first (a dict's order)
        for key in keys:
            self._times.setdefault(key, deque(maxlen=self.limit)).append(now)
