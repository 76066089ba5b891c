"""The dashboard's pages as HTML responses: Jinja2 with autoescape on, and headers with a
Content-Security-Policy that allows no script at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from engine.api.accounts import ACCOUNT_KEY, CSRF_KEY
from engine.api.dashboard.charts import funnel_chart, lift_chart
from engine.api.dashboard.filters import FILTERS
from engine.api.dashboard.journey import journey_svg
from engine.api.state import STATE

# engine/api/templates: package data of engine.api (pyproject.toml)
TEMPLATES = Path(__file__).parent.parent / "templates"
# No script from anywhere; styles inline (our <style> and the e-mail previews' own);
# images only from here (the preview of an e-mail may reference remote images: not loaded).
CSP = (
    "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def query_url(path: str, **params: str | None) -> str:
    """The path with the parameters that have a value."""
    given = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(given)}" if given else path


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.globals.update(funnel_chart=funnel_chart, lift_chart=lift_chart, query_url=query_url)
    env.globals.update(journey_svg=journey_svg)
    return env


ENV = _environment()


def render(template: str, /, **context: Any) -> str:
    """A dashboard template rendered with its context (also the unit tests' entry point)."""
    return ENV.get_template(template).render(**context)


def html(request: web.Request, template: str, status: int = 200, /, **context: Any) -> web.Response:
    """The page as a response; the context every page's frame (base.html) needs filled in."""
    state = request.app[STATE]
    context.setdefault("logout", state.config.auth.has_accounts)
    context.setdefault("account", request.get(ACCOUNT_KEY))  # None on the login form
    context.setdefault("csrf", request.get(CSRF_KEY, ""))
    context.setdefault("since_param", None)
    context.setdefault("notice", None)
    text = render(template, request_path=request.path, **context)
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)
