"""The marketers' dashboard at `/`: server-rendered pages, inline SVG charts, no script.

Auth is the admin token: `Authorization: Bearer`, or a session cookie set by the login form
(an expiring HMAC keyed by the token, never the token itself). Every page is Jinja2 with
autoescape on and a Content-Security-Policy that allows no script at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import structlog
from aiohttp import web
from markupsafe import Markup

from engine.api.admin import timeline
from engine.api.auth import admin_denied
from engine.api.errors import InvalidParameter
from engine.api.params import ident, path_id, query_id
from engine.api.state import STATE, AppState
from engine.clock import iso, parse_time
from engine.core.model import MESSAGE_STATUSES
from engine.core.preview import SAMPLE_FACTS, SAMPLE_USER, render_channels, sample_trigger
from engine.lang.durations import parse_duration
from engine.measure import svg
from engine.measure.stats import compute_stats

log = structlog.get_logger("kaskad.dashboard")

COOKIE = "kaskad_session"
SESSION_S = 12 * 3600
SINCE_CHOICES = ("24h", "7d", "30d", "90d")
FUNNEL = ("started", "sends", "delivered", "opened", "clicked", "converted")
MESSAGES_LIMIT = 100
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
Page = Callable[[web.Request], Awaitable[web.Response]]


def _when(value: object) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return iso(float(value)).replace("T", " ").replace("Z", " UTC")
    return str(value).replace("T", " ").replace("Z", " UTC") if value else "—"


def _num(value: object) -> str:
    return f"{value:,}".replace(",", "\u202f") if isinstance(value, int) else "—"


def _money(value: object) -> str:
    if isinstance(value, int | float):
        return f"{value:,.2f}".replace(",", "\u202f")
    return "—"


def _rate(value: object) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "—"


def _points(value: object) -> str:
    return f"{100 * value:+.1f} pt" if isinstance(value, int | float) else "—"


def _pvalue(value: object) -> str:
    if not isinstance(value, int | float):
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _interval(value: object) -> str:
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{_points(value[0])}, {_points(value[1])}]"
    return "—"


def _skips(value: object) -> str:
    if not isinstance(value, dict) or not value:
        return ""
    return ", ".join(f"{k}: {n}" for k, n in sorted(value.items(), key=lambda kv: -kv[1]))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        num=_num,
        money=_money,
        rate=_rate,
        points=_points,
        pvalue=_pvalue,
        interval=_interval,
        skips=_skips,
    )
    env.globals.update(funnel_chart=funnel_chart, lift_chart=lift_chart, query_url=query_url)
    return env


def render(template: str, /, **context: Any) -> str:
    """A dashboard template rendered with its context (also the unit tests' entry point)."""
    return ENV.get_template(template).render(**context)


def funnel_chart(row: dict[str, Any], width: int = 420) -> Markup:
    """A stats rule row's funnel: started -> sends -> ... -> converted."""
    funnel, instances = row.get("funnel") or {}, row.get("instances") or {}
    stages = [("started", instances.get("started", 0))]
    stages += [(stage, funnel.get(stage, 0)) for stage in FUNNEL[1:]]
    title = f"Funnel of {row.get('rule', '?')}: chains started, then messages (% of sends)"
    return svg.funnel(stages, title=title, share_of=1, width=width)


def lift_chart(ab: dict[str, Any], metric: str = "conversion") -> Markup:
    """A stats `ab` block's lifts over the baseline, with their confidence intervals."""
    rows = [
        (str(v.get("variant")), v[metric].get("lift_abs"), v[metric].get("ci95"))
        for v in ab.get("variants", [])
        if isinstance(v.get(metric), dict)
    ]
    return svg.lift_plot(rows, title=f"{metric} lift over {ab.get('baseline')}")


# -- auth ----------------------------------------------------------------------------------


def session_value(token: str, expires: int) -> str:
    mac = hmac.new(token.encode(), f"kaskad-dashboard:{expires}".encode(), hashlib.sha256)
    return f"{expires}.{mac.hexdigest()}"


def session_ok(token: str, value: str, now: float) -> bool:
    # ASCII digits of a plausible length only: str.isdigit() takes '²', which int() refuses,
    # int() refuses 5000 digits, and compare_digest() refuses non-ASCII text.
    expires, _, _ = value.partition(".")
    if not value.isascii() or not expires.isdigit() or len(expires) > 12 or int(expires) < now:
        return False
    return hmac.compare_digest(value, session_value(token, int(expires)))


def authorized(request: web.Request) -> bool:
    state = request.app[STATE]
    auth = state.config.auth
    if not admin_denied(request, auth):
        return True  # no admin token configured, or a valid Bearer token
    cookie = request.cookies.get(COOKIE)
    return bool(auth.admin_token and cookie and session_ok(auth.admin_token, cookie, _now(state)))


def _now(state: AppState) -> float:
    return state.clock.now()


def _html(
    request: web.Request, template: str, status: int = 200, /, **context: Any
) -> web.Response:
    state = request.app[STATE]
    context.setdefault("logout", bool(state.config.auth.admin_token))
    context.setdefault("since_param", None)
    context.setdefault("notice", None)
    text = render(template, request_path=request.path, **context)
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def _login_form(request: web.Request, message: str | None = None) -> web.Response:
    target = request.path_qs if request.method == "GET" else "/"
    response = _html(request, "login.html", 401, next=target, message=message, logout=False)
    response.headers["WWW-Authenticate"] = 'Bearer realm="kaskad"'
    return response


def page(handler: Page) -> Page:
    """The handler when the request is authorized, else the login form (401)."""

    async def guarded(request: web.Request) -> web.Response:
        if not authorized(request):
            message = None
            if "Authorization" in request.headers:
                message = "That token is not valid."
            elif COOKIE in request.cookies:
                message = "Your session has ended; log in again."
            return _login_form(request, message)
        try:
            return await handler(request)
        except InvalidParameter as exc:
            return _html(request, "error.html", 400, title="Bad request", message=str(exc))

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def _safe_next(target: str) -> str:
    """Only a path on this site: never `//host` or a scheme (no open redirect)."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


async def login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    form = await request.post()
    token, target = str(form.get("token", "")), _safe_next(str(form.get("next", "/")))
    admin = state.config.auth.admin_token
    response = web.Response(status=303, headers={"Location": target, **HEADERS})
    if not admin:
        return response
    if not hmac.compare_digest(token.encode(), admin.encode()):
        return _login_form(request, "That token is not valid.")
    response.set_cookie(
        COOKIE,
        session_value(admin, int(_now(state)) + SESSION_S),
        max_age=SESSION_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.Response(status=303, headers={"Location": "/", **HEADERS})
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response


# -- data ----------------------------------------------------------------------------------


def parse_since(text: str | None, now: float) -> tuple[float | None, str | None]:
    """(unix seconds or None for all time, error) from `?since=`: a duration back from now
    (24h, 7d) or an ISO date/time. Ranges past the epoch mean all time."""
    if not text or text == "all":
        return None, None
    try:
        since = now - parse_duration(text.lstrip("-"))  # 7d and -7d: 7 days back
    except OverflowError:
        return None, None  # further back than a float reaches
    except ValueError:
        try:
            since = parse_time(text)
        except (ValueError, OverflowError):
            shown = text if len(text) <= 40 else text[:40] + "…"
            return None, (
                f"since={shown!r} is neither a duration (24h, 7d) nor an ISO date "
                "(2026-11-01): showing all time."
            )
    if not math.isfinite(since) or since <= 0:
        return None, None
    return since, None  # in the future: an empty window, which is what was asked


async def load_stats(
    state: AppState, *, rule: str | None = None, since: float | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The stats JSON (engine.stats), or None and why not: a page shows what it has rather
    than fail because the numbers could not be computed."""
    try:
        stats = await compute_stats(
            state.store,
            rules=state.rules.current,
            policies=state.config.policies,
            rule=rule,
            since=since,
            until=None,
            now=_now(state),
        )
    except Exception as exc:
        log.exception("dashboard.stats_failed", rule=rule)
        return None, f"Statistics could not be computed ({type(exc).__name__}); see the log."
    return stats, None


def merge_rules(described: dict[str, Any], stats: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rules table: loaded and broken rules (with errors) plus rules that are gone but
    still have data, each with its stats row when there is one."""
    rows: dict[str, dict[str, Any]] = {}
    for d in described.get("rules", []):
        rows[d["id"]] = {
            "id": d["id"],
            "name": d.get("description") or d["id"],
            "state": d.get("state", "active"),
            "errors": d.get("errors", []),
            "path": d.get("path"),
            "stats": None,
        }
    for s in (stats or {}).get("rules", []):
        row = rows.setdefault(
            s["rule"],
            {
                "id": s["rule"],
                "name": s.get("name") or s["rule"],
                "state": s.get("state", "deleted"),
                "errors": [],
                "path": None,
                "stats": None,
            },
        )
        row["stats"] = s
    return sorted(rows.values(), key=lambda r: r["id"])


def since_context(raw: str | None, now: float) -> tuple[float | None, dict[str, Any]]:
    """The window `?since=` asks for, and what the page header shows of it."""
    since, problem = parse_since(raw, now)
    return since, {
        "since_param": raw or "all",
        "since_choices": [(c, c) for c in SINCE_CHOICES] + [("all", "all time")],
        "since_label": "all time" if since is None else f"since {_when(since)}",
        "notice": problem,
    }


def _since_context(request: web.Request) -> tuple[float | None, dict[str, Any]]:
    return since_context(request.query.get("since"), _now(request.app[STATE]))


# -- pages ---------------------------------------------------------------------------------


@page
async def overview(request: web.Request) -> web.Response:
    state = request.app[STATE]
    since, context = _since_context(request)
    stats, stats_error = await load_stats(state, since=since)
    described = state.rules.describe()
    return _html(
        request,
        "overview.html",
        400 if context["notice"] else 200,
        rules=merge_rules(described, stats),
        problems=described.get("problems", []),
        stats=stats,
        stats_error=stats_error,
        **context,
    )


@page
async def rule_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rule_id = path_id(request, "rule")
    since, context = _since_context(request)
    stats, stats_error = await load_stats(state, rule=rule_id, since=since)
    rows = [r for r in merge_rules(state.rules.describe(), stats) if r["id"] == rule_id]
    if not rows:
        return _html(
            request, "error.html", 404, title="No such rule", message=f"No rule '{rule_id}'."
        )
    loaded = state.rules.current.rules.get(rule_id)
    recent = await state.store.messages(rule=rule_id, limit=20)
    return _html(
        request,
        "rule.html",
        400 if context["notice"] else 200,
        row=rows[0],
        rule=loaded,
        stats_error=stats_error,
        messages=recent,
        **context,
    )


@page
async def messages_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rule = query_id(request.query, "rule")
    status = query_id(request.query, "status")
    messages = await state.store.messages(rule=rule, status=status, limit=MESSAGES_LIMIT)
    return _html(
        request,
        "messages.html",
        messages=messages,
        rule=rule,
        status=status,
        statuses=MESSAGE_STATUSES,
        rule_ids=sorted(state.rules.current.rules),
        limit=MESSAGES_LIMIT,
    )


@page
async def users_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = request.query.get("q", "").strip()
    found: dict[str, Any] | None = None
    similar: list[str] = []
    if query:
        ident(query, "q")
        found = await timeline(state.store, query, state.config.policies.attribution)
        if not found["timeline"]:
            found = None
        similar = [u for u in await state.store.profile_ids(query, 20) if u.startswith(query)]
    return _html(request, "users.html", q=query, found=found, similar=similar)


@page
async def templates_page(request: web.Request) -> web.Response:
    ruleset = request.app[STATE].rules.current
    used: dict[str, list[str]] = {}
    for rule in ruleset.rules.values():
        for name in rule.templates:
            used.setdefault(name, []).append(rule.id)
    templates = [
        {"name": t.name, "path": t.path, "channels": sorted(t.channels), "rules": used.get(n, [])}
        for n, t in sorted(ruleset.templates.items())
    ]
    return _html(request, "templates.html", templates=templates)


@page
async def template_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["name"]
    template = state.rules.current.templates.get(name)
    if template is None:
        return _html(
            request, "error.html", 404, title="No such template", message=f"No template '{name}'."
        )
    sample = sample_trigger(state.rules.current, name)
    channels = []
    for item in render_channels(template, SAMPLE_USER, sample.trigger, state.config, SAMPLE_FACTS):
        fields = []
        for key, value in (item.fields or {}).items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            html = item.channel == "email" and key == "html"
            fields.append({"key": key, "text": text, "html": html})
        channels.append({"channel": item.channel, "fields": fields, "error": item.error})
    return _html(
        request, "template.html", template=template, channels=channels, origin=sample.origin
    )


def query_url(path: str, **params: str | None) -> str:
    """The path with the parameters that have a value."""
    given = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(given)}" if given else path


ENV = _environment()


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", overview)
    router.add_post("/ui/login", login)
    router.add_post("/ui/logout", logout)
    router.add_get("/ui/rules/{rule}", rule_page)
    router.add_get("/ui/messages", messages_page)
    router.add_get("/ui/users", users_page)
    router.add_get("/ui/templates", templates_page)
    router.add_get("/ui/templates/{name}", template_page)
