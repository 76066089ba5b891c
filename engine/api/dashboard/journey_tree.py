"""A rule's program back as the tree the journey diagram draws (journey.py): steps in
order, an `if` with its then/else steps, a `wait_for` with its event/timeout steps, each
with the numbers of the stats JSON (its `journey` and `steps` rows) for the range."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.clock import iso
from engine.lang.durations import format_duration
from engine.lang.program import BranchOp, JumpOp, Op, SendOp, StopOp, WaitForOp, WaitOp
from engine.lang.rules import Rule
from engine.lang.stepnames import derive_name


@dataclass
class Numbers:
    """One step's counts: the journey's (reached, ways, ends) and its messages' rows."""

    reached: int = 0
    edges: dict[str, int] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)
    # channel -> sends, skipped, delivered, opened, clicked, converted (attributed orders)
    channels: dict[str, dict[str, int]] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)  # variant -> sends
    skips: dict[str, int] = field(default_factory=dict)
    converted_after: int = 0  # instances the goal ended at this step or a later one


@dataclass
class Branch:
    label: str  # then | else | event | timeout
    way: str  # the journey edge counted for it
    steps: list[Node]


@dataclass
class Node:
    path: str
    kind: str  # trigger | wait | send | wait_for | if | stop | end
    name: str
    details: list[str]
    numbers: Numbers = field(default_factory=Numbers)
    branches: list[Branch] = field(default_factory=list)


_COUNTS = ("sends", "skipped", "delivered", "opened", "clicked", "converted")


def build(rule: Rule, stats: dict[str, Any] | None) -> tuple[Node, list[Node], Node]:
    """(trigger, steps, end) of the rule with the numbers of its stats row (None: zeros)."""
    numbers = _numbers(rule, stats)
    tree = Tree(rule, numbers)
    steps = tree.block(0, len(rule.program))
    trigger = Node("", "trigger", "Trigger", _trigger_details(rule), numbers.get("", Numbers()))
    end = Node("$end", "end", "End of the chain", [], numbers.get("$end", Numbers()))
    return trigger, steps, end


class Tree:
    def __init__(self, rule: Rule, numbers: dict[str, Numbers]) -> None:
        self.rule, self.program, self.numbers = rule, rule.program, numbers

    def block(self, lo: int, hi: int) -> list[Node]:
        out: list[Node] = []
        pc = lo
        while pc < hi:
            op = self.program[pc]
            node = self._node(op)
            out.append(node)
            if isinstance(op, BranchOp):
                then_end, after = self._split(op.else_pc, op.path, pc)
                node.branches = [
                    Branch("then", "then", self.block(pc + 1, then_end)),
                    Branch("else", "else", self.block(op.else_pc, after)),
                ]
                pc = after
            elif isinstance(op, WaitForOp):
                event_end, after = self._split(op.on_timeout_pc, op.path, op.on_event_pc - 1)
                node.branches = [
                    Branch("on event", "event", self.block(op.on_event_pc, event_end)),
                    Branch("timeout", "timeout", self.block(op.on_timeout_pc, after)),
                ]
                pc = after
            else:
                pc += 1
        return out

    def _split(self, second: int, path: str, at: int) -> tuple[int, int]:
        """(end of the first branch, end of the second): a jump of the same step just
        before the second branch skips it; without one the second branch is empty."""
        jump = self.program[second - 1] if second - 1 > at else None
        if isinstance(jump, JumpOp) and jump.path == path:
            return second - 1, jump.target
        return second, second

    def _node(self, op: Op) -> Node:
        name = self.rule.step_name(op.path)
        derived = derive_name(op)
        details = [derived] if derived != name else []
        kind = {
            WaitOp: "wait",
            SendOp: "send",
            WaitForOp: "wait_for",
            BranchOp: "if",
            StopOp: "stop",
        }[type(op)]
        if isinstance(op, SendOp):
            details += _send_details(op)
        return Node(op.path, kind, name, details, self.numbers.get(op.path, Numbers()))


