"""The Jinja2 environment of rules and templates: an immutable sandbox with strict undefined,
whose renders stay within the limits of engine/lang/budget.py.

Where Jinja offers a hook, the limits use it: `intercepted_binops`/`call_binop` for
`+ * ** %` (intercepted operators are never constant-folded at load either), `call` for every
call a template makes, the str.format wrapper for format widths, `concat` for every join of
output. Loops and literals have no hook; the code generator below wraps them: a `for` loop
iterates `environment.loop_items(...)`, a built list, tuple or dict and a `~` go through
`environment.checked(...)`. Filters that take a size are wrapped to check it first, every
other filter has its result counted. Jinja folds a filter with constant arguments at load by
calling it: that runs under budget.folding(), and a check that fails there leaves the call
to render time. Jinja's optimizer is off: the code generator ran it again at every level of
an expression, folding the levels below each time (a chain of 180 filters took seconds);
output and literals are still folded once. Templates get no bytes (no str.encode, no
int.to_bytes): their methods repeat as str's do, and none of them is sized.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Namespace
from markupsafe import Markup

from engine.clock import parse_time
from engine.lang import budget


def _is_loop_items(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.EnvironmentAttribute)
        and node.node.name == "loop_items"
    )


class _CodeGenerator(CodeGenerator):
    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # (Jinja allows no node types of our own: a call of an environment attribute it is)
        if not _is_loop_items(node.iter):
            lineno = node.iter.lineno
            counted = nodes.EnvironmentAttribute("loop_items", lineno=lineno)
            node.iter = nodes.Call(counted, [node.iter], [], None, None, lineno=lineno)
        super().visit_For(node, frame)

    def _checked(self, visit: Callable[[Any, Frame], None], node: nodes.Expr, frame: Frame) -> None:
        try:
            node.as_const(frame.eval_ctx)
        except nodes.Impossible:
            pass
        else:  # a literal: as big as the source, no bigger
            visit(node, frame)
            return
        self.write("environment.checked(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._checked(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._checked(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target
            super().visit_Tuple(node, frame)
        else:
            self._checked(super().visit_Tuple, node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Concat(node, frame)
        self.write(")")


class _SizedFormatting:
    """str.format fields: their widths checked before, their size counted after."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget.check_format_spec(format_spec)
        return budget.checked(super().format_field(value, format_spec))  # type: ignore[misc]


class _Formatter(_SizedFormatting, SandboxedFormatter):
    pass


class _EscapeFormatter(_SizedFormatting, SandboxedEscapeFormatter):
    pass


class _Namespace(Namespace):
    """`namespace()`: what is assigned to it is checked as any built value is.

    Its repr names no contents: it may be changed after it was put in a list, so a list of
    it must print small whatever it later holds.
    """

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, budget.checked(value))

    def __repr__(self) -> str:
        return "<Namespace>"


