"""Expressions and templates: Jinja2 in an immutable sandbox with strict undefined.

Everything is compiled once, when rules load; names outside the allowed set are load errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.runtime import new_context
from jinja2.utils import consume

from engine.errors import ExpressionError, did_you_mean
from engine.lang import budget
from engine.lang.budget import RenderLimitError
from engine.lang.fastpath import compile_fast, expression_node
from engine.lang.sandbox import ENV, HTML_ENV

EXPRESSION_NAMES = frozenset({"event", "trigger", "user", "now"})
TEMPLATE_NAMES = EXPRESSION_NAMES | {"message", "track", "unsubscribe_url", "variant", "rule"}


def _undeclared(ast: nodes.Template) -> set[str]:
    """meta.find_undeclared_variables, without the optimizer its code generator runs (as
    ENV's own does, see engine/lang/sandbox.py): that one folds again at every level, a
    cost cubic in the depth of the expression."""
    codegen = meta.TrackingCodeGenerator(ast.environment)  # type: ignore[arg-type]
    codegen.optimizer = None
    codegen.visit(ast)
    return codegen.undeclared_identifiers


def _check_names(ast: nodes.Template, allowed: Iterable[str]) -> None:
    allowed = frozenset(allowed)
    for name in sorted(_undeclared(ast)):
        if name not in allowed:
            raise ValueError(
                f"unknown name '{name}'{did_you_mean(name, allowed)}; "
                f"available: {', '.join(sorted(allowed))}"
            )


Undefined = jinja2.Undefined


def _error_text(exc: jinja2.TemplateError) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.replace("\n", " ")


_NOT_CONSTANT = object()

# Jinja's parser and compiler recurse once per level of brackets, operators or blocks: a
# few hundred levels run out of Python's stack (RecursionError), or of its compiler's limits
# on the code Jinja generates (SyntaxError, MemoryError). One error for that text, then.
_TOO_COMPLEX = (RecursionError, SyntaxError, MemoryError)
TOO_DEEP = "nested too deeply (brackets, operators or blocks): split it up, e.g. with {% set %}"


class Expression:
    """A compiled expression such as `event.data.total > 0`.

    Evaluated by a plain-Python function compiled from the Jinja AST when the expression is
    in the fast subset, else by Jinja; `fast=False` forces Jinja (the reference in tests).
    """

    __slots__ = ("_fn", "_jinja", "fast", "folded", "node", "source")

    def __init__(
        self, source: str, allowed: Iterable[str] = EXPRESSION_NAMES, *, fast: bool = True
    ) -> None:
        self.source = source
        try:
            with budget.folding():
                # Compile the source as written first, so syntax errors speak of what the
                # author wrote; the wrapped parse below is only for names and the fast path.
                self._jinja = ENV.compile_expression(source, undefined_to_none=False)
                ast = ENV.parse("{{ (" + source + ") }}")
                _check_names(ast, allowed)
                folded = expression_node(ast)
        except jinja2.TemplateSyntaxError as exc:
            text = _error_text(exc).replace("end of template", "end of expression")
            raise ValueError(f"invalid expression: {text}") from None
        except jinja2.TemplateError as exc:
            raise ValueError(f"invalid expression: {_error_text(exc)}") from None
        except _TOO_COMPLEX:
            raise ValueError(f"invalid expression: {TOO_DEEP}") from None
        # A constant after Jinja's folding (`false`, `1 > 2`): its value, else a marker.
        self.folded: Any = folded.value if isinstance(folded, nodes.Const) else _NOT_CONSTANT
        node = folded if fast else None
        compiled = compile_fast(node)
        self.fast = compiled is not None
        # The compiled subset's AST, for compilers that fuse several expressions (matcher).
        self.node = node if compiled is not None else None
        if compiled is None:
            jinja_fn = _caller(self._jinja)

            def evaluate(context: Mapping[str, Any]) -> Any:
                return jinja_fn(context)

            def compiled(context: Mapping[str, Any]) -> Any:
                return budget.run(evaluate, context)

        self._fn: Callable[[Mapping[str, Any]], Any] = compiled

    def never(self) -> bool:
        """Whether the expression is false whatever the context (seen when it loads)."""
        return self.folded is not _NOT_CONSTANT and not self.folded

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        try:
            value = self._fn(context)
        except Exception as exc:
            raise self._error(exc) from None
        if isinstance(value, Undefined):
            raise ExpressionError(f"undefined value in '{self.source}'")
        return value

    def test(self, context: Mapping[str, Any]) -> bool:
        # evaluate() inlined: conditions are the hot path of matching
        try:
            value = self._fn(context)
        except Exception as exc:
            raise self._error(exc) from None
        if isinstance(value, Undefined):
            raise ExpressionError(f"undefined value in '{self.source}'")
        return bool(value)

    def _error(self, exc: Exception) -> ExpressionError:
        if isinstance(exc, RenderLimitError):
            return ExpressionError(f"{exc} in '{self.source}'")
        if isinstance(exc, jinja2.UndefinedError):
            return ExpressionError(f"{_error_text(exc)} in '{self.source}'")
        # a bad comparison or a sandbox refusal: the rule's fault
        return ExpressionError(f"{type(exc).__name__}: {exc} in '{self.source}'")


def _caller(expression: Any) -> Callable[[Mapping[str, Any]], Any]:
    """`TemplateExpression.__call__` (undefined_to_none off) minus its per-call copy of the
    globals ChainMap, as _renderer below: the same Context, the value as it is."""
    template = expression._template
    env, name, blocks = template.environment, template.name, template.blocks
    root = template.root_render_func
    globals_ = dict(template.globals)

    def call(context: Mapping[str, Any]) -> Any:
        ctx = new_context(env, name, blocks, dict(context), False, globals_)
        consume(root(ctx))
        return ctx.vars["result"]

    return call


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
            with budget.folding():
                ast = env.parse(source)
                _check_names(ast, allowed)
                self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            line = f" (template line {exc.lineno})" if exc.lineno and exc.lineno > 1 else ""
            raise ValueError(f"invalid template{line}: {_error_text(exc)}") from None
        except jinja2.TemplateError as exc:
            raise ValueError(f"invalid template: {_error_text(exc)}") from None
        except _TOO_COMPLEX:
            raise ValueError(f"invalid template: {TOO_DEEP}") from None
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
