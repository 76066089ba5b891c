"""The dashboard over HTTP against an in-process daemon with real data: every page, auth,
escaping, bad input. (The same pages in a real browser: test_dashboard_browser.py.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.api.dashboard import COOKIE
from engine.clock import VirtualClock
from engine.core.preview import sample_trigger
from engine.daemon import Daemon

from .helpers import ADMIN, ROOT, START, Client, independent_cart_rules, make_config


@pytest.fixture
def rules_dir(rules_dir: Path) -> Path:
    """Both cart rules send for the same carts here (helpers.independent_cart_rules)."""
    return independent_cart_rules(rules_dir)


HOSTILE_RULE = "<script>alert('rule')</script>"
HOSTILE_USER = "<script>alert('user')</script>"
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}
RULE = f"""\
rule: hostile
description: "{HOSTILE_RULE}"
trigger: {{event: bonus.credited}}
category: transactional
mode: parallel
steps:
  - send: {{template: hostile_tpl, cascade: [sms]}}
"""
TEMPLATE = """\
template: hostile_tpl
email:
  subject: "<script>alert('subject')</script>"
  html: |
    <p style="color: #c00">Hello</p><script>alert('html')</script>
    <img src=x onerror="alert('img')">" onload="alert('attr')
sms:
  text: "+{{ trigger.data.amount }} points"
"""


@pytest.fixture
async def dash(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Client]:
    """The shipped rules plus a rule and a template with hostile text in them."""
    (rules_dir / "hostile.yaml").write_text(RULE)
    (rules_dir / "templates" / "hostile_tpl.yaml").write_text(TEMPLATE)
    daemon = Daemon(make_config(tmp_path, rules_dir), VirtualClock(START), background=False)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        yield Client(daemon, session)
    await daemon.stop()


async def page(
    client: Client, path: str, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    """(status, text, headers) of a dashboard page, as the admin unless told otherwise."""
    async with client.session.get(
        client.base + path, headers=ADMIN if headers is None else headers, allow_redirects=False
    ) as resp:
        return resp.status, await resp.text(), resp.headers


def text_of(html: str) -> str:
    """The visible text of the page's main part, whitespace collapsed."""
    main = html.partition("<main>")[2].partition("</main>")[0] or html
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", main))).strip()


def rule_row(html: str, rule: str) -> str:
    found = re.search(rf'<tr id="rule-{rule}">(.*?)</tr>', html, re.S)
    assert found, f"no row for {rule}"
    return text_of(found.group(1))


async def seed(client: Client) -> None:
    """Two users through the abandoned cart chain (one orders after a click), and a bonus
    for a hostile user id without a phone: skipped, no_address."""
    profiles = [
        {"type": "profile.updated", "user_id": u, "data": {"email": f"{u}@shop.test"}}
        for u in ("ann", "bob")
    ]
    carts = [{"type": "cart.updated", "user_id": u, "data": CART} for u in ("ann", "bob")]
    bonus = {
        "type": "bonus.credited",
        "user_id": HOSTILE_USER,
        "data": {"amount": 50, "balance": 50},
    }
    assert (await client.post_events([*profiles, *carts, bonus]))[0] == 202
    await client.advance(3600)  # the cart reminders go out
    click = {
        "type": "message.clicked",
        "user_id": "ann",
        "data": {"rule": "abandoned_cart", "channel": "email"},
    }
    order = {"type": "order.created", "user_id": "ann", "data": {"order_id": "o1", "total": 30}}
    assert (await client.post_events([click]))[0] == 202
    await client.advance(60)
    assert (await client.post_events([order]))[0] == 202
    await client.advance(60)


