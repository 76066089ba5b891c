"""The dashboard's forms read as forms whatever a client sends: a multipart body or an
unknown charset is a 400 naming Content-Type, never a 500 (aiohttp's own reader raised on
both); a test send checks its address as the channel's kind does before anything goes out,
sends what the template page previews (the chosen user's data), and carries links that work.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.lang.config import parse_config
from tests.fakes.smtp import FakeSmtp
from tests.helpers import write_rules

from .helpers import START, TRACKING, Client
from .test_actions import config_text
from .test_dashboard_actions import csrf_of, dash, get, post, session_of, text_of

SHOP = "https://shop.example/cart"

__all__ = ["dash"]


async def raw_post(
    client: Client, path: str, headers: dict[str, str], body: bytes, content_type: str
) -> tuple[int, str]:
    async with client.session.post(
        client.base + path,
        headers={**headers, "Content-Type": content_type},
        data=body,
        allow_redirects=False,
    ) as resp:
        return resp.status, await resp.text()


async def test_multipart_and_unknown_charsets_are_a_400_not_a_500(dash: Client) -> None:
    mark = await session_of(dash, "marketer-token")
    _, page = await get(dash, "/ui/rules/nudge", mark)
    csrf = csrf_of(page)
    multipart = (
        f'--zz\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
        '--zz\r\nContent-Disposition: form-data; name="hold"\r\n\r\non\r\n--zz--\r\n'
    ).encode()
    for path, headers in (
        ("/ui/rules/nudge/pause", mark),
        ("/ui/templates/nudge_t/test-send", mark),
        ("/ui/login", {}),
    ):
        status, text = await raw_post(
            dash, path, headers, multipart, "multipart/form-data; boundary=zz"
        )
        assert status == 400, (path, status, text)
        assert "Content-Type" in text and "x-www-form-urlencoded" in text
        status, text = await raw_post(
            dash,
            path,
            headers,
            f"csrf={csrf}&token=x".encode(),
            "application/x-www-form-urlencoded; charset=bogus-charset",
        )
        assert status == 400 and "unknown charset" in text, (path, status, text)
    # Latin-1 is a charset Python knows: the form is read in it.
    status, _ = await raw_post(
        dash,
        "/ui/rules/nudge/pause",
        mark,
        f"csrf={csrf}&hold=on&note=caf\xe9".encode("latin-1"),
        "application/x-www-form-urlencoded; charset=latin-1",
    )
    assert status == 303
    assert (await dash.admin("GET", "/v1/rules"))[1]["rules"][0]["state"] == "paused"
    assert "internal" not in text_of(page)


CART_RULE = """\
rule: cart_mail
category: marketing
trigger: {event: cart.updated}
steps:
  - wait: 1h
  - send: {template: cart_t, cascade: [email]}
"""
CART_TEMPLATE = f"""\
template: cart_t
email:
  subject: "{{{{ user.attributes.first_name }}}}, your cart"
  text: "{{{{ trigger.data.total }}}} in your cart: {{{{ track('{SHOP}') }}}} \
(unsubscribe: {{{{ unsubscribe_url }}}})"
sms:
  text: "{{{{ trigger.data.total }}}} in your cart"
"""


@pytest.fixture
async def mail(tmp_path: Path) -> AsyncIterator[tuple[Client, FakeSmtp]]:
    rules = write_rules(tmp_path, CART_TEMPLATE, CART_RULE)
    with FakeSmtp() as smtp:
        extra = f"""{TRACKING}
channels:
  email: {{provider: smtp, host: "{smtp.host}", port: {smtp.port}, tls: none,
           from: "Shop <news@shop.example>"}}
  sms: {{provider: sandbox}}
"""
        config = parse_config(config_text(tmp_path, rules, extra))
        daemon = Daemon(config, VirtualClock(START), background=False)
        await daemon.start()
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
                yield Client(daemon, session), smtp
        finally:
            await daemon.stop()


async def test_a_test_send_is_what_the_page_previews_marked_with_working_links(
    mail: tuple[Client, FakeSmtp],
) -> None:
    client, smtp = mail
    events = [
        {"type": "profile.updated", "user_id": "u5", "data": {"attributes": {"first_name": "Uma"}}},
        {"type": "cart.updated", "user_id": "u5", "data": {"total": 123}},
    ]
    assert (await client.post_events(events))[0] == 202
    await client.daemon.pump()
    mark = await session_of(client, "marketer-token")
    status, page = await get(client, "/ui/templates/cart_t?user=u5", mark)
    shown = text_of(page)
    assert status == 200 and "Uma, your cart" in shown and "with u5's data" in shown
    status, sent, _ = await post(
        client,
        "/ui/templates/cart_t/test-send",
        mark,
        {
            "csrf": csrf_of(page),
            "channel": "email",
            "address": "qa@shop.test",
            "user": "u5",
            "rule": "cart_mail",
        },
    )
    assert status == 200 and "Test sent" in text_of(sent), text_of(sent)
    (got,) = smtp.received
    message = got.message
    assert message["Subject"] == "[Test] Uma, your cart"
    assert message["X-Kaskad-Test"] == "1"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert text.startswith("123 in your cart")  # u5's cart, not the sample's
    click = re.search(r"(https?://\S+/t/c/\S+)", text)
    unsubscribe = re.search(r"(https?://\S+/t/u/[^\s)]+)", text)
    assert click is not None and unsubscribe is not None
    base = client.base
    path = "/t/c/" + click.group(1).rpartition("/t/c/")[2]
    async with client.session.get(base + path, allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (302, SHOP)
    path = "/t/u/" + unsubscribe.group(1).rpartition("/t/u/")[2]
    for method in ("GET", "POST"):
        async with client.session.request(method, base + path) as resp:
            assert resp.status == 200 and "test send" in await resp.text()
    _, profile = await client.admin("GET", "/v1/profiles/u5")
    assert profile.get("consent", {}).get("email") is not True  # nothing changed
    _, audit = await client.admin("GET", "/v1/audit?target=cart_t")
    (row,) = audit["actions"]
    assert (row["detail"]["user"], row["detail"]["rule"]) == ("u5", "cart_mail")


async def test_a_test_sends_address_is_checked_before_anything_goes_out(
    mail: tuple[Client, FakeSmtp],
) -> None:
    client, smtp = mail
    for channel, address, word in (
        ("email", "qa\ud800@shop.test", "surrogate"),
        ("email", "qa\x00@shop.test", "NUL"),
        ("email", {"a": 1}, "string"),
        ("email", "no-at-sign", "e-mail"),
        ("sms", "hello", "phone"),
    ):
        status, body = await client.request(
            "POST",
            "/v1/test-sends",
            headers={"Authorization": "Bearer marketer-token"},
            json={"template": "cart_t", "channel": channel, "address": address},
        )
        assert status == 400, (address, body)
        assert body["error"]["message"].startswith("address") and word in str(body), body
    assert smtp.received == []
    _, audit = await client.admin("GET", "/v1/audit")
    assert audit["actions"] == []
    status, body = await client.request(
        "POST",
        "/v1/test-sends",
        headers={"Authorization": "Bearer marketer-token"},
        json={"template": "cart_t", "channel": "email", "address": "a@b.test", "user": "nobody"},
    )
    assert status == 404 and "nobody" in body["error"]["message"]
