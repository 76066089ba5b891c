"""The delivery log and one message, against an in-process daemon sending real mail to a
fake SMTP server and real webhooks to a fake receiver: filters (and hostile ones: 400 with
the parameter named), cursor pages, and a message's page with its content as sent, where
its tracking links lead and every status change (a retry, a click)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon
from tests.fakes.smtp import FakeSmtp
from tests.fakes.webhook_receiver import FakeReceiver, Reply

from .helpers import START, TRACKING, Client, make_config
from .test_dashboard_http import page, text_of

SALE = "https://shop.example/sale?x=1&y=2"
RULES = {
    "promo.yaml": """\
rule: promo
trigger: {event: promo.requested}
category: marketing
steps:
  - send: {template: promo_mail, cascade: [email]}
""",
    "hook.yaml": """\
rule: hook
trigger: {event: hook.requested}
steps:
  - send: {template: hook_body, cascade: [webhook]}
""",
    "templates/promo_mail.yaml": f"""\
template: promo_mail
email:
  subject: "Sale for {{{{ user.user_id }}}}"
  html: |
    <p>Hi <b>there</b></p><script>alert('x')</script>
    <a href="{{{{ track('{SALE}') }}}}">Shop the sale</a>
  text: "Sale: {{{{ track('{SALE}') }}}}"
""",
    "templates/hook_body.yaml": """\
template: hook_body
webhook:
  body: {hello: "{{ user.user_id }}"}
""",
}


@dataclass
class Run:
    client: Client
    smtp: FakeSmtp
    receiver: FakeReceiver

    async def events(self, *events: dict[str, Any]) -> None:
        status, body = await self.client.post_events(list(events))
        assert status == 202, body

    async def log(self, query: str) -> dict[str, Any]:
        status, body = await self.client.admin("GET", f"/v1/messages?{query}")
        assert status == 200, body
        return dict(body)


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    rules = tmp_path / "rules"
    (rules / "templates").mkdir(parents=True)
    for name, text in RULES.items():
        (rules / name).write_text(text)
    with FakeSmtp() as smtp:
        async with FakeReceiver() as receiver:
            extra = f"""{TRACKING}
channels:
  email: {{provider: smtp, host: "{smtp.host}", port: {smtp.port}, tls: none,
           from: "Shop <news@shop.example>"}}
  webhook: {{provider: webhook, url: "{receiver.url}", secret: "{receiver.secret}"}}
"""
            daemon = Daemon(
                make_config(tmp_path, rules, extra=extra), VirtualClock(START), background=False
            )
            await daemon.start()
            try:
                async with aiohttp.ClientSession() as session:
                    yield Run(Client(daemon, session), smtp, receiver)
            finally:
                await daemon.stop()


def profile(user: str, **data: Any) -> dict[str, Any]:
    return {"type": "profile.updated", "user_id": user, "data": data}


def history(html: str) -> list[tuple[str, str]]:
    """(status, detail) rows of the page's history table."""
    table = re.search(r'<table class="history">(.*?)</table>', html, re.S)
    assert table is not None
    rows = re.findall(r"<tr><td>.*?</td><td>(.*?)</td><td>(.*?)</td></tr>", table.group(1), re.S)
    return [(text_of(s), unescape(d)) for s, d in rows]


