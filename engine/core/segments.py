"""Segment membership and interests (SPEC 12), kept per user as events arrive and as
windows run out, never by reading history.

What a user's facts hold, and nothing more, so their size does not grow with the history:
- per segment and event condition, the timestamps of the last `at_least` matching events
  inside the window (the condition holds while the oldest of them is in the window, and a
  timer is due the moment it leaves);
- per interest kind (category, brand), a decayed score and the time of its last event for at
  most a few dozen values.
The membership itself (`segments`) and the top interests (`interests`) live on the profile,
where expressions read them (`'baby_0_3' in user.segments`, `user.interests.category`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from typing import Any

from engine.core.context import context
from engine.core.model import UserState
from engine.core.workspace import Failure, Workspace
from engine.errors import ExpressionError
from engine.lang.events import Event
from engine.lang.expressions import Expression
from engine.lang.fused import fuse_tests
from engine.lang.segments import EventCondition, ProfileCondition, Segment

SEGMENT_ENTERED = "segment.entered"
SEGMENT_LEFT = "segment.left"
# Interests: what each kind of event says of a user's interest, decayed by age.
INTEREST_WEIGHTS = {
    "product.viewed": 1.0,
    "favorite.added": 3.0,
    "cart.updated": 5.0,
    "order.created": 10.0,
}
INTEREST_KINDS = ("category", "brand")
INTEREST_WINDOW_S = 90 * 86400  # SPEC 12: the last 90 days
INTEREST_HALF_LIFE_S = 30 * 86400
INTEREST_TOP = 5
_INTEREST_KEEP = 30  # values kept per kind (the top 5 of 30 is stable enough)
_INTEREST_VALUE_CHARS = 100


class _Plan:
    """The event conditions of one event type, in the segments' order, tested together."""

    def __init__(self, etype: str, segments: list[Segment]) -> None:
        self.conds = [
            (seg, n, cond)
            for seg in segments
            for n, cond in enumerate(seg.conditions)
            if isinstance(cond, EventCondition) and cond.event == etype
        ]
        self.segments = frozenset(seg.id for seg in segments)
        fused = fuse_tests([cond.cond for _, _, cond in self.conds])
        self.test = fused.test
        # Only the event read: the user's part of the context is not built.
        self.light = fused.names is not None and fused.names <= {"event"}


class _SegmentPlan:
    """A segment's conditions as _settle reads them: its profile conditions tested together
    (their indexes in `profile_at`), its event conditions with their facts keys."""

    def __init__(self, seg: Segment) -> None:
        self.size = len(seg.conditions)
        self.profile_at = [
            n for n, c in enumerate(seg.conditions) if isinstance(c, ProfileCondition)
        ]
        exprs: list[Expression | None] = []
        for n in self.profile_at:
            cond = seg.conditions[n]
            assert isinstance(cond, ProfileCondition)
            exprs.append(cond.cond)
        self.profile = fuse_tests(exprs) if exprs else None
        self.events = [
            (n, str(n), c) for n, c in enumerate(seg.conditions) if isinstance(c, EventCondition)
        ]


def _failing(
    ws: Workspace, st: UserState, seg: Segment, at: list[int]
) -> Callable[[int, ExpressionError], None]:
    """The failure hook of a segment's fused tests: `at` maps a test to its condition."""

    def fail(index: int, exc: ExpressionError) -> None:
        where = f"{seg.id}: condition {at[index]}"
        ws.errors.append(
            Failure(f"segment:{seg.id}", "expression_error", where, str(exc), st.user_id)
        )

    return fail


