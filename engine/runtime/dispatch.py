"""The dispatcher: claims queued messages, sends each through its channel within the
channel's limits, and hands the final answer to the engine. A provider outage pauses the
channel and keeps its queue; what counts as one: engine/runtime/channel_state.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from channels.base import Channel, OutboundMessage, Outcome
from engine.clock import Clock, iso
from engine.core.model import Message
from engine.runtime.answers import Answers
from engine.runtime.channel_state import ChannelState, RateLimiter
from engine.runtime.tasks import TaskGroup
from engine.store.base import Store

log = structlog.get_logger("kaskad.dispatch")

BATCH = 200  # messages claimed at a time
POLL_S = 1.0  # how often the queue is looked at when nothing wakes the dispatcher
# How often messages left in flight here by a failed write (no send of this process holds
# them) go back to the queue.
SWEEP_S = 30.0
EXPIRE_BATCH = 500
# Added to the adapter's own timeout: a guard against an adapter that never returns. It
# bounds a network call, so it runs on real time whatever the clock.
_GUARD_S = 5.0


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
        # Answers are stored in batches: one transaction for every answer that came in
        # while the previous batch was being written.
        self.answers = Answers(store)
        self.channels = {
            name: ChannelState(
                ch,
                asyncio.Semaphore(max(1, ch.limits.concurrency)),
                RateLimiter(ch.limits.rate_per_s, clock),
            )
            for name, ch in channels.items()
        }
        self._sends: dict[str, asyncio.Task[None]] = {}  # message id -> its send (run mode)
        self._calling: set[str] = set()  # messages whose provider call is out
        self._idle = asyncio.Event()  # set when no send is running
        self._idle.set()
        self._stopping = False

    def paused(self) -> dict[str, str]:
        """Channels paused by a config error or an outage, and why."""
        return {name: why for name, st in self.channels.items() if (why := st.paused_why())}

    async def run(self) -> None:
        requeued = await self.store.requeue_in_flight()
        if requeued:
            log.warning("dispatch.requeued_in_flight", count=requeued)
        next_sweep = self.clock.now() + SWEEP_S
        while not self._stopping:
            # Cleared before looking, so a wake-up that comes while we look is not lost.
            self.wake.clear()
            try:
                if self.clock.now() >= next_sweep:
                    next_sweep = self.clock.now() + SWEEP_S
                    stuck = await self.store.requeue_in_flight(keep=set(self._sends))
                    if stuck:
                        log.warning("dispatch.requeued_stuck", count=stuck)
                claimed, full = await self._claim(BATCH)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatch.claim_failed")
                claimed, full = [], False
            for message, probe in claimed:
                self._spawn(message, probe)
            if not full:
                await self.clock.wait(self.wake, self._next_look())

    async def dispatch_once(self) -> int:
        """Send every message due now and wait for the outcomes (tests, burst mode)."""
        claimed, _ = await self._claim(10_000)
        await asyncio.gather(*(self._send(m, probe) for m, probe in claimed))
        return len(claimed)

    async def drain(self, timeout_s: float) -> None:
        """Stop: claim nothing more; messages not yet handed to their provider go back to the
        queue; calls out get up to `timeout_s` to answer, and their answers are stored (the
        engine applies them now or at the next start). Only a call still out at the
        deadline stays in flight, to be requeued (and maybe repeated) at the next start."""
        self._stopping = True
        self.wake.set()
        waiting = {mid: task for mid, task in self._sends.items() if mid not in self._calling}
        for task in waiting.values():
            task.cancel()
        await asyncio.gather(*waiting.values(), return_exceptions=True)
        if waiting:
            await self.store.release(list(waiting))
            log.info("dispatch.released", count=len(waiting))
        if self._sends:
            log.info("dispatch.draining", calls=len(self._sends), timeout_s=timeout_s)
            await self.clock.wait(self._idle, self.clock.now() + timeout_s)
        if self._sends:
            log.warning("dispatch.drain_timeout", unanswered=len(self._sends))
            left = list(self._sends.values())
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)

    # -- claiming --------------------------------------------------------------------------

    async def _claim(self, limit: int) -> tuple[list[tuple[Message, bool]], bool]:
        """(message, is a probe) pairs to send now, and whether the batch was full. A paused
        channel's messages stay queued, but for one probe once its pause is over."""
        now = self.clock.now()
        claimed: list[tuple[Message, bool]] = []
        held: list[str] = []
        for name, state in self.channels.items():
            if state.outage is None:
                continue
            held.append(name)
            if state.probe_due(now):
                await self._expire(name, state, now)
                probe = await self.store.claim_queued(now, 1, only=name)
                if probe:
                    state.probing = True
                    claimed.append((probe[0], True))
                else:
                    # Nothing waits for it: no longer paused, but not proven back either
                    # (`last_ok` stays false, so the next retry answer pauses it again).
                    state.resume()
                    log.info("channel.resumed", channel=name, probed=False)
                    held.pop()
        batch = await self.store.claim_queued(now, limit, skip=held)
        claimed.extend((m, False) for m in batch)
        return claimed, len(batch) >= limit

    async def _expire(self, name: str, state: ChannelState, now: float) -> None:
        """Messages that waited out `retry_for` on a paused channel give up."""
        cutoff = now - state.channel.limits.retry_for_s
        why = state.outage.why if state.outage is not None else "provider unavailable"
        while True:
            batch = await self.store.claim_queued(
                now, EXPIRE_BATCH, only=name, queued_before=cutoff
            )
            for message in batch:
                outcome = Outcome.retry(detail=f"gave up after retry_for: {why}")
                log.warning("send.gave_up", channel=name, message=message.id, detail=why)
                await self.answers.record(message.id, outcome.to_json())
                self._final(message, outcome)
            if len(batch) < EXPIRE_BATCH:
                return

    def _next_look(self) -> float:
        now = self.clock.now()
        probes = [
            s.outage.until
            for s in self.channels.values()
            if s.outage is not None and not s.probing and s.outage.until > now
        ]
        return min([now + POLL_S, *probes])

    def _spawn(self, message: Message, probe: bool) -> None:
        task = self.tasks.spawn(self._send(message, probe), name=f"send-{message.id}")
        self._sends[message.id] = task
        self._idle.clear()
        task.add_done_callback(lambda _: self._finished(message.id))

    def _finished(self, message_id: str) -> None:
        self._sends.pop(message_id, None)
        if not self._sends:
            self._idle.set()

    # -- sending ---------------------------------------------------------------------------

    async def _send(self, message: Message, probe: bool = False) -> None:
        state = self.channels.get(message.channel or "")
        try:
            outcome = await self._attempt(message, state, probe)
        finally:
            self._calling.discard(message.id)
            if probe and state is not None:
                state.probing = False
        if outcome is not None:
            self._final(message, outcome)

    def _final(self, message: Message, outcome: Outcome) -> None:
        if self.on_result is not None:
            self.on_result(message.channel or "", outcome.kind)
        self.deliver(message.id, message.user_id, outcome)

    async def _attempt(
        self, message: Message, state: ChannelState | None, probe: bool
    ) -> Outcome | None:
        """The stored final answer, or None when the message went back to the queue."""
        if state is None or state.config_error is not None:
            outcome = Outcome.config_error(
                f"channel '{message.channel}' is not configured"
                if state is None
                else f"channel paused: {state.config_error}"
            )
            await self.answers.record(message.id, outcome.to_json())
            return outcome
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
            if await self._held(message, state, probe):
                return None
            await state.limiter.acquire()
            if await self._held(message, state, probe):
                return None
            failures_at_call = state.failures
            self._calling.add(message.id)
            try:
                # A timeout scope, not wait_for: no task of its own per send.
                async with asyncio.timeout(state.channel.limits.timeout_s + _GUARD_S):
                    outcome = await state.channel.send(outbound)
            except TimeoutError:
                outcome = Outcome.retry(detail="timeout")
            except Exception as exc:  # an adapter bug must not kill the dispatcher
                log.exception("dispatch.adapter_failed", channel=message.channel)
                outcome = Outcome.retry(detail=f"{type(exc).__name__}: {exc}")
            # The slot is held until the answer is stored: at most `concurrency` calls per
            # channel can be answered-but-unrecorded, which bounds repeats after a crash.
            return await self._settle(message, state, outcome, failures_at_call, probe)

    async def _held(self, message: Message, state: ChannelState, probe: bool) -> bool:
        """Whether the message goes back to the queue uncalled: the dispatcher is stopping,
        or the channel paused while the message waited for its turn."""
        if self._stopping:
            await self.store.release([message.id])
            return True
        if state.outage is not None and not probe:
            await self.store.reschedule(
                message.id,
                message.attempts,
                state.outage.until,
                state.outage.why,
                at=self.clock.now(),
            )
            return True
        return False

    async def _settle(
        self,
        message: Message,
        state: ChannelState,
        outcome: Outcome,
        failures_at_call: int,
        probe: bool,
    ) -> Outcome | None:
        """Log; pause or resume the channel; requeue a retry or store a final answer."""
        log.info(
            "send.outcome",
            channel=message.channel,
            message=message.id,
            outcome=outcome.kind,
            detail=outcome.detail[:200],
        )
        if outcome.kind == "retry":
            if not await self._retry(message, state, outcome, failures_at_call, probe):
                return None
        elif outcome.kind == "config_error":
            state.config_error = outcome.detail or "config_error"
            state.outage = None
            log.error(
                "channel.paused", channel=message.channel, why=outcome.detail, until="restart"
            )
        else:
            state.answered()
            if probe and state.outage is not None:
                outage = state.resume()
                assert outage is not None
                log.info(
                    "channel.resumed",
                    channel=message.channel,
                    paused_for_s=round(self.clock.now() - outage.since, 3),
                )
                self.wake.set()  # its queue goes out now
        # Stored before the engine hears of it: after a crash the answer is replayed, never
        # asked for again (only a call in flight at the crash may repeat).
        await self.answers.record(message.id, outcome.to_json())
        return outcome

    async def _retry(
        self,
        message: Message,
        state: ChannelState,
        outcome: Outcome,
        failures_at_call: int,
        probe: bool,
    ) -> bool:
        """Requeue the message (False), or True when it gives up (retries_exhausted)."""
        verdict = state.retried(message, outcome, failures_at_call, probe, self.clock.now())
        channel = message.channel
        if verdict.pause is not None:
            outage = verdict.pause.outage
            if verdict.pause.first:
                log.warning(
                    "channel.paused", channel=channel, why=outage.why, until=iso(outage.until)
                )
            else:
                log.info(
                    "channel.probe_failed", channel=channel, why=outage.why, until=iso(outage.until)
                )
        if verdict.requeue_at is not None:
            await self.store.reschedule(
                message.id,
                verdict.attempts,
                verdict.requeue_at,
                outcome.detail,
                at=self.clock.now(),
            )
            if verdict.attempts > message.attempts:
                log.info(
                    "send.retrying",
                    channel=channel,
                    message=message.id,
                    attempt=verdict.attempts,
                    at=iso(verdict.requeue_at),
                )
            return False
        log.warning(
            "send.gave_up",
            channel=channel,
            message=message.id,
            attempts=message.attempts,
            detail=outcome.detail[:200],
        )
        return True
