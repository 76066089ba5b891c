"""Expressions and templates: Jinja2 in an immutable sandbox with strict undefined.

Everything is compiled once, when rules load; names outside the allowed set are load errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2 import meta, nodes
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


def _error_text(exc: jinja2.TemplateError) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return message.replace("\n", " ")


class Expression:
    """A compiled expression such as `event.data.total > 0`."""

    __slots__ = ("_fn", "source")

    def __init__(self, source: str, allowed: Iterable[str] = EXPRESSION_NAMES) -> None:
        self.source = source
        try:
            ast = ENV.parse("{{ (" + source + ") }}")
            _check_names(ast, allowed)
            self._fn = ENV.compile_expression(source, undefined_to_none=False)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"invalid expression: {_error_text(exc)}") from None
        except jinja2.TemplateError as exc:
            raise ValueError(f"invalid expression: {_error_text(exc)}") from None

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        try:
            value = self._fn(**context)
        except jinja2.UndefinedError as exc:
            raise ExpressionError(f"{_error_text(exc)} in '{self.source}'") from None
        except Exception as exc:  # a bad comparison or a sandbox refusal: the rule's fault
            raise ExpressionError(f"{type(exc).__name__}: {exc} in '{self.source}'") from None
        if isinstance(value, jinja2.Undefined):
            raise ExpressionError(f"undefined value in '{self.source}'")
        return value

    def test(self, context: Mapping[str, Any]) -> bool:
        return bool(self.evaluate(context))


class TextTemplate:
    """A compiled template string such as `{{ user.attributes.first_name }}, hi`."""

    __slots__ = ("_template", "constant", "source")

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

    def render(self, context: Mapping[str, Any]) -> str:
        if self.constant is not None:
            return self.constant
        try:
            return self._template.render(context)
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
