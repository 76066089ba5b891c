"""The engine loop, one writer per process: inbox events, due timers, send outcomes, API
calls and scheduled jobs, each batch one unit of work (load, apply, commit).

The daemon runs it forever on the real clock with its users in the store; `simulate` and
the tests drive the same steps on a virtual clock (simulate with every user resident).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import structlog

from channels.base import Outcome
from engine.clock import Clock, iso
from engine.core.changes import Changes, JobProgress
from engine.core.runner import Engine
from engine.core.workspace import Workspace
from engine.errors import EventError
from engine.lang.events import Event, parse_event
from engine.lang.rules import Rule
from engine.lang.ruleset import RuleSet
from engine.runtime.jobs import MISFIRE_GRACE_S, Job, cron_job
from engine.runtime.metrics import Metrics
from engine.runtime.states import States, StoreStates
from engine.store.base import ConcurrentUpdate, JobRow, Store

log = structlog.get_logger("kaskad.processor")

_RECENT_MESSAGES_S = 30 * 86400
_VIEWED_S = 30 * 86400  # a view counts as interest this long (SPEC 2)
PAGE = 500  # users per unit of work in a fan-out or a broadcast
_IDLE_S = 3600.0
T = TypeVar("T")


@dataclass
class Counters:
    events: int = 0
    timers: int = 0
    outcomes: int = 0
    lateness_s: float = 0.0


class _Stopping(Exception):
    """The daemon is stopping: the unit of work in hand is dropped, uncommitted."""


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
        on_commit: Callable[[Workspace, Changes], Awaitable[None]] | None = None,
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
        self._on_commit = on_commit
        self._calls: list[tuple[list[str], Callable[[Workspace], Any], asyncio.Future[Any]]] = []
        self._inbox_estimate = 0
        self._next_rules: RuleSet | None = None
        self._jobs: dict[str, Job] = {}
        self._jobs_planned = True
        self._jobs_due: float | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # The engine's work runs off the event loop in the daemon (a slow template must not
        # stall /healthz or SIGTERM); inline in simulate, where nothing else waits.
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine")
            if offload
            else None
        )
        self._stopping = False
        # Failures of the units of one run (a broadcast), logged when it ends.
        self._tally: dict[tuple[str, str, bool], list[Any]] | None = None

    async def start(self) -> None:
        """Before the loop: what waits in the inbox, and the jobs' schedules."""
        self._inbox_estimate = await self.store.inbox_size()
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
        if self._executor is None:
            self.engine.set_rules(rules)
        else:
            self._next_rules = rules
            self.wake.set()

    def set_jobs(self, jobs: Iterable[Job]) -> None:
        """The scheduled jobs; planned in the store before the loop next looks for work."""
        self._jobs = {job.name: job for job in jobs}
        self._jobs_planned = False
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

    async def _workspace(self, user_ids: list[str], *, starts: bool = True) -> Workspace:
        return await self.states.workspace(user_ids, self.clock.now(), starts=starts)

    async def _work(self, fn: Callable[[], T]) -> T:
        """The engine's synchronous work on a unit: in the engine thread, or inline."""
        if self._executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _each(self, items: Iterable[T]) -> Iterator[T]:
        """Items of a unit of work, given up when the daemon stops (nothing is committed)."""
        for item in items:
            if self._stopping:
                raise _Stopping
            yield item

    async def _commit(self, ws: Workspace) -> None:
        try:
            changes = await self.states.commit(ws)
        except BaseException:
            self.states.discard(ws)
            raise
        self._observe(ws)
        if self._on_commit is not None:
            await self._on_commit(ws, changes)
        ws.records.clear()
        ws.errors.clear()
        ws.started.clear()
        ws.ended.clear()

    def _observe(self, ws: Workspace) -> None:
        """Metrics of a committed unit (starts, ends, errors), and its failures tallied for
        the log: one line per rule and kind of error, however many users it hit."""
        metrics = self.metrics
        if metrics is not None:
            for rule, count in ws.started.items():
                metrics.instances_started.labels(rule).inc(count)
            for (rule, status), count in ws.ended.items():
                metrics.instances_ended.labels(rule, status).inc(count)
        tally = self._tally if self._tally is not None else {}
        for failure in ws.errors:
            key = (failure.rule, failure.kind, failure.stopped)
            if key in tally:
                tally[key][0] += 1
            else:
                tally[key] = [1, failure]
            if metrics is not None:
                family = metrics.instance_errors if failure.stopped else metrics.expression_errors
                family.labels(failure.rule, failure.kind).inc()
        if self._tally is None:
            _log_failures(tally)

    @contextlib.contextmanager
    def _one_log(self) -> Iterator[None]:
        """Failures of the units inside (a broadcast run) are logged once, at the end."""
        outer, self._tally = self._tally, {}
        try:
            yield
        finally:
            tally, self._tally = self._tally, outer
            _log_failures(tally)

    async def _unit(self, ws: Workspace, fn: Callable[[], T]) -> T:
        """Run the engine's work on a loaded unit; drop its changes if that fails."""
        try:
            return await self._work(fn)
        except BaseException:
            self.states.discard(ws)
            raise

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
            except (ValueError, EventError, RecursionError) as exc:
                # Validated at ingest; a row that no longer parses must not block the queue.
                log.error("inbox.unreadable", seq=seq, error=str(exc))
                done.append(seq)
                continue
            if event.user_id is None:
                if items or done:
                    break  # product events go alone: their fan-out commits in pages
                await self._fan_out(seq, event, cursor)
                self._processed(1, 1)
                return 1
            items.append((seq, event))
        if items:
            await self._apply(items, done)
        elif done:
            ws = Workspace(now=self.clock.now())
            ws.changes.inbox_done.extend(done)
            await self._commit(ws)
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
            await self._fan_out(seq, event, None)
            return
        engine = self.engine
        ws = await self._workspace([e.user_id for _, e in items if e.user_id])

        def apply() -> None:
            for seq, event in self._each(items):
                assert event.user_id is not None
                engine.handle_event(ws, ws.users[event.user_id], event)
                if seq is not None:
                    ws.changes.inbox_done.append(seq)

        await self._unit(ws, apply)
        if done:
            ws.changes.inbox_done.extend(done)
        await self._commit(ws)

    async def _fan_out(self, seq: int | None, event: Event, cursor: str | None) -> None:
        """Start one instance per interested user, a page per unit of work; the progress is
        committed with each page, so a crash resumes after the last one."""
        rules = self.engine.rules.fan_out.get(event.type, ())
        start_rule, _, start_user = (cursor or "").partition("\x1f")
        started = not start_rule
        product = str(event.data.get("product_id"))
        for rule in rules:
            if not started and rule.id != start_rule:
                continue
            after = start_user if not started else ""
            started = True
            while True:
                users = await self.states.interested(
                    product, rule.trigger.fan_out, self.clock.now() - _VIEWED_S, after, PAGE
                )
                if not users:
                    break
                ws = await self._workspace(users)

                def start(ws: Workspace = ws, users: list[str] = users, rule: Rule = rule) -> None:
                    for uid in self._each(users):
                        self.engine.try_start(ws, rule, ws.users[uid], event.context)

                await self._unit(ws, start)
                after = users[-1]
                if seq is not None:
                    ws.changes.inbox_cursor = (seq, f"{rule.id}\x1f{after}")
                await self._commit(ws)
                if len(users) < PAGE:
                    break
        if seq is not None:
            ws = Workspace(now=self.clock.now())
            ws.changes.inbox_done.append(seq)
            await self._commit(ws)

    async def step_timers(self) -> int:
        now = self.clock.now()
        due = await self.states.due(now, self.timer_batch)
        if not due:
            return 0
        # A timer only moves its own instance on: it never starts one, so no cooldowns.
        ws = await self._workspace([uid for _, _, uid in due], starts=False)
        fired = 0

        def fire() -> None:
            nonlocal fired
            for due_at, iid, uid in self._each(due):
                st = ws.users.get(uid)
                inst = next((i for i in st.instances if i.id == iid), None) if st else None
                if st is None or inst is None or inst.due_at != due_at:
                    continue
                self.counters.lateness_s = max(0.0, now - due_at)
                if self.metrics:
                    self.metrics.timer_lateness.observe(self.counters.lateness_s)
                self.engine.on_timer(ws, st, inst)
                fired += 1

        await self._unit(ws, fire)
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

            def settle() -> None:
                for message_id, uid, outcome in self._each(items):
                    self.engine.on_send_outcome(ws, ws.users[uid], message_id, outcome)

            await self._unit(ws, settle)
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
        except _Stopping:
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
        ws = await self._workspace([uid for users, _, _ in calls for uid in users])
        results: list[tuple[Any, Exception | None]] = []

        def run() -> None:
            for _, fn, _ in self._each(calls):
                try:
                    results.append((fn(ws), None))
                except Exception as exc:
                    results.append((None, exc))

        await self._unit(ws, run)
        try:
            await self._commit(ws)
        except (ConcurrentUpdate, _Stopping):
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
        now = self.clock.now()
        # A fire at this very instant counts (simulate starts at its first event).
        await self.store.plan_jobs(
            {name: (job.spec, job.next_fire(now - 1)) for name, job in self._jobs.items()}
        )
        self._jobs_planned = True
        self._jobs_due = await self.store.next_job_due()

    async def step_jobs(self) -> int:
        if not self._jobs_planned:
            await self.plan_jobs()
        now = self.clock.now()
        if self._jobs_due is None or self._jobs_due > now:
            return 0
        await self.states.settle()  # runs in progress are read from the store
        done = 0
        for row in await self.store.due_jobs(now):
            job = self._jobs.get(row.name)
            if job is None:
                continue
            if row.run_at is None:
                assert row.due_at is not None
                late_s = now - row.due_at
                # Coalesce: after downtime one run, for the latest fire time, not one each.
                next_due = job.next_fire(max(now, row.due_at))
                if late_s > MISFIRE_GRACE_S:
                    if await self.store.start_job(row.name, row.due_at, next_due):
                        log.warning("job.missed", job=row.name, fire=iso(row.due_at))
                        await self._finish_job(row.name, row.due_at)
                    continue
                if not await self.store.start_job(row.name, row.due_at, next_due):
                    continue  # another replica took this fire time
                run = JobRow(row.name, row.spec, next_due, row.due_at, "")
            else:
                if not await self.store.resume_job(row.name, row.run_at):
                    continue
                run = row
            log.info("job.started", job=run.name, fire=iso(run.run_at or now), cursor=run.cursor)
            if job.background and self.looping:
                task = asyncio.create_task(self._run_background(job, run), name=f"job-{job.name}")
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                with self._one_log():
                    await job.run(run)
                await self._finish_job(job.name, run.run_at or now)
            done += 1
        self._jobs_due = await self.store.next_job_due()
        return done

    def broadcast_jobs(self, rules: RuleSet) -> list[Job]:
        """A job per scheduled rule: each fire time runs `broadcast`."""
        jobs = []
        for rule in rules.scheduled:

            async def run(row: JobRow, rule_id: str = rule.id) -> None:
                await self.broadcast(rule_id, row)

            jobs.append(
                cron_job(
                    f"broadcast:{rule.id}",
                    rule.trigger.schedule or "",
                    rule.trigger.timezone,
                    run,
                )
            )
        return jobs

    async def _run_background(self, job: Job, run: JobRow) -> None:
        assert run.run_at is not None
        try:
            await job.run(run)
        except Exception:
            log.exception("job.failed", job=job.name)
            return
        await self._finish_job(job.name, run.run_at)

    async def _finish_job(self, name: str, run_at: float) -> None:
        ws = Workspace(now=self.clock.now())
        ws.changes.job = JobProgress(name, run_at, "", done=True)
        await self._commit(ws)

    async def broadcast(self, rule_id: str, run: JobRow) -> None:
        """A scheduled rule's run: every profile its audience matches gets an instance, a
        page per unit of work, the run's progress committed with each."""
        assert run.run_at is not None
        rule = self.engine.rules.rules.get(rule_id)
        after = run.cursor or ""
        started = 0
        trigger = {
            "id": None,
            "type": "schedule",
            "user_id": None,
            "time": iso(run.run_at),
            "data": {"rule": rule_id},
        }
        while rule is not None:
            users = await self.states.profiles(after, PAGE)
            if not users:
                break
            ws = await self._workspace(users)

            def start(ws: Workspace = ws, users: list[str] = users, rule: Rule = rule) -> int:
                count = 0
                for uid in self._each(users):
                    st = ws.users[uid]
                    if self.engine.start_for_audience(ws, rule, st, {**trigger, "user_id": uid}):
                        count += 1
                return count

            started += await self._unit(ws, start)
            after = users[-1]
            ws.changes.job = JobProgress(run.name, run.run_at, after)
            await self._commit(ws)
            if len(users) < PAGE:
                break
        log.info("broadcast.done", rule=rule_id, started=started)

    # -- the loop --------------------------------------------------------------------------

    async def run_once(self) -> int:
        """One pass over every kind of work: events first, then timers (SPEC 4)."""
        self._install_rules()
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
        jobs = self._jobs_due
        if timer is None:
            return jobs
        return timer if jobs is None else min(timer, jobs)

    async def run(self) -> None:
        """Forever: work while there is work; else sleep until the next due timer or a wake."""
        self.looping = True
        while not self._stopping:
            # Cleared before looking for work: a wake set while we look is not lost.
            self.wake.clear()
            try:
                if await self.run_once():
                    continue
                # Idle: recount what waits in the inbox (another replica on a shared
                # PostgreSQL may have applied events this one counted as accepted), and
                # look at the jobs again (another replica may have fired one).
                self._inbox_estimate = await self.store.inbox_size()
                self._jobs_due = await self.store.next_job_due()
                next_due = await self.next_due()
            except asyncio.CancelledError:
                raise
            except _Stopping:
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
            await self._sleep(delay_s)

    async def _sleep(self, delay_s: float) -> None:
        await self.clock.wait(self.wake, self.clock.now() + min(delay_s, _IDLE_S))

    async def stop(self) -> None:
        """Stop taking work; a unit in the engine thread is given up (not committed)."""
        self._stopping = True
        self.wake.set()
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _log_failures(tally: dict[tuple[str, str, bool], list[Any]]) -> None:
    for (rule, kind, stopped), (count, first) in tally.items():
        log.warning(
            "instance.error" if stopped else "rule.expression_failed",
            rule=rule,
            reason=kind,
            count=count,
            where=first.where,
            error=first.message[:300],
            user=first.user,
            event_id=first.event,
        )
