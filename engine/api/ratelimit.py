"""Failed logins counted per key (a client address, an account name): after `limit`
failures within `window_s`, more attempts are refused until the oldest one is that old.
In memory, per process; the times come from the daemon's clock (virtual in tests)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 60.0
_MAX_KEYS = 100_000  # a flood of addresses cannot grow the table without bound


@dataclass
class Failures:
    limit: int = LOGIN_FAILURES
    window_s: float = LOGIN_WINDOW_S
    _times: dict[str, deque[float]] = field(default_factory=dict)

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

    def failed(self, keys: list[str], now: float) -> None:
        if len(self._times) > _MAX_KEYS:
            for key in list(self._times):
                self._recent(key, now)
        for key in keys:
            self._times.setdefault(key, deque(maxlen=self.limit)).append(now)
