"""Open pixel, click redirect and one-click unsubscribe (SPEC 5, 8) against the daemon."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from structlog.testing import capture_logs

from engine.api.tracking import PIXEL
from engine.clock import VirtualClock
from engine.core.model import Message
from engine.core.tracking import Tracker
from engine.daemon import Daemon

from .helpers import START, Client, independent_cart_rules, make_config


@pytest.fixture
def rules_dir(rules_dir: Path) -> Path:
    """Both cart rules send for the same carts here (helpers.independent_cart_rules)."""
    return independent_cart_rules(rules_dir)


PUBLIC = "https://kaskad.example"
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}
DAY = 86400


def profile(user: str, **data: object) -> dict[str, Any]:
    return {"type": "profile.updated", "user_id": user, "data": {"email": f"{user}@x.test", **data}}


def cart(user: str) -> dict[str, Any]:
    return {"type": "cart.updated", "user_id": user, "data": CART}


async def get(
    c: Client, url: str, method: str = "GET", **kwargs: Any
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """Request a tracking URL (as rendered, on the public base URL) from the daemon."""
    assert url.startswith(PUBLIC + "/t/"), url
    path = urlsplit(url).path
    async with c.session.request(method, c.base + path, allow_redirects=False, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()


async def messages(c: Client, user: str, rule: str) -> list[Message]:
    """The user's messages of a rule, oldest first, with their payloads."""
    found = await c.daemon.store.messages(user_id=user, rule=rule)
    return sorted(found, key=lambda m: (m.created_at, m.id))


async def reminder(c: Client, user: str = "u1", **data: object) -> Message:
    """The first abandoned-cart e-mail (1 h after the cart), sent through the sandbox."""
    await c.post_events([profile(user, **data), cart(user)])
    await c.advance(3600)
    (message,) = await messages(c, user, "abandoned_cart")
    assert message.channel == "email" and message.status == "sent"
    return message


def pixel_url(message: Message) -> str:
    assert message.payload is not None
    found = re.search(r'<img src="([^"]+)" width="1" height="1"', message.payload["html"])
    assert found, message.payload["html"]
    return html.unescape(found.group(1))


def links(message: Message) -> list[str]:
    assert message.payload is not None
    return [html.unescape(u) for u in re.findall(r'href="([^"]+)"', message.payload["html"])]


def unsubscribe_url(message: Message) -> str:
    assert message.payload is not None
    url: str = message.payload["_headers"]["List-Unsubscribe"]
    return url


def tamper(token_url: str) -> str:
    """The same URL with one character of the token's signed body changed."""
    head, _, token = token_url.rpartition("/")
    i = 5
    swapped = "B" if token[i] == "A" else "A"
    return f"{head}/{token[:i]}{swapped}{token[i + 1 :]}"


async def stored(c: Client, message: Message) -> Message:
    found = await c.daemon.store.message(message.id)
    assert found is not None
    return found


async def test_pixel_marks_the_email_opened_once(tracked: Client) -> None:
    message = await reminder(tracked)
    url = pixel_url(message)
    assert url.startswith(f"{PUBLIC}/t/o/")
    status, headers, body = await get(tracked, url)
    assert (status, headers["Content-Type"], headers["Cache-Control"]) == (
        200,
        "image/gif",
        "no-store",
    )
    assert body == PIXEL and body.startswith(b"GIF89a") and len(body) == 42
    assert (await stored(tracked, message)).opened_at is None  # stored, not yet processed
    await tracked.daemon.pump()
    opened = await stored(tracked, message)
    now = tracked.daemon.clock.now()
    assert (opened.status, opened.opened_at, opened.delivered_at) == ("opened", now, now)
    # Fetched again later (the mail client reloads it): answered, but counted once.
    await tracked.advance(600)
    assert (await get(tracked, url))[0] == 200
    assert await tracked.daemon.store.inbox_size() == 0
    await tracked.daemon.pump()
    assert (await stored(tracked, message)).opened_at == now
    _, body = await tracked.admin("GET", "/v1/messages?user_id=u1&rule=abandoned_cart")
    assert [m["status"] for m in body["messages"]] == ["opened"]


async def promo(c: Client) -> Message:
    """Run the abandoned cart to its promo e-mail (3 days after the first reminder)."""
    await reminder(c, phone="+79990001122")
    for _ in range(3):
        await c.advance(DAY)
    sent = await messages(c, "u1", "abandoned_cart")
    assert [(m.channel, m.template, m.status) for m in sent][1:] == [
        ("email", sent[1].template, "sent")
    ]
    assert sent[1].template in ("cart_promo", "cart_promo_b")
    return sent[1]


