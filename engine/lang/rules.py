"""Rule files: validated against the key tables with positions, compiled to a Rule."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.clock import parse_time
from engine.lang.events import PRODUCT_EVENTS, TYPE_RE
from engine.lang.expressions import EXPRESSION_NAMES, Expression, TextTemplate
from engine.lang.localtime import zone
from engine.lang.policies_config import share_pct
from engine.lang.program import Op, SendOp
from engine.lang.stepnames import step_names
from engine.lang.steps import StepCompiler, event_type, expression
from engine.lang.validation import Checker
from engine.lang.yamlfile import Pos, YDict

# The key tables are the language: the validator and `kaskad schema` both read them.
RULE_KEYS = (
    "rule",
    "description",
    "category",
    "trigger",
    "key",
    "mode",
    "cooldown",
    "audience",
    "goal",
    "exit_on",
    "holdout",
    "group",
    "priority",
    "steps",
)
TRIGGER_KEYS = ("event", "if", "fan_out", "schedule", "timezone")
MATCH_KEYS = ("event", "if")
CATEGORIES = ("marketing", "transactional")
MODES = ("single", "restart", "parallel")
FAN_OUT_KINDS = ("price_drop", "back_in_stock", "favorite", "cart", "viewed")


@dataclass(frozen=True, slots=True)
class EventMatch:
    event: str
    cond: Expression | None = None


@dataclass(frozen=True)
class Trigger:
    event: str | None = None
    cond: Expression | None = None
    fan_out: tuple[str, ...] = ()
    schedule: str | None = None
    timezone: str = "UTC"
    at: float | None = None  # a one-off broadcast: `schedule: {at: ISO}`

    @property
    def scheduled(self) -> bool:
        return self.schedule is not None or self.at is not None


@dataclass
class Rule:
    id: str
    path: str
    line: int
    version: str
    trigger: Trigger
    program: tuple[Op, ...]
    description: str = ""
    category: str = "marketing"
    key: TextTemplate | None = None
    mode: str = "single"
    cooldown_s: float = 0.0
    audience: Expression | None = None
    goals: tuple[EventMatch, ...] = ()
    exits: tuple[EventMatch, ...] = ()
    holdout_pct: float = 0.0  # a stable share of the users it starts for gets no message
    group: str | None = None  # at most one instance of a group per user at a time
    priority: int = 0  # a higher one preempts a lower one of its group
    templates: frozenset[str] = field(default_factory=frozenset)
    channels: frozenset[str] = field(default_factory=frozenset)
    # where each cascade entry stands in the file, for the checks against the templates:
    # "PATH:cascade:I" and "PATH:variant:NAME:cascade:I" (see StepCompiler)
    where: dict[str, Pos] = field(default_factory=dict, compare=False, repr=False)
    # step path -> its readable name (`name:` or derived, engine/lang/stepnames.py)
    step_names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def marketing(self) -> bool:
        return self.category == "marketing"

    def step_name(self, path: str) -> str:
        """The step's readable name; the path itself for one this version does not have."""
        return self.step_names.get(path, path)

    def sends(self) -> list[SendOp]:
        return [op for op in self.program if isinstance(op, SendOp)]


