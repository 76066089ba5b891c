"""`kaskad simulate`: the daemon's own engine loop (the Processor) over an event file, on a
virtual clock that jumps from event to event and to the next due timer or broadcast.

What differs from the daemon is only where things live: every user stays in memory for the
run (the store, an in-memory SQLite, is written behind), and the sandbox channels answer at
once instead of through the dispatcher. tests/test_parity.py runs the seed scenarios both
ways and compares the timelines byte for byte.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, TextIO

from channels.base import OutboundMessage, Outcome
from channels.sandbox import SandboxChannel
from engine.clock import VirtualClock, iso, parse_time
from engine.core.changes import Changes
from engine.core.model import Record
from engine.core.runner import Engine
from engine.core.tracking import UnsignedTracker
from engine.core.workspace import Failure, IdGen, Workspace
from engine.errors import EventError
from engine.lang.config import Config
from engine.lang.events import Event, parse_event
from engine.lang.ruleset import RuleSet
from engine.measure.stats import compute_stats
from engine.runtime.processor import Processor
from engine.runtime.states import ResidentStates
from engine.store.sqlite import SqliteStore

MAX_HORIZON_S = 400 * 86400
# The times simulate runs between: a day inside the years 1 and 9999 that datetime can
# hold, so the wall clock of any zone (UTC-12 to UTC+14) is a date too. The horizon stops
# at the last; events outside are reported by line (time), not run.
FIRST_TIME = parse_time("0001-01-02T00:00:00Z")
LAST_TIME = parse_time("9999-12-30T00:00:00Z")


class Simulation:
    """Drives the Processor over a stream of events; collects the send/skip timeline."""

    def __init__(self, rules: RuleSet, config: Config, store: SqliteStore) -> None:
        self.clock = VirtualClock()
        self.sandbox = {name: SandboxChannel(name) for name in config.channels}
        # Simulate shows no links: they are built (payload sizes as in the daemon), unsigned.
        tracker = UnsignedTracker(config.tracking.base_url)
        self.engine = Engine(rules, config, self._outbox, ids=IdGen(), tracker=tracker)
        self.store = store
        self.states = ResidentStates(store)
        self.processor = Processor(
            self.engine, store, self.clock, states=self.states, on_commit=self._committed
        )
        self.processor.set_jobs(self.processor.broadcast_jobs(rules))
        self.records: list[Record] = []
        self.failures: list[Failure] = []  # expressions and templates that failed
        self.seen_ids: set[str] = set()
        self.duplicates = 0
        self.started = False  # the clock starts at the first event of the first run

    @property
    def ws(self) -> Workspace:
        """Every user's state, resident for the run."""
        return self.states.ws

    @classmethod
    async def create(cls, rules: RuleSet, config: Config) -> Simulation:
        return cls(rules, config, await SqliteStore.open("sqlite:///:memory:"))

    def _outbox(self, message: OutboundMessage) -> Outcome:
        return self.sandbox[message.channel].accept(message)

    async def _committed(self, ws: Workspace, changes: Changes) -> None:
        self.records.extend(ws.records)
        self.failures.extend(ws.errors)

    async def run(self, events: Iterable[Event], until: float | None = None) -> list[Record]:
        """Process every event in time order and every timer and broadcast up to `until`;
        the records of this run."""
        ordered = sorted(events, key=lambda e: e.time)
        if until is None:
            until = (ordered[-1].time if ordered else self.clock.now()) + MAX_HORIZON_S
        until = min(until, LAST_TIME)
        if ordered:
            if not self.started:
                self.clock.start_at(ordered[0].time)
            self.clock.advance_to(ordered[0].time)
        self.started = True
        processor, first = self.processor, len(self.records)
        await processor.plan_jobs()  # broadcasts fire from the first instant on
        i = 0
        while True:
            t_event = ordered[i].time if i < len(ordered) else math.inf
            t_due = await processor.next_due()
            if t_due is None:
                t_due = math.inf
            # Events at the same instant as a timer go first (SPEC 4).
            if t_event <= t_due and t_event <= until:
                self.clock.advance_to(t_event)
                event = ordered[i]
                i += 1
                if event.id is not None:
                    if event.id in self.seen_ids:
                        self.duplicates += 1
                        continue
                    self.seen_ids.add(event.id)
                await processor.process(event)
            elif t_due <= until:
                self.clock.advance_to(t_due)
                await processor.step_timers()
                await processor.step_jobs()
            else:
                break
        await self.states.flush()
        return self.records[first:]

    async def stats(self) -> dict[str, Any]:
        """`kaskad stats` of the simulated timeline, as of the end of the run: funnels, A/B,
        attribution, from the run's own store (reactions and orders came from the file)."""
        await self.flush()
        return await compute_stats(
            self.store,
            rules=self.engine.rules,
            policies=self.engine.config.policies,
            now=self.clock.now(),
        )

    async def flush(self) -> None:
        """Every change so far in the store (the run writes it behind)."""
        await self.states.flush()

    async def close(self) -> None:
        await self.states.close()
        await self.store.close()


def read_events(
    lines: Iterable[str], source: str, *, received_at: float = 0.0
) -> tuple[list[Event], list[str]]:
    """Parse JSON lines; bad lines are reported by line and field, the rest are kept."""
    events: list[Event] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{source}:{number}: invalid JSON: {exc.msg}")
            continue
        try:
            event = parse_event(obj, received_at=received_at)
        except EventError as exc:
            problems.append(f"{source}:{number}: {exc.field}: {exc.message}")
            continue
        if not FIRST_TIME <= event.time <= LAST_TIME:
            problems.append(
                f"{source}:{number}: time: {obj.get('time')} is outside the times simulate runs "
                f"({iso(FIRST_TIME)} to {iso(LAST_TIME)})"
            )
            continue
        events.append(event)
    return events, problems


RECORD_FIELDS = (
    "time",
    "rule",
    "user_id",
    "step",
    "channel",
    "template",
    "variant",
    "status",
    "reason",
)


def record_json(record: Record) -> dict[str, Any]:
    out = asdict(record)
    out["time"] = iso(record.time)
    return {k: out[k] for k in RECORD_FIELDS}


def write_records(records: list[Record], out: TextIO, fmt: str) -> None:
    if fmt == "json":
        for record in records:
            out.write(json.dumps(record_json(record), ensure_ascii=False) + "\n")
        return
    rows = [[str(v) if v is not None else "-" for v in record_json(r).values()] for r in records]
    header = list(RECORD_FIELDS)
    widths = [
        max(len(h), *(len(row[n]) for row in rows)) if rows else len(h)
        for n, h in enumerate(header)
    ]
    out.write(
        "  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip() + "\n"
    )
    for row in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    sent = sum(1 for r in records if r.status == "sent")
    out.write(f"\n{sent} sent, {len(records) - sent} skipped\n")