async def test_promo_opened_within_24h_needs_no_whatsapp(tracked: Client) -> None:
    message = await promo(tracked)
    await tracked.advance(6 * 3600)
    assert (await get(tracked, pixel_url(message)))[0] == 200
    await tracked.advance(2 * DAY)
    sent = await messages(tracked, "u1", "abandoned_cart")
    assert [(m.channel, m.status) for m in sent] == [("email", "sent"), ("email", "opened")]
    _, body = await tracked.admin("GET", "/v1/users/u1/timeline")
    assert {i["rule"]: i["status"] for i in body["instances"]}["abandoned_cart"] == "completed"


async def test_promo_not_opened_falls_back_to_whatsapp(tracked: Client) -> None:
    await promo(tracked)
    await tracked.advance(DAY)
    sent = await messages(tracked, "u1", "abandoned_cart")
    assert [(m.channel, m.template, m.status) for m in sent][1:] == [
        ("email", sent[1].template, "sent"),
        ("whatsapp", "cart_promo_whatsapp", "sent"),
    ]
    promo_sent = sent[1].sent_at
    assert promo_sent is not None and sent[2].sent_at == promo_sent + DAY  # 24 h ran out


async def test_click_redirects_to_exactly_the_signed_url(tracked: Client) -> None:
    message = await reminder(tracked)
    rendered = [u for u in links(message) if u.startswith(f"{PUBLIC}/t/c/")]
    assert rendered, links(message)
    status, headers, _ = await get(tracked, rendered[0])
    assert (status, headers["Location"], headers["Cache-Control"]) == (
        302,
        "https://shop.example/cart",
        "no-store",
    )
    await tracked.daemon.pump()
    clicked = await stored(tracked, message)
    now = tracked.daemon.clock.now()
    assert (clicked.status, clicked.clicked_at) == ("clicked", now)
    # Query, fragment and percent-escapes come back byte for byte.
    tracker = tracked.daemon.engine.tracker
    odd = "https://shop.example/p/42?utm_source=mail&q=a%20b&x=%2F#reviews"
    status, headers, _ = await get(tracked, tracker.click_url(message.id, odd))
    assert (status, headers["Location"]) == (302, odd)
    # The same link again counts once; another link of the message is another click.
    assert (await get(tracked, rendered[0]))[0] == 302
    assert await tracked.daemon.store.inbox_size() == 1


async def test_a_click_implies_the_open_and_the_delivery(tracked: Client) -> None:
    message = await reminder(tracked)
    click = next(u for u in links(message) if "/t/c/" in u)
    assert (await get(tracked, click))[0] == 302
    await tracked.daemon.pump()
    clicked = await stored(tracked, message)
    now = tracked.daemon.clock.now()
    assert (clicked.clicked_at, clicked.opened_at, clicked.delivered_at) == (now, now, now)


async def test_click_only_leads_to_web_pages(tracked: Client) -> None:
    message = await reminder(tracked)
    tracker = tracked.daemon.engine.tracker
    for url in ("javascript:alert(1)", "data:text/html,hi", "https:///nohost", "/relative"):
        status, _, body = await get(tracked, tracker.click_url(message.id, url))
        assert status == 404, url
        assert b'"not_found"' in body
    assert await tracked.daemon.store.inbox_size() == 0


async def test_a_changed_character_records_nothing(tracked: Client) -> None:
    message = await reminder(tracked)
    click = next(u for u in links(message) if "/t/c/" in u)
    with capture_logs() as logs:
        status, headers, body = await get(tracked, tamper(pixel_url(message)))
        assert (status, headers["Content-Type"], body) == (200, "image/gif", PIXEL)
        truncated = pixel_url(message)[:-6]
        assert (await get(tracked, truncated))[2] == PIXEL
        status, _, body = await get(tracked, tamper(click))
        assert status == 404 and b'"not_found"' in body
        assert (await get(tracked, tamper(unsubscribe_url(message))))[0] == 404
        assert (await get(tracked, tamper(unsubscribe_url(message)), "POST"))[0] == 404
        assert (await get(tracked, f"{PUBLIC}/t/o/not-a-token"))[0] == 200
    assert [e["event"] for e in logs].count("tracking.invalid_token") == 6
    assert await tracked.daemon.store.inbox_size() == 0
    await tracked.daemon.pump()
    unchanged = await stored(tracked, message)
    assert (unchanged.status, unchanged.opened_at, unchanged.clicked_at) == ("sent", None, None)


