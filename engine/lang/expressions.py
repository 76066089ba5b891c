"""Expressions and templates: Jinja2 in an immutable sandbox with strict undefined.

Everything is compiled once, when rules load; names outside the allowed set are load errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.optimizer import optimize
from jinja2.runtime import new_context, str_join

from engine.errors import ExpressionError, did_you_mean
from engine.lang import budget
from engine.lang.budget import RenderLimitError
from engine.lang.sandbox import ENV, HTML_ENV

EXPRESSION_NAMES = frozenset({"event", "trigger", "user", "now"})
TEMPLATE_NAMES = EXPRESSION_NAMES | {"message", "track", "unsubscribe_url", "variant", "rule"}


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
#   Jinja writes, except those the sandbox intercepts (`+ * %`), which are budget.binop as
#   in Jinja's call_binop; `~` is jinja2.runtime.str_join; a built string, list, tuple or
#   dict goes through budget.checked, as the sandbox's code generator has it;
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


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    """("event", "data", "total") for `event.data.total`; None for anything else."""
    attrs: list[str] = []
    while isinstance(node, nodes.Getattr) and node.ctx == "load":
        attrs.append(node.attr)
        node = node.node
    if not (isinstance(node, nodes.Name) and node.ctx == "load") or not attrs:
        return None
    return (node.name, *reversed(attrs))


class _Failed:
    """A hoisted lookup that raised: every use raises its error."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def throw(self) -> Any:
        raise self.error


# Helpers every generated function receives as its first parameters.
_HELPERS: dict[str, Any] = {
    "_type": type,
    "_dict": dict,
    "_getattr": ENV.getattr,
    "_getitem": ENV.getitem,
    "_resolve": _resolve_name,
    "_str_join": str_join,
    "_binop": budget.binop,
    "_checked": budget.checked,
    "_Failed": _Failed,
}


class _Unsupported(Exception):
    """Outside the compiled subset: the expression stays on the Jinja path."""


class _Compiler:
    """Jinja expression AST -> Python source of `_expr(ctx)`, constants as parameters."""

    def __init__(self, *, hoist: bool = False) -> None:
        self.values: list[Any] = []
        self._interned: dict[str, str] = {}
        self.names: dict[str, str] = {}  # context name -> local variable
        self._temps = 0
        # Fused functions compute each `name.a.b` chain once, up front (see _chain).
        self.hoist = hoist
        self.chains: dict[tuple[str, ...], str] = {}  # path -> local variable
        self.prologue: list[str] = []  # statements computing the chains, parents first
        self.guard = True  # False: the code runs only when no chain failed
        # name -> the first attributes read through hoisted chains (`event.data.x`: data);
        # None when the object itself is used (so any field of it may be read)
        self.fields: dict[str, set[str] | None] = {}

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
            self.fields[node.name] = None  # the whole object is used: any field may be read
            return self._name(node.name)
        if self.hoist and isinstance(node, nodes.Getattr) and _path(node) is not None:
            local = self._chain(node)
            if not self.guard:
                return local
            return f"({local} if {local}.__class__ is not _Failed else {local}.throw())"
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
            left, right, op = self.expr(node.left), self.expr(node.right), _BINOPS[type(node)]
            if op in budget.INTERCEPTED_BINOPS:
                return f"_binop({self.bind(op)}, {left}, {right})"
            return f"({left} {op} {right})"
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
            joined = "_str_join((" + "".join(self.expr(n) + ", " for n in node.nodes) + "))"
            return f"_checked({joined})"
        if isinstance(node, nodes.CondExpr) and node.expr2 is not None:
            then, test = self.expr(node.expr1), self.expr(node.test)
            return f"({then} if {test} else {self.expr(node.expr2)})"
        if isinstance(node, nodes.Filter | nodes.Test):
            return self.call(node)
        # (constant ones were folded into Const before: literals, not checked in Jinja either)
        if isinstance(node, nodes.Tuple) and node.ctx == "load":
            return "_checked((" + "".join(self.expr(n) + ", " for n in node.items) + "))"
        if isinstance(node, nodes.List):
            return "_checked([" + ", ".join(self.expr(n) for n in node.items) + "])"
        if isinstance(node, nodes.Dict):
            pairs = (f"{self.expr(p.key)}: {self.expr(p.value)}" for p in node.items)
            return "_checked({" + ", ".join(pairs) + "})"
        raise _Unsupported(type(node).__name__)

    def resolve_names(self) -> list[str]:
        """The statements that put each context name in its local, up front as in Jinja's
        generated code (resolving has no effects)."""
        lines = []
        for name, local in self.names.items():
            key = self.bind(name)
            lines.append(f"{local} = ctx[{key}] if {key} in ctx else _resolve({key})")
        return lines

    def _name(self, name: str) -> str:
        """The local holding a context name (resolved at the top of the function)."""
        if name not in self.names:
            self.names[name] = f"_n{len(self.names)}"
        return self.names[name]

    def _chain(self, node: nodes.Getattr) -> str:
        """The local holding `name.a.b`, computed once before the tests.

        Lookups have no effects, so computing one early changes nothing but its cost; one
        that raises keeps its error (_Failed) and every use raises it again, as each use
        would have raised it computing the chain itself.
        """
        path = _path(node)
        assert path is not None
        local = self.chains.get(path)
        if local is not None:
            return local
        parent = node.node
        # the parent chain, or the Name (a local resolved at the top)
        if isinstance(parent, nodes.Getattr):
            source = self._chain(parent)
        else:
            source = self._name(path[0])
            used = self.fields.setdefault(path[0], set())
            if used is not None:
                used.add(path[1])
        key, local = self.bind(node.attr), f"_h{len(self.chains)}"
        self.chains[path] = local
        self.prologue += [
            f"if {source}.__class__ is _Failed:",
            f"    {local} = {source}",
            "else:",
            "    try:",
            f"        {local} = ({source}[{key}] if _type({source}) is _dict and {key} in"
            f" {source} else _getattr({source}, {key}))",
            "    except Exception as _e:",
            f"        {local} = _Failed(_e)",
        ]
        return local

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
        prologue = [f"        {line}" for line in self.resolve_names()]
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


