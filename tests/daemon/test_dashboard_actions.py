"""Issue 13 on the dashboard: logging in as named accounts, what each role sees and may do
(pause and resume in two clicks, end an instance, send a test), the forms' CSRF guard, and
the login rate limit on the virtual clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path

import aiohttp
import pytest

from engine.api.dashboard import COOKIE
from engine.api.ratelimit import Failures
from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.lang.config import parse_config
from tests.helpers import write_rules

from .helpers import START, Client
from .test_actions import RULE, TEMPLATE, cart, config_text, instances


@pytest.fixture
async def dash(tmp_path: Path) -> AsyncIterator[Client]:
    rules = write_rules(tmp_path, TEMPLATE, RULE)
    daemon = Daemon(
        parse_config(config_text(tmp_path, rules)), VirtualClock(START), background=False
    )
    await daemon.start()
    # No cookie jar: each request carries the cookie it is given, as each test says.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield Client(daemon, session)
    await daemon.stop()


async def login(client: Client, token: str, name: str = "") -> aiohttp.ClientResponse:
    async with client.session.post(
        client.base + "/ui/login",
        data={"token": token, "name": name, "next": "/"},
        allow_redirects=False,
    ) as resp:
        await resp.read()
        return resp


async def session_of(client: Client, token: str) -> dict[str, str]:
    resp = await login(client, token)
    assert resp.status == 303, resp.status
    found = re.match(rf"{COOKIE}=([^;]+);", resp.headers["Set-Cookie"])
    assert found is not None
    return {"Cookie": f"{COOKIE}={found.group(1)}"}


async def get(client: Client, path: str, headers: dict[str, str]) -> tuple[int, str]:
    async with client.session.get(client.base + path, headers=headers) as resp:
        return resp.status, await resp.text()


async def post(
    client: Client, path: str, headers: dict[str, str], data: dict[str, str]
) -> tuple[int, str, str | None]:
    async with client.session.post(
        client.base + path, headers=headers, data=data, allow_redirects=False
    ) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location")


ACTION_FORM = re.compile(r'action="/ui/[^"]*/(pause|resume|end|test-send)"')


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found is not None, "no form with a CSRF token on the page"
    return found.group(1)


def text_of(html: str) -> str:
    main = html.partition("<main>")[2].partition("</main>")[0] or html
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", main))).strip()


async def test_a_marketer_pauses_and_resumes_a_rule_in_two_clicks(dash: Client) -> None:
    mark = await session_of(dash, "marketer-token")
    status, page = await get(dash, "/ui/rules/nudge", mark)
    assert status == 200 and 'action="/ui/rules/nudge/pause"' in page
    assert "No actions on this rule yet." in text_of(page)
    # Click 1: tick "hold"; click 2: Pause.
    status, _, location = await post(
        dash, "/ui/rules/nudge/pause", mark, {"csrf": csrf_of(page), "hold": "on"}
    )
    assert (status, location) == (303, "/ui/rules/nudge")
    status, page = await get(dash, "/ui/rules/nudge", mark)
    text = text_of(page)
    assert "Paused by mark" in text and "Running instances are held" in text
    assert 'action="/ui/rules/nudge/resume"' in page
    assert re.search(r"mark\s*</td>\s*<td>pause</td>", page), "the action is not listed"
    status, overview = await get(dash, "/", mark)
    assert '<span class="badge paused">paused</span>' in overview
    await cart(dash, "u1")
    assert await instances(dash, "u1") == []
    status, _, location = await post(dash, "/ui/rules/nudge/resume", mark, {"csrf": csrf_of(page)})
    assert status == 303
    await cart(dash, "u1", 2)
    assert len(await instances(dash, "u1")) == 1
    status, page = await get(dash, "/ui/rules/nudge", mark)
    assert [a for a in re.findall(r"<td>(pause|resume)</td>", page)] == ["resume", "pause"]


async def test_a_viewer_sees_no_buttons_and_is_refused_anyway(dash: Client) -> None:
    await cart(dash, "u1")
    (inst,) = await instances(dash, "u1")
    vera = await session_of(dash, "viewer-token")
    for path in ("/ui/rules/nudge", "/ui/users?q=u1", "/ui/templates/nudge_t"):
        status, page = await get(dash, path, vera)
        assert status == 200 and not ACTION_FORM.search(page), path
    csrf = csrf_of(_hidden(vera, dash))
    for path, data in (
        ("/ui/rules/nudge/pause", {"hold": "on"}),
        ("/ui/rules/nudge/resume", {}),
        (f"/ui/instances/{inst['id']}/end", {}),
        ("/ui/templates/nudge_t/test-send", {"channel": "sms", "address": "+1555"}),
    ):
        status, page, _ = await post(dash, path, vera, {"csrf": csrf, **data})
        assert status == 403, path
        assert "needs role marketer" in text_of(page) and "'vera' has role viewer" in text_of(page)
    assert (await dash.admin("GET", "/v1/audit"))[1]["actions"] == []


def _hidden(cookie: dict[str, str], client: Client) -> str:
    """The CSRF token of a session as its forms carry it (a viewer's pages have no form)."""
    from engine.api.dashboard.auth import csrf_token

    value = cookie["Cookie"].partition("=")[2]
    return f'<input type="hidden" name="csrf" value="{csrf_token(value)}">'


async def test_forms_without_this_sessions_token_or_from_elsewhere_are_refused(
    dash: Client,
) -> None:
    mark = await session_of(dash, "marketer-token")
    status, page = await get(dash, "/ui/rules/nudge", mark)
    csrf = csrf_of(page)
    other = csrf_of(_hidden(await session_of(dash, "second-admin-token"), dash))
    for headers, data in (
        (mark, {}),
        (mark, {"csrf": "0" * 64}),
        (mark, {"csrf": other}),  # another session's token
        ({**mark, "Origin": "https://evil.example"}, {"csrf": csrf}),
    ):
        status, page, _ = await post(dash, "/ui/rules/nudge/pause", headers, data)
        assert status == 403 and "did not come from this dashboard" in text_of(page)
    assert (await dash.admin("GET", "/v1/rules"))[1]["rules"][0]["state"] == "active"
    # Under the no-referrer policy a browser's same-site form says Origin: null.
    status, _, _ = await post(
        dash, "/ui/rules/nudge/pause", {**mark, "Origin": "null"}, {"csrf": csrf}
    )
    assert status == 303
    # Without a session, the login form.
    status, page, _ = await post(dash, "/ui/rules/nudge/resume", {}, {"csrf": csrf})
    assert status == 401 and 'action="/ui/login"' in page


async def test_end_an_instance_and_send_a_test_from_the_pages(dash: Client) -> None:
    await cart(dash, "u1")
    (inst,) = await instances(dash, "u1")
    mark = await session_of(dash, "marketer-token")
    status, page = await get(dash, "/ui/users?q=u1", mark)
    assert f'action="/ui/instances/{inst["id"]}/end"' in page
    status, _, location = await post(
        dash, f"/ui/instances/{inst['id']}/end", mark, {"csrf": csrf_of(page)}
    )
    assert (status, location) == (303, "/ui/users?q=u1")
    (ended,) = await instances(dash, "u1")
    assert (ended["status"], ended["end_reason"]) == ("stopped", "ended_by_user")
    status, page = await get(dash, "/ui/users?q=u1", mark)
    assert "/end" not in page  # nothing left to end
    status, page, _ = await post(
        dash, f"/ui/instances/{inst['id']}/end", mark, {"csrf": csrf_of(_hidden(mark, dash))}
    )
    assert status == 409 and "ended already" in text_of(page)

    status, page = await get(dash, "/ui/templates/nudge_t", mark)
    assert 'action="/ui/templates/nudge_t/test-send"' in page
    status, page, _ = await post(
        dash,
        "/ui/templates/nudge_t/test-send",
        mark,
        {"csrf": csrf_of(page), "channel": "sms", "address": "+15550009999"},
    )
    assert status == 200 and "Test sent" in text_of(page) and "accepted" in text_of(page)
    status, body = await dash.admin("GET", "/v1/messages")
    assert [m["rule"] for m in body["messages"]] == []  # the test is no message of a rule
    status, page = await get(dash, "/ui/rules/nudge", mark)
    assert re.search(r"mark\s*</td>\s*<td>end_instance</td>", page)


async def test_failed_logins_are_limited_per_address_then_allowed_again(dash: Client) -> None:
    clock = dash.daemon.clock
    assert isinstance(clock, VirtualClock)
    for _ in range(5):
        resp = await login(dash, "wrong-token")
        assert resp.status == 401
    resp = await login(dash, "marketer-token")  # even the right token, for now
    assert resp.status == 429 and resp.headers["Retry-After"] == "60"
    clock.advance_to(clock.now() + 30)
    assert (await login(dash, "wrong-token")).status == 429
    assert (await login(dash, "marketer-token")).headers["Retry-After"] == "30"
    clock.advance_to(clock.now() + 31)
    resp = await login(dash, "marketer-token")
    assert resp.status == 303 and COOKIE in resp.headers["Set-Cookie"]
    # A name with another account's token is a failure too.
    assert (await login(dash, "marketer-token", name="ada")).status == 401
    assert (await login(dash, "marketer-token", name="mark")).status == 303


def test_failures_count_per_key_within_the_window() -> None:
    failures = Failures(limit=3, window_s=60.0)
    # Three addresses guessing one account's token: the account's key stops the fourth.
    for n, ip in enumerate(["ip:a", "ip:b", "ip:c"]):
        assert failures.retry_after([ip, "name:mark"], 100.0 + n) is None
        failures.failed([ip, "name:mark"], 100.0 + n)
    assert failures.retry_after(["ip:d", "name:mark"], 103.0) == 57.0
    assert failures.retry_after(["ip:d", "name:ada"], 103.0) is None
    assert failures.retry_after(["ip:a"], 103.0) is None  # one failure from it
    assert failures.retry_after(["ip:d", "name:mark"], 160.0) is None  # the first aged out


async def test_an_open_dashboard_still_wants_its_forms_token(tmp_path: Path) -> None:
    """No account configured (a local try-out): anyone may act, but only from its pages."""
    rules = write_rules(tmp_path, TEMPLATE, RULE)
    text = config_text(tmp_path, rules)
    text = text[: text.index("auth:")] + text[text.index("policies:") :]
    daemon = Daemon(parse_config(text), VirtualClock(START), background=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(daemon, session)
            status, page = await get(client, "/ui/rules/nudge", {})
            assert status == 200 and ACTION_FORM.search(page)
            status, refused, _ = await post(client, "/ui/rules/nudge/pause", {}, {})
            assert status == 403 and "did not come from this dashboard" in text_of(refused)
            status, _, _ = await post(client, "/ui/rules/nudge/pause", {}, {"csrf": csrf_of(page)})
            assert status == 303
            status, body = await client.request("GET", "/v1/audit")
            assert [(a["who"], a["action"]) for a in body["actions"]] == [("anonymous", "pause")]
    finally:
        await daemon.stop()
