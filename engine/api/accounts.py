"""Who is asking: a Bearer token (or the dashboard's session) mapped to a named account
with a role (config `auth.users`, and `auth.admin_token` as the account `admin`), and what
each role may do on the admin API."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from engine.api.auth import bearer_text, same_text
from engine.api.ratelimit import Failures, address_key
from engine.lang.accounts import role_at_least
from engine.lang.config import AuthConfig

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: str
    key: str  # the SHA-256 of its token (hex): part of its session cookies' MAC


# request[ACCOUNT_KEY]: the request's account; request[CSRF_KEY]: the token a dashboard form
# of this session carries (set only for a session cookie).
ACCOUNT_KEY: web.RequestKey[Account] = web.RequestKey("kaskad.account", Account)
CSRF_KEY: web.RequestKey[str] = web.RequestKey("kaskad.csrf", str)

# No account configured: everyone is this one (the daemon warns at every start).
ANONYMOUS = Account("anonymous", "admin", "")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def accounts(auth: AuthConfig) -> list[Account]:
    found = [Account(u.name, u.role, u.token_sha256) for u in auth.users]
    if auth.admin_token:
        found.append(Account("admin", "admin", token_hash(auth.admin_token)))
    return found


def by_token(auth: AuthConfig, token: str) -> Account | None:
    """The account whose token this is: every hash is compared in constant time, with no
    early exit, so the time taken says nothing about which one (nearly) matched."""
    given = token_hash(token).encode()
    found = None
    for account in accounts(auth):
        if hmac.compare_digest(given, account.key.encode()):
            found = account
    return found


def by_name(auth: AuthConfig, name: str) -> Account | None:
    return next((a for a in accounts(auth) if a.name == name), None)


def _counted(
    request: web.Request, failures: Failures, now: float, find: Callable[[str], T | None]
) -> T | None:
    """What `find` makes of the request's Bearer token (None without one). A token it finds
    nothing for counts against the client's address; while the address is over the limit,
    every token from it (the right one too: no answer may tell) raises TooManyFailures."""
    token = bearer_text(request)
    if token is None:
        return None
    keys = [address_key(request)]
    failures.check(keys, now)
    found = find(token)
    if found is None:
        failures.failed(keys, now)
    return found


def bearer_account(
    request: web.Request, auth: AuthConfig, failures: Failures, now: float
) -> Account | None:
    """The account of the request's Bearer token; ANONYMOUS with no accounts configured.
    A wrong token counts against the client's address (_counted)."""
    if not auth.has_accounts:
        return ANONYMOUS
    return _counted(request, failures, now, lambda token: by_token(auth, token))


def metrics_denied(request: web.Request, auth: AuthConfig, failures: Failures, now: float) -> bool:
    """GET /metrics takes auth.metrics_token or the token of any account (the admin token,
    any of auth.users: reading numbers is every role's right); open only with none. A wrong
    token counts against the address as on the admin API (TooManyFailures)."""
    if not auth.metrics_token and not auth.has_accounts:
        return False

    def accepted(token: str) -> bool | None:
        # Both are checked (no early exit), so the time says nothing of which matched.
        scraper = bool(auth.metrics_token) and same_text(token, auth.metrics_token or "")
        account = by_token(auth, token) if auth.has_accounts else None
        return True if scraper or account is not None else None

    return _counted(request, failures, now, accepted) is None


# -- what each role may do on the API --------------------------------------------------------

# POST routes a marketer may use (every other write needs an admin; every read a viewer).
MARKETER_WRITES = (
    "/v1/rules/{rule_id}/pause",
    "/v1/rules/{rule_id}/resume",
    "/v1/instances/{instance_id}/end",
    "/v1/test-sends",
)


def needed_role(request: web.Request) -> str:
    """The least role that may make this request."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return "viewer"
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    return "marketer" if canonical in MARKETER_WRITES else "admin"


def refused(account: Account, needed: str) -> str | None:
    """Why `account` may not do what needs role `needed`, else None."""
    if role_at_least(account.role, needed):
        return None
    return f"this needs role {needed} or above; '{account.name}' has role {account.role}"
