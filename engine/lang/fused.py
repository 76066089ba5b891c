"""Fused tests: every trigger condition of an event type in one generated function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

from engine.errors import ExpressionError
from engine.lang.budget import RenderLimitError
from engine.lang.expressions import Expression, Undefined
from engine.lang.fastpath import HELPERS, Compiler, Unsupported

# -- fused tests ---------------------------------------------------------------------------
#
# Matching an event tests the trigger conditions of every rule of its type against one
# context. Tested one by one, each pays a call, its own name resolution and its own error
# handling; fused, they are one generated function: names resolved once, then one guarded
# block per condition, in order. The blocks are the fast path's code, so a fused test gives
# exactly what each Expression.test gives, errors included.

Hits = list[int]
FailHook = Callable[[int, ExpressionError], None]


class _UndefinedValue(Exception):
    """A condition whose value is undefined (Expression.test's own error)."""


def _truthy(value: Any) -> bool:
    if isinstance(value, Undefined):
        raise _UndefinedValue
    return bool(value)


def _boolean(node: nodes.Node | None) -> bool:
    """Whether the value is always a bool (or an error): comparisons and their logic.

    Python's comparisons of the values a context holds give bools, and StrictUndefined
    raises rather than compare; `and`/`or` give one of their operands.
    """
    if isinstance(node, nodes.Compare | nodes.Not):
        return True
    if isinstance(node, nodes.And | nodes.Or):
        return _boolean(node.left) and _boolean(node.right)
    return False


@dataclass(frozen=True)
class FusedTests:
    # (context, fail) -> the indexes of the expressions that hold (None always holds), in
    # order; each that cannot be evaluated goes to fail(index, the error Expression.test
    # raises)
    test: Callable[[Mapping[str, Any], FailHook], Hits]
    # the context names read; None when some expression is evaluated by Jinja (any name)
    names: frozenset[str] | None
    # name -> the fields of it that are read (`event.data.x` reads event's "data"); a name
    # missing here may have any field read
    fields: Mapping[str, frozenset[str]]


def fuse_tests(exprs: list[Expression | None]) -> FusedTests:
    """One function testing `exprs` in order against a context (see FusedTests)."""
    compiler = Compiler(hoist=True)
    # Two versions of the tests: `plain` for when every hoisted chain was computed (the
    # usual case), `guarded` re-raising a failed chain's error at each of its uses.
    plain: list[str] = []
    guarded: list[str] = []
    slow: list[Any] = []
    jinja_names = False
    for index, expr in enumerate(exprs):
        if expr is None:
            plain.append(f"_hits.append({index})")
            guarded.append(f"_hits.append({index})")
            continue
        tests = None
        if expr.node is not None:
            try:
                compiler.guard = False
                unguarded = compiler.expr(expr.node)
                compiler.guard = True
                tests = (unguarded, compiler.expr(expr.node))
            except (Unsupported, RecursionError):
                tests = None
        if tests is None:
            jinja_names = True
            slow.append(expr.test)
            tests = (f"_s{len(slow) - 1}(ctx)",) * 2
        elif not _boolean(expr.node):
            # This may give undefined, which has Expression.test's own error.
            wrap = "(_v := {}) is True or (_v is not False and _truthy(_v))"
            tests = (wrap.format(tests[0]), wrap.format(tests[1]))
        for out, test in zip((plain, guarded), tests, strict=True):
            out += [
                "try:",
                f"    if {test}:",
                f"        _hits.append({index})",
                "except Exception as _e:",
                f"    _fail({index}, _error({index}, _e))",
            ]
    prologue = compiler.resolve_names()
    prologue += compiler.prologue
    if compiler.chains:
        ok = " and ".join(f"{c}.__class__ is not _Failed" for c in compiler.chains.values())
        blocks = [f"if {ok}:", *(f"    {b}" for b in plain), "else:"]
        blocks += [f"    {b}" for b in guarded]
    else:
        blocks = guarded
    params = [
        *HELPERS,
        "_truthy",
        "_error",
        *(f"_s{n}" for n in range(len(slow))),
        *(f"_c{n}" for n in range(len(compiler.values))),
    ]
    source = "\n".join(
        [
            f"def _make({', '.join(params)}):",
            "    def _match(ctx, _fail):",
            "        _hits = []",
            *(f"        {line}" for line in prologue + blocks),
            "        return _hits",
            "    return _match",
        ]
    )
    namespace: dict[str, Any] = {"__builtins__": {"Exception": Exception}}
    try:
        exec(compile(source, "<kaskad matcher>", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError):  # absurdly deep or many: one by one
        return FusedTests(_one_by_one(exprs), None, {})

    def error(index: int, exc: Exception) -> ExpressionError:
        """The error Expression.test raises for what the block of `index` raised."""
        expr = exprs[index]
        assert expr is not None
        if isinstance(exc, ExpressionError) and not isinstance(exc, RenderLimitError):
            return exc  # from a slow one's Expression.test (a fast one raises no other)
        if isinstance(exc, _UndefinedValue):
            return ExpressionError(f"undefined value in '{expr.source}'")
        return expr._error(exc)

    fused: Callable[[Mapping[str, Any], FailHook], Hits] = namespace["_make"](
        *HELPERS.values(), _truthy, error, *slow, *compiler.values
    )
    if jinja_names:
        return FusedTests(fused, None, {})
    fields = {n: frozenset(f) for n, f in compiler.fields.items() if f is not None}
    return FusedTests(fused, frozenset(compiler.names), fields)


def _one_by_one(
    exprs: list[Expression | None],
) -> Callable[[Mapping[str, Any], FailHook], Hits]:
    def run(context: Mapping[str, Any], fail: FailHook) -> Hits:
        hits: Hits = []
        for index, expr in enumerate(exprs):
            try:
                if expr is None or expr.test(context):
                    hits.append(index)
            except ExpressionError as exc:
                fail(index, exc)
        return hits

    return run
