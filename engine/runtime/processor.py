"""The engine loop, one writer per process: inbox events, due timers, send outcomes, API
calls and scheduled jobs, each batch one unit of work (load, apply, commit).

The daemon runs it forever on the real clock with its users in the store; `simulate` and
the tests drive the same steps on a virtual clock (simulate with every user resident).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import structlog

from channels.base import Outcome
from engine.clock import Clock
from engine.core.runner import Engine
from engine.core.workspace import FACTS, Workspace
from engine.lang.events import Event, parse_event
from engine.lang.ruleset import RuleSet
from engine.runtime.audiences import broadcast, fan_out
from engine.runtime.jobs import Job, JobRunner, cron_job, once_job
from engine.runtime.metrics import Metrics
from engine.runtime.states import States, StoreStates
from engine.runtime.units import OnCommit, Stopping, Units
from engine.store.base import ConcurrentUpdate, JobRow, Store
from engine.store.controls import RuleControl

log = structlog.get_logger("kaskad.processor")

_RECENT_MESSAGES_S = 30 * 86400
_IDLE_S = 3600.0
# On a store other processes write: how often answers stored but never applied (a write
# that failed after the provider answered, a replica that died) are handed to the engine.
SWEEP_S = 5.0
# How often the rules paused by hand are read again (another replica may pause one).
CONTROLS_S = 2.0
T = TypeVar("T")


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
        states: States | None = None,
        batch: int = 500,
        timer_batch: int = 1000,
        on_commit: OnCommit | None = None,
        metrics: Metrics | None = None,
        offload: bool = False,
    ) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock
        messages_s = max(
            [_RECENT_MESSAGES_S, *(per for per, _ in engine.caps)], default=_RECENT_MESSAGES_S
        )
        self.states = states or StoreStates(store, messages_s, self._starts_since)
        self.batch = batch
        # Timers fire in bigger batches: one query for the due ones, one load of their users,
        # one commit (and fsync) for all of them.
        self.timer_batch = timer_batch
        self.wake = asyncio.Event()
        self.outcomes: asyncio.Queue[tuple[str, str, Outcome]] = asyncio.Queue()
        self.counters = Counters()
        self.looping = False
        self.metrics = metrics
        self.units = Units(
            engine, self.states, clock, metrics=metrics, on_commit=on_commit, offload=offload
        )
        self.jobs = JobRunner(self.units, store)
        self._calls: list[tuple[list[str], Callable[[Workspace], Any], asyncio.Future[Any]]] = []
        self._inbox_estimate = 0
        self._next_rules: RuleSet | None = None
        self._next_sweep = 0.0
        self._next_controls = 0.0
        self.controls: dict[str, RuleControl] = {}  # as last read (refresh_controls)

    async def start(self) -> None:
        """Before the loop: what waits in the inbox, and the jobs' schedules."""
        self._inbox_estimate = await self.store.inbox_size()
        await self.refresh_controls(now=True)
        await self.plan_jobs()

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

    def set_rules(self, rules: RuleSet) -> None:
        """A new rule set, installed between units of work (never under one in flight)."""
        if self.units.executor is None:
            self.engine.set_rules(rules)
        else:
            self._next_rules = rules
            self.wake.set()

    def set_jobs(self, jobs: Iterable[Job]) -> None:
        """The scheduled jobs; planned in the store before the loop next looks for work."""
        self.jobs.set(jobs)
        self.wake.set()

    async def call(self, user_ids: list[str], fn: Callable[[Workspace], T]) -> T:
        """Run fn on a unit of work holding these users, in order with the engine's own."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls.append((user_ids, fn, fut))
        self.wake.set()
        if not self.looping:
            await self.step_calls()  # foreground mode (tests, burst): nobody else will
        result: T = await fut
        return result

    async def erase(self, user_id: str) -> None:
        """Erase a user's personal data: running chains stop, the profile goes."""

        def erase(ws: Workspace) -> None:
            st = ws.users[user_id]
            for inst in list(st.instances):
                self.engine.end(ws, st, inst, "stopped", reason="erased")
            ws.changes.erased_users.add(user_id)
            ws.changes.profiles.pop(user_id, None)
            for key in [k for k in ws.changes.segment_members if k[0] == user_id]:
                del ws.changes.segment_members[key]
            # Whatever this unit does for the user after the erasure starts from nothing.
            st.profile = {"user_id": user_id, "created_at": ws.now}
            st.profile_dirty = True
            st.messages.clear()
            st.last_starts.clear()

        await self.call([user_id], erase)

    async def apply_event(self, event: Event) -> dict[str, Any]:
        """Process one event now (PUT /v1/profiles) and return the user's profile."""
        assert event.user_id is not None
        uid = event.user_id

        def apply(ws: Workspace) -> dict[str, Any]:
            st = ws.users[uid]
            self.engine.handle_event(ws, st, event)
            return dict(st.profile)

        return await self.call([uid], apply)

    async def process(self, event: Event) -> None:
        """Apply one event now, as the inbox step applies each (simulate feeds its file
        through here, each event at its own time)."""
        await self._apply([(None, event)])

    # -- units of work ---------------------------------------------------------------------

    def _starts_since(self, now: float) -> float:
        cooldowns = [r.cooldown_s for r in self.engine.rules.rules.values()]
        return now - max(cooldowns, default=0.0) - 1.0

    def _install_rules(self) -> None:
        if self._next_rules is not None:
            rules, self._next_rules = self._next_rules, None
            self.engine.set_rules(rules)

    # -- one step of each kind; each returns how much it did -------------------------------

    async def step_inbox(self) -> int:
        rows = await self.store.inbox_batch(self.batch)
        if not rows:
            return 0
        items: list[tuple[int | None, Event]] = []
        done: list[int] = []
        for seq, body, cursor in rows:
            try:
                event = parse_event(orjson.loads(body), received_at=self.clock.now())
            except Exception as exc:
                # Validated at ingest; a row that no longer parses (NaN written by an older
                # version, a hand-edited row...) must neither block the queue nor end the loop.
                log.error("inbox.unreadable", seq=seq, error=f"{type(exc).__name__}: {exc}")
                if self.metrics:
                    self.metrics.inbox_unreadable.inc()
                done.append(seq)
                continue
            if event.user_id is None:
                if items or done:
                    break  # product events go alone: their fan-out commits in pages
                await fan_out(self.units, seq, event, cursor)
                self._processed(1, 1)
                return 1
            items.append((seq, event))
        if items:
            await self._apply(items, done)
        elif done:
            ws = Workspace(now=self.clock.now())
            ws.changes.inbox_done.extend(done)
            await self.units.commit(ws)
        self._processed(len(items), len(items) + len(done))
        return len(done) + len(items)

    def _processed(self, events: int, rows: int) -> None:
        self.counters.events += events
        if self.metrics:
            self.metrics.processed.inc(events)
        self._inbox_estimate = max(0, self._inbox_estimate - rows)

    async def _apply(
        self, items: list[tuple[int | None, Event]], done: list[int] | None = None
    ) -> None:
        """User events in order, as one unit of work; a product event fans out."""
        if len(items) == 1 and items[0][1].user_id is None:
            seq, event = items[0]
            await fan_out(self.units, seq, event, None)
            return
        engine = self.engine
        ws = await self.units.workspace([e.user_id for _, e in items if e.user_id])

        def apply() -> None:
            for seq, event in self.units.each(items):
                assert event.user_id is not None
                engine.handle_event(ws, ws.users[event.user_id], event)
                if seq is not None:
                    ws.changes.inbox_done.append(seq)

        await self.units.work(ws, apply)
        if done:
            ws.changes.inbox_done.extend(done)
        await self.units.commit(ws)

    async def step_timers(self) -> int:
        now = self.clock.now()
        due = await self.states.due(now, self.timer_batch)
        if not due:
            return 0
        # A timer only moves its own instance on: it never starts one, so no cooldowns.
        ws = await self.units.workspace([uid for _, _, uid in due], starts=False)
        fired = 0

        def fire() -> None:
            nonlocal fired
            for due_at, iid, uid in self.units.each(due):
                st = ws.users.get(uid)
                if iid == FACTS:
                    if st is not None and st.facts_due == due_at:
                        st.facts_due = None
                        self.engine.on_facts_due(ws, st)
                        fired += 1
                    continue
                inst = next((i for i in st.instances if i.id == iid), None) if st else None
                if st is None or inst is None or inst.due_at != due_at:
                    continue
                self.counters.lateness_s = max(0.0, now - due_at)
                if self.metrics:
                    self.metrics.timer_lateness.observe(self.counters.lateness_s)
                self.engine.on_timer(ws, st, inst)
                fired += 1

        await self.units.work(ws, fire)
        await self.units.commit(ws)
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
            # An answer moves its instance on, as a timer does: it never starts one, so the
            # cooldown history need not be read.
            ws = await self.units.workspace([uid for _, uid, _ in items], starts=False)

            def settle() -> None:
                for message_id, uid, outcome in self.units.each(items):
                    self.engine.on_send_outcome(ws, ws.users[uid], message_id, outcome)

            await self.units.work(ws, settle)
            await self.units.commit(ws)
        except BaseException:
            # Nothing was committed: keep the outcomes for the next pass (they are also in
            # the store as 'answered', so a crash here replays them at start-up).
            for item in items:
                self.outcomes.put_nowait(item)
            raise
        self.counters.outcomes += len(items)
        return len(items)

    async def step_calls(self) -> int:
        """Requests from the API (profile merge, erase, RFM), run in the loop. A request
        whose unit cannot be committed is retried alone, so one bad request never fails
        the others."""
        if not self._calls:
            return 0
        calls, self._calls = self._calls, []
        try:
            await self._run_calls(calls)
        except ConcurrentUpdate:
            # Another replica changed one of these users meanwhile: nothing was written;
            # the requests run again, first, on fresh state.
            self._calls[:0] = calls
            raise
        except Stopping:
            for _, _, fut in calls:
                if not fut.done():
                    fut.set_exception(RuntimeError("the daemon is stopping"))
            raise
        except Exception:
            if len(calls) == 1:
                raise
            for call in calls:
                with contextlib.suppress(Exception):
                    await self._run_calls([call])
        return len(calls)

    async def _run_calls(
        self, calls: list[tuple[list[str], Callable[[Workspace], Any], asyncio.Future[Any]]]
    ) -> None:
        ws = await self.units.workspace([uid for users, _, _ in calls for uid in users])
        results: list[tuple[Any, Exception | None]] = []

        def run() -> None:
            for _, fn, _ in self.units.each(calls):
                try:
                    results.append((fn(ws), None))
                except Exception as exc:
                    results.append((None, exc))

        await self.units.work(ws, run)
        try:
            await self.units.commit(ws)
        except (ConcurrentUpdate, Stopping):
            raise
        except BaseException as exc:
            if len(calls) == 1:
                _, _, fut = calls[0]
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

    # -- scheduled jobs --------------------------------------------------------------------

    async def plan_jobs(self) -> None:
        """Write the jobs' schedules to the store (a changed schedule is planned afresh)."""
        await self.jobs.plan()

    async def step_jobs(self) -> int:
        return await self.jobs.step(looping=self.looping)

    def broadcast_jobs(self, rules: RuleSet) -> list[Job]:
        """A job per scheduled rule: each fire time is a broadcast run."""
        jobs = []
        for rule in rules.scheduled:

            async def run(row: JobRow, rule_id: str = rule.id) -> None:
                await broadcast(self.units, rule_id, row)

            name = f"broadcast:{rule.id}"
            trigger = rule.trigger
            if trigger.at is not None:
                jobs.append(once_job(name, trigger.at, run))
            else:
                jobs.append(cron_job(name, trigger.schedule or "", trigger.timezone, run))
        return jobs

    # -- the loop --------------------------------------------------------------------------

    async def refresh_controls(self, *, now: bool = False) -> None:
        """The rules paused by hand, from the store: every CONTROLS_S, or `now` (this
        process paused one). simulate never reads them: nothing there is paused."""
        at = self.clock.now()
        if not now and at < self._next_controls:
            return
        self._next_controls = at + CONTROLS_S
        self.controls = await self.store.rule_controls()
        self.engine.paused = frozenset(r for r, c in self.controls.items() if c.paused)

    async def run_once(self) -> int:
        """One pass over every kind of work: events first, then timers (SPEC 4)."""
        self._install_rules()
        await self.refresh_controls()
        done = await self.step_calls()
        done += await self.step_inbox()
        done += await self.step_outcomes()
        done += await self.step_timers()
        done += await self.step_jobs()
        return done

    async def drain(self) -> None:
        """Run until nothing is due now (tests and shutdown)."""
        while await self.run_once():
            pass

    async def next_due(self) -> float | None:
        """The earliest timer or job, None when nothing is scheduled."""
        timer = await self.states.next_due()
        jobs = self.jobs.due
        if timer is None:
            return jobs
        return timer if jobs is None else min(timer, jobs)

    async def run(self) -> None:
        """Forever: work while there is work; else sleep until the next due timer or a wake."""
        self.looping = True
        while not self.units.stopping:
            # Cleared before looking for work: a wake set while we look is not lost.
            self.wake.clear()
            try:
                await self._sweep()
                if await self.run_once():
                    continue
                # Idle: recount what waits in the inbox (another replica on a shared
                # PostgreSQL may have applied events this one counted as accepted), and
                # look at the jobs again (another replica may have fired one).
                self._inbox_estimate = await self.store.inbox_size()
                await self.jobs.refresh()
                next_due = await self.next_due()
            except asyncio.CancelledError:
                raise
            except Stopping:
                return
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
            delay_s = _IDLE_S if next_due is None else max(0.0, next_due - self.clock.now())
            if self.store.poll_s is not None:
                # Another replica may leave work at any time (its backlog when it dies, the
                # claims of a hung one when their lease runs out): look again soon.
                delay_s = min(delay_s, self.store.poll_s)
            await self._sleep(delay_s)

    async def _sweep(self) -> None:
        """Now and then, on a shared store: answers stored but not applied by a live
        process (this one's write of the result failed; the sender died) go to the engine.
        Applying an answer twice is harmless: the second finds the message settled."""
        now = self.clock.now()
        if self.store.poll_s is None or now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_S
        answers = await self.store.answered()
        for message_id, user_id, answer in answers:
            self.deliver(message_id, user_id, Outcome.from_json(answer))
        if answers:
            log.info("processor.swept", answers=len(answers))

    async def _sleep(self, delay_s: float) -> None:
        await self.clock.wait(self.wake, self.clock.now() + min(delay_s, _IDLE_S))

    async def stop(self) -> None:
        """Stop taking work; a unit in the engine thread is given up (not committed)."""
        self.units.stop()
        self.wake.set()
        await self.jobs.stop()
