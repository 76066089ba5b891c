"""Readable step names: a step's own `name:` (validated here), else one derived from the
compiled op, e.g. "wait 1h", "push → email: cart_reminder", "wait for order.created (24h)".
Marketers see these wherever a step path such as `0.then.1` would stand (dashboard, stats).
"""

from __future__ import annotations

from engine.lang.durations import format_duration
from engine.lang.program import BranchOp, JumpOp, Op, SendOp, StopOp, WaitForOp, WaitOp
from engine.lang.validation import Checker
from engine.lang.yamlfile import YDict

NAME_MAX = 80
_SHOWN = 48  # an expression in a derived name is cut to this many characters


def _cut(text: str, limit: int = _SHOWN) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_name(node: YDict, path: str, seen: dict[str, str], check: Checker) -> str | None:
    """The step's `name:` when it is a string of at most NAME_MAX characters, unique in
    the rule (`seen`: name -> the path that has it); None when absent or bad (reported)."""
    if "name" not in node:
        return None
    pos = node.where("name")
    value = check.string(node["name"], pos, "step name")
    if value is None:
        return None
    name = " ".join(value.split())
    if len(name) > NAME_MAX:
        check.error(pos, f"step name is {len(name)} characters long; at most {NAME_MAX}")
        return None
    if name in seen:
        check.error(pos, f"duplicate step name '{name}' (also step {seen[name]})")
        return None
    seen[name] = path
    return name


def derive_name(op: Op) -> str:
    """A name for a step without `name:`, from what it does."""
    if isinstance(op, WaitOp):
        return _wait_name(op)
    if isinstance(op, SendOp):
        return send_name(op)
    if isinstance(op, WaitForOp):
        timeout = f" ({format_duration(op.timeout_s)})" if op.timeout_s is not None else ""
        cond = f" if {_cut(op.cond.source, 32)}" if op.cond is not None else ""
        return f"wait for {op.event}{cond}{timeout}"
    if isinstance(op, BranchOp):
        return f"if {_cut(op.cond.source)}"
    if isinstance(op, StopOp):
        return "stop"
    assert isinstance(op, JumpOp)
    return "jump"


def _wait_name(op: WaitOp) -> str:
    parts: list[str] = []
    if op.until is not None:
        source = op.until.source.strip()
        if source.startswith("{{") and source.endswith("}}") and source.count("{{") == 1:
            source = source[2:-2]
        offset = ""
        if op.offset_s:
            sign = "+" if op.offset_s > 0 else "-"
            offset = f" {sign} {format_duration(abs(op.offset_s))}"
        parts.append(f"until {_cut(source, 36)}{offset}")
    if op.delay_s:
        parts.append(("then " if parts else "") + format_duration(op.delay_s))
    if op.at is not None:
        parts.append(f"at {op.at.strftime('%H:%M')}")
    return "wait " + (" ".join(parts) if parts else "0s")


def send_name(op: SendOp) -> str:
    """`channel → channel: template`, with the variants' names when there are some."""
    channels: list[str] = []
    templates: list[str] = []
    for entry in op.cascade:
        if entry.channel not in channels:
            channels.append(entry.channel)
        if entry.template and entry.template not in templates:
            templates.append(entry.template)
    what = _cut(op.template or (templates[0] if templates else ""))
    if op.variants:
        names = _cut(", ".join(v.name for v in op.variants), 32)
        what = f"{what}, variants {names}" if what else f"variants {names}"
    return f"{' → '.join(channels)}: {what}"


def step_names(program: tuple[Op, ...] | list[Op], given: dict[str, str]) -> dict[str, str]:
    """Every step path of the program -> its name: the given one, else derived from the
    first op of that path (an `if` and its jump share a path; the branch comes first)."""
    names: dict[str, str] = {}
    for op in program:
        if op.path not in names and not isinstance(op, JumpOp):
            names[op.path] = given.get(op.path) or derive_name(op)
    return names
