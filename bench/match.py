"""Matcher benchmark: kaskad's trigger matching against durable_rules on the same workload.

Both sides get the 50 neutral rules of :mod:`bench.match_peer` and the same event stream; both
must find exactly :func:`bench.match_peer.expected_matches` (event, rule) pairs. Only the
matching is timed: rule loading and event parsing happen before the clock starts.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.match_peer import (
    RuleSpec,
    durable_rules_match,
    expected_matches,
    make_events,
    make_rules,
    to_kaskad_expression,
)
from engine.errors import ExpressionError
from engine.lang.events import Event, parse_event
from engine.lang.rules import parse_rule
from engine.lang.ruleset import RuleSet
from engine.lang.validation import Checker
from engine.lang.yamlfile import YDict, load_yaml

REPEATS = 3


def kaskad_rule_text(n: int, spec: RuleSpec) -> str:
    """The rule document for one neutral spec; the expression as a double-quoted scalar."""
    condition = json.dumps(to_kaskad_expression(spec), ensure_ascii=False)
    return (
        f"rule: r{n}\n"
        f"trigger: {{event: {spec.event_type}, if: {condition}}}\n"
        "steps: [{wait: 1d}]\n"
    )


def kaskad_ruleset(rules: Sequence[RuleSpec]) -> RuleSet:
    """The specs through the real loader (YAML, validation, expression compiler), indexed."""
    ruleset = RuleSet()
    for n, spec in enumerate(rules):
        path = f"<bench rule r{n}>"
        text = kaskad_rule_text(n, spec)
        doc = load_yaml(text, path)
        assert isinstance(doc, YDict)
        check = Checker(path)
        rule = parse_rule(doc, check, text)
        if rule is None or check.problems:
            problems = "; ".join(str(p) for p in check.problems)
            raise ValueError(f"rule r{n} ({spec.name}) does not load: {problems}")
        ruleset.rules[rule.id] = rule
    ruleset.index()
    return ruleset


def kaskad_match(
    rules: list[RuleSpec], events: list[dict[str, Any]], *, expected: int | None = None
) -> tuple[int, float]:
    """(matches, seconds of the matching loop) for kaskad, checked against the ground truth.

    The timed loop is what Engine.handle_event does to find the rules to start: the fused
    test of the trigger conditions of the event's type, on the event's context (whose
    construction is timed too: the events are freshly parsed).
    """
    ruleset = kaskad_ruleset(rules)
    parsed: list[Event] = [parse_event(e, received_at=0.0) for e in events]
    matchers = ruleset.matchers
    errors: list[ExpressionError] = []

    def failed(_index: int, exc: ExpressionError) -> None:
        errors.append(exc)  # as Engine: a condition that cannot be evaluated is false

    matches = 0
    start = time.perf_counter()
    for ev in parsed:
        matcher = matchers.get(ev.type)
        if matcher is None:
            continue
        if matcher.light:
            light = ev.light_context()
            ctx = {"event": light, "trigger": light}
        else:
            trigger = ev.context
            ctx = {"event": trigger, "trigger": trigger, "user": {}, "now": None}
        matches += len(matcher.test(ctx, failed))
    seconds = time.perf_counter() - start
    if expected is None:
        expected = expected_matches(rules, events)
    if matches != expected:
        raise AssertionError(f"kaskad matched {matches} pairs, expected {expected}")
    return matches, seconds


def run_match(
    n_events: int = 20_000, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Both sides on the same 50 rules and events, best of 3 runs each (interleaved)."""
    say = log or (lambda _message: None)
    rules = make_rules(50)
    events = make_events(n_events)
    expected = expected_matches(rules, events)
    say(f"match: {len(rules)} rules, {n_events} events, {expected} expected matches")
    kaskad: list[float] = []
    durable: list[float] = []
    for _ in range(REPEATS):
        matches, seconds = kaskad_match(rules, events, expected=expected)
        say(f"  kaskad: {matches} matches in {seconds:.3f}s")
        kaskad.append(seconds)
        # durable gets its own copy of the envelopes: nothing it does can reach kaskad's
        matches, seconds = durable_rules_match(rules, copy.deepcopy(events))
        say(f"  durable_rules: {matches} matches in {seconds:.3f}s")
        if matches != expected:
            raise AssertionError(f"durable_rules matched {matches} pairs, expected {expected}")
        durable.append(seconds)
    kaskad_eps = n_events / min(kaskad)
    durable_eps = n_events / min(durable)
    return {
        "kaskad_eps": round(kaskad_eps, 1),
        "durable_rules_eps": round(durable_eps, 1),
        "ratio": round(kaskad_eps / durable_eps, 2),
        "events": n_events,
        "rules": len(rules),
        "matches": expected,
    }


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(json.dumps(run_match(n, log=lambda m: print(m, file=sys.stderr))))