async def test_every_page_answers_for_the_admin(dash: Client) -> None:
    await seed(dash)
    for path in (
        "/",
        "/?since=7d",
        "/ui/rules/abandoned_cart",
        "/ui/rules/hostile?since=24h",
        "/ui/messages",
        "/ui/messages?rule=abandoned_cart&status=sent",
        "/ui/users",
        "/ui/users?q=ann",
        "/ui/templates",
        "/ui/templates/cart_reminder",
    ):
        status, html, headers = await page(dash, path)
        assert status == 200, (path, html[:500])
        assert headers["Content-Type"].startswith("text/html")
        csp = headers["Content-Security-Policy"]
        assert "script-src 'none'" in csp and "default-src 'none'" in csp
        assert "<script" not in html  # no script of ours, none smuggled in


async def test_no_or_bad_credentials_get_the_login_form(dash: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{COOKIE}=1.abc"}):
        for path in ("/", "/ui/messages", "/ui/rules/abandoned_cart", "/ui/users?q=ann"):
            status, html, resp_headers = await page(dash, path, headers)
            assert status == 401, (headers, path)
            assert 'action="/ui/login"' in html and 'name="token"' in html
            assert "abandoned_cart" not in text_of(html)  # nothing leaks before login
            assert resp_headers["WWW-Authenticate"] == 'Bearer realm="kaskad"'
        if "Authorization" in headers:
            assert "That token is not valid." in html
        elif headers:
            assert "Your session has ended; log in again." in html


async def test_login_sets_an_httponly_strict_hmac_cookie_and_logout_clears_it(
    dash: Client,
) -> None:
    url = dash.base + "/ui/login"
    form = {"token": "nope", "next": "/ui/messages"}
    async with dash.session.post(url, data=form, allow_redirects=False) as resp:
        assert resp.status == 401
        assert "That token is not valid." in await resp.text()
        assert COOKIE not in resp.cookies
    form["token"] = "admin-token"
    async with dash.session.post(url, data=form, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/ui/messages"
        set_cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert "Path=/" in set_cookie and "Max-Age=43200" in set_cookie
    assert "admin-token" not in set_cookie
    value = re.match(rf"{COOKIE}=([^;]+);", set_cookie)
    assert value is not None
    cookie = {"Cookie": f"{COOKIE}={value.group(1)}"}
    status, html, _ = await page(dash, "/ui/messages", cookie)
    assert status == 200 and "<h1>Messages</h1>" in html
    # A session only lasts its 12 hours.
    await dash.advance(12 * 3600 + 1)
    assert (await page(dash, "/", cookie))[0] == 401
    # Logout expires the cookie; the next page asks for the token again.
    async with dash.session.post(dash.base + "/ui/logout", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/"
        assert re.search(rf'{COOKIE}=""; .*Max-Age=0', resp.headers["Set-Cookie"])


async def test_login_never_redirects_off_site(dash: Client) -> None:
    for target in (
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        # browsers drop tabs and newlines from a URL: '//evil.example'
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\nSet-Cookie: kaskad_session=x",  # a header of our answer
        "/x\\..\\..\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
        "/caf\u00e9",
        "/ui/messages /x",
    ):
        form = {"token": "admin-token", "next": target}
        async with dash.session.post(
            dash.base + "/ui/login", data=form, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/", target
            assert "kaskad_session=x" not in resp.headers.get("Set-Cookie", ""), target
    for target in ("/ui/messages?status=skipped&rule=a.b", "/ui/users?q=%C3%A9", "/"):
        form = {"token": "admin-token", "next": target}
        async with dash.session.post(
            dash.base + "/ui/login", data=form, allow_redirects=False
        ) as resp:
            assert resp.status == 303 and resp.headers["Location"] == target


async def test_hostile_rule_names_user_ids_and_templates_are_escaped(dash: Client) -> None:
    await seed(dash)
    for path in (
        "/",
        "/ui/rules/hostile",
        "/ui/messages?status=skipped",
        "/ui/users?q=%3Cscript%3Ealert('user')%3C/script%3E",
        "/ui/templates",
        "/ui/templates/hostile_tpl",
    ):
        status, html, _ = await page(dash, path)
        assert status == 200, path
        assert "<script" not in html and 'onerror="alert' not in html, path
    _, html, _ = await page(dash, "/ui/messages?status=skipped")
    assert "&lt;script&gt;alert(&#39;user&#39;)&lt;/script&gt;" in html
    assert "no_address" in text_of(html)  # the skip reason is shown
    _, html, _ = await page(dash, "/")
    assert "&lt;script&gt;alert(&#39;rule&#39;)&lt;/script&gt;" in html
    # The e-mail preview is a sandboxed srcdoc iframe: the HTML is an escaped attribute
    # value, rendered only inside the frame, where no script may run.
    _, html, _ = await page(dash, "/ui/templates/hostile_tpl")
    srcdoc = re.search(r'<iframe class="preview" [^>]*\bsandbox srcdoc="([^"]*)"', html)
    assert srcdoc is not None
    assert "&lt;script&gt;alert(&#39;html&#39;)&lt;/script&gt;" in srcdoc.group(1)
    assert "&#34; onload=&#34;alert(&#39;attr&#39;)" in srcdoc.group(1)


async def test_user_search_shows_the_timeline_and_similar_ids(dash: Client) -> None:
    await seed(dash)
    status, html, _ = await page(dash, "/ui/users?q=ann")
    text = text_of(html)
    assert status == 200
    assert "Chains of ann" in text
    assert "abandoned_cart" in text and "message.sent" in text and "cart_reminder" in text
    assert "converted" in text  # the order ended the chain by its goal
    assert "order.created abandoned_cart 1 email order o1: 30.00" in text
    assert "attributed to this message (click at 2026-11-23 11:00:00 UTC)" in text
    status, html, _ = await page(dash, "/ui/users?q=a")
    assert "Matches ann id starts with it" in text_of(html)
    assert 'href="/ui/users?q=ann"' in html
    status, html, _ = await page(dash, "/ui/users?q=nobody")
    assert status == 200 and "No user has the id, email or phone nobody." in text_of(html)


async def test_messages_filter_by_rule_and_status(dash: Client) -> None:
    await seed(dash)
    _, html, _ = await page(dash, "/ui/messages?rule=abandoned_cart_quick")
    rows = re.findall(r"<tr>\s*<td>.*?</tr>", html, re.S)
    assert rows and all("abandoned_cart_quick" in row for row in rows)
    _, html, _ = await page(dash, "/ui/messages?status=skipped")
    rows = re.findall(r"<tr>\s*<td>.*?</tr>", html, re.S)
    # The bonus to a user without a phone: skipped by bonus_credited and by hostile.
    assert len(rows) == 2 and all("no_address" in row for row in rows)
    _, html, _ = await page(dash, "/ui/messages?rule=nope&status=sent")
    assert "No messages." in html


async def test_unknown_rule_and_template_are_404_pages(dash: Client) -> None:
    status, html, _ = await page(dash, "/ui/rules/no_such_rule")
    assert status == 404 and "No rule &#39;no_such_rule&#39;." in html
    status, html, _ = await page(dash, "/ui/templates/%3Cb%3E")
    assert status == 404 and "No template &#39;&lt;b&gt;&#39;." in html


async def test_since_bad_huge_and_future(dash: Client) -> None:
    await seed(dash)
    status, html, _ = await page(dash, "/?since=bogus")
    assert status == 400
    assert "since=&#39;bogus&#39; is neither a duration" in html
    assert 'id="rule-abandoned_cart"' in html  # the page is still there, for all time
    for since in ("999999999999d", "9" * 500 + "d", "1970-01-01", "0001-01-01", "9999-12-31"):
        status, html, _ = await page(dash, f"/?since={since}")
        assert status == 200, since
        status, html, _ = await page(dash, f"/ui/rules/abandoned_cart?since={since}")
        assert status == 200, since


def table_ids(html: str, table: str = "rules") -> list[str]:
    found = re.search(rf'<table class="rules" id="{table}">(.*?)</table>', html, re.S)
    return re.findall(r'<tr id="rule-([^"]+)">', found.group(1)) if found else []


async def test_overview_shows_rules_orders_and_trends(dash: Client) -> None:
    await seed(dash)
    await dash.advance(3 * 86400)  # bob, who did not order, gets the A/B promo
    status, html, _ = await page(dash, "/")
    assert status == 200
    # sends, conversions, revenue, errors, then the sparkline's title: ann's reminder was
    # clicked and her order attributed to it; bob got two e-mails.
    assert rule_row(html, "abandoned_cart") == (
        "abandoned_cart Cart reminder, then a promo, then WhatsApp if the promo is not opened "
        "group cart_recovery active 3 1 30.00 0 Sends per day of abandoned_cart: 3 in all"
    )
    assert rule_row(html, "hostile").endswith("active 0 0 — 0 Sends per day of hostile: 0 in all")
    assert "Orders: 1 (30.00), attributed to a message: 1 (30.00)." in text_of(html)
    # Rules without traffic are folded away, in a table of their own.
    assert table_ids(html) == [
        "abandoned_cart",
        "abandoned_cart_quick",
        "bonus_credited",
        "hostile",
    ]
    assert "price_drop" in table_ids(html, "quiet-table")
    assert re.search(r'<details class="quiet" id="quiet-rules">\s*<summary>9 rules without', html)
    assert 'aria-label="Sends per day, all rules"' in html
    assert "sends, 2026-11-23: 4</title>" in html  # a point of the overall trend
    # A window after everything happened: every rule is there, with nothing in it.
    _, html, _ = await page(dash, "/?since=2027-01-01")
    assert table_ids(html) == [] and len(table_ids(html, "quiet-table")) == 13
    assert rule_row(html, "abandoned_cart").endswith("active 0 0 — 0")


async def test_overview_sorts_and_filters_by_query_links(dash: Client) -> None:
    await seed(dash)
    await dash.advance(3 * 86400)
    _, html, _ = await page(dash, "/?sort=sends")  # descending first for numbers
    assert table_ids(html)[:2] == ["abandoned_cart", "abandoned_cart_quick"]
    assert '<a href="/?sort=sends&amp;dir=asc">Sends ▼</a>' in html  # the link turns it around
    _, html, _ = await page(dash, "/?sort=sends&dir=asc")
    assert table_ids(html)[-2:] == ["abandoned_cart_quick", "abandoned_cart"]
    _, html, _ = await page(dash, "/?sort=conversions")
    assert table_ids(html)[0] == "abandoned_cart"
    _, html, _ = await page(dash, "/?sort=id&dir=desc")
    assert table_ids(html) == [
        "hostile",
        "bonus_credited",
        "abandoned_cart_quick",
        "abandoned_cart",
    ]
    _, html, _ = await page(dash, "/?q=CART&sort=sends")  # text in the id, any case
    assert table_ids(html) == ["abandoned_cart", "abandoned_cart_quick"]
    assert table_ids(html, "quiet-table") == []
    assert '<a href="/?sort=revenue&amp;q=CART">Revenue</a>' in html  # filters kept
    _, html, _ = await page(dash, "/?channel=whatsapp")
    assert table_ids(html) == ["abandoned_cart"]
    _, html, _ = await page(dash, "/?group=cart_recovery")
    assert table_ids(html) == ["abandoned_cart"] and table_ids(html, "quiet-table") == []
    _, html, _ = await page(dash, "/?state=invalid")
    assert table_ids(html) == [] and table_ids(html, "quiet-table") == []
    for bad in ("sort=cost", "dir=up", "q=" + "x" * 201):
        status, html, _ = await page(dash, f"/?{bad}")
        assert status == 400, bad
        assert "Bad request" in html


async def test_rule_page_with_real_steps_variants_and_skips(dash: Client) -> None:
    await seed(dash)
    await dash.advance(3 * 86400)
    status, html, _ = await page(dash, "/ui/rules/abandoned_cart")
    text = text_of(html)
    assert status == 200
    assert 'id="verdict">Not enough data yet: 0 of 100 users per variant.<' in html
    assert "B 0 conversion 0.0% 0.0% +0.0 pt — — —" in text  # nothing defined yet
    # the steps by name, their paths beside
    assert "email: cart_reminder (1) email 2 0 1 1 1 1 30.00" in text  # the reminder
    assert "email → whatsapp: cart_promo, variants A, B (3) email A 1 0 0 0 0 0 0.00" in text
    # The trends: per day (all time), sends, conversions, revenue; no A/B lift while only
    # variant A has sent (test_trend_charts draws one).
    trends = re.search(r'<section class="trends" id="trends"(.*?)</section>', html, re.S)
    assert trends is not None
    labels = re.findall(r'aria-label="([^"]+)"', trends.group(1))
    assert labels == [
        "Sends per day, abandoned_cart",
        "Conversions (attributed orders) per day, abandoned_cart",
        "Attributed revenue (no currency given) per day, abandoned_cart",
    ]
    assert "conversions, 2026-11-23: 1</title>" in trends.group(1)
    _, html, _ = await page(dash, "/ui/rules/abandoned_cart?since=24h")
    assert "Sends per hour, abandoned_cart" in html
    status, html, _ = await page(dash, "/ui/rules/hostile")
    assert "no_address 1" in text_of(html)


async def test_deleted_renamed_and_changed_rules_keep_sensible_pages(
    dash: Client, rules_dir: Path
) -> None:
    await seed(dash)
    # abandoned_cart_quick is renamed (its data stays under the old id); abandoned_cart
    # gets a third variant mid-test.
    quick = rules_dir / "abandoned_cart_quick.yaml"
    (rules_dir / "cart_quick_v2.yaml").write_text(
        quick.read_text().replace("rule: abandoned_cart_quick", "rule: cart_quick_v2")
    )
    quick.unlink()
    cart = rules_dir / "abandoned_cart.yaml"
    cart.write_text(
        cart.read_text().replace(
            "- {name: B, weight: 50, template: cart_promo_b}",
            "- {name: B, weight: 25, template: cart_promo_b}\n        - {name: C, weight: 25}",
        )
    )
    status, body = await dash.admin("POST", "/v1/rules/reload")
    assert status == 200 and body["problems"] == []
    await dash.advance(3 * 86400)
    status, html, _ = await page(dash, "/")
    assert status == 200
    # Bob's follow-up was due a day after the reminder; the clock jumped three days, past
    # max_lateness, so the old version's instance skipped it as expired.
    assert rule_row(html, "abandoned_cart_quick") == (
        "abandoned_cart_quick deleted 2 0 — 0 Sends per day of abandoned_cart_quick: 2 in all"
    )
    assert rule_row(html, "cart_quick_v2").endswith("active 0 0 — 0")
    status, html, _ = await page(dash, "/ui/rules/abandoned_cart_quick")
    assert status == 200 and "This rule is no longer loaded" in html
    status, html, _ = await page(dash, "/ui/rules/abandoned_cart")
    text = text_of(html)
    assert status == 200 and "Not enough data yet" in text
    assert re.search(r"<td rowspan=\"2\">C</td>", html)  # the new variant has its A/B rows


SHIPPED_TEMPLATES = sorted(p.stem for p in (ROOT / "rules" / "templates").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED_TEMPLATES)
async def test_every_shipped_template_previews_on_every_channel(dash: Client, name: str) -> None:
    # The sample trigger fits the rule that sends the template (points, a price drop, a
    # licence, a broadcast...), not always a cart.
    template = dash.daemon.rules.current.templates[name]
    status, html, _ = await page(dash, f"/ui/templates/{name}")
    assert status == 200
    assert "template_error" not in html
    shown = re.findall(r'<section class="card preview" id="channel-(\w+)">', html)
    assert sorted(shown) == sorted(template.blocks)
    origin = sample_trigger(dash.daemon.rules.current, name).origin  # e.g. points.accrued
    assert f"the trigger is {origin};" in text_of(html)