def parse_rule(doc: YDict, check: Checker, source: str) -> Rule | None:
    """Validate and compile one rule document; problems go to `check`."""
    before = len(check.problems)
    check.keys(doc, RULE_KEYS, ("rule", "trigger", "steps"), what="rule")
    rule_id = check.string(doc.get("rule"), doc.where("rule"), "rule")
    if rule_id is not None and not TYPE_RE.fullmatch(rule_id.replace("-", "_")):
        check.error(doc.where("rule"), f"rule id '{rule_id}' may use a-z, 0-9, _, - and .")
    category = "marketing"
    if "category" in doc:
        category = (
            check.choice(doc["category"], doc.where("category"), "category", CATEGORIES) or category
        )
    mode = "single"
    if "mode" in doc:
        mode = check.choice(doc["mode"], doc.where("mode"), "mode", MODES) or mode
    cooldown = 0.0
    if "cooldown" in doc:
        cooldown = check.duration(doc["cooldown"], doc.where("cooldown"), "cooldown") or 0.0
    key = None
    if doc.get("key") not in (None, ""):
        key = check.compile(
            doc.where("key"), "key", lambda: TextTemplate(str(doc["key"]), EXPRESSION_NAMES)
        )
    audience = expression(doc, "audience", check)
    trigger = (
        _trigger(doc.get("trigger"), doc.where("trigger"), check) if "trigger" in doc else None
    )
    goals: tuple[EventMatch, ...] = ()
    if "goal" in doc:
        goals = _matches(doc["goal"], doc.where("goal"), check, "goal", single_ok=True)
    exits: tuple[EventMatch, ...] = ()
    if "exit_on" in doc:
        exits = _matches(doc["exit_on"], doc.where("exit_on"), check, "exit_on", single_ok=True)
    holdout = _holdout(doc, check)
    group = None
    if "group" in doc:
        group = check.string(doc["group"], doc.where("group"), "group")
        if group is not None and not TYPE_RE.match(group.replace("-", "_")):
            check.error(doc.where("group"), f"group id '{group}' may use a-z, 0-9, _, - and .")
    priority = 0
    if "priority" in doc:
        value = doc["priority"]
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 1_000_000:
            check.error(doc.where("priority"), f"priority must be a whole number, got '{value}'")
        else:
            priority = value
        if "group" not in doc:
            check.error(doc.where("priority", value=False), "priority goes with 'group'")
    compiler = StepCompiler(check)
    steps = doc.get("steps")
    if "steps" in doc:
        seq = check.sequence(steps, doc.where("steps"), "steps")
        if seq is not None:
            if not seq:
                check.error(doc.where("steps"), "steps must not be empty")
            compiler.block(seq, "")
    if len(check.problems) > before or rule_id is None or trigger is None:
        return None
    if trigger.schedule and doc.get("key") not in (None, ""):
        pass  # a broadcast may still key its instances, e.g. by week
    return Rule(
        id=rule_id,
        path=check.path,
        line=doc.pos[0],
        version=hashlib.sha256(source.encode()).hexdigest()[:16],
        trigger=trigger,
        program=tuple(compiler.program),
        description=str(doc.get("description") or ""),
        category=category,
        key=key,
        mode=mode,
        cooldown_s=cooldown,
        audience=audience,
        goals=goals,
        exits=exits,
        holdout_pct=holdout,
        group=group,
        priority=priority,
        templates=frozenset(compiler.templates),
        channels=frozenset(compiler.channels),
        where=compiler.where,
        step_names=step_names(compiler.program, compiler.names),
    )


def _trigger(value: Any, pos: Pos, check: Checker) -> Trigger | None:
    node = check.mapping(value, pos, "trigger")
    if node is None:
        return None
    check.keys(node, TRIGGER_KEYS, what="trigger")
    has_event, has_schedule = "event" in node, "schedule" in node
    if has_event == has_schedule:
        check.error(node.where(), "trigger needs exactly one of 'event' or 'schedule'")
        return None
    if has_schedule:
        return _schedule_trigger(node, check)
    event = event_type(node, check, "trigger")
    cond = expression(node, "if", check)
    fan_out: tuple[str, ...] = ()
    if "fan_out" in node:
        seq = check.sequence(node["fan_out"], node.where("fan_out"), "fan_out")
        kinds = []
        for i, kind in enumerate(seq or []):
            ok = check.choice(kind, seq.where(i) if seq else pos, "fan_out", FAN_OUT_KINDS)
            if ok:
                kinds.append(ok)
        fan_out = tuple(kinds)
        if seq is not None and not seq:
            check.error(node.where("fan_out"), "fan_out needs at least one kind")
    if "timezone" in node:
        check.error(node.where("timezone", value=False), "timezone goes with 'schedule'")
    if event in PRODUCT_EVENTS and "fan_out" not in node:
        check.error(
            node.where("event"),
            f"{event} is a product event without a user: "
            f"add fan_out: [{', '.join(FAN_OUT_KINDS[:3])}...]",
        )
    elif fan_out and event is not None and event not in PRODUCT_EVENTS:
        check.error(
            node.where("fan_out", value=False),
            f"fan_out only goes with product events ({', '.join(sorted(PRODUCT_EVENTS))})",
        )
    return Trigger(event=event, cond=cond, fan_out=fan_out)


