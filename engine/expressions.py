"""Expressions and templates: Jinja2 in an immutable sandbox with strict undefined.

Everything is compiled once, when rules load; names outside the allowed set are load errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.optimizer import optimize
from jinja2.runtime import new_context, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .clock import parse_time
from .errors import ExpressionError, did_you_mean

EXPRESSION_NAMES = frozenset({"event", "trigger", "user", "now"})
TEMPLATE_NAMES = EXPRESSION_NAMES | {"message", "track", "unsubscribe_url", "variant", "rule"}


def _as_datetime(value: Any) -> datetime:
    """`"2026-11-30T00:00:00Z" | as_datetime` for date arithmetic in expressions."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromtimestamp(parse_time(str(value)), UTC)


def _days_until(value: Any, now: datetime | None = None) -> int:
    """Whole days from now until a date (negative when past)."""
    target = _as_datetime(value)
    start = now or datetime.now(UTC)
    return (target - start).days


class _Environment(ImmutableSandboxedEnvironment):
    """Looks keys up before attributes, so `event.data.items` is the field, not dict.items."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


def _make_env(autoescape: bool) -> _Environment:
    env = _Environment(undefined=jinja2.StrictUndefined, autoescape=autoescape)
    env.filters["as_datetime"] = _as_datetime
    env.filters["days_until"] = _days_until
    return env


ENV = _make_env(autoescape=False)
HTML_ENV = _make_env(autoescape=True)


def _check_names(ast: nodes.Template, allowed: Iterable[str]) -> None:
    allowed = frozenset(allowed)
    for name in sorted(meta.find_undeclared_variables(ast)):
        if name not in allowed:
            raise ValueError(
                f"unknown name '{name}'{did_you_mean(name, allowed)}; "
                f"available: {', '.join(sorted(allowed))}"
            )


_Undefined = jinja2.Undefined


def _error_text(exc: jinja2.TemplateError) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.replace("\n", " ")


# -- the fast path -------------------------------------------------------------------------
#
# Most rule conditions are attribute lookups, comparisons and a few filters. Jinja evaluates
# them through a template render (a new Context, a generator, a dict of results: ~10 us); the
# compiler below turns the same optimised Jinja AST into one plain Python function that makes
# exactly the calls Jinja's generated code makes, minus that machinery:
#
# * names come from the context dict, else from ENV.globals, else ENV.undefined(name=...);
# * `a.b` on a plain dict is the key lookup _Environment.getattr starts with; a missing key and
#   every other object go through ENV.getattr itself, so the sandbox rules all non-dict access
#   and a missing key yields the very StrictUndefined Jinja would (with its message and its
#   behaviour under `default`, `is defined`, `is none`, comparisons...);
# * `a[b]` is ENV.getitem (slices are native, as in Jinja's generated code);
# * operators, comparisons (chained), and/or/not and inline if are the Python operators
#   Jinja writes; `~` is jinja2.runtime.str_join;
# * filters and tests are the functions of ENV.filters / ENV.tests, called with the same
#   arguments; those that want the environment, the eval context or the context are not
#   compiled.
#
# Anything else (calls, `**`, `if` without `else`, filters that take the environment...) keeps
# the whole expression on the Jinja path. Jinja's constant folding runs first, so folded values
# are the ones Jinja computes. User text never becomes code: every name, key and constant is a
# parameter of the generated factory.

_BINOPS = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Mod: "%",
    nodes.And: "and",
    nodes.Or: "or",
}
_UNOPS = {nodes.Not: "not ", nodes.Neg: "-", nodes.Pos: "+"}
_COMPARE_OPS = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "gteq": ">=",
    "lt": "<",
    "lteq": "<=",
    "in": "in",
    "notin": "not in",
}
_SCALARS = (type(None), bool, int, float, complex, str, frozenset, range)


def _resolve_name(name: str) -> Any:
    """A name missing from the context, as Jinja resolves it: a global, else undefined."""
    if name in ENV.globals:
        return ENV.globals[name]
    return ENV.undefined(name=name)


# Helpers every generated function receives as its first parameters.
_HELPERS: dict[str, Any] = {
    "_type": type,
    "_dict": dict,
    "_getattr": ENV.getattr,
    "_getitem": ENV.getitem,
    "_resolve": _resolve_name,
    "_str_join": str_join,
}


class _Unsupported(Exception):
    """Outside the compiled subset: the expression stays on the Jinja path."""


class _Compiler:
    """Jinja expression AST -> Python source of `_expr(ctx)`, constants as parameters."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._interned: dict[str, str] = {}
        self.names: dict[str, str] = {}  # context name -> local variable
        self._temps = 0

    def bind(self, value: Any) -> str:
        """A parameter holding `value` (strings are shared between uses)."""
        if type(value) is str and value in self._interned:
            return self._interned[value]
        param = f"_c{len(self.values)}"
        self.values.append(value)
        if type(value) is str:
            self._interned[value] = param
        return param

    def temp(self) -> str:
        self._temps += 1
        return f"_t{self._temps}"

    def literal(self, value: Any) -> str:
        """A constant; containers are rebuilt per evaluation, as Jinja's repr() code does."""
        if isinstance(value, float) and not math.isfinite(value):
            raise _Unsupported("non-finite constant")  # Jinja writes `inf`, a NameError
        if isinstance(value, _SCALARS):
            return self.bind(value)
        if type(value) is tuple:
            return "(" + "".join(self.literal(v) + ", " for v in value) + ")"
        if type(value) is list:
            return "[" + ", ".join(self.literal(v) for v in value) + "]"
        if type(value) is dict:
            pairs = (f"{self.literal(k)}: {self.literal(v)}" for k, v in value.items())
            return "{" + ", ".join(pairs) + "}"
        raise _Unsupported(f"constant of type {type(value).__name__}")

    def expr(self, node: nodes.Node) -> str:
        """Python source computing `node`; raises _Unsupported outside the subset."""
        if isinstance(node, nodes.Const):
            return self.literal(node.value)
        if isinstance(node, nodes.Name) and node.ctx == "load":
            if node.name not in self.names:
                self.names[node.name] = f"_n{len(self.names)}"
            return self.names[node.name]
        if isinstance(node, nodes.Getattr) and node.ctx == "load":
            # _Environment.getattr starts with the key of a dict; everything else is its own.
            obj, key, tmp = self.expr(node.node), self.bind(node.attr), self.temp()
            return (
                f"({tmp}[{key}] if _type({tmp} := {obj}) is _dict and {key} in {tmp}"
                f" else _getattr({tmp}, {key}))"
            )
        if isinstance(node, nodes.Getitem) and node.ctx == "load":
            obj, arg = self.expr(node.node), node.arg
            if isinstance(arg, nodes.Slice):  # Jinja slices natively too
                start, stop, step = (
                    "" if part is None else self.expr(part)
                    for part in (arg.start, arg.stop, arg.step)
                )
                return f"({obj})[{start}:{stop}:{step}]"
            return f"_getitem({obj}, {self.expr(arg)})"
        if isinstance(node, nodes.BinExpr) and type(node) in _BINOPS:
            left, right = self.expr(node.left), self.expr(node.right)
            return f"({left} {_BINOPS[type(node)]} {right})"
        if isinstance(node, nodes.UnaryExpr) and type(node) in _UNOPS:
            return f"({_UNOPS[type(node)]}{self.expr(node.node)})"
        if isinstance(node, nodes.Compare):
            out = [self.expr(node.expr)]
            for operand in node.ops:
                if operand.op not in _COMPARE_OPS:
                    raise _Unsupported(f"operator {operand.op}")
                out.append(f" {_COMPARE_OPS[operand.op]} {self.expr(operand.expr)}")
            return "(" + "".join(out) + ")"
        if isinstance(node, nodes.Concat):
            return "_str_join((" + "".join(self.expr(n) + ", " for n in node.nodes) + "))"
        if isinstance(node, nodes.CondExpr) and node.expr2 is not None:
            then, test = self.expr(node.expr1), self.expr(node.test)
            return f"({then} if {test} else {self.expr(node.expr2)})"
        if isinstance(node, nodes.Filter | nodes.Test):
            return self.call(node)
        if isinstance(node, nodes.Tuple) and node.ctx == "load":
            return "(" + "".join(self.expr(n) + ", " for n in node.items) + ")"
        if isinstance(node, nodes.List):
            return "[" + ", ".join(self.expr(n) for n in node.items) + "]"
        if isinstance(node, nodes.Dict):
            pairs = (f"{self.expr(p.key)}: {self.expr(p.value)}" for p in node.items)
            return "{" + ", ".join(pairs) + "}"
        raise _Unsupported(type(node).__name__)

    def call(self, node: nodes.Filter | nodes.Test) -> str:
        table = ENV.filters if isinstance(node, nodes.Filter) else ENV.tests
        func = table.get(node.name)
        if func is None or getattr(func, "jinja_pass_arg", None) is not None:
            raise _Unsupported(f"filter or test '{node.name}'")
        if node.node is None or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise _Unsupported("dynamic arguments")
        args = [self.expr(node.node), *(self.expr(a) for a in node.args)]
        if node.kwargs:
            pairs = (f"{self.bind(kw.key)}: {self.expr(kw.value)}" for kw in node.kwargs)
            args.append("**{" + ", ".join(pairs) + "}")
        return f"{self.bind(func)}({', '.join(args)})"

    def function(self, node: nodes.Expr) -> Callable[[Mapping[str, Any]], Any]:
        body = self.expr(node)
        # Names resolve up front, as in Jinja's generated code (resolving has no effects).
        prologue = []
        for name, local in self.names.items():
            key = self.bind(name)
            prologue.append(f"        {local} = ctx[{key}] if {key} in ctx else _resolve({key})")
        params = [*_HELPERS, *(f"_c{n}" for n in range(len(self.values)))]
        source = "\n".join(
            [
                f"def _make({', '.join(params)}):",
                "    def _expr(ctx):",
                *prologue,
                f"        return {body}",
                "    return _expr",
            ]
        )
        namespace: dict[str, Any] = {"__builtins__": {}}
        exec(compile(source, "<kaskad expression>", "exec"), namespace)
        fn: Callable[[Mapping[str, Any]], Any] = namespace["_make"](
            *_HELPERS.values(), *self.values
        )
        return fn


