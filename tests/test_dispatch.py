"""The dispatcher's own loop (`run`, as the daemon runs it) on a virtual clock: its rate
limit, its outage pauses and its drain at a stop all wait on the injected clock, so the test
moves time and never sleeps. A real SQLite store, a real webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from channels.base import Limits, Outcome
from channels.webhook import build
from engine.clock import VirtualClock
from engine.core.changes import Changes
from engine.core.model import Message
from engine.runtime.dispatch import Dispatcher
from engine.runtime.logs import configure
from engine.runtime.tasks import TaskGroup
from engine.store import Store, open_store
from tests.fakes.webhook_receiver import FakeReceiver, Reply

T0 = 1_795_000_000.0


@dataclass
class Loop:
    dispatcher: Dispatcher
    clock: VirtualClock
    store: Store
    receiver: FakeReceiver
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (message id, kind)

    async def queue(self, *ids: str) -> None:
        messages = {
            mid: Message(
                mid,
                instance_id=f"i-{mid}",
                rule_id="r",
                user_id=f"u-{mid}",
                step="0",
                channel="webhook",
                template="t",
                variant=None,
                category="transactional",
                status="queued",
                created_at=T0,
                payload={"body": {"n": mid}},
            )
            for mid in ids
        }
        await self.store.save(Changes(messages=messages))
        self.dispatcher.wake.set()

    async def status(self, mid: str) -> str:
        message = await self.store.message(mid)
        assert message is not None
        return message.status


async def until(what: str, condition: Callable[[], bool], within: float = 10.0) -> None:
    """Let the loop run (real I/O to the receiver included) until `condition` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def _info_logs() -> Iterator[None]:
    """channel.probe_failed, channel.resumed and dispatch.released are info lines."""
    configure(level="info", fmt="console")
    yield
    configure(level="warning", fmt="console")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def receiver() -> AsyncIterator[FakeReceiver]:
    async with FakeReceiver() as fake:
        yield fake


async def start(
    tmp_path: Path, receiver: FakeReceiver, session: aiohttp.ClientSession, **limits: Any
) -> tuple[Loop, TaskGroup]:
    store = await open_store(f"sqlite:///{tmp_path}/k.db")
    channel = build(
        "webhook", {"url": receiver.url, "secret": receiver.secret}, Limits(**limits), session
    )
    clock = VirtualClock(T0)
    tasks = TaskGroup()
    outcomes: list[tuple[str, str]] = []

    def deliver(mid: str, user: str, outcome: Outcome) -> None:
        outcomes.append((mid, outcome.kind))

    dispatcher = Dispatcher(store, {"webhook": channel}, clock, deliver, tasks)
    loop = Loop(dispatcher, clock, store, receiver, outcomes)
    tasks.spawn(dispatcher.run(), name="dispatcher")
    return loop, tasks


async def stop(loop: Loop, tasks: TaskGroup) -> None:
    await tasks.cancel()
    await loop.store.close()


async def test_the_rate_limit_waits_on_the_clock(
    tmp_path: Path, receiver: FakeReceiver, session: aiohttp.ClientSession
) -> None:
    loop, tasks = await start(tmp_path, receiver, session, rate_per_s=1.0)
    try:
        await loop.queue("m1", "m2", "m3")
        for second in range(3):
            await until(f"call {second + 1}", lambda s=second: len(receiver.deliveries) == s + 1)
            # The next call waits for the clock to reach its turn, one second later.
            await until(
                "the limiter's sleep", lambda s=second: loop.clock.next_sleeper() is not None
            )
            assert len(receiver.deliveries) == second + 1
            loop.clock.advance_to(T0 + second + 1)
        await until("three answers", lambda: len(loop.outcomes) == 3)
        assert sorted(loop.outcomes) == [("m1", "accepted"), ("m2", "accepted"), ("m3", "accepted")]
    finally:
        await stop(loop, tasks)


async def test_a_paused_channel_probes_when_the_clock_says_so(
    tmp_path: Path, receiver: FakeReceiver, session: aiohttp.ClientSession
) -> None:
    loop, tasks = await start(tmp_path, receiver, session, concurrency=1)
    receiver.otherwise = Reply(status=503)
    try:
        with capture_logs() as logs:
            await loop.queue("m1", "m2", "m3")
            await until("the first call", lambda: len(receiver.deliveries) == 1)
            await until("the pause", lambda: "webhook" in loop.dispatcher.paused())
            # No call while the clock stands still, however often the loop looks.
            loop.clock.advance_to(T0 + 0.5)
            await until("a poll", lambda: (loop.clock.next_sleeper() or 0) >= T0 + 1)
            assert len(receiver.deliveries) == 1
            loop.clock.advance_to(T0 + 1)  # the first pause is 1 s: one probe, failing
            await until("the probe", lambda: len(receiver.deliveries) == 2)
            await until("the next pause", lambda: "channel.probe_failed" in events(logs))
            receiver.otherwise = Reply()
            loop.clock.advance_to(T0 + 2)  # the second pause is 2 s: nothing yet
            await until("a poll", lambda: (loop.clock.next_sleeper() or 0) >= T0 + 3)
            assert len(receiver.deliveries) == 2
            loop.clock.advance_to(T0 + 3)  # the probe goes through; so does the rest at once
            await until("every answer", lambda: len(loop.outcomes) == 3)
        assert sorted(loop.outcomes) == [("m1", "accepted"), ("m2", "accepted"), ("m3", "accepted")]
        assert len(receiver.deliveries) == 5
        assert loop.dispatcher.paused() == {}
        assert events(logs) == ["channel.paused", "channel.probe_failed", "channel.resumed"]
    finally:
        await stop(loop, tasks)


def events(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs if str(e["event"]).startswith("channel.")]


@pytest.mark.parametrize("answered", [True, False], ids=["answered", "drain-timeout"])
async def test_a_stop_lets_the_call_out_answer_and_puts_the_rest_back(
    tmp_path: Path, receiver: FakeReceiver, session: aiohttp.ClientSession, answered: bool
) -> None:
    loop, tasks = await start(tmp_path, receiver, session, concurrency=1)
    receiver.gate = asyncio.Event()  # every answer waits for the test
    try:
        await loop.queue("m1", "m2", "m3")
        await until("the first call", lambda: len(receiver.deliveries) == 1)
        (out,) = receiver.ids()
        with capture_logs() as logs:
            drain = asyncio.create_task(loop.dispatcher.drain(10.0))
            # The calls not yet made go back to the queue at once, untouched.
            await until("the release", lambda: "dispatch.released" in [e["event"] for e in logs])
            rest = sorted({"m1", "m2", "m3"} - {out})
            assert [await loop.status(m) for m in rest] == ["queued", "queued"]
            if answered:
                receiver.gate.set()
            else:
                await until("the drain's wait", lambda: loop.clock.next_sleeper() == T0 + 10)
                loop.clock.advance_to(T0 + 10)
            await drain
        assert len(receiver.deliveries) == 1  # nothing new started
        if answered:
            # The answer is stored for the engine: nothing of it is sent again.
            assert loop.outcomes == [(out, "accepted")]
            assert await loop.status(out) == "answered"
            assert "dispatch.drain_timeout" not in [e["event"] for e in logs]
        else:
            # Still unanswered at the deadline: left in flight, requeued at the next start.
            assert loop.outcomes == []
            assert await loop.status(out) == "sending"
            assert "dispatch.drain_timeout" in [e["event"] for e in logs]
            assert await loop.store.requeue_in_flight() == 1
    finally:
        receiver.gate.set()
        await stop(loop, tasks)
