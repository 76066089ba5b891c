"""Loading a rules directory: rules and templates, cross-checked, indexed for matching.

Tolerant by design: a bad rule or template is reported and left out, the rest load.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import LoadError, Problem, did_you_mean
from engine.lang.events import LIGHT_FIELDS
from engine.lang.fused import FailHook, fuse_tests
from engine.lang.program import CascadeEntry, SendOp, WaitForOp
from engine.lang.rules import Rule, parse_rule
from engine.lang.segments import Segment, parse_segment, segment_order, segment_references
from engine.lang.templates import Template, parse_template
from engine.lang.validation import Checker
from engine.lang.yamlfile import Pos, YDict, load_yaml, read_text

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Matcher:
    """The rules an event type starts, with all their trigger conditions fused in one test."""

    rules: tuple[Rule, ...]
    # (context, on_error) -> indexes into `rules` whose condition holds, in order
    test: Callable[[Mapping[str, Any], FailHook], list[int]]
    # the test reads only `event` and `trigger`, and of them only these fields: the
    # event's context without its ISO time will do (Event.light_context)
    light: bool


@dataclass
class RuleSet:
    rules: dict[str, Rule] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # rule id -> the files whose problems disabled it, for /v1/rules
    failed: dict[str, list[Problem]] = field(default_factory=dict)
    # rule id -> problems of a rule that runs all the same (a deleted template that one of
    # its versions still uses: see engine/runtime/reload.py)
    notes: dict[str, list[Problem]] = field(default_factory=dict)
    by_event: dict[str, list[Rule]] = field(default_factory=dict)
    matchers: dict[str, Matcher] = field(default_factory=dict)
    fan_out: dict[str, list[Rule]] = field(default_factory=dict)
    scheduled: list[Rule] = field(default_factory=list)
    # Event types that matter to running instances: goals, exits, wait_for.
    watched: frozenset[str] = frozenset()

    def index(self) -> None:
        by_event: dict[str, list[Rule]] = defaultdict(list)
        fan_out: dict[str, list[Rule]] = defaultdict(list)
        watched: set[str] = set()
        self.scheduled = []
        # A higher priority first: of two rules of a group that one event triggers, the
        # lower one is then busy, rather than starting (and sending) to be preempted.
        for rule in sorted(self.rules.values(), key=lambda r: (-r.priority, r.id)):
            if rule.trigger.scheduled:
                self.scheduled.append(rule)
            elif rule.trigger.fan_out:
                fan_out[rule.trigger.event or ""].append(rule)
            else:
                by_event[rule.trigger.event or ""].append(rule)
            watched.update(m.event for m in rule.goals + rule.exits)
            watched.update(op.event for op in rule.program if isinstance(op, WaitForOp))
        self.by_event, self.fan_out = dict(by_event), dict(fan_out)
        self.matchers = {}
        for etype, rules in self.by_event.items():
            fused = fuse_tests([r.trigger.cond for r in rules])
            light = (
                fused.names is not None
                and fused.names <= {"event", "trigger"}
                and all(n in fused.fields and fused.fields[n] <= LIGHT_FIELDS for n in fused.names)
            )
            self.matchers[etype] = Matcher(tuple(rules), fused.test, light)
        self.watched = frozenset(watched)


def rule_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.suffix in YAML_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            out.append(path)
    return out


def _sources(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(file, the rules directory it belongs to) for every rule or template file."""
    return [
        (file, path if path.is_dir() else path.parent)
        for path in paths
        for file in rule_files([path])
    ]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_ruleset(paths: Iterable[Path]) -> RuleSet:
    """Every rule and template under the paths; problems are collected, never raised.

    A template's files (email.html) must lie inside its rules directory (the path given, or
    the folder of a file given).
    """
    result = RuleSet()
    rule_docs: list[tuple[YDict, Checker, str]] = []
    template_origin: dict[str, Problem] = {}
    broken: dict[str, str] = {}  # template name -> the file that has it, with errors
    broken_segments: dict[str, str] = {}  # the same for segments
    for file, root in _sources(paths):
        name = _display(file)
        try:
            text = read_text(file, name)
            doc = load_yaml(text, name)
        except LoadError as exc:
            result.problems.extend(exc.problems)
            continue
        if doc is None:
            continue  # an empty file is not an error: a rule being written
        check = Checker(name)
        if not isinstance(doc, YDict) or not ({"rule", "template", "segment"} & doc.keys()):
            check.error(
                (1, 1),
                "not a rule, a template or a segment: the top-level key must be 'rule', "
                "'template' or 'segment'",
            )
            result.problems.extend(check.problems)
            continue
        if "rule" in doc:
            rule_docs.append((doc, check, text))
            continue
        if "segment" in doc:
            segment = parse_segment(doc, check, text)
            result.problems.extend(check.problems)
            if segment is not None:
                _add_segment(result, segment)
            elif isinstance(doc.get("segment"), str):
                broken_segments.setdefault(doc["segment"], name)
            continue
        tpl = parse_template(doc, check, file.parent, root)
        result.problems.extend(check.problems)
        if tpl is None:
            continue
        if check.problems:
            broken.setdefault(tpl.name, name)
            continue
        if tpl.name in result.templates:
            first = template_origin[tpl.name]
            result.problems.append(
                Problem(
                    name,
                    tpl.line,
                    1,
                    f"duplicate template '{tpl.name}' (first defined at {first.path}:{first.line})",
                )
            )
            continue
        result.templates[tpl.name] = tpl
        template_origin[tpl.name] = Problem(name, tpl.line, 1, "")
    order, problems = segment_order(result.segments)
    result.problems.extend(problems)
    for sid in set(result.segments) - set(order):
        broken_segments.setdefault(sid, result.segments[sid].path)
    result.segments = {sid: result.segments[sid] for sid in order}
    for doc, check, text in rule_docs:
        rule = parse_rule(doc, check, text)
        _check_references(rule, doc, result.templates, broken, check)
        _check_segments(rule, doc, result, broken_segments, check)
        if check.problems:
            result.problems.extend(check.problems)
            rid = doc.get("rule")
            if isinstance(rid, str):
                result.failed[rid] = list(check.problems)
            continue
        assert rule is not None
        if rule.id in result.rules:
            earlier = result.rules[rule.id]
            result.problems.append(
                Problem(
                    check.path,
                    rule.line,
                    1,
                    f"duplicate rule id '{rule.id}' "
                    f"(first defined at {earlier.path}:{earlier.line})",
                )
            )
            continue
        result.rules[rule.id] = rule
    for seg in result.segments.values():
        if seg.id in result.templates:
            tpl = result.templates[seg.id]
            result.problems.append(
                Problem(
                    seg.path,
                    seg.line,
                    1,
                    f"segment id '{seg.id}' is also a template ({tpl.path}:{tpl.line}): "
                    "a template and a segment need different ids",
                )
            )
    result.problems.sort()
    result.index()
    return result


