"""The journey of a rule in numbers, from the journey counts (engine/core/journey.py): per
step, in program order, how many instances reached it, which way they went from it (an
`if`: then/else, a `wait_for`: event/timeout) and how many ended while at it (the goal:
`converted`). The entry of step "" is the rule itself: `reached` is the instances started,
`ended` the ones that ended after the last step. Part of each rule of the stats JSON."""

from __future__ import annotations

from typing import Any

from engine.core import journey
from engine.lang.program import BranchOp, JumpOp, WaitForOp
from engine.lang.rules import Rule

_WAYS = {BranchOp: (journey.THEN, journey.ELSE), WaitForOp: (journey.EVENT, journey.TIMEOUT)}


def _step_key(path: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.split(".") if p)


def journey_json(counts: dict[tuple[str, str], int], rule: Rule | None) -> list[dict[str, Any]]:
    """`counts`: (step, edge) -> n of one rule and range; `rule`: its loaded version."""
    ways: dict[str, tuple[str, ...]] = {"": ()}
    names: dict[str, str] = {"": "trigger"}
    for op in rule.program if rule is not None else ():
        if not isinstance(op, JumpOp) and op.path not in ways:
            ways[op.path] = _WAYS.get(type(op), ())
            names[op.path] = rule.step_name(op.path) if rule is not None else op.path
    extra = sorted({step for step, _ in counts} - set(ways), key=_step_key)
    out = []
    for step in (*ways, *extra):
        reached = counts.get((step, journey.START if step == "" else journey.REACHED), 0)
        edges = {way: counts.get((step, way), 0) for way in ways.get(step, ())}
        edges |= {
            edge: n
            for (s, edge), n in sorted(counts.items())
            if s == step and edge in journey.EDGES[2:] and edge not in edges
        }
        ended = {
            edge.removeprefix(journey.END): n
            for (s, edge), n in sorted(counts.items())
            if s == step and edge.startswith(journey.END)
        }
        out.append(
            {
                "step": step,
                "name": names.get(step, step),
                "reached": reached,
                "edges": edges,
                "ended": ended,
            }
        )
    return out
