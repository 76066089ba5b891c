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

from engine.lang.events import STANDARD_TYPES, TYPE_RE
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
    known = STANDARD_TYPES | ENGINE_TYPES
    if event not in known:
        close = difflib.get_close_matches(event, sorted(known), n=1, cutoff=0.8)
        if close:
            check.error(
                node.where("event"),
                f"{what}.event: unknown event type '{event}' (did you mean '{close[0]}'?)",
            )
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