async def test_unknown_message_or_erased_user_records_nothing(tracked: Client) -> None:
    message = await reminder(tracked)
    tracker = tracked.daemon.engine.tracker
    with capture_logs() as logs:
        assert (await get(tracked, tracker.open_url("m-unknown")))[2] == PIXEL
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("tracking.invalid_token", "unknown_message")
    ]
    assert (await tracked.admin("DELETE", "/v1/profiles/u1"))[0] == 200
    with capture_logs() as logs:
        assert (await get(tracked, pixel_url(message)))[2] == PIXEL
        click = next(u for u in links(message) if "/t/c/" in u)
        assert (await get(tracked, click))[0] == 302  # the reader still gets to the shop
    assert {e.get("reason") for e in logs if e["event"] == "tracking.invalid_token"} == {
        "erased_user"
    }
    assert await tracked.daemon.store.inbox_size() == 0
    await tracked.daemon.pump()
    assert (await tracked.admin("GET", "/v1/profiles/u1"))[0] == 404  # not brought back
    assert (await stored(tracked, message)).opened_at is None


async def test_unsubscribe_page_then_one_click_post(tracked: Client) -> None:
    message = await reminder(tracked)
    url = unsubscribe_url(message)
    assert url.startswith(f"{PUBLIC}/t/u/")
    assert url in links(message)  # the footer link of the template too
    status, headers, body = await get(tracked, url)
    page = body.decode()
    assert (status, headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert '<form method="post">' in page and "e-mails" in page
    await tracked.daemon.pump()
    _, user = await tracked.admin("GET", "/v1/profiles/u1")
    assert user.get("consent", {}).get("email") is not False  # a GET changes nothing
    status, headers, body = await get(
        tracked,
        url,
        "POST",
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and "no longer receive" in body.decode()
    await tracked.daemon.pump()
    _, user = await tracked.admin("GET", "/v1/profiles/u1")
    assert user["consent"]["email"] is False
    # The next marketing e-mail (the quick rule's follow-up a day later) is not sent.
    await tracked.advance(DAY)
    follow_up = (await messages(tracked, "u1", "abandoned_cart_quick"))[-1]
    assert (follow_up.template, follow_up.status, follow_up.reason) == (
        "cart_similar",
        "skipped",
        "no_consent",
    )


async def test_an_old_unsubscribe_link_still_unsubscribes(tracked: Client) -> None:
    message = await reminder(tracked)
    for _ in range(31):
        await tracked.advance(DAY)
    status, _, _ = await get(tracked, unsubscribe_url(message), "POST")
    assert status == 200
    await tracked.daemon.pump()
    _, user = await tracked.admin("GET", "/v1/profiles/u1")
    assert user.get("consent", {}).get("email") is False


async def test_unsubscribe_page_escapes_what_it_shows(tracked: Client) -> None:
    message = await reminder(tracked)
    tracker = tracked.daemon.engine.tracker
    token = tracker.token("unsubscribe", {"m": message.id, "c": "<script>x</script>"})
    _, _, body = await get(tracked, f"{PUBLIC}/t/u/{token}")
    assert b"<script>" not in body and b"&lt;script&gt;" in body


async def test_without_a_tracking_secret_links_outlive_a_restart_and_cannot_be_forged(
    tmp_path: Path, rules_dir: Path
) -> None:
    """No tracking.secret: the key is generated once and kept in the store, so a daemon
    started again on it signs alike and accepts its links; the development key that used to
    sign them opens no redirect and unsubscribes nobody."""
    config = make_config(tmp_path, rules_dir)  # no tracking section
    first = Daemon(config, VirtualClock(START), background=False)
    await first.start()
    link = first.engine.tracker.click_url("m1", "https://shop.example/cart")
    unsubscribe = first.engine.tracker.unsubscribe_url("m1", "email")
    await first.stop()

    second = Daemon(config, VirtualClock(START), background=False)
    await second.start()
    try:
        assert second.engine.tracker.click_url("m1", "https://shop.example/cart") == link
        assert second.engine.tracker.unsubscribe_url("m1", "email") == unsubscribe
        dev = Tracker(config.tracking.base_url, "kaskad-dev-secret")
        async with aiohttp.ClientSession() as session:
            c = Client(second, session)

            async def status(url: str) -> int:
                path = urlsplit(url).path
                async with session.get(c.base + path, allow_redirects=False) as resp:
                    return resp.status

            assert await status(link) == 302
            assert await status(dev.click_url("m1", "https://evil.example/")) == 404
            assert await status(dev.unsubscribe_url("m1", "email")) == 404
    finally:
        await second.stop()


async def test_a_configured_tracking_secret_signs_the_links(tracked: Client) -> None:
    configured = Tracker("https://kaskad.example", "track-secret")
    assert tracked.daemon.engine.tracker.click_url("m1", "https://a.example/") == (
        configured.click_url("m1", "https://a.example/")
    )