class SegmentEngine:
    """The live segments of a rule set: what each event type and each profile change can
    change, and the work of changing it."""

    def __init__(self, segments: dict[str, Segment]) -> None:
        # In the rule set's order: a segment read by others is settled before them.
        self.segments = dict(segments)
        self.by_event: dict[str, list[Segment]] = {}
        for seg in self.segments.values():
            for etype in sorted(seg.event_types):
                self.by_event.setdefault(etype, []).append(seg)
        self.by_profile = [s for s in self.segments.values() if s.reads_profile]
        self.rank = {sid: n for n, sid in enumerate(self.segments)}
        # Segments whose profile conditions read another's membership: settled again, in
        # the same pass, when it changes (SegmentEngine's order puts them after it).
        self.readers: dict[str, list[Segment]] = {}
        for seg in self.by_profile:
            for name, _, _ in seg.refs:
                if name in self.segments and seg not in self.readers.get(name, []):
                    self.readers.setdefault(name, []).append(seg)
        self.reader_ids = {sid: [r.id for r in seg] for sid, seg in self.readers.items()}
        # What the hot path reads, worked out once: the segments in order with their
        # conditions (and facts keys), each condition's window by facts key, and per event
        # type every condition of that type with their tests fused (engine/lang/fused.py).
        self._all_ids = frozenset(self.segments)
        self._profile_ids = frozenset(s.id for s in self.by_profile)
        self._order = [(seg, _SegmentPlan(seg)) for seg in self.segments.values()]
        self._windows = {
            seg.id: {
                str(n): (c.at_least, c.within_s)
                for n, c in enumerate(seg.conditions)
                if isinstance(c, EventCondition)
            }
            for seg in self.segments.values()
        }
        self._plans = {etype: _Plan(etype, segs) for etype, segs in self.by_event.items()}

    def on_event(self, ws: Workspace, st: UserState, ev: Event) -> list[Event]:
        """Count the event where it matches, update interests, recompute what it and a
        changed profile can change; the segment.entered/left events it caused."""
        touched = _interests(ws, st, ev)
        plan = self._plans.get(ev.type)
        candidates: frozenset[str] = frozenset()
        if plan is not None:
            if plan.light:
                ctx: dict[str, Any] = {"event": ev.context}
            else:
                ctx = context(ws.now, st, ev.context, ev.context)
            when = min(ev.time, ws.now)
            conds = plan.conds

            def fail(index: int, exc: ExpressionError) -> None:
                seg, n, _ = conds[index]
                where = f"{seg.id}: condition {n}"
                ws.errors.append(
                    Failure(f"segment:{seg.id}", "expression_error", where, str(exc), st.user_id)
                )

            # Every condition of the event's type, fused (in order, errors in order).
            for index in plan.test(ctx, fail):
                seg, n, cond = conds[index]
                _count(st, seg, n, cond, when)
                touched = True
            candidates = plan.segments
        if st.user_id in ws.changes.profiles or st.profile_dirty:
            candidates = candidates | self._profile_ids
        if not candidates and not touched:
            return []
        return self._settle(ws, st, candidates, touched)

    def on_due(self, ws: Workspace, st: UserState) -> list[Event]:
        """A window ran out (the facts' timer): interests age, every segment is recomputed."""
        if refresh_interests(st, ws.now):
            ws.save_profile(st)
        return self._settle(ws, st, self._all_ids, True)

    def _settle(
        self, ws: Workspace, st: UserState, wanted: Iterable[str], touched: bool
    ) -> list[Event]:
        now = ws.now
        state = _segment_state(st)
        current = set(_list(st.profile.get("segments")))
        members = current & self._all_ids  # a segment that is gone is left
        ctx: dict[str, Any] | None = None
        queued = set(wanted)
        # In the rule set's order; a reader of a segment comes after it, so one queued when
        # that segment changes is still ahead.
        for seg, plan in self._order:
            if seg.id not in queued:
                continue
            held = state.get(seg.id)
            if held is not None and held.get("v") != seg.version:
                state.pop(seg.id)  # redefined: its counts no longer mean the same
                held = None
                touched = True
            counts = held["c"] if held is not None else None
            results = [False] * plan.size
            if plan.profile is not None:
                if ctx is None:
                    ctx = context(now, st, {}, {})
                    ctx["user"]["segments"] = sorted(members)
                fail = _failing(ws, st, seg, plan.profile_at)
                for index in plan.profile.test(ctx, fail):
                    results[plan.profile_at[index]] = True
            for n, key, cond in plan.events:
                stamps = counts.get(key) if counts is not None else None
                if stamps:
                    results[n] = _holds(stamps, cond, now)
            inside = all(results) if seg.require_all else any(results)
            if inside == (seg.id in members):
                continue
            if inside:
                members.add(seg.id)
            else:
                members.discard(seg.id)
            if ctx is not None:
                ctx["user"]["segments"] = sorted(members)
            queued.update(self.reader_ids.get(seg.id, ()))
        due = self._next_due(st, now)
        if touched or due != st.facts_due:
            st.facts_due = due
            ws.save_facts(st)
        if members == current:
            return []
        st.profile["segments"] = sorted(members)
        ws.save_profile(st)
        moves = ws.changes.segment_members
        for seg_id in members - current:
            moves[(st.user_id, seg_id)] = now
        for seg_id in current - members:
            moves[(st.user_id, seg_id)] = None
        events = [_segment_event(SEGMENT_ENTERED, st, s, now) for s in sorted(members - current)]
        events += [_segment_event(SEGMENT_LEFT, st, s, now) for s in sorted(current - members)]
        return events

    def _next_due(self, st: UserState, now: float) -> float | None:
        """When the next condition that holds stops holding, or the interests age out."""
        due: float | None = None
        state = _segment_state(st)
        windows = self._windows
        for seg_id, entry in list(state.items()):
            known = windows.get(seg_id)
            if known is None:
                del state[seg_id]  # the segment is gone, and so are its counts
                continue
            for key, stamps in entry["c"].items():
                window = known.get(key)
                if window is None:
                    window = _window(self.segments[seg_id], key)
                    if window is None:
                        continue
                at_least, within_s = window
                if len(stamps) < at_least:
                    continue
                ends = stamps[-at_least] + within_s
                if ends > now and (due is None or ends < due):
                    due = ends
        # Each interest leaves the top 90 days after its last event (not only the last one).
        # (the earliest of them matters: the first to leave, or now when one is overdue)
        if st.profile.get("interests"):
            for table in (st.facts.get("int") or {}).values():
                if table:
                    ends = min(at for _, at in table.values()) + INTEREST_WINDOW_S
                    if due is None or ends < due:
                        due = max(ends, now)
        return due