class Environment(ImmutableSandboxedEnvironment):
    """Looks keys up before attributes, so `event.data.items` is the field, not dict.items;
    keeps every render within its budget."""

    code_generator_class = _CodeGenerator
    intercepted_binops = budget.INTERCEPTED_BINOPS
    concat = staticmethod(budget.join)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # bytes have every repeating method str has (ljust, zfill, join ...), none of them
        # sized here: a template has no use for bytes, so it gets none
        if (attr == "encode" and isinstance(obj, str)) or (
            attr == "to_bytes" and isinstance(obj, int)
        ):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return budget.binop(operator, left, right)

    def call(
        __self,  # Jinja's signature: these names must never meet a keyword argument
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        budget.tick()
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's `loop(children)`
            args = (budget.loop_items(args[0]), *args[1:])
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            args = budget.check_str_method(owner, getattr(__obj, "__name__", ""), args, kwargs)
        return budget.checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's own str.format wrapper (see SandboxedEnvironment), with our formatters."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        if value.__name__ not in ("format", "format_map"):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        str_type = type(owner)
        is_format_map = value.__name__ == "format_map"
        formatter: SandboxedFormatter
        if isinstance(owner, Markup):
            formatter = _EscapeFormatter(self, escape=owner.escape)
        else:
            formatter = _Formatter(self)
        vformat = formatter.vformat

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs = args[0]
                args = ()
            return str_type(vformat(owner, args, kwargs))

        return functools.update_wrapper(wrapper, value)

    # Called by the generated code (see _CodeGenerator).
    loop_items = staticmethod(budget.loop_items)
    checked = staticmethod(budget.checked)


# -- filters -------------------------------------------------------------------------------


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    """A filter's argument by position (counting the value and any pass_* argument) or name."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _sized(check: Callable[[tuple[Any, ...], dict[str, Any]], tuple[Any, ...] | None]) -> Any:
    """Wrap Jinja's filter of the same name: `check` refuses what would be too big (and may
    give other arguments, e.g. an iterable read once); a string result is counted."""

    def wrap(name: str) -> Callable[..., Any]:
        original = FILTERS[name]

        @functools.wraps(original)
        def checked(*args: Any, **kwargs: Any) -> Any:
            budget.tick()
            args = check(args, kwargs) or args
            return budget.checked(original(*args, **kwargs))

        return checked

    return wrap


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


@_sized
def _center(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    budget.width(_arg(args, kwargs, 1, "width", 80))


@_sized
def _indent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text, width = _text(args[0]), _arg(args, kwargs, 1, "width", 4)
    budget.width(width)
    each = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    budget.expect(len(text) + (text.count("\n") + 1) * each)


@_sized
def _format(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if args and not (len(args) > 1 and kwargs):  # both: Jinja's own error
        budget.check_printf(_text(args[0]), kwargs or tuple(args[1:]))


@_sized
def _wordwrap(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    environment, text = args[0], _text(args[1])
    width = _arg(args, kwargs, 2, "width", 79)
    wrapstring = _arg(args, kwargs, 4, "wrapstring", None) or environment.newline_sequence
    if isinstance(width, int):
        lines = len(text.split()) + len(text) // max(width, 1) + 1
        budget.expect(len(text) + lines * len(_text(wrapstring)))


@_sized
def _replace(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text, old, new = (
        _text(args[1]),
        _arg(args, kwargs, 2, "old", ""),
        _arg(args, kwargs, 3, "new", ""),
    )
    count = _arg(args, kwargs, 4, "count", None)
    count = -1 if count is None else count
    if isinstance(count, int):
        budget.expect(budget.replaced_size(text, _text(old), _text(new), count))


@_sized
def _join(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    items = list(args[1])
    sep = _text(_arg(args, kwargs, 2, "d", ""))
    budget.expect(sum(map(budget.weight, items)) + len(sep) * max(len(items) - 1, 0))
    return (args[0], items, *args[2:])


@_sized
def _tojson(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    indent = _arg(args, kwargs, 2, "indent", None)
    each = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    budget.width(each)
    budget.expect(budget.weight(args[1]) * (1 + max(each, 0)))


@_sized
def _urlize(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    text = _text(args[1])
    extra = sum(
        len(_text(_arg(args, kwargs, i, k, None) or "")) for i, k in ((4, "target"), (5, "rel"))
    )
    budget.expect(len(text) + len(text.split()) * extra)


@_sized
def _batch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    count, fill = _arg(args, kwargs, 1, "linecount", 0), _arg(args, kwargs, 2, "fill_with", None)
    budget.width(count)
    if fill is not None and isinstance(count, int):
        budget.expect(budget.weight(fill) * count)


@_sized
def _slice(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # (eval_ctx, value, slices, fill_with): Jinja's slice takes the eval context first
    count = _arg(args, kwargs, 2, "slices", 0)
    if isinstance(count, int) and count > budget.MAX_ITERATIONS:  # Jinja loops over them
        budget.width(count)
    fill = _arg(args, kwargs, 3, "fill_with", None)
    if fill is not None and isinstance(count, int):
        budget.expect(budget.weight(fill) * count)


@_sized
def _sum(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    start = _arg(args, kwargs, 3, "start", 0)
    if not isinstance(start, str | list | tuple):
        return None  # numbers
    items = list(args[1])
    budget.expect(budget.weight(start) + sum(map(budget.weight, items)))
    return (args[0], items, *args[2:])


def _weighed(items: Iterable[Any]) -> Iterator[Any]:
    """A `map` result: what it yields, together, is a built value (it may repeat one)."""
    total = 0
    for item in items:
        total += budget.weight(item)
        budget.expect(total)
        budget.tick()
        yield item


def _map(*args: Any, **kwargs: Any) -> Any:
    result = FILTERS["map"](*args, **kwargs)
    return _weighed(result) if isinstance(result, Iterator) else result


def _by_attr(select: bool) -> Callable[..., Iterator[Any]]:
    """Jinja's selectattr / rejectattr, where an item without the attribute fails the test
    instead of raising: `items | selectattr('category', 'equalto', 'baby_food')` over cart
    items of which some have no category (SPEC 12's segment example) keeps those that have
    it and match; rejectattr keeps the items without it. `defined` / `undefined` see the
    missing attribute as Jinja does."""
    original = FILTERS["selectattr" if select else "rejectattr"]

    @jinja2.pass_context
    def run(context: Context, value: Iterable[Any], attr: str, *args: Any, **kwargs: Any) -> Any:
        env = context.environment
        get = make_attrgetter(env, attr)
        name, rest = (args[0], args[1:]) if args else (None, ())

        def passes(item: Any) -> bool:
            found = get(item)
            if isinstance(found, jinja2.Undefined) and name not in ("defined", "undefined"):
                return False
            if name is None:
                return bool(found)
            return bool(env.call_test(name, found, rest, kwargs, context))

        return (item for item in value if passes(item) == select)

    return functools.wraps(original)(run)


_SIZED_FILTERS: dict[str, Callable[..., Any]] = {
    "selectattr": _by_attr(True),
    "rejectattr": _by_attr(False),
    "center": _center("center"),
    "indent": _indent("indent"),
    "format": _format("format"),
    "wordwrap": _wordwrap("wordwrap"),
    "replace": _replace("replace"),
    "join": _join("join"),
    "tojson": _tojson("tojson"),
    "urlize": _urlize("urlize"),
    "batch": _batch("batch"),
    "slice": _slice("slice"),
    "sum": _sum("sum"),
    "map": functools.wraps(FILTERS["map"])(_map),
}


def _counted(original: Callable[..., Any]) -> Callable[..., Any]:
    """Any other filter: a tick, and its result counted. `string`, `pprint`, `forceescape`,
    `urlencode` ... make a few times what they are given, so a chain of them doubles: each
    link is refused once it is over the limit (at load too, where Jinja folds them)."""

    @functools.wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        budget.tick()
        return budget.checked(original(*args, **kwargs))

    return counted


def as_datetime(value: Any) -> datetime:
    """`"2026-11-30T00:00:00Z" | as_datetime` for date arithmetic in expressions."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromtimestamp(parse_time(str(value)), UTC)


@jinja2.pass_context
def days_until(context: Context, value: Any, now: Any = None) -> int:
    """Whole days from `now` (the argument, else the context's: the engine's clock) until a
    date; negative when past. Never the wall clock: a simulation gives the same days on
    any day it runs."""
    if now is None:
        now = context.get("now")
        if now is None or isinstance(now, jinja2.Undefined):
            raise ValueError("days_until needs 'now': none in this context")
    return (as_datetime(value) - as_datetime(now)).days


def make_env(*, autoescape: bool) -> Environment:
    env = Environment(undefined=jinja2.StrictUndefined, autoescape=autoescape, optimized=False)
    env.filters.update({name: _counted(fn) for name, fn in FILTERS.items()})
    env.filters.update(_SIZED_FILTERS)
    env.filters["as_datetime"] = as_datetime
    env.filters["days_until"] = days_until
    env.globals["namespace"] = _Namespace
    # lorem ipsum has no place in a message, and lipsum(10**6) takes minutes
    del env.globals["lipsum"]
    return env


ENV = make_env(autoescape=False)
HTML_ENV = make_env(autoescape=True)
