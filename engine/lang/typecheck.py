"""Comparisons that can never work, seen in the text of an expression or template.

At run time `event.data.total > '100'` raises (a rule condition that fails is false and
logged), and `event.data.total == '100'` is always false: both are mistakes the loader can
name. Only what is certain is reported: literals, and the fields whose type is known (the
money fields events must carry as numbers, see engine/lang/events.py; profile counters; the
string fields of every event and profile).
"""

from __future__ import annotations

import re

from jinja2 import nodes

from engine.lang.sandbox import ENV

_MONEY = ("total", "price", "amount", "balance", "old_price", "new_price")
NUMBER_FIELDS = frozenset(
    {(name, "data", field) for name in ("event", "trigger") for field in _MONEY}
    | {("user", field) for field in ("orders_count", "revenue", "points_balance")}
)
STRING_FIELDS = frozenset(
    {("user", "email"), ("user", "rfm")}
    | {(name, field) for name in ("event", "trigger") for field in ("type", "user_id")}
)
_ORDERING = {"lt": "<", "gt": ">", "lteq": "<=", "gteq": ">="}
_EQUALITY = {"eq": "==", "ne": "!="}
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


class _Side:
    __slots__ = ("kind", "literal", "shown")

    def __init__(self, kind: str, shown: str, *, literal: bool) -> None:
        self.kind, self.shown, self.literal = kind, shown, literal


def expression_clashes(source: str) -> list[str]:
    """The impossible comparisons in an expression (one that compiled)."""
    return _clashes(ENV.parse("{{ (" + source + ") }}"))


def template_clashes(source: str) -> list[str]:
    """The impossible comparisons in a template (one that compiled)."""
    return _clashes(ENV.parse(source))


def _clashes(ast: nodes.Template) -> list[str]:
    out: list[str] = []
    for compare in ast.find_all(nodes.Compare):
        left = compare.expr
        for operand in compare.ops:
            message = _clash(left, operand.op, operand.expr)
            if message is not None:
                out.append(message)
            left = operand.expr
    return out


def _clash(left: nodes.Expr, op: str, right: nodes.Expr) -> str | None:
    a, b = _side(left), _side(right)
    if a is None or b is None or a.kind == b.kind:
        return None
    text = a if a.kind == "string" else b
    number = b if text is a else a
    hint = _hint(text)
    if op in _ORDERING:
        return (
            f"{a.shown} {_ORDERING[op]} {b.shown} orders a {a.kind} against a {b.kind}, "
            f"which fails whenever it runs{hint}"
        )
    if op in _EQUALITY and text.literal and not number.literal:
        always = "false" if op == "eq" else "true"
        return (
            f"{a.shown} {_EQUALITY[op]} {b.shown} compares a number with a string: "
            f"always {always}{hint}"
        )
    return None


def _side(node: nodes.Expr) -> _Side | None:
    if isinstance(node, nodes.Const):
        value = node.value
        if isinstance(value, str):
            return _Side("string", repr(value), literal=True)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _Side("number", repr(value), literal=True)
        return None
    if isinstance(node, nodes.Neg) and isinstance(node.node, nodes.Const):
        inner = _side(node.node)
        if inner is not None and inner.kind == "number":
            return _Side("number", "-" + inner.shown, literal=True)
        return None
    path = _path(node)
    if path in NUMBER_FIELDS:
        return _Side("number", ".".join(path), literal=False)
    if path in STRING_FIELDS:
        return _Side("string", ".".join(path), literal=False)
    return None


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    """("event", "data", "total") for `event.data.total` or `event['data']['total']`."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            parts.append(node.arg.value)
        else:
            break
        node = node.node
    if not isinstance(node, nodes.Name) or not parts:
        return None
    return (node.name, *reversed(parts))


def _hint(text: _Side) -> str:
    """' (did you mean 100?)' when the string is a number written in quotes."""
    if not text.literal:
        return ""
    raw = text.shown[1:-1]
    return f" (did you mean {raw}?)" if _NUMBER.fullmatch(raw) else ""