async def test_a_sent_mail_shows_its_content_link_destinations_and_history(run: Run) -> None:
    c = run.client
    await run.events(profile("ann", email="ann@shop.test"))
    await run.events({"type": "promo.requested", "user_id": "ann", "data": {}})
    await c.advance(1)
    (listed,) = (await run.log("rule=promo"))["messages"]
    mid = listed["id"]
    assert listed["status"] == "sent" and len(run.smtp.received) == 1
    # The mail as the server got it carries the tracking link, not the shop's URL.
    sent_html = run.smtp.received[0].message.get_body(("html",)).get_content()
    token_url = re.search(r'href="(https://kaskad\.example/t/c/[^"]+)"', sent_html)
    assert token_url is not None and SALE not in sent_html

    status, html, headers = await page(c, f"/ui/messages/{mid}")
    assert status == 200, html[:300]
    assert "script-src 'none'" in headers["Content-Security-Policy"]
    assert "<script" not in html  # the template's script is escaped text, never run
    text = text_of(html)
    assert "Sale for ann" in text and "ann@shop.test" in text  # subject, recipient (admins)
    assert listed["provider_id"] and listed["provider_id"] in text
    # Rendered in a sandboxed frame with the links leading to their destinations and the
    # open pixel blanked: looking at a message is neither a click nor an open.
    srcdoc = re.search(r'<iframe class="preview" [^>]*\bsandbox srcdoc="([^"]*)"', html)
    assert srcdoc is not None
    shown = unescape(srcdoc.group(1))
    assert f'href="{SALE}"' in shown and "/t/c/" not in shown and "/t/o/" not in shown
    assert "&lt;script&gt;" in srcdoc.group(1).replace("&amp;", "&")
    # The source as sent, and the links table: destination next to the tracking URL.
    links = re.search(r'<table class="links">(.*?)</table>', html, re.S)
    assert links is not None
    assert token_url.group(1) in unescape(links.group(1))
    assert f'href="{SALE.replace("&", "&amp;")}"' in links.group(1)
    assert [s for s, _ in history(html)] == ["queued", "sending", "sent"]
    assert history(html)[2][1] == f"provider id {listed['provider_id']}"

    # The user clicks: the history gets the click (with the delivery and open it implies).
    async with c.session.get(
        c.base + token_url.group(1).removeprefix("https://kaskad.example"),
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302 and resp.headers["Location"] == SALE
    await c.advance(60)
    _, html, _ = await page(c, f"/ui/messages/{mid}")
    assert [s for s, _ in history(html)] == [
        "queued",
        "sending",
        "sent",
        "delivered",
        "opened",
        "clicked",
    ]
    # The JSON twin says the same.
    status, body = await c.admin("GET", f"/v1/messages/{mid}")
    assert status == 200
    assert body["status"] == "clicked" and body["recipient"] == ["ann@shop.test"]
    assert body["content"]["subject"] == "Sale for ann"
    click = [link for link in body["links"] if link["kind"] == "click"]
    assert {(link["destination"], link["verified"]) for link in click} == {(SALE, True)}
    assert {link["kind"] for link in body["links"]} == {"click", "open", "unsubscribe"}
    assert [h["status"] for h in body["history"]][-1] == "clicked"
    assert body["history_source"] == "recorded"
    # Wherever messages are listed, the id leads to this page.
    for where in ("/ui/messages", "/ui/rules/promo", "/ui/users?q=ann"):
        _, html, _ = await page(c, where)
        assert f'href="/ui/messages/{mid}"' in html, where


async def test_a_retry_is_in_the_history_with_its_error(run: Run) -> None:
    c = run.client
    run.receiver.replies.append(Reply(status=503, text="busy"))
    await run.events({"type": "hook.requested", "user_id": "bob", "data": {}})
    await c.advance(0)
    (queued,) = (await run.log("rule=hook"))["messages"]
    assert queued["status"] == "queued"
    await c.advance(600)
    (sent,) = (await run.log("rule=hook"))["messages"]
    assert sent["status"] == "sent" and len(run.receiver.deliveries) == 2
    _, html, _ = await page(c, f"/ui/messages/{sent['id']}")
    rows = history(html)
    assert [s for s, _ in rows] == ["queued", "sending", "retry", "sending", "sent"]
    assert "HTTP 503" in rows[2][1]
    assert rows[1][1] == "attempt 1"


async def test_filters_mix_and_pages_follow_the_cursor(run: Run) -> None:
    c = run.client
    # 55 users without an address: skipped, no_address; one with an address: sent.
    for start in (0, 30):
        users = range(start, min(start + 30, 55))
        await run.events(
            *[{"type": "promo.requested", "user_id": f"u{n:02d}", "data": {}} for n in users]
        )
    await run.events(profile("ann", email="ann@shop.test"))
    await c.advance(3600)
    await run.events({"type": "promo.requested", "user_id": "ann", "data": {}})
    await c.advance(1)
    _, html, _ = await page(c, "/ui/messages?reason=no_address&channel=email")
    ids = re.findall(r'<td><a href="/ui/messages/([^"]+)">', html)
    assert len(ids) == 50
    older = re.search(r'<a href="([^"]+)" rel="next">', html)
    assert older is not None
    _, html2, _ = await page(c, unescape(older.group(1)))
    more = re.findall(r'<td><a href="/ui/messages/([^"]+)">', html2)
    assert len(more) == 5 and not set(more) & set(ids) and 'rel="next"' not in html2
    assert "reason=no_address" in unescape(older.group(1))  # the filters stay on the pages
    # Date ranges: the skips were an hour before ann's mail.
    day = "2026-11-23"
    assert len((await run.log(f"from={day}&to={day}&rule=promo"))["messages"]) == 56
    late = await run.log(f"from={quote('2026-11-23T10:30:00Z')}")
    assert [(m["user_id"], m["status"]) for m in late["messages"]] == [("ann", "sent")]
    assert (await run.log("to=2026-11-22"))["messages"] == []
    assert len((await run.log("user_id=u07&status=skipped&reason=no_address"))["messages"]) == 1
    _, html, _ = await page(c, "/ui/messages?status=sent&channel=email&user_id=ann")
    assert len(re.findall(r'<td><a href="/ui/messages/', html)) == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("channel=pigeon", "channel"),
        ("reason=%3Cscript%3Ealert(1)%3C/script%3E", "reason"),
        ("from=yesterday", "from"),
        ("to=2026-13-45", "to"),
        ("from=2026-11-23&to=2026-11-01", "to"),
        ("from=" + "9" * 500, "from"),
        ("user_id=a%00b", "user_id"),
        ("rule=" + "r" * 300, "rule"),
        ("cursor=garbage", "cursor"),
        ("to=nan", "to"),
    ],
)
async def test_hostile_filters_are_400s_that_name_the_parameter(
    run: Run, query: str, field: str
) -> None:
    status, html, _ = await page(run.client, f"/ui/messages?{query}")
    assert status == 400, html[:300]
    assert "<script" not in html
    assert f"{field}: " in text_of(html)
    assert 'action="/ui/messages"' in html  # the form is still there to fix the value
    status, body = await run.client.admin("GET", f"/v1/messages?{query}")
    assert status == 400 and body["error"]["details"][0]["field"] == field


async def test_an_unknown_message_is_a_404(run: Run) -> None:
    status, html, _ = await page(run.client, "/ui/messages/m-nope")
    assert status == 404 and "No message &#39;m-nope&#39;." in html
    status, body = await run.client.admin("GET", "/v1/messages/m-nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert (await run.client.request("GET", "/v1/messages/m-nope"))[0] == 401