def _expression_node(ast: nodes.Template) -> nodes.Expr | None:
    """The optimised expression of `{{ (expr) }}` (Jinja's own constant folding, as
    compile_expression does), or None for anything but one output expression."""
    if len(ast.body) != 1 or not isinstance(ast.body[0], nodes.Output):
        return None
    output = ast.body[0].nodes
    if len(output) != 1:
        return None
    node = optimize(output[0], ENV)
    assert isinstance(node, nodes.Expr)
    return node


def _compile_fast(node: nodes.Expr | None) -> Callable[[Mapping[str, Any]], Any] | None:
    """The plain-Python function of an expression, or None when Jinja must evaluate it."""
    if node is None:
        return None
    try:
        return _Compiler().function(node)
    except (_Unsupported, SyntaxError, RecursionError):  # the last two: very deep nesting
        return None


class Expression:
    """A compiled expression such as `event.data.total > 0`.

    Evaluated by a plain-Python function compiled from the Jinja AST when the expression is
    in the fast subset, else by Jinja; `fast=False` forces Jinja (the reference in tests).
    """

    __slots__ = ("_fn", "_jinja", "fast", "node", "source")

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
        node = _expression_node(ast) if fast else None
        compiled = _compile_fast(node)
        self.fast = compiled is not None
        # The compiled subset's AST, for compilers that fuse several expressions (matcher).
        self.node = node if compiled is not None else None
        if compiled is None:
            jinja_fn = self._jinja

            def evaluate(context: Mapping[str, Any]) -> Any:
                return jinja_fn(**context)

            def compiled(context: Mapping[str, Any]) -> Any:
                return budget.run(evaluate, context)

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
        if isinstance(exc, RenderLimitError):
            return ExpressionError(f"{exc} in '{self.source}'")
        if isinstance(exc, jinja2.UndefinedError):
            return ExpressionError(f"{_error_text(exc)} in '{self.source}'")
        # a bad comparison or a sandbox refusal: the rule's fault
        return ExpressionError(f"{type(exc).__name__}: {exc} in '{self.source}'")


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
    if isinstance(value, _Undefined):
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
    compiler = _Compiler(hoist=True)
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
            except (_Unsupported, RecursionError):
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
        *_HELPERS,
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
        *_HELPERS.values(), _truthy, error, *slow, *compiler.values
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
            rendered: str = budget.run(self._render, context)
            return rendered
        except jinja2.UndefinedError as exc:
            raise ExpressionError(_error_text(exc)) from None
        except RenderLimitError:
            raise
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
