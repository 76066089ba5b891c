"""Who may see the dashboard: the admin token as `Authorization: Bearer`, or a session
cookie set by the login form (an expiring HMAC keyed by the token, never the token itself).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.api.auth import admin_denied, same_text
from engine.api.dashboard.render import HEADERS, html
from engine.api.errors import InvalidParameter
from engine.api.state import STATE

COOKIE = "kaskad_session"
SESSION_S = 12 * 3600
Page = Callable[[web.Request], Awaitable[web.Response]]


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
    return bool(
        auth.admin_token and cookie and session_ok(auth.admin_token, cookie, state.clock.now())
    )


def _login_form(request: web.Request, message: str | None = None) -> web.Response:
    target = request.path_qs if request.method == "GET" else "/"
    response = html(request, "login.html", 401, next=target, message=message, logout=False)
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
            return html(request, "error.html", 400, title="Bad request", message=str(exc))

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def _safe_next(target: str) -> str:
    """Only a path on this site, else the dashboard's root (no open redirect): it starts
    with one slash (two, or a slash and a backslash, name another host to a browser) and
    holds visible ASCII only, no backslash: browsers drop tabs and newlines from a URL (a
    tab between two slashes would name another host), and a newline would end the header.
    """
    if (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and all(33 <= ord(c) <= 126 for c in target)
    ):
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
    if not same_text(token, admin):
        return _login_form(request, "That token is not valid.")
    response.set_cookie(
        COOKIE,
        session_value(admin, int(state.clock.now()) + SESSION_S),
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
