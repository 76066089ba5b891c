"""`kaskad simulate`: the real engine over an event file on a virtual clock.

State stays resident in memory and is written behind to an in-memory SQLite store; the
clock jumps from event to event and to the next due timer or broadcast.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, TextIO

from channels.base import OutboundMessage, Outcome
from channels.sandbox import SandboxChannel
from engine.clock import VirtualClock, iso
from engine.core.model import Record, UserState, new_profile
from engine.core.runner import Engine
from engine.core.workspace import IdGen, Workspace
from engine.errors import EventError
from engine.lang.config import Config
from engine.lang.events import Event, parse_event
from engine.lang.ruleset import RuleSet
from engine.lang.schedule import cron_trigger, next_fire
from engine.store.base import Store
from engine.store.sqlite import SqliteStore

MAX_HORIZON_S = 400 * 86400
_FLUSH_EVERY = 20_000
_FANOUT_BATCH = 500


class Simulation:
    """Drives one Engine over a stream of events; collects the send/skip timeline."""

    def __init__(self, rules: RuleSet, config: Config, store: Store) -> None:
        self.clock = VirtualClock()
        self.sandbox = {name: SandboxChannel(name) for name in config.channels}
        self.engine = Engine(rules, config, self._outbox, ids=IdGen())
        self.store = store
        self.ws = Workspace(now=0.0)
        self.seen_ids: set[str] = set()
        self.duplicates = 0
        self._pending = 0
        self._saving: asyncio.Future[None] | None = None
        self._schedules = [
            (r, cron_trigger(r.trigger.schedule or "", r.trigger.timezone)) for r in rules.scheduled
        ]
        self._next_broadcast: list[float | None] = []

    @classmethod
    async def create(cls, rules: RuleSet, config: Config) -> Simulation:
        return cls(rules, config, await SqliteStore.open("sqlite:///:memory:"))

    def _outbox(self, message: OutboundMessage) -> Outcome:
        return self.sandbox[message.channel].accept(message)

    def _user(self, uid: str) -> UserState:
        st = self.ws.users.get(uid)
        if st is None:
            st = UserState(uid, new_profile(uid, self.ws.now))
            st.profile_dirty = True
            self.ws.users[uid] = st
        return st

    async def run(self, events: Iterable[Event], until: float | None = None) -> list[Record]:
        """Process every event in time order and every timer up to `until`."""
        ordered = sorted(events, key=lambda e: e.time)
        if until is None:
            until = (ordered[-1].time if ordered else self.clock.now()) + MAX_HORIZON_S
        if ordered:
            self.clock.advance_to(ordered[0].time)
        self._next_broadcast = [next_fire(t, self.clock.now() - 1) for _, t in self._schedules]
        i = 0
        while True:
            t_event = ordered[i].time if i < len(ordered) else math.inf
            timer = self.ws.next_timer()
            t_timer = timer[0] if timer else math.inf
            t_cast, which = self._earliest_broadcast()
            # Events at the same instant as a timer go first.
            if t_event <= min(t_timer, t_cast) and t_event <= until:
                self._at(t_event)
                await self._event(ordered[i])
                i += 1
            elif t_timer <= t_cast and t_timer <= until:
                self._at(t_timer)
                self._timer()
            elif t_cast <= until and which is not None:
                self._at(t_cast)
                await self._broadcast(which)
            else:
                break
            if self._pending >= _FLUSH_EVERY:
                await self.flush(wait=False)
        await self.flush()
        return self.ws.records

    def _at(self, when: float) -> None:
        self.clock.advance_to(when)
        self.ws.now = self.clock.now()

    def _earliest_broadcast(self) -> tuple[float, int | None]:
        best, which = math.inf, None
        for n, when in enumerate(self._next_broadcast):
            if when is not None and when < best:
                best, which = when, n
        return best, which

    async def _event(self, ev: Event) -> None:
        self._pending += 1
        if ev.id is not None:
            if ev.id in self.seen_ids:
                self.duplicates += 1
                return
            self.seen_ids.add(ev.id)
        if ev.user_id is not None:
            self.engine.handle_event(self.ws, self._user(ev.user_id), ev)
            return
        rules = self.engine.rules.fan_out.get(ev.type, ())
        if not rules:
            return
        await self.flush()  # the interest index must include every earlier event
        for rule in rules:
            after = ""
            while True:
                users = await self.store.interested_users(
                    str(ev.data.get("product_id")),
                    rule.trigger.fan_out,
                    self.ws.now - 30 * 86400,
                    after,
                    _FANOUT_BATCH,
                )
                for uid in users:
                    self.engine.try_start(self.ws, rule, self._user(uid), ev.context)
                if len(users) < _FANOUT_BATCH:
                    break
                after = users[-1]
                await self.flush()

    def _timer(self) -> None:
        self._pending += 1
        _, iid, uid = self.ws.pop_timer()
        st = self.ws.users[uid]
        inst = next(i for i in st.instances if i.id == iid)
        self.engine.on_timer(self.ws, st, inst)

    async def _broadcast(self, which: int) -> None:
        rule, trigger = self._schedules[which]
        fired = self.ws.now
        self._next_broadcast[which] = next_fire(trigger, fired)
        event = {
            "id": None,
            "type": "schedule",
            "user_id": None,
            "time": iso(fired),
            "data": {"rule": rule.id},
        }
        # Every profile, in user id order as the store pages them. State is resident here:
        # every user with a profile is in the workspace, so no write-behind has to land first.
        users = sorted(self.ws.users)
        for start in range(0, len(users), _FANOUT_BATCH):
            for uid in users[start : start + _FANOUT_BATCH]:
                self.engine.start_for_audience(
                    self.ws, rule, self.ws.users[uid], {**event, "user_id": uid}
                )
            self._pending += _FANOUT_BATCH
            if self._pending >= _FLUSH_EVERY:
                await self.flush(wait=False)

    async def flush(self, *, wait: bool = True) -> None:
        """Write the workspace's changes behind. `wait=False` lets the engine go on while
        SQLite works (one save in flight at most, saves in order); a read of the store,
        and the end of the run, wait for every save."""
        changes = self.ws.take_changes()
        self._pending = 0
        saving, self._saving = self._saving, None
        if saving is not None:
            await saving
        if not changes:
            return
        task = asyncio.ensure_future(self.store.save(changes))
        if wait:
            await task
        else:
            self._saving = task

    async def close(self) -> None:
        if self._saving is not None:
            saving, self._saving = self._saving, None
            await saving
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
            events.append(parse_event(obj, received_at=received_at))
        except EventError as exc:
            problems.append(f"{source}:{number}: {exc.field}: {exc.message}")
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
