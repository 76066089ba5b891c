"""Who may see the dashboard, and do what: a token as `Authorization: Bearer`, or a session
cookie set by the login form (api/sessions.py: the account's name, an expiry and an HMAC
keyed by a secret of the store and the SHA-256 of the account's token, never the token
itself). Pages need any account (role viewer); actions (POST forms) need a role and, with a
cookie, the session's CSRF token. Forms posted from another site are refused, the login and
logout too; failed logins and wrong tokens are limited per client address (429).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from engine.api.accounts import (
    ACCOUNT_KEY,
    ANONYMOUS,
    CSRF_KEY,
    Account,
    bearer_account,
    by_token,
    refused,
)
from engine.api.body import read_form
from engine.api.dashboard.render import HEADERS, html
from engine.api.errors import InvalidParameter
from engine.api.ratelimit import TooManyFailures, address_key
from engine.api.sessions import SESSION_S
from engine.api.state import STATE

COOKIE = "kaskad_session"
Page = Callable[[web.Request], Awaitable[web.Response]]


def csrf_token(cookie: str) -> str:
    """The token every form of this session carries: only pages of this site, which the
    session's cookie opened, can know it."""
    return hmac.new(cookie.encode(), b"kaskad-csrf", hashlib.sha256).hexdigest()


async def _open_csrf(request: web.Request) -> None:
    """Without accounts (an open dashboard) there is no session: the forms carry a token
    made from a secret of the store, which a page of another site cannot read."""
    secret = await request.app[STATE].store.secret("dashboard_csrf")
    request[CSRF_KEY] = csrf_token(secret)


async def account_of(request: web.Request) -> Account | None:
    """The request's account: its Bearer token, else its session cookie (ANONYMOUS when no
    account is configured). TooManyFailures: a token from an address over the limit."""
    state = request.app[STATE]
    auth = state.config.auth
    account = bearer_account(request, auth, state.auth_failures, state.clock.now())
    if account is not None:
        return account
    cookie = request.cookies.get(COOKIE)
    found = await state.sessions.account(cookie, auth) if cookie else None
    if cookie and found:
        request[CSRF_KEY] = csrf_token(cookie)
    return found


def _login_form(
    request: web.Request, message: str | None = None, status: int = 401
) -> web.Response:
    target = request.path_qs if request.method == "GET" else "/"
    response = html(request, "login.html", status, next=target, message=message, logout=False)
    response.headers["WWW-Authenticate"] = 'Bearer realm="kaskad"'
    return response


def _too_many(request: web.Request, exc: TooManyFailures) -> web.Response:
    seconds = exc.retry_after_s
    refusal = _login_form(request, f"Too many failed logins; try again in {seconds} s.", status=429)
    refusal.headers["Retry-After"] = str(seconds)
    return refusal


def _denied(request: web.Request) -> web.Response:
    message = None
    if "Authorization" in request.headers:
        message = "That token is not valid."
    elif COOKIE in request.cookies:
        message = "Your session has ended; log in again."
    return _login_form(request, message)


def page(handler: Page) -> Page:
    """The handler when the request has an account, else the login form (401)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.Response:
        try:
            account = await account_of(request)
        except TooManyFailures as exc:
            return _too_many(request, exc)
        if account is None:
            return _denied(request)
        request[ACCOUNT_KEY] = account
        if account is ANONYMOUS:
            await _open_csrf(request)
        try:
            return await handler(request)
        except InvalidParameter as exc:
            return html(request, "error.html", 400, title="Bad request", message=str(exc))

    return guarded


def _cross_site(request: web.Request) -> bool:
    """A form posted from another site: its Origin names another host (browsers send
    Origin on POST; `null` under this site's no-referrer policy)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return False
    return urlsplit(origin).netloc != request.host


def _from_elsewhere(request: web.Request) -> web.Response:
    return html(
        request,
        "error.html",
        403,
        title="Refused",
        message="This form did not come from this dashboard; reload the page and try again.",
    )


def action(role: str) -> Callable[[Page], Page]:
    """A POST form's handler, for accounts of `role` or above: the login form without an
    account, a 403 page naming the role needed, or a 403 when the form's CSRF token (with a
    session cookie) is missing or wrong, or it comes from another site."""

    def wrap(handler: Page) -> Page:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.Response:
            account = request[ACCOUNT_KEY]  # page() found it
            form = await read_form(request)
            expected = request.get(CSRF_KEY)
            given = str(form.get("csrf", ""))
            if _cross_site(request) or (
                expected is not None
                and not hmac.compare_digest(given.encode(), str(expected).encode())
            ):
                return _from_elsewhere(request)
            why = refused(account, role)
            if why is not None:
                return html(request, "error.html", 403, title="Not allowed", message=why)
            return await handler(request)

        return page(checked)

    return wrap


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
    """The login form's token (and, if given, account name) to a session cookie; failures
    are limited per client address and per account name (429 with Retry-After). A form
    from another site is refused (login CSRF: a session of the attacker's account)."""
    if _cross_site(request):
        return _from_elsewhere(request)
    state = request.app[STATE]
    auth = state.config.auth
    form = await read_form(request)
    token, target = str(form.get("token", "")), _safe_next(str(form.get("next", "/")))
    name = str(form.get("name", "")).strip()[:64]
    response = web.Response(status=303, headers={"Location": target, **HEADERS})
    if not auth.has_accounts:
        return response
    now = state.clock.now()
    keys = [address_key(request)] + ([f"name:{name}"] if name else [])
    try:
        state.auth_failures.check(keys, now)
    except TooManyFailures as exc:
        return _too_many(request, exc)
    account = by_token(auth, token)
    if account is None or (name and account.name != name):
        state.auth_failures.failed(keys, now)
        return _login_form(request, "That token is not valid.")
    response.set_cookie(
        COOKIE,
        await state.sessions.start(account),
        max_age=SESSION_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def logout(request: web.Request) -> web.Response:
    """End the session on every replica (not only forget the cookie here), unless the form
    comes from another site."""
    if _cross_site(request):
        return _from_elsewhere(request)
    state = request.app[STATE]
    cookie = request.cookies.get(COOKIE)
    if cookie and state.config.auth.has_accounts:
        await state.sessions.end(cookie, state.config.auth)
    response = web.Response(status=303, headers={"Location": "/", **HEADERS})
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response


__all__ = ["ANONYMOUS", "COOKIE", "account_of", "action", "login", "logout", "page"]
