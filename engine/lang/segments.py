"""Segment files (SPEC 12): users who did something within a sliding window, or whose
profile says something, kept live by the engine (engine/core/segments.py).

```yaml
segment: baby_0_3
any:                                   # any | all
  - {event: product.viewed, if: "...", within: 30d, at_least: 2}
  - {profile: "user.attributes.child_age is defined and user.attributes.child_age < 3"}
```
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import Problem
from engine.lang.events import PRODUCT_EVENTS, STANDARD_TYPES, TYPE_RE
from engine.lang.expressions import Expression
from engine.lang.validation import Checker
from engine.lang.yamlfile import Pos, YDict, YList

MAX_WINDOW_S = 400 * 86400  # SPEC 12: a window ends now and reaches at most 400 days back
MAX_AT_LEAST = 1000  # the engine keeps this many timestamps per user and condition
SEGMENT_KEYS = ("segment", "description", "any", "all")
EVENT_KEYS = ("event", "if", "within", "at_least")
# `if` of an event condition sees the event and the user; a profile condition the user.
EVENT_NAMES = frozenset({"event", "user", "now"})
PROFILE_NAMES = frozenset({"user", "now"})
# Events kaskad makes itself: a segment may count them too.
ENGINE_TYPES = frozenset({"segment.entered", "segment.left"})
# A custom event type is fine (`loyalty.tier_changed`), but one in a namespace kaskad's own
# types use (`order.placed`, `cart.add`) is a mistake: no such event ever arrives.
_NAMESPACES = frozenset(t.split(".")[0] for t in STANDARD_TYPES | ENGINE_TYPES)
ALL = "*"  # a reference to every segment (`user.segments | length`, any segment.entered)


@dataclass(frozen=True, slots=True)
class EventCondition:
    """At least `at_least` events of the type (matching `cond`) within the last `within_s`."""

    event: str
    cond: Expression | None
    within_s: float
    at_least: int = 1


@dataclass(frozen=True, slots=True)
class ProfileCondition:
    cond: Expression


Condition = EventCondition | ProfileCondition


@dataclass(frozen=True)
class Segment:
    id: str
    path: str
    line: int
    version: str
    conditions: tuple[Condition, ...]
    require_all: bool = False  # `all:` (every condition) rather than `any:`
    description: str = ""
    # The segments its conditions read ('x' in user.segments, segment.entered of x), with
    # where; ALL when a condition reads them all. Cycles are load errors (no endless
    # entered/left), and segments are settled in the order these references give.
    refs: tuple[tuple[str, int, int], ...] = ()

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(c.event for c in self.conditions if isinstance(c, EventCondition))

    @property
    def reads_profile(self) -> bool:
        return any(isinstance(c, ProfileCondition) for c in self.conditions)


def parse_segment(doc: YDict, check: Checker, source: str) -> Segment | None:
    """Validate and compile one segment document; problems go to `check`."""
    before = len(check.problems)
    check.keys(doc, SEGMENT_KEYS, ("segment",), what="segment")
    seg_id = check.string(doc.get("segment"), doc.where("segment"), "segment")
    if seg_id is not None and not TYPE_RE.fullmatch(seg_id.replace("-", "_")):
        check.error(doc.where("segment"), f"segment id '{seg_id}' may use a-z, 0-9, _, - and .")
    description = doc.get("description") or ""
    if not isinstance(description, str):
        check.error(doc.where("description"), "description must be text")
        description = ""
    modes = [k for k in ("any", "all") if k in doc]
    if len(modes) != 1:
        check.error(doc.where(), "a segment needs exactly one of 'any' or 'all' (a list)")
        return None
    mode = modes[0]
    items = check.sequence(doc[mode], doc.where(mode), mode)
    conditions: list[Condition] = []
    refs: list[tuple[str, int, int]] = []
    if items is not None:
        if not items:
            check.error(doc.where(mode), f"'{mode}' needs at least one condition")
        for i, item in enumerate(items):
            node = check.mapping(item, items.where(i), f"{mode}[{i}]")
            if node is None:
                continue
            condition = _condition(node, check, f"{mode}[{i}]")
            if condition is not None:
                conditions.append(condition)
                refs.extend(_condition_refs(node, condition))
    if len(check.problems) > before or seg_id is None:
        return None
    return Segment(
        id=seg_id,
        path=check.path,
        line=doc.pos[0],
        version=hashlib.sha256(source.encode()).hexdigest()[:16],
        conditions=tuple(conditions),
        require_all=mode == "all",
        description=description,
        refs=tuple(refs),
    )


def _condition(node: YDict, check: Checker, what: str) -> Condition | None:
    if "profile" in node:
        check.keys(node, ("profile",), what=what)
        text = node["profile"]
        if not isinstance(text, str | bool):
            check.error(node.where("profile"), f"{what}.profile must be an expression")
            return None
        expr = check.compile(
            node.where("profile"),
            f"{what}.profile",
            lambda: Expression(
                str(text).lower() if isinstance(text, bool) else text, PROFILE_NAMES
            ),
        )
        return None if expr is None else ProfileCondition(expr)
    if not check.keys(node, EVENT_KEYS, ("event", "within"), what=f"{what} (an event condition)"):
        return None
    event = check.string(node.get("event"), node.where("event"), f"{what}.event")
    if event is None:
        return None
    if not TYPE_RE.fullmatch(event):
        check.error(node.where("event"), f"{what}.event: '{event}' is not an event type")
        return None
    if event in PRODUCT_EVENTS:
        check.error(
            node.where("event"),
            f"{what}.event: {event} is a product event without a user: a segment counts "
            "a user's own events",
        )
        return None
    known = STANDARD_TYPES | ENGINE_TYPES
    if event not in known:
        close = difflib.get_close_matches(event, sorted(known), n=1, cutoff=0.8)
        if close or event.split(".")[0] in _NAMESPACES:
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else f"kaskad's '{event.split('.')[0]}.' events are "
                + ", ".join(sorted(t for t in known if t.split(".")[0] == event.split(".")[0]))
            )
            check.error(node.where("event"), f"{what}.event: unknown event type '{event}' ({hint})")
            return None
    cond = None
    if "if" in node:
        text = node["if"]
        if not isinstance(text, str):
            check.error(node.where("if"), f"{what}.if must be an expression")
            return None
        cond = check.compile(node.where("if"), f"{what}.if", lambda: Expression(text, EVENT_NAMES))
        if cond is None:
            return None
    within_s = check.duration(node.get("within"), node.where("within"), f"{what}.within")
    if within_s is None:
        return None
    if not 0 < within_s <= MAX_WINDOW_S:
        check.error(
            node.where("within"),
            f"{what}.within must be more than 0 and at most 400d, got '{node.get('within')}'",
        )
        return None
    at_least = node.get("at_least", 1)
    if (
        isinstance(at_least, bool)
        or not isinstance(at_least, int)
        or not (1 <= at_least <= MAX_AT_LEAST)
    ):
        check.error(
            node.where("at_least"),
            f"{what}.at_least must be a whole number from 1 to {MAX_AT_LEAST}, got '{at_least}'",
        )
        return None
    return EventCondition(event, cond, within_s, at_least)


# `'baby_0_3' in user.segments` (or `not in`), `event.data.segment == 'baby_0_3'`
_REFERENCES = (
    re.compile(r"""(['"])([A-Za-z0-9_.\-]+)\1\s+(?:not\s+)?in\s+user\.segments\b"""),
    re.compile(r"""\bevent\.data\.segment\s*[!=]=\s*(['"])([A-Za-z0-9_.\-]+)\1"""),
    re.compile(r"""(['"])([A-Za-z0-9_.\-]+)\1\s*[!=]=\s*event\.data\.segment\b"""),
)


_READS_SEGMENTS = re.compile(r"""\buser\s*(?:\.\s*segments\b|\[\s*['"]segments['"]\s*\])""")
_SEGMENT_IN_LIST = re.compile(r"""\bevent\.data\.segment\s+in\s+\[([^\]]*)\]""")
_QUOTED = re.compile(r"""(['"])([A-Za-z0-9_.\-]+)\1""")


def expression_refs(text: str, *, segment_event: bool) -> list[str]:
    """The segments an expression reads: the ids it names, or ALL when it reads
    `user.segments` otherwise than `'x' in user.segments` (or, on a segment.entered/left
    event, does not name the segment with `event.data.segment == 'x'` or `in [...]`)."""
    named = [m.group(2) for m in _REFERENCES[0].finditer(text)]
    out = list(named)
    if len(_READS_SEGMENTS.findall(text)) > len(named):
        out.append(ALL)
    if segment_event:
        events = [m.group(2) for p in _REFERENCES[1:] for m in p.finditer(text)]
        for listed in _SEGMENT_IN_LIST.finditer(text):
            events.extend(m.group(2) for m in _QUOTED.finditer(listed.group(1)))
        out.extend(events or [ALL])
    return out


def _condition_refs(node: YDict, cond: Condition) -> list[tuple[str, int, int]]:
    if isinstance(cond, ProfileCondition):
        key, text = "profile", cond.cond.source
    else:
        key, text = (
            ("if" if cond.cond is not None else "event"),
            (cond.cond.source if cond.cond is not None else ""),
        )
    line, col = node.where(key)
    segment_event = isinstance(cond, EventCondition) and cond.event in ENGINE_TYPES
    return [(name, line, col) for name in expression_refs(text, segment_event=segment_event)]


def segment_order(segments: dict[str, Segment]) -> tuple[list[str], list[Problem]]:
    """The segments to keep, in the order to settle them (those read before those reading
    them), and the problems of their references: unknown segments, and cycles (a segment
    that, through user.segments or segment.entered/left, depends on itself would enter and
    leave forever). A segment with such a problem is not kept."""
    problems: list[Problem] = []
    deps: dict[str, list[str]] = {}
    bad: set[str] = set()
    for seg in segments.values():
        wanted: set[str] = set()
        for name, line, col in seg.refs:
            if name == ALL:
                message = (
                    "a segment reads other segments by name ('x' in user.segments, "
                    "event.data.segment == 'x'), not all of them: it is one of them"
                )
                problems.append(Problem(seg.path, line, col, message))
                bad.add(seg.id)
            elif name in segments:
                wanted.add(name)
            else:
                close = difflib.get_close_matches(name, sorted(segments), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                message = f"unknown segment '{name}'{hint}: no segment file defines it"
                problems.append(Problem(seg.path, line, col, message))
                bad.add(seg.id)
        deps[seg.id] = sorted(wanted)
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(sid: str, trail: list[str]) -> None:
        if state.get(sid) == 2:
            return
        if state.get(sid) == 1:
            loop = [*trail[trail.index(sid) :], sid]
            if bad & set(loop):
                return  # reported once
            first = segments[sid]
            problems.append(
                Problem(
                    first.path,
                    first.line,
                    1,
                    f"segment '{sid}' depends on itself ({' -> '.join(loop)}): a segment may "
                    "read other segments (user.segments, segment.entered/left) but not, "
                    "directly or through others, itself; name the segments it reads",
                )
            )
            bad.update(loop)
            return
        state[sid] = 1
        for dep in deps[sid]:
            visit(dep, [*trail, sid])
        state[sid] = 2
        order.append(sid)

    for sid in sorted(segments):
        visit(sid, [])
    # A segment reading a dropped one is dropped too (it would never see it).
    changed = True
    while changed:
        changed = False
        for sid in order:
            broken = [d for d in deps[sid] if d in bad]
            if sid not in bad and broken:
                seg = segments[sid]
                message = f"segment '{sid}' reads segment '{broken[0]}', which has problems"
                problems.append(Problem(seg.path, seg.line, 1, message))
                bad.add(sid)
                changed = True
    return [s for s in order if s not in bad], problems


def segment_references(node: Any) -> Iterator[tuple[str, Pos]]:
    """(segment id, position) of every segment an expression in a rule document names."""
    if isinstance(node, YDict):
        for key, value in node.items():
            if isinstance(value, str):
                for pattern in _REFERENCES:
                    for found in pattern.finditer(value):
                        yield found.group(2), node.where(key)
            else:
                yield from segment_references(value)
    elif isinstance(node, YList):
        for i, item in enumerate(node):
            if isinstance(item, str):
                for pattern in _REFERENCES:
                    for found in pattern.finditer(item):
                        yield found.group(2), node.where(i)
            else:
                yield from segment_references(item)
