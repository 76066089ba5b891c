"""Rule files: validated against the key tables with positions, compiled to a Rule."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from channels.kinds import CHANNELS
from engine.lang.events import PRODUCT_EVENTS, TYPE_RE
from engine.lang.expressions import EXPRESSION_NAMES, Expression, TextTemplate
from engine.lang.localtime import parse_time_of_day, zone
from engine.lang.program import (
    AWAIT_KINDS,
    BranchOp,
    CascadeEntry,
    JumpOp,
    Op,
    SendOp,
    StopOp,
    Variant,
    WaitForOp,
    WaitOp,
)
from engine.lang.typecheck import expression_clashes
from engine.lang.validation import Checker
from engine.lang.yamlfile import Pos, YDict, YList

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
    "steps",
)
TRIGGER_KEYS = ("event", "if", "fan_out", "schedule", "timezone")
MATCH_KEYS = ("event", "if")
STEP_KINDS = ("wait", "send", "wait_for", "if", "stop")
STEP_KEYS = {
    "wait": ("wait",),
    "send": ("send",),
    "wait_for": ("wait_for", "on_event", "on_timeout"),
    "if": ("if", "then", "else"),
    "stop": ("stop",),
}
WAIT_KEYS = ("until", "offset", "for", "at")
SEND_KEYS = ("template", "cascade", "variants")
CASCADE_KEYS = ("channel", "template", "await", "within")
VARIANT_KEYS = ("name", "weight", "template", "cascade")
WAIT_FOR_KEYS = ("event", "if", "timeout", "on_event", "on_timeout")
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
    templates: frozenset[str] = field(default_factory=frozenset)
    channels: frozenset[str] = field(default_factory=frozenset)
    # where each cascade entry stands in the file, for the checks against the templates:
    # "PATH:cascade:I" and "PATH:variant:NAME:cascade:I" (see _Compiler)
    where: dict[str, Pos] = field(default_factory=dict, compare=False, repr=False)

    @property
    def marketing(self) -> bool:
        return self.category == "marketing"

    def sends(self) -> list[SendOp]:
        return [op for op in self.program if isinstance(op, SendOp)]


def parse_rule(doc: YDict, check: Checker, source: str) -> Rule | None:
    """Validate and compile one rule document; problems go to `check`."""
    before = len(check.problems)
    check.keys(doc, RULE_KEYS, ("rule", "trigger", "steps"), what="rule")
    rule_id = check.string(doc.get("rule"), doc.where("rule"), "rule")
    if rule_id is not None and not TYPE_RE.match(rule_id.replace("-", "_")):
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
    audience = _expression(doc, "audience", check)
    trigger = (
        _trigger(doc.get("trigger"), doc.where("trigger"), check) if "trigger" in doc else None
    )
    goals: tuple[EventMatch, ...] = ()
    if "goal" in doc:
        goals = _matches(doc["goal"], doc.where("goal"), check, "goal", single_ok=True)
    exits: tuple[EventMatch, ...] = ()
    if "exit_on" in doc:
        exits = _matches(doc["exit_on"], doc.where("exit_on"), check, "exit_on", single_ok=True)
    compiler = _Compiler(check)
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
        templates=frozenset(compiler.templates),
        channels=frozenset(compiler.channels),
        where=compiler.where,
    )


def _expression(node: YDict, key: str, check: Checker) -> Expression | None:
    if key not in node:
        return None
    value = node[key]
    if isinstance(value, bool):
        value = "true" if value else "false"
    if not isinstance(value, str | int | float) or str(value).strip() == "":
        check.error(node.where(key), f"'{key}' must be an expression, e.g. event.data.total > 0")
        return None
    expr = check.compile(node.where(key), f"'{key}'", lambda: Expression(str(value)))
    if expr is not None:
        for message in expression_clashes(expr.source):
            check.error(node.where(key), f"'{key}': {message}")
    return expr


def _event_type(node: YDict, check: Checker, what: str) -> str | None:
    value = check.string(node.get("event"), node.where("event"), f"{what} event")
    if value is not None and not TYPE_RE.match(value):
        check.error(
            node.where("event"), f"{what} event '{value}' is not an event type such as cart.updated"
        )
        return None
    return value


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
    event = _event_type(node, check, "trigger")
    cond = _expression(node, "if", check)
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


def _schedule_trigger(node: YDict, check: Checker) -> Trigger | None:
    from engine.lang.schedule import cron_trigger

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
        event = _event_type(node, check, what)
        cond = _expression(node, "if", check)
        if event is not None:
            out.append(EventMatch(event, cond))
    return tuple(out)


class _Compiler:
    """Nested steps to a flat program with jumps; each op keeps its step path."""

    def __init__(self, check: Checker) -> None:
        self.check = check
        self.program: list[Op] = []
        self.templates: set[str] = set()
        self.channels: set[str] = set()
        self.where: dict[str, Pos] = {}

    def block(self, steps: YList, prefix: str) -> None:
        for i, step in enumerate(steps):
            node = self.check.mapping(step, steps.where(i), "a step")
            if node is not None:
                self.step(node, f"{prefix}{i}")

    def _nested(self, node: YDict, key: str, path: str) -> None:
        seq = self.check.sequence(node[key], node.where(key), f"'{key}'")
        if seq is not None:
            self.block(seq, f"{path}.{key}.")

    def step(self, node: YDict, path: str) -> None:
        kinds = [k for k in STEP_KINDS if k in node]
        if len(kinds) != 1:
            unknown = [k for k in node if k not in sum(STEP_KEYS.values(), ())]
            if unknown and not kinds:
                self.check.keys(node, STEP_KINDS, what="step")
            else:
                self.check.error(
                    node.where(),
                    "a step needs exactly one of "
                    f"{', '.join(STEP_KINDS)}; found {', '.join(kinds) or 'none'}",
                )
            return
        kind = kinds[0]
        self.check.keys(node, STEP_KEYS[kind], what=f"'{kind}' step")
        getattr(self, f"_step_{kind}")(node, path)

    def _step_wait(self, node: YDict, path: str) -> None:
        value, pos = node["wait"], node.where("wait")
        if not isinstance(value, YDict):
            delay = self.check.duration(value, pos, "wait")
            if delay is not None:
                self.program.append(WaitOp(path, delay_s=delay))
            return
        self.check.keys(value, WAIT_KEYS, what="wait")
        if "until" not in value and "for" not in value and "at" not in value:
            self.check.error(pos, "wait needs a duration, or 'until', 'for' and/or 'at'")
            return
        until = None
        if "until" in value:
            until = self.check.compile(
                value.where("until"),
                "wait.until",
                lambda: TextTemplate(str(value["until"]), EXPRESSION_NAMES),
            )
        offset = 0.0
        if "offset" in value:
            if "until" not in value:
                self.check.error(value.where("offset", value=False), "offset goes with 'until'")
            offset = (
                self.check.duration(
                    value["offset"], value.where("offset"), "wait.offset", negative=True
                )
                or 0.0
            )
        delay = 0.0
        if "for" in value:
            delay = self.check.duration(value["for"], value.where("for"), "wait.for") or 0.0
        at = None
        if "at" in value:
            at = self.check.compile(
                value.where("at"), "wait.at", lambda: parse_time_of_day(str(value["at"]))
            )
        self.program.append(WaitOp(path, delay_s=delay, until=until, offset_s=offset, at=at))

    def _step_stop(self, node: YDict, path: str) -> None:
        if node["stop"] is not True:
            self.check.error(node.where("stop"), "stop takes the value true")
        self.program.append(StopOp(path))

    def _step_if(self, node: YDict, path: str) -> None:
        cond = _expression(node, "if", self.check)
        if "then" not in node:
            self.check.error(node.where(), "'if' step needs 'then' (and optionally 'else')")
            return
        at = len(self.program)
        self.program.append(StopOp(path))  # patched below
        self._nested(node, "then", path)
        if "else" in node:
            jump = len(self.program)
            self.program.append(JumpOp(path, -1))
            else_pc = len(self.program)
            self._nested(node, "else", path)
            self.program[jump] = JumpOp(path, len(self.program))
        else:
            else_pc = len(self.program)
        if cond is not None:
            self.program[at] = BranchOp(path, cond, else_pc)

    def _step_wait_for(self, node: YDict, path: str) -> None:
        spec = self.check.mapping(node["wait_for"], node.where("wait_for"), "wait_for")
        if spec is None:
            return
        self.check.keys(spec, WAIT_FOR_KEYS, ("event",), what="wait_for")
        event = _event_type(spec, self.check, "wait_for")
        cond = _expression(spec, "if", self.check)
        timeout = None
        if "timeout" in spec:
            timeout = self.check.duration(spec["timeout"], spec.where("timeout"), "timeout")
        # on_event / on_timeout stand beside wait_for; inside it is accepted too.
        branches = {k: (spec if k in spec else node) for k in ("on_event", "on_timeout")}
        if "on_timeout" in branches["on_timeout"] and timeout is None:
            self.check.error(spec.where(), "on_timeout needs a 'timeout'")
        at = len(self.program)
        self.program.append(StopOp(path))
        owner = branches["on_event"]
        if "on_event" in owner:
            self._nested(owner, "on_event", path)
        owner = branches["on_timeout"]
        if "on_timeout" in owner:
            jump = len(self.program)
            self.program.append(JumpOp(path, -1))
            timeout_pc = len(self.program)
            self._nested(owner, "on_timeout", path)
            self.program[jump] = JumpOp(path, len(self.program))
        else:
            timeout_pc = len(self.program)
        if event is not None:
            self.program[at] = WaitForOp(path, event, cond, timeout, at + 1, timeout_pc)

    def _step_send(self, node: YDict, path: str) -> None:
        spec = self.check.mapping(node["send"], node.where("send"), "send")
        if spec is None:
            return
        self.check.keys(spec, SEND_KEYS, ("cascade",), what="send")
        template = None
        if "template" in spec:
            template = self.check.string(spec["template"], spec.where("template"), "template")
        cascade = self._cascade(
            spec.get("cascade"),
            spec.where("cascade"),
            template,
            need_template=not _variants_give_template(spec),
            key=f"{path}:cascade",
        )
        variants: list[Variant] = []
        if "variants" in spec:
            variants = self._variants(spec["variants"], spec.where("variants"), template, path)
        if cascade is not None:
            self.program.append(SendOp(path, template, cascade, tuple(variants)))

    def _cascade(
        self, value: Any, pos: Pos, template: str | None, *, need_template: bool, key: str
    ) -> tuple[CascadeEntry, ...] | None:
        seq = self.check.sequence(value, pos, "cascade")
        if seq is None:
            return None
        if not seq:
            self.check.error(pos, "cascade needs at least one channel")
            return None
        entries: list[CascadeEntry] = []
        for i, item in enumerate(seq):
            where = seq.where(i)
            if isinstance(item, str):
                entry = CascadeEntry(channel=item)
            else:
                node = self.check.mapping(item, where, "a cascade entry")
                if node is None:
                    continue
                self.check.keys(node, CASCADE_KEYS, ("channel",), what="cascade entry")
                parsed = self._cascade_entry(node)
                if parsed is None:
                    continue
                entry = parsed
            if entry.channel not in CHANNELS:
                self.check.choice(entry.channel, where, "channel", CHANNELS)
                continue
            if entry.template is None and template is None and need_template:
                self.check.error(
                    where,
                    f"no template for channel '{entry.channel}': set the "
                    "send's 'template' or the entry's 'template'",
                )
            self.channels.add(entry.channel)
            if entry.template:
                self.templates.add(entry.template)
            self.where[f"{key}:{len(entries)}"] = where
            entries.append(entry)
        if template:
            self.templates.add(template)
        return tuple(entries)

    def _cascade_entry(self, node: YDict) -> CascadeEntry | None:
        channel = self.check.string(node.get("channel"), node.where("channel"), "channel")
        template = None
        if "template" in node:
            template = self.check.string(node["template"], node.where("template"), "template")
        await_ = None
        if "await" in node:
            await_ = self.check.choice(node["await"], node.where("await"), "await", AWAIT_KINDS)
        within = None
        if "within" in node:
            within = self.check.duration(node["within"], node.where("within"), "within")
            if "await" not in node:
                self.check.error(node.where("within", value=False), "within goes with 'await'")
        elif await_ is not None:
            self.check.error(
                node.where("await"),
                "await needs 'within' (how long to wait for the reaction before the next channel)",
            )
        if channel is None:
            return None
        return CascadeEntry(channel, template, await_, within)

    def _variants(self, value: Any, pos: Pos, template: str | None, path: str) -> list[Variant]:
        seq = self.check.sequence(value, pos, "variants")
        if seq is None:
            return []
        out: list[Variant] = []
        names: set[str] = set()
        for i, item in enumerate(seq):
            node = self.check.mapping(item, seq.where(i), "a variant")
            if node is None:
                continue
            self.check.keys(node, VARIANT_KEYS, ("name", "weight"), what="variant")
            name = self.check.string(node.get("name"), node.where("name"), "variant name")
            weight = node.get("weight")
            if "weight" not in node:
                continue  # reported as a missing required key
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                self.check.error(node.where("weight"), "weight must be a number >= 0")
                continue
            if name in names:
                self.check.error(node.where("name"), f"duplicate variant name '{name}'")
            names.add(name or "")
            vt = None
            if "template" in node:
                vt = self.check.string(node["template"], node.where("template"), "template")
                if vt:
                    self.templates.add(vt)
            vc = None
            if "cascade" in node:
                vc = self._cascade(
                    node["cascade"],
                    node.where("cascade"),
                    vt or template,
                    need_template=True,
                    key=f"{path}:variant:{name}:cascade",
                )
            if name is not None:
                out.append(Variant(name, float(weight), vt, vc))
        if out and sum(v.weight for v in out) <= 0:
            self.check.error(pos, "variant weights must not all be 0")
        return out


def _variants_give_template(spec: YDict) -> bool:
    variants = spec.get("variants")
    return (
        isinstance(variants, list)
        and bool(variants)
        and all(isinstance(v, dict) and "template" in v for v in variants)
    )