def _add_segment(result: RuleSet, segment: Segment) -> None:
    taken = result.segments.get(segment.id)
    if taken is not None:
        result.problems.append(
            Problem(
                segment.path,
                segment.line,
                1,
                f"duplicate segment '{segment.id}' (first defined at {taken.path}:{taken.line})",
            )
        )
        return
    result.segments[segment.id] = segment


def _check_segments(
    rule: Rule | None,
    doc: YDict,
    result: RuleSet,
    broken: dict[str, str],
    check: Checker,
) -> None:
    """Segment ids are their own: none may be a rule's or a template's id; and every segment
    a rule names (`'x' in user.segments`, `event.data.segment == 'x'`) exists. The rule is
    named: a deleted segment disables the rules that read it, and only those."""
    rule_id = doc.get("rule")
    seg = result.segments.get(rule_id) if isinstance(rule_id, str) else None
    if seg is not None:
        check.error(
            doc.where("rule"),
            f"rule id '{rule_id}' is also a segment ({seg.path}:{seg.line}): "
            "a rule and a segment need different ids",
        )
    who = f"rule '{rule_id}'" if isinstance(rule_id, str) else "the rule"
    for name, pos in segment_references(doc):
        if name in broken:
            check.error(pos, f"segment '{name}' has problems ({broken[name]}); {who} reads it")
        elif name not in result.segments:
            check.error(
                pos,
                f"unknown segment '{name}'{did_you_mean(name, result.segments)}: no segment "
                f"file defines it; {who} reads it",
            )


def _check_references(
    rule: Rule | None,
    doc: YDict,
    templates: dict[str, Template],
    broken: dict[str, str],
    check: Checker,
) -> None:
    """Every template the rule names exists (reported even when the rest of the rule is
    bad), and has a block for each channel it is used on."""
    for name, pos in _template_refs(doc.get("steps")):
        if name in templates:
            continue
        if name in broken:
            check.error(pos, f"template '{name}' did not load: {broken[name]} has errors")
        else:
            check.error(pos, f"unknown template '{name}'{did_you_mean(name, templates)}")
    if rule is not None:
        for op in rule.sends():
            _check_channels(rule, op, templates, check)


def _check_channels(rule: Rule, op: SendOp, templates: dict[str, Template], check: Checker) -> None:
    """Each cascade entry, under each variant, has a template with a block for its channel:
    at run time one without would always be skipped (`not_in_template`)."""
    options: list[tuple[str | None, str | None, tuple[CascadeEntry, ...], bool]] = [
        (v.name, v.template, v.cascade or op.cascade, v.cascade is not None) for v in op.variants
    ] or [(None, None, op.cascade, False)]
    reported: set[Problem] = set()
    for variant, variant_template, cascade, own in options:
        key = f"{op.path}:variant:{variant}:cascade" if own else f"{op.path}:cascade"
        for i, entry in enumerate(cascade):
            pos = rule.where.get(f"{key}:{i}", (rule.line, 1))
            name = _entry_template(
                op.template, entry.template, entry.channel, variant_template, templates
            )
            template = templates.get(name)
            if template is not None:
                if entry.channel in template.channels:
                    continue
                has = ", ".join(sorted(template.channels))
                message = (
                    f"step {op.path}: template '{name}' has no '{entry.channel}' block "
                    f"(it has {has})"
                )
            elif not name and variant_template in templates:
                message = (
                    f"step {op.path}: variant '{variant}': template '{variant_template}' has no "
                    f"'{entry.channel}' block, and the step names no other template for it"
                )
            else:
                continue  # an unknown template: reported as such
            problem = Problem(check.path, pos[0], pos[1], message)
            if problem not in reported:
                reported.add(problem)
                check.error(pos, message)


def _entry_template(
    step: str | None,
    entry: str | None,
    channel: str,
    variant: str | None,
    templates: dict[str, Template],
) -> str:
    """The template a cascade entry uses (the runner's rule: a variant's wins where it can)."""
    if variant is not None and variant in templates and channel in templates[variant].channels:
        return variant
    return entry or step or ""


def _template_refs(node: object) -> Iterator[tuple[str, Pos]]:
    """(name, position) of every `template:` under the steps, valid or not around it."""
    if isinstance(node, YDict):
        value = node.get("template")
        if isinstance(value, str) and value.strip():
            yield value, node.where("template")
        for child in node.values():
            yield from _template_refs(child)
    elif isinstance(node, list):
        for child in node:
            yield from _template_refs(child)
