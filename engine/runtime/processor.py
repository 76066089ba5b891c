"""The daemon's engine loop: inbox events, due timers and send outcomes, one batch per
transaction, one writer per process (so no two tasks ever change the same user at once).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from channels.base import Outcome
from engine.clock import Clock, iso
from engine.core.changes import Changes
from engine.core.runner import Engine
from engine.core.workspace import Workspace
from engine.errors import EventError
from engine.lang.events import Event, parse_event
from engine.runtime.metrics import Metrics
from engine.store.base import ConcurrentUpdate, Store

log = structlog.get_logger("kaskad.processor")

_RECENT_MESSAGES_S = 30 * 86400
_FANOUT_BATCH = 500


@dataclass
class Counters:
    events: int = 0
    timers: int = 0
    outcomes: int = 0
    lateness_s: float = 0.0


class Processor:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        clock: Clock,
        *,
        batch: int = 500,
        timer_batch: int = 1000,
        on_commit: Callable[[Workspace, Changes], Awaitable[None]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock
        self.batch = batch
        # Timers fire in bigger batches: one query for the due ones, one load of their users,
        # one commit (and fsync) for all of them.
        self.timer_batch = timer_batch
        self.wake = asyncio.Event()
        self.outcomes: asyncio.Queue[tuple[str, str, Outcome]] = asyncio.Queue()
        self.counters = Counters()
        self.looping = False
        self.metrics = metrics
        self._on_commit = on_commit
        self._calls: list[tuple[list[str], Callable[[Workspace], Any], asyncio.Future[Any]]] = []
        self._inbox_estimate = 0
        self._messages_since_s = max(
            [_RECENT_MESSAGES_S, *(per for per, _ in engine.caps)], default=_RECENT_MESSAGES_S
        )

    # -- the public interface: how ingest, the dispatcher and the API reach the loop ------

    def accepted(self, count: int) -> None:
        """`count` events were durably stored in the inbox: process them soon."""
        self._inbox_estimate += count
        self.wake.set()

    def inbox_estimate(self) -> int:
        """Events acknowledged but not processed yet (for back-pressure), kept in memory."""
        return self._inbox_estimate

    def deliver(self, message_id: str, user_id: str, outcome: Outcome) -> None:
        """A provider's final answer on a queued message (stored as answered already)."""
        self.outcomes.put_nowait((message_id, user_id, outcome))
        self.wake.set()

    def has_outcomes(self) -> bool:
        return not self.outcomes.empty()

    async def start(self) -> None:
        self._inbox_estimate = await self.store.inbox_size()

    def _starts_since(self, now: float) -> float:
        cooldowns = [r.cooldown_s for r in self.engine.rules.rules.values()]
        return now - max(cooldowns, default=0.0) - 1.0

    async def _workspace(self, user_ids: list[str], *, starts: bool = True) -> Workspace:
        """The users' state; starts=False for work that starts no instance (no cooldowns)."""
        now = self.clock.now()
        ws = Workspace(now=now)
        if user_ids:
            ws.users = await self.store.load_users(
                sorted(set(user_ids)),
                messages_since=now - self._messages_since_s,
                starts_since=self._starts_since(now) if starts else math.inf,
            )
        return ws

    async def _commit(self, ws: Workspace) -> None:
        changes = ws.take_changes()
        await self.store.save(changes)
        if self._on_commit is not None:
            await self._on_commit(ws, changes)  # what was just written (ws.changes is empty)

    # -- one step of each kind; each returns how much it did -------------------------------

    async def step_inbox(self) -> int:
        rows = await self.store.inbox_batch(self.batch)
        if not rows:
            return 0
        events: list[tuple[int, Event]] = []
        done: list[int] = []
        for seq, body, cursor in rows:
            try:
                event = parse_event(json.loads(body), received_at=self.clock.now())
            except (ValueError, EventError) as exc:
                # Validated at ingest; a row that no longer parses must not block the queue.
                log.error("inbox.unreadable", seq=seq, error=str(exc))
                done.append(seq)
                continue
            if event.user_id is None:
                if events or done:
                    break  # product events go alone: their fan-out commits in batches
                await self._fan_out(seq, event, cursor)
                return 1
            events.append((seq, event))
        ws = await self._workspace([e.user_id for _, e in events if e.user_id])
        for seq, event in events:
            assert event.user_id is not None
            self.engine.handle_event(ws, ws.users[event.user_id], event)
            done.append(seq)
        ws.changes.inbox_done.extend(done)
        await self._commit(ws)
        self.counters.events += len(events)
        if self.metrics:
            self.metrics.processed.inc(len(events))
        self._inbox_estimate = max(0, self._inbox_estimate - len(done))
        return len(done)

    async def _fan_out(self, seq: int, event: Event, cursor: str | None) -> None:
        """Start one instance per interested user, in batches; progress survives a crash."""
        rules = self.engine.rules.fan_out.get(event.type, ())
        start_rule, _, start_user = (cursor or "").partition("\x1f")
        started = not start_rule
        for rule in rules:
            if not started and rule.id != start_rule:
                continue
            after = start_user if not started else ""
            started = True
            while True:
                now = self.clock.now()
                users = await self.store.interested_users(
                    str(event.data.get("product_id")),
                    rule.trigger.fan_out,
                    now - 30 * 86400,
                    after,
                    _FANOUT_BATCH,
                )
                ws = await self._workspace(users)
                for uid in users:
                    self.engine.try_start(ws, rule, ws.users[uid], event.context)
                if users:
                    after = users[-1]
                    ws.changes.inbox_cursor = (seq, f"{rule.id}\x1f{after}")
                    await self._commit(ws)
                if len(users) < _FANOUT_BATCH:
                    break
        ws = Workspace(now=self.clock.now())
        ws.changes.inbox_done.append(seq)
        await self._commit(ws)
        self.counters.events += 1
        self._inbox_estimate = max(0, self._inbox_estimate - 1)

    async def step_timers(self) -> int:
        now = self.clock.now()
        due = await self.store.due_instances(now, self.timer_batch)
        if not due:
            return 0
        # A timer only moves its own instance on: it never starts one, so no cooldowns.
        ws = await self._workspace([uid for _, _, uid in due], starts=False)
        fired = 0
        for due_at, iid, uid in due:
            st = ws.users.get(uid)
            inst = next((i for i in st.instances if i.id == iid), None) if st else None
            if st is None or inst is None or inst.due_at != due_at:
                continue
            self.counters.lateness_s = max(0.0, now - due_at)
            if self.metrics:
                self.metrics.timer_lateness.observe(self.counters.lateness_s)
            self.engine.on_timer(ws, st, inst)
            fired += 1
        await self._commit(ws)
        self.counters.timers += fired
        if self.metrics:
            self.metrics.timers_fired.inc(fired)
        return max(fired, 1)

    async def step_outcomes(self) -> int:
        items: list[tuple[str, str, Outcome]] = []
        while not self.outcomes.empty() and len(items) < self.batch:
            items.append(self.outcomes.get_nowait())
        if not items:
            return 0
        try:
            ws = await self._workspace([uid for _, uid, _ in items])
            for message_id, uid, outcome in items:
                self.engine.on_send_outcome(ws, ws.users[uid], message_id, outcome)
            await self._commit(ws)
        except BaseException:
            # Nothing was committed: keep the outcomes for the next pass (they are also in
            # the store as 'answered', so a crash here replays them at start-up).
            for item in items:
                self.outcomes.put_nowait(item)
            raise
        self.counters.outcomes += len(items)
        return len(items)

    async def step_calls(self) -> int:
        """Requests from the API (profile merge, erase, broadcasts), run in the loop."""
        if not self._calls:
            return 0
        calls, self._calls = self._calls, []
        ws = await self._workspace([uid for users, _, _ in calls for uid in users])
        results: list[tuple[Any, Exception | None]] = []
        for _, fn, _ in calls:
            try:
                results.append((fn(ws), None))
            except Exception as exc:
                results.append((None, exc))
        try:
            await self._commit(ws)
        except ConcurrentUpdate:
            # Another replica changed one of these users meanwhile: nothing was written;
            # the requests run again, first, on fresh state.
            self._calls[:0] = calls
            raise
        except BaseException as exc:
            for _, _, fut in calls:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            raise
        for (_, _, fut), (value, failure) in zip(calls, results, strict=True):
            if fut.done():
                continue
            if failure is not None:
                fut.set_exception(failure)
            else:
                fut.set_result(value)
        return len(calls)

    async def call(self, user_ids: list[str], fn: Callable[[Workspace], Any]) -> Any:
        """Run fn on a workspace holding these users, in order with the engine's own work."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls.append((user_ids, fn, fut))
        self.wake.set()
        if not self.looping:
            await self.step_calls()  # foreground mode (tests, burst): nobody else will
        return await fut

    async def erase(self, user_id: str) -> None:
        """Erase a user's personal data: running chains stop, the profile goes."""

        def erase(ws: Workspace) -> None:
            st = ws.users[user_id]
            for inst in list(st.instances):
                self.engine.end(ws, st, inst, "stopped", reason="erased")
            ws.changes.erased_users.add(user_id)
            ws.changes.profiles.pop(user_id, None)

        await self.call([user_id], erase)

    async def apply_event(self, event: Event) -> dict[str, Any]:
        """Process one event now (PUT /v1/profiles) and return the user's profile."""
        assert event.user_id is not None
        uid = event.user_id

        def apply(ws: Workspace) -> dict[str, Any]:
            st = ws.users[uid]
            self.engine.handle_event(ws, st, event)
            return dict(st.profile)

        result: dict[str, Any] = await self.call([uid], apply)
        return result

    async def broadcast(self, rule_id: str) -> int:
        """Start a scheduled rule for every profile its audience matches."""
        rule = self.engine.rules.rules.get(rule_id)
        if rule is None:
            return 0
        fired = self.clock.now()
        trigger = {
            "id": None,
            "type": "schedule",
            "user_id": None,
            "time": iso(fired),
            "data": {"rule": rule_id},
        }
        after, started = "", 0
        while True:
            users = await self.store.profile_ids(after, _FANOUT_BATCH)
            if not users:
                break

            def start(ws: Workspace, users: list[str] = users) -> int:
                count = 0
                for uid in users:
                    if (
                        self.engine.try_start(ws, rule, ws.users[uid], {**trigger, "user_id": uid})
                        is not None
                    ):
                        count += 1
                return count

            started += await self.call(users, start)
            after = users[-1]
        log.info("broadcast.done", rule=rule_id, started=started)
        return started

    async def run_once(self) -> int:
        """One pass over every kind of work: events first, then timers (SPEC 4)."""
        done = await self.step_calls()
        done += await self.step_inbox()
        done += await self.step_outcomes()
        done += await self.step_timers()
        return done

    async def drain(self) -> None:
        """Run until nothing is due now (tests and shutdown)."""
        while await self.run_once():
            pass

    async def run(self) -> None:
        """Forever: work while there is work; else sleep until the next due timer or a wake."""
        self.looping = True
        while True:
            # Cleared before looking for work: a wake set while we look is not lost.
            self.wake.clear()
            try:
                if await self.run_once():
                    continue
                # Idle: recount what waits in the inbox (another replica on a shared
                # PostgreSQL may have applied events this one counted as accepted).
                self._inbox_estimate = await self.store.inbox_size()
                next_due = await self.store.next_due()
            except asyncio.CancelledError:
                raise
            except ConcurrentUpdate as exc:
                # Another replica worked on one of these users (PostgreSQL): nothing was
                # written; the same work runs again at once on fresh state.
                log.info("processor.conflict", detail=str(exc))
                continue
            except Exception:
                # The store failed (disk full, database down): back off and try again;
                # nothing was committed, so nothing is lost.
                log.exception("processor.failed")
                await self._sleep(1.0)
                continue
            delay_s = 3600.0 if next_due is None else max(0.0, next_due - self.clock.now())
            await self._sleep(delay_s)

    async def _sleep(self, delay_s: float) -> None:
        await self.clock.wait(self.wake, self.clock.now() + min(delay_s, 3600.0))
