"""The dispatcher: sends queued messages through their channels with per-channel limits,
retries with backoff (honouring Retry-After), and hands the final outcome to the engine.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from channels.base import Channel, OutboundMessage, Outcome
from engine.clock import Clock
from engine.core.model import Message
from engine.runtime.tasks import TaskGroup
from engine.store.base import Store

log = structlog.get_logger("kaskad.dispatch")

_BACKOFF_BASE_S = 2.0
_BACKOFF_MAX_S = 15 * 60.0


def backoff_s(attempt: int, retry_after_s: float | None) -> float:
    """Exponential backoff with jitter; a provider's Retry-After is a floor."""
    delay = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2 ** max(0, attempt - 1))
    delay *= 0.8 + 0.4 * random.random()
    return float(max(delay, retry_after_s or 0.0))


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
class ChannelState:
    channel: Channel
    semaphore: asyncio.Semaphore
    limiter: RateLimiter
    paused: str | None = None  # the config error that paused it
    counts: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        clock: Clock,
        deliver: Callable[[str, str, Outcome], None],
        tasks: TaskGroup,
        *,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.deliver = deliver
        self.tasks = tasks
        self.wake = asyncio.Event()
        self.on_result = on_result
        self.channels = {
            name: ChannelState(
                ch,
                asyncio.Semaphore(max(1, ch.limits.concurrency)),
                RateLimiter(ch.limits.rate_per_s, clock),
            )
            for name, ch in channels.items()
        }
        self._in_flight: set[str] = set()

    def paused(self) -> dict[str, str]:
        return {name: st.paused for name, st in self.channels.items() if st.paused}

    async def run(self) -> None:
        requeued = await self.store.requeue_in_flight()
        if requeued:
            log.warning("dispatch.requeued_in_flight", count=requeued)
        while True:
            # Cleared before looking, so a wake-up that comes while we look is not lost.
            self.wake.clear()
            try:
                batch = await self.store.claim_queued(self.clock.now(), 200)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatch.claim_failed")
                batch = []
            for message in batch:
                self._in_flight.add(message.id)
                self.tasks.spawn(self._send(message), name=f"send-{message.id}")
            if len(batch) == 200:
                continue
            await self.clock.wait(self.wake, self.clock.now() + 1.0)

    async def dispatch_once(self) -> int:
        """Send every message due now and wait for the outcomes (tests, burst mode)."""
        batch = await self.store.claim_queued(self.clock.now(), 10_000)
        await asyncio.gather(*(self._send(m) for m in batch))
        return len(batch)

    async def _send(self, message: Message) -> None:
        try:
            outcome = await self._attempt(message)
            if outcome is None:
                return  # rescheduled for a retry
            if self.on_result is not None:
                self.on_result(message.channel or "", outcome.kind)
            self.deliver(message.id, message.user_id, outcome)
        finally:
            self._in_flight.discard(message.id)

    async def _attempt(self, message: Message) -> Outcome | None:
        state = self.channels.get(message.channel or "")
        if state is None:
            return Outcome.config_error(f"channel '{message.channel}' is not configured")
        if state.paused:
            return Outcome.config_error(f"channel paused: {state.paused}")
        outbound = OutboundMessage(
            id=message.id,
            channel=message.channel or "",
            user_id=message.user_id,
            rule=message.rule_id,
            category=message.category,
            addresses=list(message.recipient or []),
            payload=dict(message.payload or {}),
            headers=dict((message.payload or {}).get("_headers") or {}),
        )
        outbound.payload.pop("_headers", None)
        async with state.semaphore:
            await state.limiter.acquire()
            try:
                outcome = await asyncio.wait_for(
                    state.channel.send(outbound), timeout=state.channel.limits.timeout_s + 5
                )
            except TimeoutError:
                outcome = Outcome.retry(detail="timeout")
            except Exception as exc:  # an adapter bug must not kill the dispatcher
                log.exception("dispatch.adapter_failed", channel=message.channel)
                outcome = Outcome.retry(detail=f"{type(exc).__name__}: {exc}")
            # The slot is held until the answer is stored: at most `concurrency` calls per
            # channel can be answered-but-unrecorded, which bounds repeats after a crash.
            return await self._settle(message, state, outcome)

    async def _settle(
        self, message: Message, state: ChannelState, outcome: Outcome
    ) -> Outcome | None:
        """Log, pause on config errors, reschedule retries; store a final answer."""
        log.info(
            "send.outcome",
            channel=message.channel,
            message=message.id,
            outcome=outcome.kind,
            detail=outcome.detail[:200],
        )
        if outcome.kind == "config_error":
            state.paused = outcome.detail or "config_error"
            log.error("channel.paused", channel=message.channel, detail=outcome.detail)
        if outcome.kind == "retry":
            attempt = message.attempts + 1
            if attempt <= state.channel.limits.max_retries:
                when = self.clock.now() + backoff_s(attempt, outcome.after_s)
                await self.store.reschedule(message.id, attempt, when, outcome.detail)
                log.info(
                    "send.retrying", channel=message.channel, message=message.id, attempt=attempt
                )
                return None
        # Stored before the engine hears of it: after a crash the answer is replayed, never
        # asked for again (only a call in flight at the crash may repeat).
        await self.store.record_outcome(message.id, outcome.to_json())
        return outcome
