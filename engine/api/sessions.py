"""The dashboard's session cookies: `name.expires.nonce.mac`, the MAC keyed by a secret the
store generates and keeps (config.yaml does not hold it, replicas on one database share it)
over the account's name, the expiry, a random nonce and the SHA-256 of the account's token
(so changing the token ends every session). An expiry further ahead than a session lasts
is refused. Logout ends the session on every replica: the store keeps the ended ones until
they expire, and each process reads them again at most every ENDED_REFRESH_S."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.api.accounts import Account, by_name
from engine.clock import Clock
from engine.lang.accounts import NAME
from engine.lang.config import AuthConfig
from engine.store.base import Store

SESSION_S = 12 * 3600
# How far ahead of this replica's clock another replica's may have set an expiry.
SESSION_SKEW_S = 60
ENDED_REFRESH_S = 2.0  # a logout on another replica holds here within this
SECRET_NAME = "dashboard_session"  # Store.secret: the key of every session's MAC
_HEX = frozenset("0123456789abcdef")


class Cookie(NamedTuple):
    name: str
    expires: int
    nonce: str
    mac: str


def session_mac(secret: str, name: str, key: str, expires: int, nonce: str) -> str:
    """The MAC of account `name` (whose token's SHA-256 is `key`) until `expires`."""
    text = f"kaskad-dashboard:{name}:{expires}:{nonce}:{key}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def session_value(secret: str, name: str, key: str, expires: int, nonce: str) -> str:
    return f"{name}.{expires}.{nonce}.{session_mac(secret, name, key, expires, nonce)}"


def parse_cookie(value: str, now: float) -> Cookie | None:
    """The parts of a well-formed cookie that has not expired and does not claim to last
    longer than a session can (its MAC is checked against the account's by session_ok)."""
    # ASCII digits of a plausible length only: str.isdigit() takes '²', which int() refuses,
    # int() refuses 5000 digits, and compare_digest() refuses non-ASCII text.
    parts = value.split(".")
    if len(parts) != 4 or not value.isascii():
        return None
    name, expires, nonce, mac = parts
    if (
        not NAME.fullmatch(name)
        or not expires.isdigit()
        or len(expires) > 12
        or not (now <= int(expires) <= now + SESSION_S + SESSION_SKEW_S)
        or len(nonce) != 16
        or not _HEX.issuperset(nonce)
    ):
        return None
    return Cookie(name, int(expires), nonce, mac)


def session_ok(secret: str, account: Account, value: str, now: float) -> Cookie | None:
    """The cookie's parts if it is `account`'s, unexpired, and its MAC is right."""
    cookie = parse_cookie(value, now)
    if cookie is None or cookie.name != account.name:
        return None
    expected = session_mac(secret, account.name, account.key, cookie.expires, cookie.nonce)
    return cookie if hmac.compare_digest(cookie.mac, expected) else None


@dataclass
class Sessions:
    """Makes, checks and ends the sessions of one process: the secret is read from the
    store once, the ended sessions again when ENDED_REFRESH_S old."""

    store: Store
    clock: Clock
    _secret: str | None = None
    _ended: set[str] = field(default_factory=set)
    _ended_read_at: float = -math.inf
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def _key(self) -> str:
        if self._secret is None:
            self._secret = await self.store.secret(SECRET_NAME)
        return self._secret

    async def _ended_now(self, now: float) -> set[str]:
        async with self._lock:  # one read for the requests arriving together
            if now - self._ended_read_at >= ENDED_REFRESH_S or now < self._ended_read_at:
                self._ended = await self.store.ended_sessions(now)
                self._ended_read_at = now
        return self._ended

    async def start(self, account: Account) -> str:
        """A new session's cookie, valid for SESSION_S."""
        expires = int(self.clock.now()) + SESSION_S
        return session_value(
            await self._key(), account.name, account.key, expires, secrets.token_hex(8)
        )

    async def _live(self, value: str, auth: AuthConfig) -> tuple[Account, Cookie] | None:
        now = self.clock.now()
        parsed = parse_cookie(value, now)
        account = by_name(auth, parsed.name) if parsed is not None else None
        cookie = None if account is None else session_ok(await self._key(), account, value, now)
        if account is None or cookie is None or cookie.mac in await self._ended_now(now):
            return None
        return account, cookie

    async def account(self, value: str, auth: AuthConfig) -> Account | None:
        """The account whose live session this cookie is, else None."""
        live = await self._live(value, auth)
        return None if live is None else live[0]

    async def end(self, value: str, auth: AuthConfig) -> None:
        """End this cookie's session on every replica (nothing is kept for a cookie that is
        no live session: a forged one writes no row)."""
        live = await self._live(value, auth)
        if live is not None:
            cookie = live[1]
            await self.store.end_session(cookie.mac, cookie.expires, self.clock.now())
            self._ended.add(cookie.mac)
