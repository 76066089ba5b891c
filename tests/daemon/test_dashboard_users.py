"""The dashboard's users page and template preview against an in-process daemon: events go
in through POST /v1/events, then a marketer finds the user by email, phone, id or the
start of it, reads the profile card and the user's own events, and previews a template
with the user's profile and last trigger event."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon

from .helpers import START, Client, make_config
from .test_dashboard_http import page, text_of

USER = "shopper-42"
TEAPOT = {"product_id": "p9", "name": "Blue teapot", "price": 45, "qty": 3}


@pytest.fixture
async def dash(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Client]:
    daemon = Daemon(make_config(tmp_path, rules_dir), VirtualClock(START), background=False)
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        yield Client(daemon, session)
    await daemon.stop()


async def seed(client: Client) -> None:
    events = [
        {
            "type": "profile.updated",
            "user_id": USER,
            "data": {
                "email": "Ann.Smith@Shop.test",
                "phone": "+1 555 000 1234",
                "timezone": "Europe/Berlin",
                "locale": "de",
                "attributes": {"first_name": "Ann"},
                "consent": {"email": True},
            },
        },
        {"type": "product.viewed", "user_id": USER, "data": {**TEAPOT, "currency": "EUR"}},
        {"type": "search.performed", "user_id": USER, "data": {"query": "teapot", "results": 4}},
        {"type": "cart.updated", "user_id": USER, "data": {"items": [TEAPOT], "total": 135}},
        {
            "type": "order.created",
            "user_id": USER,
            "data": {"order_id": "o-77", "total": 135, "currency": "EUR", "items": [TEAPOT]},
        },
        {
            "type": "message.unsubscribed",
            "user_id": USER,
            "data": {"rule": "abandoned_cart", "channel": "sms"},
        },
        # Another user whose id starts the same, and two sharing one email.
        {"type": "profile.updated", "user_id": "shopper-420", "data": {"locale": "en"}},
        {"type": "profile.updated", "user_id": "twin-a", "data": {"email": "twin@shop.test"}},
        {"type": "profile.updated", "user_id": "twin-b", "data": {"email": "TWIN@shop.test"}},
    ]
    assert (await client.post_events(events))[0] == 202
    await client.advance(60)


async def test_find_a_user_by_email_phone_id_and_prefix(dash: Client) -> None:
    await seed(dash)
    for q in ("ann.smith@shop.TEST", " Ann.Smith@Shop.test ", "+1 (555) 000-1234", USER):
        status, html, _ = await page(dash, f"/ui/users?q={aiohttp.helpers.quote(q)}")
        assert status == 200, q
        assert f"User {USER}" in text_of(html), q
        assert 'aria-label="profile card"' in html, q
    # The start of an id: the exact one shown, the longer one listed.
    _, html, _ = await page(dash, "/ui/users?q=shopper-42")
    assert 'href="/ui/users?q=shopper-420"' in html
    _, html, _ = await page(dash, "/ui/users?q=shopper-4")
    text = text_of(html)
    assert "profile card" not in html and f"{USER} id starts with it" in text
    assert "shopper-420 id starts with it" in text
    # One email on two profiles: both listed, neither chosen.
    _, html, _ = await page(dash, "/ui/users?q=Twin@Shop.test")
    text = text_of(html)
    assert "twin-a email twin@shop.test" in text and "twin-b email twin@shop.test" in text
    assert 'aria-label="profile card"' not in html
    status, html, _ = await page(dash, "/ui/users?q=nobody@shop.test")
    assert status == 200 and "No user has the id, email or phone" in text_of(html)
    status, html, _ = await page(dash, "/ui/users?q=" + "x" * 400)
    assert status == 400 and "at most 320 characters" in text_of(html)


async def test_profile_card_and_the_users_own_events(dash: Client) -> None:
    await seed(dash)
    _, html, _ = await page(dash, f"/ui/users?q={USER}")
    card = text_of(html.partition('aria-label="profile card"')[2].partition("</section>")[0])
    assert "email Ann.Smith@Shop.test valid given" in card
    assert "sms +1 555 000 1234 valid withdrawn (unsubscribed)" in card
    assert "mobile_push none missing (push_tokens)" in card
    assert "Timezone Europe/Berlin" in card and "Locale de" in card
    assert "Orders 1, the last 2026-11-23 10:00:00 UTC" in card
    assert "Revenue 135.00 EUR" in card
    timeline = text_of(html.partition('class="timeline"')[2])
    # The user's own events, newest first, beside what kaskad did.
    assert "product.viewed the user's event Blue teapot (p9), 45 EUR" in timeline
    assert "search.performed the user's event searched 'teapot', 4 results" in timeline
    assert "cart.updated the user's event 1 item, total 135" in timeline
    assert "order o-77: 1 item, total 135 EUR" in timeline
    own = re.findall(r'<tr class="user-event"><td>[^<]*</td><td><b>([\w.]+)</b>', html)
    assert own[:3] == ["message.unsubscribed", "order.created", "cart.updated"]
    # The same events from the API, newest first.
    status, body = await dash.admin("GET", f"/v1/users/{USER}/timeline")
    assert status == 200
    assert [e["type"] for e in body["events"]] == [
        "message.unsubscribed",
        "order.created",
        "cart.updated",
        "search.performed",
        "product.viewed",
        "profile.updated",
    ]
    assert body["events"][1]["data"]["order_id"] == "o-77"
    assert body["timeline"]  # what kaskad did is still there


async def test_preview_with_a_real_user_and_their_last_trigger_event(dash: Client) -> None:
    await seed(dash)
    status, html, _ = await page(dash, f"/ui/templates/cart_reminder?user={USER}")
    text = text_of(html)
    assert status == 200
    assert f"rendered for user {USER} with their stored profile" in text
    assert "the user's last cart.updated event (2026-11-23T10:00:00Z)" in text
    assert "Ann, your cart is waiting" in text
    assert "1 item(s), total 135" in text and "template_error" not in text
    # A user without such an event: their profile with the sample event, said so.
    status, html, _ = await page(dash, "/ui/templates/cart_reminder?user=twin-a")
    assert status == 200 and "twin-a has no cart.updated event" in text_of(html)
    # An unknown user: a clear message and the sample preview, not an error page.
    status, html, _ = await page(dash, "/ui/templates/cart_reminder?user=ghost")
    text = text_of(html)
    assert status == 404 and "No user 'ghost' (no profile is stored)" in text
    assert "rendered with sample data" in text and "template_error" not in text


async def test_every_shipped_template_previews_for_every_rule_sending_it(dash: Client) -> None:
    ruleset = dash.daemon.rules.current
    assert ruleset.templates
    for name, template in sorted(ruleset.templates.items()):
        rules = sorted(r.id for r in ruleset.rules.values() if name in r.templates) or [""]
        for rule in rules:
            status, html, _ = await page(dash, f"/ui/templates/{name}?rule={rule}")
            assert status == 200, (name, rule)
            assert "template_error" not in html, (name, rule, text_of(html)[:800])
            shown = re.findall(r'<section class="card preview" id="channel-(\w+)">', html)
            assert sorted(shown) == sorted(template.blocks), (name, rule)
