"""A unit of work: the users it touched, what changed, the timeline it produced."""

from __future__ import annotations

import heapq
import itertools
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.core.changes import Changes
from engine.core.model import Instance, Message, Record, UserState


class IdGen:
    """Ids that sort by creation: counters without a clock (simulate: deterministic), else
    the clock's milliseconds and random bits (unique across replicas)."""

    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self._now = now
        self._counter = itertools.count(1)
        # Random bytes read ahead, 5 per id: one os.urandom call per 1024 ids (each call
        # lets go of the GIL, which the engine thread then waits to get back).
        self._random = b""
        self._at = 0

    def next(self, prefix: str) -> str:
        n = next(self._counter)
        if self._now is None:
            return f"{prefix}{n:09d}"
        at = self._at
        if at + 5 > len(self._random):
            self._random, at = os.urandom(5 * 1024), 0
        self._at = at + 5
        random = self._random[at : at + 5].hex()
        return f"{prefix}{int(self._now() * 1000):011x}{random}{n % 4096:03x}"


# The timer key of a user's facts (segment windows, interests), beside instance ids.
FACTS = "~facts"


@dataclass(frozen=True, slots=True)
class Failure:
    """A rule's expression or template that failed on a user's data; the loop counts and
    logs these per rule and kind, not per user."""

    rule: str
    kind: str  # expression_error | template_error | invalid_time | key_error
    where: str  # trigger.if, step 1 wait.until, ...
    message: str
    user: str | None = None
    event: str | None = None
    stopped: bool = False  # the instance ended on it (status `error`)

    def __str__(self) -> str:
        return f"{self.rule}: {self.where}: {self.message}"


@dataclass
class Workspace:
    now: float
    users: dict[str, UserState] = field(default_factory=dict)
    changes: Changes = field(default_factory=Changes)
    records: list[Record] = field(default_factory=list)
    # (due_at, instance id, user id) for every timer set here; entries may be stale.
    timers: list[tuple[float, str, str]] = field(default_factory=list)
    errors: list[Failure] = field(default_factory=list)
    # Instances started (per rule) and ended (per rule and how) here, for the metrics.
    started: Counter[str] = field(default_factory=Counter)
    ended: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Profiles' timezones that are no zone, passed over for policies.timezone here.
    zones_ignored: int = 0

    def save_instance(self, inst: Instance) -> None:
        self.changes.instances[inst.id] = inst
        if inst.due_at is not None:
            heapq.heappush(self.timers, (inst.due_at, inst.id, inst.user_id))

    def journey(self, rule_id: str, step: str, edge: str) -> None:
        """One instance reached a step or went one way from it (engine/core/journey.py),
        counted in the hour it happened."""
        self.changes.journey[(rule_id, step, edge, self.now // 3600 * 3600)] += 1

    def save_message(self, message: Message) -> None:
        self.changes.messages[message.id] = message

    def save_profile(self, state: UserState) -> None:
        self.changes.profiles[state.user_id] = state.profile

    def save_facts(self, state: UserState) -> None:
        self.changes.facts[state.user_id] = (state.facts, state.facts_due)
        if state.facts_due is not None:
            heapq.heappush(self.timers, (state.facts_due, FACTS, state.user_id))

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        changes.now = self.now
        return changes

    def next_timer(self) -> tuple[float, str, str] | None:
        """The earliest live timer set in this workspace (stale heap entries dropped)."""
        while self.timers:
            due, iid, uid = self.timers[0]
            state = self.users.get(uid)
            if state is not None:
                if iid == FACTS:
                    if state.facts_due == due:
                        return self.timers[0]
                elif any(i.id == iid and i.due_at == due for i in state.instances):
                    return self.timers[0]
            heapq.heappop(self.timers)
        return None

    def pop_timer(self) -> tuple[float, str, str]:
        return heapq.heappop(self.timers)