def _compile_fast(ast: nodes.Template) -> Callable[[Mapping[str, Any]], Any] | None:
    """The plain-Python function of `{{ (expr) }}`, or None when Jinja must evaluate it."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    output = ast.body[0].nodes
    if len(output) != 1:
        return None
    node = optimize(output[0], ENV)  # Jinja's own constant folding, as compile_expression
    assert isinstance(node, nodes.Expr)
    try:
        return _Compiler().function(node)
    except (_Unsupported, SyntaxError, RecursionError):  # the last two: very deep nesting
        return None


class Expression:
    """A compiled expression such as `event.data.total > 0`.

    Evaluated by a plain-Python function compiled from the Jinja AST when the expression is
    in the fast subset, else by Jinja; `fast=False` forces Jinja (the reference in tests).
    """

    __slots__ = ("_fn", "_jinja", "fast", "source")

    def __init__(
        self, source: str, allowed: Iterable[str] = EXPRESSION_NAMES, *, fast: bool = True
    ) -> None:
        self.source = source
        try:
            # Compile the source as written first, so syntax errors speak of what the
            # author wrote; the wrapped parse below is only for names and the fast path.
            self._jinja = ENV.compile_expression(source, undefined_to_none=False)
            ast = ENV.parse("{{ (" + source + ") }}")
            _check_names(ast, allowed)
        except jinja2.TemplateSyntaxError as exc:
            text = _error_text(exc).replace("end of template", "end of expression")
            raise ValueError(f"invalid expression: {text}") from None
        except jinja2.TemplateError as exc:
            raise ValueError(f"invalid expression: {_error_text(exc)}") from None
        compiled = _compile_fast(ast) if fast else None
        self.fast = compiled is not None
        if compiled is None:
            jinja_fn = self._jinja

            def compiled(context: Mapping[str, Any]) -> Any:
                return jinja_fn(**context)

        self._fn: Callable[[Mapping[str, Any]], Any] = compiled

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        try:
            value = self._fn(context)
        except Exception as exc:
            raise self._error(exc) from None
        if isinstance(value, _Undefined):
            raise ExpressionError(f"undefined value in '{self.source}'")
        return value

    def test(self, context: Mapping[str, Any]) -> bool:
        # evaluate() inlined: conditions are the hot path of matching
        try:
            value = self._fn(context)
        except Exception as exc:
            raise self._error(exc) from None
        if isinstance(value, _Undefined):
            raise ExpressionError(f"undefined value in '{self.source}'")
        return bool(value)

    def _error(self, exc: Exception) -> ExpressionError:
        if isinstance(exc, jinja2.UndefinedError):
            return ExpressionError(f"{_error_text(exc)} in '{self.source}'")
        # a bad comparison or a sandbox refusal: the rule's fault
        return ExpressionError(f"{type(exc).__name__}: {exc} in '{self.source}'")


def _renderer(template: jinja2.Template) -> Callable[[Mapping[str, Any]], str]:
    """`template.render` minus its per-call copy of the globals ChainMap (~half its cost).

    Template.render(ctx) is concat(root_render_func(new_context(..., ctx, globals=ChainMap)));
    a dict of the same globals, taken once, gives the same Context. Errors propagate unchanged
    (render only rewrites their traceback).
    """
    env, name, blocks = template.environment, template.name, template.blocks
    root, concat = template.root_render_func, env.concat
    globals_ = dict(template.globals)

    def render(context: Mapping[str, Any]) -> str:
        return concat(root(new_context(env, name, blocks, dict(context), False, globals_)))

    return render


class TextTemplate:
    """A compiled template string such as `{{ user.attributes.first_name }}, hi`."""

    __slots__ = ("_render", "_template", "constant", "source")

    def __init__(
        self,
        source: str,
        allowed: Iterable[str] = TEMPLATE_NAMES,
        *,
        html: bool = False,
    ) -> None:
        self.source = source
        env = HTML_ENV if html else ENV
        # Plain text needs no rendering: the common case of a literal stays cheap.
        self.constant: str | None = None if ("{" in source) else source
        try:
            ast = env.parse(source)
            _check_names(ast, allowed)
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            line = f" (template line {exc.lineno})" if exc.lineno and exc.lineno > 1 else ""
            raise ValueError(f"invalid template{line}: {_error_text(exc)}") from None
        except jinja2.TemplateError as exc:
            raise ValueError(f"invalid template: {_error_text(exc)}") from None
        self._render = _renderer(self._template)

    def render(self, context: Mapping[str, Any]) -> str:
        if self.constant is not None:
            return self.constant
        try:
            return self._render(context)
        except jinja2.UndefinedError as exc:
            raise ExpressionError(_error_text(exc)) from None
        except Exception as exc:
            raise ExpressionError(f"{type(exc).__name__}: {exc}") from None


def compile_structure(
    value: Any, *, allowed: Iterable[str] = TEMPLATE_NAMES
) -> Callable[[Mapping[str, Any]], Any]:
    """Compile every string inside a JSON-like structure; returns a renderer of the whole."""
    if isinstance(value, str):
        tpl = TextTemplate(value, allowed)
        return tpl.render
    if isinstance(value, dict):
        parts = {str(k): compile_structure(v, allowed=allowed) for k, v in value.items()}
        return lambda ctx: {k: fn(ctx) for k, fn in parts.items()}
    if isinstance(value, list):
        items = [compile_structure(v, allowed=allowed) for v in value]
        return lambda ctx: [fn(ctx) for fn in items]
    return lambda ctx: value
