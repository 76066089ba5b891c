"""The fast path of expressions: the subset of Jinja that rule conditions use, compiled to
plain Python functions that make exactly the calls Jinja's own generated code makes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.optimizer import optimize
from jinja2.runtime import str_join

from engine.lang import budget
from engine.lang.sandbox import ENV

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
HELPERS: dict[str, Any] = {
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


class Unsupported(Exception):
    """Outside the compiled subset: the expression stays on the Jinja path."""


class Compiler:
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
            raise Unsupported("non-finite constant")  # Jinja writes `inf`, a NameError
        if isinstance(value, _SCALARS):
            return self.bind(value)
        if type(value) is tuple:
            return "(" + "".join(self.literal(v) + ", " for v in value) + ")"
        if type(value) is list:
            return "[" + ", ".join(self.literal(v) for v in value) + "]"
        if type(value) is dict:
            pairs = (f"{self.literal(k)}: {self.literal(v)}" for k, v in value.items())
            return "{" + ", ".join(pairs) + "}"
        raise Unsupported(f"constant of type {type(value).__name__}")

    def expr(self, node: nodes.Node) -> str:
        """Python source computing `node`; raises Unsupported outside the subset."""
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
                    raise Unsupported(f"operator {operand.op}")
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
        raise Unsupported(type(node).__name__)

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
            raise Unsupported(f"filter or test '{node.name}'")
        if node.node is None or node.dyn_args is not None or node.dyn_kwargs is not None:
            raise Unsupported("dynamic arguments")
        args = [self.expr(node.node), *(self.expr(a) for a in node.args)]
        if node.kwargs:
            pairs = (f"{self.bind(kw.key)}: {self.expr(kw.value)}" for kw in node.kwargs)
            args.append("**{" + ", ".join(pairs) + "}")
        return f"{self.bind(func)}({', '.join(args)})"

    def function(self, node: nodes.Expr) -> Callable[[Mapping[str, Any]], Any]:
        body = self.expr(node)
        prologue = [f"        {line}" for line in self.resolve_names()]
        params = [*HELPERS, *(f"_c{n}" for n in range(len(self.values)))]
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
        fn: Callable[[Mapping[str, Any]], Any] = namespace["_make"](*HELPERS.values(), *self.values)
        return fn


def expression_node(ast: nodes.Template) -> nodes.Expr | None:
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


def compile_fast(node: nodes.Expr | None) -> Callable[[Mapping[str, Any]], Any] | None:
    """The plain-Python function of an expression, or None when Jinja must evaluate it."""
    if node is None:
        return None
    try:
        return Compiler().function(node)
    except (Unsupported, SyntaxError, RecursionError):  # the last two: very deep nesting
        return None
