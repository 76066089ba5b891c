"""The dashboard's sessions: a cookie cannot be made from config.yaml (the MAC is keyed by a
secret of the store), nor claim to last longer than a session; logout ends the session on
every replica of one database; the login and logout forms refuse another site's posts."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.api.dashboard import COOKIE
from engine.api.dashboard.auth import csrf_token
from engine.api.sessions import ENDED_REFRESH_S, SECRET_NAME, SESSION_S, session_value
from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.lang.config import parse_config
from tests.helpers import write_rules
from tests.pgdb import pg_schema

from .helpers import START, Client
from .test_actions import RULE, TEMPLATE, config_text, sha
from .test_dashboard_actions import dash, get, login, post, session_of

__all__ = ["dash"]  # the fixture

MARK_KEY = sha("marketer-token")  # what config.yaml holds for mark


def cookie_header(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


async def rule_state(client: Client) -> str:
    status, body = await client.admin("GET", "/v1/rules")
    assert status == 200, body
    return str(body["rules"][0]["state"])


async def test_a_cookie_made_from_the_config_alone_opens_nothing(dash: Client) -> None:
    # The cookie as it was made before: a MAC keyed by the token's SHA-256, an expiry far out.
    mac = hmac.new(MARK_KEY.encode(), b"kaskad-dashboard:mark:999999999999", hashlib.sha256)
    forged = f"mark.999999999999.{mac.hexdigest()}"
    # And in today's form, with the hash from the config as the key.
    now = int(dash.daemon.clock.now())
    keyed_by_hash = session_value(MARK_KEY, "mark", MARK_KEY, now + 60, "0" * 16)
    for value in (forged, keyed_by_hash):
        status, page = await get(dash, "/", cookie_header(value))
        assert status == 401 and 'action="/ui/login"' in page
        data = {"csrf": csrf_token(value), "hold": "on"}
        status, page, _ = await post(dash, "/ui/rules/nudge/pause", cookie_header(value), data)
        assert status == 401 and 'action="/ui/login"' in page
    assert await rule_state(dash) == "active"
    # The same cookie made with the store's secret opens the pages: the key is the difference.
    secret = await dash.daemon.store.secret(SECRET_NAME)
    made = session_value(secret, "mark", MARK_KEY, now + 60, "0" * 16)
    assert (await get(dash, "/", cookie_header(made)))[0] == 200
    # Even with the secret, an expiry further out than a session lasts is refused.
    longer = session_value(secret, "mark", MARK_KEY, now + SESSION_S + 3600, "0" * 16)
    assert (await get(dash, "/", cookie_header(longer)))[0] == 401
    far = session_value(secret, "mark", MARK_KEY, 999999999999, "0" * 16)
    assert (await get(dash, "/", cookie_header(far)))[0] == 401


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Client, Client]]:
    """Two daemons on one PostgreSQL database (one clock), as replicas behind a balancer."""
    rules = write_rules(tmp_path, TEMPLATE, RULE)
    clock = VirtualClock(START)
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(pg_schema())
        daemons = [
            Daemon(parse_config(config_text(tmp_path, rules, url=url)), clock, background=False)
            for _ in range(2)
        ]
        for daemon in daemons:
            await daemon.start()
            stack.push_async_callback(daemon.stop)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        )
        yield Client(daemons[0], session), Client(daemons[1], session)


async def test_logout_ends_the_session_on_every_replica(replicas: tuple[Client, Client]) -> None:
    a, b = replicas
    mark = await session_of(a, "marketer-token")
    other = await session_of(a, "marketer-token")  # the same account in another browser
    assert mark != other
    assert (await get(b, "/", mark))[0] == 200  # made by a, taken by b
    assert (await get(a, "/", mark))[0] == 200
    async with b.session.post(b.base + "/ui/logout", headers=mark, allow_redirects=False) as resp:
        assert resp.status == 303
        assert re.search(rf'{COOKIE}=""; .*Max-Age=0', resp.headers["Set-Cookie"])
    # The cookie, kept (or stolen), no longer opens anything: on b at once,
    status, page = await get(b, "/", mark)
    assert status == 401 and "Your session has ended" in page
    # on a once it has read the ended sessions again (every ENDED_REFRESH_S).
    clock = a.daemon.clock
    assert isinstance(clock, VirtualClock)
    clock.advance_to(clock.now() + ENDED_REFRESH_S)
    assert (await get(a, "/", mark))[0] == 401
    # The account's other session goes on; a new login works at once, on either replica.
    assert (await get(a, "/", other))[0] == 200
    again = await session_of(b, "marketer-token")
    assert (await get(a, "/", again))[0] == 200 and (await get(b, "/", again))[0] == 200


async def test_sessions_and_their_logouts_outlive_a_restart(tmp_path: Path) -> None:
    """On SQLite (one daemon per file): the secret and the ended sessions are in the file."""
    rules = write_rules(tmp_path, TEMPLATE, RULE)
    config = parse_config(config_text(tmp_path, rules))
    clock = VirtualClock(START)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        first = Daemon(config, clock, background=False)
        await first.start()
        try:
            client = Client(first, session)
            kept = await session_of(client, "marketer-token")
            ended = await session_of(client, "marketer-token")
            status, _, _ = await post(client, "/ui/logout", ended, {})
            assert status == 303
        finally:
            await first.stop()
        second = Daemon(config, clock, background=False)
        await second.start()
        try:
            client = Client(second, session)
            assert (await get(client, "/", kept))[0] == 200
            assert (await get(client, "/", ended))[0] == 401
        finally:
            await second.stop()


async def test_login_and_logout_refuse_a_form_from_another_site(dash: Client) -> None:
    evil = {"Origin": "https://evil.example"}
    form = {"token": "marketer-token", "next": "/"}
    async with dash.session.post(
        dash.base + "/ui/login", data=form, headers=evil, allow_redirects=False
    ) as resp:
        assert resp.status == 403 and "Set-Cookie" not in resp.headers
        assert "did not come from this dashboard" in await resp.text()
    mark = await session_of(dash, "marketer-token")
    async with dash.session.post(
        dash.base + "/ui/logout", headers={**mark, **evil}, allow_redirects=False
    ) as resp:
        assert resp.status == 403 and "Set-Cookie" not in resp.headers
    assert (await get(dash, "/", mark))[0] == 200  # still logged in
    # This site's own forms: Origin names this host, or `null` (no-referrer), or none.
    here = {"Origin": dash.base}
    for origin in (here, {"Origin": "null"}, {}):
        async with dash.session.post(
            dash.base + "/ui/login", data=form, headers=origin, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and COOKIE in resp.headers["Set-Cookie"], origin
    async with dash.session.post(
        dash.base + "/ui/logout", headers={**mark, **here}, allow_redirects=False
    ) as resp:
        assert resp.status == 303
    assert (await get(dash, "/", mark))[0] == 401
    assert (await login(dash, "marketer-token")).status == 303
