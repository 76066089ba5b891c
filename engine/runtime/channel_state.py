"""One channel as the dispatcher sees it: its limits at run time (calls at once, calls per
second) and its health (a provider outage pauses it with backoff; a config error pauses it
until a restart).

What a `retry` answer means is decided here. A provider that is down (connection refused,
timeouts, 5xx, throttling) fails every message alike: that is a state of the channel, so the
channel pauses and its queue waits, without counting anything against the messages. A retry
is about the message itself (a full mailbox, one recipient's rate limit) only when the
channel shows it works: its latest answer was a good one and no other call has failed since
this message's call began. Only such retries count towards `max_retries`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from channels.base import Channel, Outcome
from engine.clock import Clock, iso
from engine.core.model import Message

PAUSE_FIRST_S = 1.0  # the first pause of an outage; each failed probe doubles it
PAUSE_MAX_S = 300.0
RETRY_FIRST_S = 2.0  # a message's own retries: 2 s, 4 s, 8 s... at most 15 min
RETRY_MAX_S = 15 * 60.0


def retry_delay_s(attempt: int, retry_after_s: float | None) -> float:
    """Before a message's own retry number `attempt`; the provider's Retry-After is a floor."""
    delay_s: float = min(RETRY_MAX_S, RETRY_FIRST_S * 2.0 ** max(0, attempt - 1))
    return max(delay_s, retry_after_s or 0.0)


class RateLimiter:
    """A token bucket on the injected clock: at most `rate_per_s` starts per second."""

    def __init__(self, rate_per_s: float | None, clock: Clock) -> None:
        self.rate = rate_per_s
        self.clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.rate:
            return
        async with self._lock:
            now = self.clock.now()
            start = max(now, self._next)
            self._next = start + 1.0 / self.rate
            if start > now:
                await self.clock.sleep_until(start)


@dataclass
class Outage:
    """The provider stopped answering: nothing is sent until `until`, then one probe."""

    why: str  # the answer that paused it, e.g. "HTTP 503: ..." or "timeout after 10 s"
    since: float
    until: float
    pause_s: float  # the current step of the backoff


@dataclass(frozen=True)
class Pause:
    outage: Outage
    first: bool  # the outage began (else a probe failed and the pause grew)


@dataclass(frozen=True)
class Verdict:
    """A retry answer's consequence: back to the queue at `requeue_at` (None: give up as
    retries_exhausted) with `attempts` counted, and the pause it caused, if any."""

    requeue_at: float | None
    attempts: int
    pause: Pause | None = None


@dataclass
class ChannelState:
    channel: Channel
    semaphore: asyncio.Semaphore
    limiter: RateLimiter
    config_error: str | None = None  # paused until a restart: retrying cannot fix it
    outage: Outage | None = None
    probing: bool = False  # a probe's call is out: no second one
    # What the channel's answers show: how many calls failed with a retry so far, and
    # whether the latest answer was a good one (accepted or rejected: the provider works).
    failures: int = 0
    last_ok: bool = False  # nothing proves the channel works before its first answer

    def paused_why(self) -> str | None:
        if self.config_error is not None:
            return self.config_error
        if self.outage is not None:
            return f"provider unavailable ({self.outage.why}); next probe {iso(self.outage.until)}"
        return None

    def probe_due(self, now: float) -> bool:
        return self.outage is not None and not self.probing and now >= self.outage.until

    def about_message(self, failures_at_call: int) -> bool:
        """Whether a retry answer to a call that began when `failures` was
        `failures_at_call` is about its message rather than the channel."""
        return self.outage is None and self.last_ok and self.failures == failures_at_call

    def answered(self) -> None:
        """A good answer (the provider took the message or refused it for a reason)."""
        self.last_ok = True

    def retried(
        self, message: Message, outcome: Outcome, failures_at_call: int, probe: bool, now: float
    ) -> Verdict:
        """What becomes of a message answered `retry`, and of its channel."""
        limits = self.channel.limits
        expired = now >= message.created_at + limits.retry_for_s
        about_message = not probe and self.about_message(failures_at_call)
        self.failures += 1
        self.last_ok = False
        if about_message:
            # The channel answers others: this message's own trouble, counted and backed off.
            attempt = message.attempts + 1
            if attempt > limits.max_retries or expired:
                return Verdict(None, attempt)
            return Verdict(now + retry_delay_s(attempt, outcome.after_s), attempt)
        # The provider is down: the channel waits (a failed probe: longer), the message
        # keeps its place and its count.
        pause = None
        if probe or self.outage is None:
            pause = self._pause(now, outcome.after_s, outcome.detail[:200] or "retry")
        assert self.outage is not None
        return Verdict(None if expired else self.outage.until, message.attempts, pause)

    def _pause(self, now: float, retry_after_s: float | None, why: str) -> Pause:
        first = self.outage is None
        pause_s = (
            PAUSE_FIRST_S if self.outage is None else min(PAUSE_MAX_S, self.outage.pause_s * 2)
        )
        since = now if self.outage is None else self.outage.since
        until = now + max(pause_s, retry_after_s or 0.0)
        self.outage = Outage(why=why, since=since, until=until, pause_s=pause_s)
        return Pause(self.outage, first)

    def resume(self) -> Outage | None:
        outage, self.outage = self.outage, None
        return outage