def _trigger_details(rule: Rule) -> list[str]:
    t = rule.trigger
    if t.at is not None:
        first = f"once, at {iso(t.at)}"
    elif t.schedule:
        first = f"schedule {t.schedule} ({t.timezone})"
    else:
        first = f"on {t.event}" + (f" if {t.cond.source}" if t.cond is not None else "")
    out = [first]
    if t.fan_out:
        out.append(f"to the users it concerns: {', '.join(t.fan_out)}")
    if rule.audience is not None:
        out.append(f"audience: {rule.audience.source}")
    held = f", holdout {rule.holdout_pct:g}%" if rule.holdout_pct else ""
    out.append(f"mode {rule.mode}{held}")
    return out


def _send_details(op: SendOp) -> list[str]:
    """The cascade entry by entry, unless it is one channel with the send's template."""
    out: list[str] = []
    if len(op.cascade) == 1 and not op.cascade[0].template and not op.cascade[0].await_:
        op = SendOp(op.path, op.template, (), op.variants)
    for n, entry in enumerate(op.cascade, 1):
        line = f"{n}. {entry.channel}"
        if entry.template:
            line += f" ({entry.template})"
        if entry.await_ and entry.within_s is not None:
            line += f", await {entry.await_} within {format_duration(entry.within_s)}"
        out.append(line)
    if op.variants:
        total = sum(v.weight for v in op.variants) or 1.0
        out.append(
            "variants " + ", ".join(f"{v.name} {100 * v.weight / total:.0f}%" for v in op.variants)
        )
        out += [f"{v.name}: if {v.audience.source}" for v in op.variants if v.audience]
    return out


def _numbers(rule: Rule, stats: dict[str, Any] | None) -> dict[str, Numbers]:
    out: dict[str, Numbers] = {op.path: Numbers() for op in rule.program}
    out[""] = Numbers()
    for row in (stats or {}).get("journey") or []:
        step = row["step"]
        n = out.setdefault(step, Numbers())
        n.reached = int(row.get("reached", 0))
        n.edges = dict(row.get("edges") or {})
        n.ended = dict(row.get("ended") or {})
        if step == "":
            # ended after the last step: the end node's
            end = out.setdefault("$end", Numbers())
            end.ended = dict(row.get("ended") or {})
            end.reached = end.ended.get("completed", 0)
            n.ended = {}
    for row in (stats or {}).get("steps") or []:
        n = out.setdefault(row["step"], Numbers())
        channel = row.get("channel") or "-"
        slot = n.channels.setdefault(channel, dict.fromkeys(_COUNTS, 0))
        for key in _COUNTS:
            slot[key] += int(row.get(key, 0))
        if row.get("variant"):
            n.variants[row["variant"]] = n.variants.get(row["variant"], 0) + int(row["sends"])
        for reason, count in (row.get("skips") or {}).items():
            n.skips[reason] = n.skips.get(reason, 0) + int(count)
    _converted_after(rule, out)
    return out


def _converted_after(rule: Rule, numbers: dict[str, Numbers]) -> None:
    """Each step's conversions from there on: the goal's ends at the steps it leads to."""
    program = rule.program
    converted = {path: n.ended.get("converted", 0) for path, n in numbers.items()}
    for pc, op in enumerate(program):
        if isinstance(op, JumpOp):
            continue
        seen: set[int] = set()
        todo = [pc]
        paths: set[str] = set()
        while todo:
            at = todo.pop()
            if at in seen or at >= len(program):
                continue
            seen.add(at)
            here = program[at]
            paths.add(here.path)
            todo.extend(_next(here, at))
        numbers[op.path].converted_after = sum(converted.get(p, 0) for p in paths)
    numbers[""].converted_after = sum(converted.values())


def _next(op: Op, pc: int) -> list[int]:
    if isinstance(op, BranchOp):
        return [pc + 1, op.else_pc]
    if isinstance(op, WaitForOp):
        return [op.on_event_pc, op.on_timeout_pc]
    if isinstance(op, JumpOp):
        return [op.target]
    if isinstance(op, StopOp):
        return []
    return [pc + 1]
