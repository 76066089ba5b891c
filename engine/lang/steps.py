"""A rule's steps, validated with positions and compiled to a flat program with jumps
(engine/lang/program.py); each step kind has its `_step_KIND` method."""

from __future__ import annotations

from typing import Any

from channels.kinds import kind_names
from engine.lang.events import TYPE_RE
from engine.lang.expressions import EXPRESSION_NAMES, Expression, TextTemplate
from engine.lang.localtime import parse_time_of_day
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
from engine.lang.stepnames import check_name
from engine.lang.typecheck import expression_clashes
from engine.lang.validation import Checker
from engine.lang.yamlfile import Pos, YDict, YList

# The key tables are the language: the validator and `kaskad schema` both read them; the
# channels a cascade may name are the registered channel kinds (channels/kinds).
STEP_KINDS = ("wait", "send", "wait_for", "if", "stop")
# Every step may carry a `name:` (engine/lang/stepnames.py).
STEP_KEYS = {
    "wait": ("wait", "name"),
    "send": ("send", "name"),
    "wait_for": ("wait_for", "on_event", "on_timeout", "name"),
    "if": ("if", "then", "else", "name"),
    "stop": ("stop", "name"),
}
WAIT_KEYS = ("until", "offset", "for", "at")
SEND_KEYS = ("template", "cascade", "variants")
CASCADE_KEYS = ("channel", "template", "await", "within")
VARIANT_KEYS = ("name", "weight", "template", "cascade", "audience")
WAIT_FOR_KEYS = ("event", "if", "timeout", "on_event", "on_timeout")


def expression(node: YDict, key: str, check: Checker) -> Expression | None:
    """The compiled, type-checked expression at node[key]; None when absent or bad."""
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


def event_type(node: YDict, check: Checker, what: str) -> str | None:
    """node['event'] when it is an event type such as cart.updated, else None (reported)."""
    value = check.string(node.get("event"), node.where("event"), f"{what} event")
    if value is not None and not TYPE_RE.fullmatch(value):
        check.error(
            node.where("event"), f"{what} event '{value}' is not an event type such as cart.updated"
        )
        return None
    return value


class StepCompiler:
    """Nested steps to a flat program with jumps; each op keeps its step path."""

    def __init__(self, check: Checker) -> None:
        self.check = check
        self.program: list[Op] = []
        self.templates: set[str] = set()
        self.channels: set[str] = set()
        self.where: dict[str, Pos] = {}
        # step path -> its `name:`, and name -> path for the uniqueness check
        self.names: dict[str, str] = {}
        self._named: dict[str, str] = {}

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
        name = check_name(node, path, self._named, self.check)
        if name is not None:
            self.names[path] = name
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
        cond = expression(node, "if", self.check)
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
        event = event_type(spec, self.check, "wait_for")
        cond = expression(spec, "if", self.check)
        timeout = None
        if "timeout" in spec:
            timeout = self.check.duration(spec["timeout"], spec.where("timeout"), "timeout")
        # on_event / on_timeout stand beside wait_for; inside it is accepted too.
        branches = {k: (spec if k in spec else node) for k in ("on_event", "on_timeout")}
        if "on_timeout" in branches["on_timeout"] and "timeout" not in spec:
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
            if entry.channel not in kind_names():
                self.check.choice(entry.channel, where, "channel", kind_names())
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
            # A variant with an audience may leave out its weight (1: an even split of the
            # users several such variants hold for).
            required = ("name",) if "audience" in node else ("name", "weight")
            self.check.keys(node, VARIANT_KEYS, required, what="variant")
            name = self.check.string(node.get("name"), node.where("name"), "variant name")
            weight = node.get("weight", 1)
            if "weight" not in node and "audience" not in node:
                continue  # reported as a missing required key
            audience = expression(node, "audience", self.check)
            if audience is not None and audience.never():
                self.check.error(
                    node.where("audience"),
                    f"variant '{name}': audience '{audience.source}' is false for every user",
                )
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
                out.append(Variant(name, float(weight), vt, vc, audience))
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
