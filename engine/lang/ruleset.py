"""Loading a rules directory: rules and templates, cross-checked, indexed for matching.

Tolerant by design: a bad rule or template is reported and left out, the rest load.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import LoadError, Problem, did_you_mean
from engine.lang.events import LIGHT_FIELDS
from engine.lang.expressions import FailHook, fuse_tests
from engine.lang.program import WaitForOp
from engine.lang.rules import Rule, parse_rule
from engine.lang.templates import Template, parse_template
from engine.lang.validation import Checker
from engine.lang.yamlfile import YDict, load_yaml

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
    problems: list[Problem] = field(default_factory=list)
    # rule id -> the files whose problems disabled it, for /v1/rules
    failed: dict[str, list[Problem]] = field(default_factory=dict)
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
        for rule in sorted(self.rules.values(), key=lambda r: r.id):
            if rule.trigger.schedule:
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


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_ruleset(paths: Iterable[Path]) -> RuleSet:
    """Every rule and template under the paths; problems are collected, never raised."""
    result = RuleSet()
    rule_docs: list[tuple[YDict, Checker, str]] = []
    template_origin: dict[str, Problem] = {}
    for file in rule_files(paths):
        name = _display(file)
        try:
            text = file.read_text(encoding="utf-8")
            doc = load_yaml(text, name)
        except LoadError as exc:
            result.problems.extend(exc.problems)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(Problem(name, 1, 1, f"cannot read file: {exc}"))
            continue
        if doc is None:
            continue  # an empty file is not an error: a rule being written
        check = Checker(name)
        if not isinstance(doc, YDict) or not ({"rule", "template"} & doc.keys()):
            check.error(
                (1, 1), "not a rule or a template: the top-level key must be 'rule' or 'template'"
            )
            result.problems.extend(check.problems)
            continue
        if "rule" in doc:
            rule_docs.append((doc, check, text))
            continue
        tpl = parse_template(doc, check, file.parent)
        result.problems.extend(check.problems)
        if tpl is None or check.problems:
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
    for doc, check, text in rule_docs:
        rule = parse_rule(doc, check, text)
        if rule is not None:
            _check_references(rule, doc, result.templates, check)
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
    result.problems.sort()
    result.index()
    return result


def _check_references(
    rule: Rule, doc: YDict, templates: dict[str, Template], check: Checker
) -> None:
    """Every template a rule names exists, and each cascade can use at least one channel."""
    steps_pos = doc.where("steps")
    steps = doc.get("steps")
    for name in sorted(rule.templates):
        if name not in templates:
            check.error(
                _find_value(steps, name) or steps_pos,
                f"unknown template '{name}'{did_you_mean(name, templates)}",
            )
    if check.problems:
        return
    for op in rule.sends():
        options = [(None, op.cascade)] + [
            (v.template, v.cascade or op.cascade) for v in op.variants
        ]
        for variant_template, cascade in options:
            usable, names = [], []
            for e in cascade:
                name = _entry_template(
                    op.template, e.template, e.channel, variant_template, templates
                )
                names.append(name)
                if name in templates and e.channel in templates[name].channels:
                    usable.append(e)
            if not usable:
                channels = ", ".join(e.channel for e in cascade)
                shown = ", ".join(sorted({f"'{n}'" for n in names}))
                check.error(
                    _find_value(steps, names[0]) or steps_pos,
                    f"step {op.path}: template {shown} has no block for any "
                    f"channel of the cascade ({channels})",
                )


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


def _find_value(node: object, value: str) -> tuple[int, int] | None:
    """The position of the first mapping value equal to `value`, searched depth-first."""
    if isinstance(node, YDict):
        for key, child in node.items():
            if child == value:
                return node.where(key)
            found = _find_value(child, value)
            if found:
                return found
    elif isinstance(node, list):
        for child in node:
            found = _find_value(child, value)
            if found:
                return found
    return None