def _holdout(doc: YDict, check: Checker) -> float:
    """`holdout: 10%` -> 10.0; 0% to 50% (engine/lang/config.py share_pct)."""
    if "holdout" not in doc:
        return 0.0
    try:
        return share_pct(doc["holdout"])
    except ValueError as exc:
        check.error(doc.where("holdout"), f"holdout {exc}")
        return 0.0


def _one_off(node: YDict, check: Checker) -> Trigger | None:
    """`schedule: {at: "2026-12-24T10:00:00+03:00"}`: a broadcast once, at that instant."""
    spec = node["schedule"]
    assert isinstance(spec, YDict)
    check.keys(spec, ("at",), ("at",), what="schedule")
    text = spec.get("at")
    if "timezone" in node:
        check.error(
            node.where("timezone", value=False),
            "timezone goes with a cron schedule; `at` carries its own offset",
        )
    if not isinstance(text, str):
        if "at" in spec:
            check.error(
                spec.where("at"),
                "schedule.at must be an ISO 8601 time, e.g. 2026-12-24T10:00:00+03:00",
            )
        return None
    try:
        at = parse_time(text)
        naive = datetime.fromisoformat(text.strip().removesuffix("Z")).tzinfo is None
    except ValueError:
        check.error(
            spec.where("at"),
            f"schedule.at: '{text}' is not an ISO 8601 time, e.g. 2026-12-24T10:00:00+03:00",
        )
        return None
    if naive and not text.strip().endswith(("Z", "z")):
        # Whose 10:00? A one-off goes out once: the instant must not depend on a guess.
        check.error(
            spec.where("at"),
            f"schedule.at: '{text}' has no UTC offset: write the instant with one, "
            "e.g. 2026-12-24T10:00:00+03:00 or 2026-12-24T07:00:00Z",
        )
        return None
    return Trigger(at=at)


def _schedule_trigger(node: YDict, check: Checker) -> Trigger | None:
    from engine.lang.schedule import cron_trigger

    if isinstance(node["schedule"], YDict):
        return _one_off(node, check)
    tz = "UTC"
    if "timezone" in node:
        name = check.string(node["timezone"], node.where("timezone"), "timezone")
        if (
            name is not None
            and check.compile(node.where("timezone"), "timezone", lambda: zone(name)) is not None
        ):
            tz = name
    expr = check.string(node["schedule"], node.where("schedule"), "schedule")
    if (
        expr is None
        or check.compile(node.where("schedule"), "schedule", lambda: cron_trigger(expr, tz)) is None
    ):
        return None
    for key in ("if", "fan_out"):
        if key in node:
            check.error(
                node.where(key, value=False),
                f"'{key}' does not go with 'schedule'; "
                "use the rule's 'audience' to choose recipients",
            )
    return Trigger(schedule=expr, timezone=tz)


def _matches(
    value: Any, pos: Pos, check: Checker, what: str, *, single_ok: bool
) -> tuple[EventMatch, ...]:
    items: list[tuple[Any, Pos]]
    if isinstance(value, YDict) and single_ok:
        items = [(value, pos)]
    else:
        seq = check.sequence(value, pos, what)
        items = [(v, seq.where(i)) for i, v in enumerate(seq)] if seq is not None else []
    out = []
    for item, where in items:
        node = check.mapping(item, where, what)
        if node is None:
            continue
        check.keys(node, MATCH_KEYS, ("event",), what=what)
        event = event_type(node, check, what)
        cond = expression(node, "if", check)
        if event is not None:
            out.append(EventMatch(event, cond))
    return tuple(out)