def _list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _segment_state(st: UserState) -> dict[str, Any]:
    state = st.facts.setdefault("seg", {})
    assert isinstance(state, dict)
    return state


def _stamps(st: UserState, seg: Segment, n: int) -> list[float]:
    entry = _segment_state(st).setdefault(seg.id, {"v": seg.version, "c": {}})
    entry["v"] = seg.version
    stamps = entry["c"].setdefault(str(n), [])
    assert isinstance(stamps, list)
    return stamps


def _count(st: UserState, seg: Segment, n: int, cond: EventCondition, when: float) -> None:
    """Keep the last `at_least` matching times (in order; a late event lands in place)."""
    stamps = _stamps(st, seg, n)
    bisect.insort(stamps, when)
    del stamps[: max(0, len(stamps) - cond.at_least)]


def _holds(stamps: list[float], cond: EventCondition, now: float) -> bool:
    """Whether a condition's kept times (not empty) make it hold now."""
    # Times out of the window are of no use again: the window only moves forward.
    cut = now - cond.within_s
    keep = [t for t in stamps if t > cut]
    if len(keep) != len(stamps):
        stamps[:] = keep
    return len(stamps) >= cond.at_least and stamps[-cond.at_least] > cut


def _window(seg: Segment, key: str) -> tuple[int, float] | None:
    """(at_least, within_s) of the event condition a facts key names, if any."""
    cond = seg.conditions[int(key)] if int(key) < len(seg.conditions) else None
    if not isinstance(cond, EventCondition):
        return None
    return cond.at_least, cond.within_s


def _segment_event(etype: str, st: UserState, segment: str, now: float) -> Event:
    return Event(type=etype, time=now, user_id=st.user_id, data={"segment": segment})


# -- interests -----------------------------------------------------------------------------


def _values(ev: Event, kind: str) -> list[str]:
    """The categories (or brands) an event speaks of: its own, and its items'."""
    out: list[str] = []
    sources: list[Any] = [ev.data]
    items = ev.data.get("items")
    if isinstance(items, list):
        sources.extend(items)
    for src in sources:
        value = src.get(kind) if isinstance(src, dict) else None
        value = value.strip()[:_INTEREST_VALUE_CHARS] if isinstance(value, str) else None
        if value and value not in out:
            out.append(value)
    return out


def _interests(ws: Workspace, st: UserState, ev: Event) -> bool:
    """Add the event's weight to the interests it names; True when anything changed."""
    weight = INTEREST_WEIGHTS.get(ev.type)
    now = ws.now
    if weight is None:
        return False
    when = min(ev.time, now)
    if now - when > INTEREST_WINDOW_S:
        return False
    changed = False
    scores = st.facts.setdefault("int", {})
    for kind in INTEREST_KINDS:
        values = _values(ev, kind)
        if not values:
            continue
        table = scores.setdefault(kind, {})
        for value in values:
            score, at = table.get(value, (0.0, when))
            table[value] = [_decayed(score, at, now) + weight * _decay(now - when), now]
        if len(table) > _INTEREST_KEEP:
            ranked = sorted(table, key=lambda v: (-_decayed(table[v][0], table[v][1], now), v))
            for value in ranked[_INTEREST_KEEP:]:
                del table[value]
        changed = True
    if changed:
        st.facts["int_at"] = now
        if _publish(st, now):
            ws.save_profile(st)
    return changed


def _age_interests(st: UserState, now: float) -> bool:
    """Interests whose last event is over 90 days old are dropped (on the facts' timer)."""
    last = st.facts.get("int_at")
    if not isinstance(last, int | float) or now - last < INTEREST_WINDOW_S:
        return False
    st.facts.pop("int", None)
    st.facts.pop("int_at", None)
    if st.profile.get("interests"):
        st.profile["interests"] = {kind: [] for kind in INTEREST_KINDS}
    return True


def _publish(st: UserState, now: float) -> bool:
    """The top values of each kind onto the profile; True when they changed."""
    scores = st.facts.get("int") or {}
    top: dict[str, list[str]] = {}
    for kind in INTEREST_KINDS:
        table = scores.get(kind) or {}
        for value in [v for v, (_, at) in table.items() if now - at >= INTEREST_WINDOW_S]:
            del table[value]  # out of the 90 days: gone from the facts too
        live = [(v, _decayed(score, at, now)) for v, (score, at) in table.items()]
        live.sort(key=lambda item: (-item[1], item[0]))
        top[kind] = [v for v, _ in live[:INTEREST_TOP]]
    if st.profile.get("interests") == top:
        return False
    st.profile["interests"] = top
    return True


def _decay(age_s: float) -> float:
    return math.pow(0.5, max(0.0, age_s) / INTEREST_HALF_LIFE_S)


def _decayed(score: float, at: float, now: float) -> float:
    return float(score) * _decay(now - at)


def refresh_interests(st: UserState, now: float) -> bool:
    """On the facts' timer: drop interests that aged out of the window."""
    if _age_interests(st, now):
        return True
    return bool(st.facts.get("int")) and _publish(st, now)
