"""Seed 1 end to end on the real clock (SPEC 4, 11): `kaskad run` as a process with the shop-A
abandoned-cart rule (its waits cut to seconds), real SMTP to aiosmtpd, WhatsApp Cloud API
calls to its fake, and the open pixel fetched over HTTP from the e-mail the server received.

One daemon, one user per path through the chain, all at once:

| user      | does                                                | gets                         |
|-----------|-----------------------------------------------------|------------------------------|
| nudge     | never opens the promo                               | reminder, promo, WhatsApp    |
| opened    | opens the promo while its `within` runs             | reminder, promo              |
| prefetch  | opens it while SMTP has not yet answered its DATA   | reminder, promo              |
| noconsent | never opens; gave no WhatsApp consent (opt-in)      | reminder, promo; WA skipped  |
| ordered   | orders between the reminder and the promo           | reminder                     |
| inflight  | orders while SMTP has not yet answered the reminder | reminder (logged as sent)    |
| early     | orders before the reminder                          | nothing                      |

Nothing sleeps: the test waits on what the fakes receive and on the daemon's HTTP answers
(between polls, on its next log line), each under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import shutil
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.fakes.smtp import FakeSmtp, Received, Script
from tests.fakes.whatsapp import ACCESS_TOKEN, PHONE_NUMBER_ID, FakeWhatsApp

from .proc import (
    ROOT,
    DaemonError,
    DaemonProcess,
    Daemons,
    free_port,
    http_json,
    http_session,
    write_config,
)

T = TypeVar("T")
INGEST = {"Authorization": "Bearer e2e-ingest"}
ADMIN = {"Authorization": "Bearer e2e-admin"}
# The seed rule's waits in seconds (each must occur once in the shipped file): reminder 2 s
# after the cart, promo 2 s later, WhatsApp if the promo is not opened 3 s after it was sent.
WAITS = {"wait: 1h": "wait: 2s", "wait: 3d": "wait: 2s", "within: 24h": "within: 3s"}
TEMPLATES = (
    "cart_reminder.yaml",
    "cart_reminder.html",
    "cart_promo.yaml",
    "cart_promo_b.yaml",
    "cart_promo_whatsapp.yaml",
)
# The stable A/B split (by rule and user) puts nudge and opened in B, prefetch and noconsent
# in A, so both promo templates go out (the test checks; other ids if the split changes).
USERS = ("nudge", "opened", "prefetch", "noconsent", "ordered", "inflight", "early")
PHONES = {user: f"7999000{n:04d}" for n, user in enumerate(USERS, 1)}
TOTALS = {user: 1000 + 10 * n for n, user in enumerate(USERS, 1)}
PROMOS = {  # variant -> (template, subject)
    "A": ("cart_promo", "Still thinking? Here is 10% off your cart"),
    "B": ("cart_promo_b", "{name}, 10% off ends soon"),
}
WITHIN = 60.0  # deadline for whatever the chain does next (its waits are 2-3 s)
PIXEL = re.compile(r'<img src="([^"]+)" width="1" height="1"')


def make_rules(tmp_path: Path) -> Path:
    """The seed rule with its waits in seconds, and only the templates it uses."""
    rules = tmp_path / "rules"
    (rules / "templates").mkdir(parents=True)
    text = (ROOT / "rules" / "abandoned_cart.yaml").read_text()
    for old, new in WAITS.items():
        assert text.count(old) == 1, f"rules/abandoned_cart.yaml no longer has one {old!r}"
        text = text.replace(old, new)
    (rules / "abandoned_cart.yaml").write_text(text)
    for name in TEMPLATES:
        shutil.copy(ROOT / "rules" / "templates" / name, rules / "templates" / name)
    return rules


def make_config(
    tmp_path: Path, rules: Path, port: int, smtp: FakeSmtp, whatsapp: FakeWhatsApp
) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        {
            "server": {"host": "127.0.0.1", "port": port},
            "auth": {"ingest_tokens": ["e2e-ingest"], "admin_token": "e2e-admin"},
            "storage": {"url": f"sqlite:///{tmp_path}/kaskad.db"},
            "rules": {"path": str(rules), "watch": False},
            "channels": {
                "email": {
                    "provider": "smtp",
                    "host": smtp.host,
                    "port": smtp.port,
                    "tls": "none",
                    "from": "Shop <news@shop.example>",
                    "timeout_s": 30,
                },
                "whatsapp": {
                    "provider": "cloud_api",
                    "base_url": whatsapp.base_url,
                    "api_version": whatsapp.version,
                    "phone_number_id": PHONE_NUMBER_ID,
                    "access_token": ACCESS_TOKEN,
                    "timeout_s": 30,
                },
            },
            "policies": {
                "quiet_hours": None,
                "frequency_caps": [],
                # Marketing on WhatsApp needs consent true: every user but noconsent gave it.
                "consent_default": {"whatsapp": "opt_in"},
            },
            # The daemon's own URL: the promo's pixel is fetched from it like a mail client.
            "tracking": {"base_url": f"http://127.0.0.1:{port}", "secret": "e2e-tracking"},
            "logging": {"format": "json", "level": "info"},
        },
    )


def email_of(user: str) -> str:
    return f"{user}@shop.test"


def profile(user: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "email": email_of(user),
        "phone": f"+{PHONES[user]}",
        "timezone": "UTC",
        "attributes": {"first_name": user.title()},
    }
    if user != "noconsent":
        data["consent"] = {"whatsapp": True}
    return {"id": f"p-{user}", "type": "profile.updated", "user_id": user, "data": data}


def cart(user: str) -> dict[str, Any]:
    item = {"product_id": "p1", "name": "Kettle", "price": TOTALS[user], "qty": 1}
    data = {"items": [item], "total": TOTALS[user]}
    return {"id": f"c-{user}", "type": "cart.updated", "user_id": user, "data": data}


def order(user: str) -> dict[str, Any]:
    data = {"order_id": f"o-{user}", "total": TOTALS[user], "items": [], "source": "online"}
    return {"id": f"order-{user}", "type": "order.created", "user_id": user, "data": data}


def text_of(mail: EmailMessage, subtype: str) -> str:
    part = mail.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    content: str = part.get_content()
    return content


def brief(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(m["channel"], m["template"], m["status"], m["reason"]) for m in messages]


@dataclass
class Inboxes:
    """What the fakes received, per user, handed to the test's loop as it arrives."""

    loop: asyncio.AbstractEventLoop
    mail: defaultdict[str, asyncio.Queue[Received]] = field(
        default_factory=lambda: defaultdict(asyncio.Queue)
    )
    whatsapp: defaultdict[str, asyncio.Queue[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(asyncio.Queue)
    )

    def on_mail(self, received: Received) -> None:  # on aiosmtpd's thread
        user = received.rcpt_tos[0].split("@", 1)[0]
        self.loop.call_soon_threadsafe(self.mail[user].put_nowait, received)

    def on_whatsapp(self, body: dict[str, Any]) -> None:
        user = next((u for u, phone in PHONES.items() if phone == body.get("to")), "?")
        self.whatsapp[user].put_nowait(body)


@dataclass
class Run:
    daemon: DaemonProcess
    session: aiohttp.ClientSession
    smtp: FakeSmtp
    whatsapp: FakeWhatsApp
    inboxes: Inboxes

    async def arrival(self, queue: asyncio.Queue[T], what: str) -> T:
        """The next thing a fake received; fails at the deadline or if the daemon exits."""
        assert self.daemon.proc is not None
        got = asyncio.ensure_future(queue.get())
        exited = asyncio.ensure_future(self.daemon.proc.wait())
        try:
            await asyncio.wait({got, exited}, timeout=WITHIN, return_when=asyncio.FIRST_COMPLETED)
        finally:
            got.cancel()
            exited.cancel()
        if got.done() and not got.cancelled():
            return got.result()
        if self.daemon.proc.returncode is not None:
            raise DaemonError(f"the daemon exited before {what}:\n{self.daemon.tail()}")
        raise AssertionError(f"no {what} within {WITHIN} s; log tail:\n{self.daemon.tail()}")

    async def mail(self, user: str, what: str) -> EmailMessage:
        received = await self.arrival(self.inboxes.mail[user], f"{what} e-mail to {user}")
        assert received.rcpt_tos == [email_of(user)]
        return received.message

    def hold(self, user: str) -> threading.Event:
        """From now on the SMTP server keeps the user's mail but answers DATA only once the
        returned event is set (the server's exit sets it too)."""
        release = threading.Event()
        self.smtp.script[email_of(user)] = Script(hold=release)
        return release

    async def admin(self, path: str) -> Any:
        status, body = await http_json(self.session, "GET", self.daemon.url + path, headers=ADMIN)
        assert status == 200, (path, status, body)
        return body

    async def post(self, events: list[dict[str, Any]]) -> None:
        status, body = await http_json(
            self.session, "POST", f"{self.daemon.url}/v1/events", json=events, headers=INGEST
        )
        assert (status, body) == (202, {"accepted": len(events), "duplicates": 0})

    async def messages(self, user: str) -> list[dict[str, Any]]:
        """The user's delivery log, newest first."""
        body = await self.admin(f"/v1/messages?user_id={user}&rule=abandoned_cart")
        assert body["next_cursor"] is None
        found: list[dict[str, Any]] = body["messages"]
        return found

    async def instance(self, user: str) -> dict[str, Any] | None:
        """The user's abandoned-cart instance as the timeline shows it; None before it starts."""
        body = await self.admin(f"/v1/users/{user}/timeline")
        found = [i for i in body["instances"] if i["rule"] == "abandoned_cart"]
        assert len(found) <= 1, found
        return found[0] if found else None

    async def timeline(self, user: str) -> list[tuple[str, str | None]]:
        """(kind, reason) of the user's abandoned-cart timeline, newest first."""
        body = await self.admin(f"/v1/users/{user}/timeline")
        return [
            (i["kind"], i.get("reason"))
            for i in body["timeline"]
            if i.get("rule") == "abandoned_cart"
        ]

    async def until(self, probe: Callable[[], Awaitable[T | None]], what: str) -> T:
        """Ask `probe` until it answers; between asks, wait for the daemon's next log line
        (or a fifth of a second: not every change is logged)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WITHIN
        while True:
            value = await probe()
            if value is not None:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"no {what} within {WITHIN} s; log tail:\n{self.daemon.tail()}")
            with contextlib.suppress(TimeoutError):
                await self.daemon.wait_for(None, within=0.2, after=len(self.daemon.lines))

    async def ended(self, user: str) -> dict[str, Any]:
        """The user's instance once the engine has ended it."""

        async def probe() -> dict[str, Any] | None:
            inst = await self.instance(user)
            return inst if inst is not None and inst["status"] != "active" else None

        return await self.until(probe, f"end of {user}'s chain")

    async def fetch_pixel(self, mail: EmailMessage) -> None:
        """Load the open pixel of an e-mail's HTML part, as a mail client shows images."""
        found = PIXEL.search(text_of(mail, "html"))
        assert found, text_of(mail, "html")
        url = html.unescape(found.group(1))
        assert url.startswith(f"{self.daemon.url}/t/o/"), url
        async with self.session.get(url) as resp:
            assert (resp.status, resp.content_type) == (200, "image/gif")
            assert (await resp.read()).startswith(b"GIF89a")

    def whatsapp_to(self, user: str) -> list[dict[str, Any]]:
        return [b for b in self.whatsapp.requests if b.get("to") == PHONES[user]]


def check_reminder(mail: EmailMessage, user: str) -> None:
    assert mail["Subject"] == f"{user.title()}, your cart is waiting"
    assert (mail["From"], mail["To"]) == ("Shop <news@shop.example>", email_of(user))
    assert f"1 item(s), total {TOTALS[user]}." in text_of(mail, "plain")


async def check_promo(run: Run, mail: EmailMessage, user: str) -> str:
    """The promo e-mail is the one of the variant the engine recorded; returns the variant."""
    promo, _reminder = await run.messages(user)
    variant: str = promo["variant"]
    template, subject = PROMOS[variant]
    assert (promo["channel"], promo["template"]) == ("email", template)
    assert mail["Subject"] == subject.format(name=user.title())
    assert str(mail["List-Unsubscribe"]).startswith(f"<{run.daemon.url}/t/u/")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "CART10" in text_of(mail, "plain") and str(TOTALS[user]) in text_of(mail, "html")
    return variant


async def reminder_and_promo(run: Run, user: str) -> tuple[EmailMessage, str]:
    check_reminder(await run.mail(user, "reminder"), user)
    promo = await run.mail(user, "promo")
    return promo, await check_promo(run, promo, user)


async def nudge(run: Run) -> str:
    """Scenario 1: the promo is never opened, so WhatsApp goes out when `within` ends."""
    _, variant = await reminder_and_promo(run, "nudge")
    body = await run.arrival(run.inboxes.whatsapp["nudge"], "WhatsApp message to nudge")
    assert body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": PHONES["nudge"],
        "type": "template",
        "template": {
            "name": "cart_promo",
            "language": {"code": "ru"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": str(TOTALS["nudge"])}]}
            ],
        },
    }
    inst = await run.ended("nudge")
    assert (inst["status"], inst["end_reason"], inst["variant"]) == ("completed", None, variant)
    messages = await run.messages("nudge")
    assert brief(messages) == [
        ("whatsapp", "cart_promo_whatsapp", "sent", None),
        ("email", PROMOS[variant][0], "sent", None),
        ("email", "cart_reminder", "sent", None),
    ]
    assert messages[0]["provider_id"].startswith("wamid.")
    return variant


async def opened(run: Run) -> str:
    """Scenario 2: the promo's pixel is fetched while the cascade awaits it: no WhatsApp."""
    mail, variant = await reminder_and_promo(run, "opened")

    async def awaiting() -> dict[str, Any] | None:
        inst = await run.instance("opened")
        return inst if inst is not None and inst["waiting"] == "await" else None

    await run.until(awaiting, "opened's cascade awaiting the open")
    await run.fetch_pixel(mail)
    await check_no_whatsapp(run, "opened", variant)
    return variant


async def prefetch(run: Run) -> str:
    """Scenario 2 in the other order: the pixel is fetched while the SMTP server still holds
    its answer to DATA (as an image-prefetching mailbox may), so the engine hears of the open
    before the send's outcome, and must not then wait for an open that already came."""
    check_reminder(await run.mail("prefetch", "reminder"), "prefetch")
    release = run.hold("prefetch")
    try:
        mail = await run.mail("prefetch", "promo")
        await run.fetch_pixel(mail)

        async def opened_in_flight() -> dict[str, Any] | None:
            promo, _reminder = await run.messages("prefetch")
            return promo if promo["opened_at"] is not None else None

        promo = await run.until(opened_in_flight, "the open of prefetch's promo")
        # the dispatcher's status stands until the answer; the open is kept by its time
        assert (promo["status"], promo["sent_at"]) == ("sending", None)
        inst = await run.instance("prefetch")
        assert inst is not None and inst["waiting"] == "sending", inst
    finally:
        release.set()
    variant = await check_promo(run, mail, "prefetch")
    await check_no_whatsapp(run, "prefetch", variant)
    return variant


async def check_no_whatsapp(run: Run, user: str, variant: str) -> None:
    """The engine resolved the await by the open and ended the chain: nothing went out."""
    inst = await run.ended(user)
    assert (inst["status"], inst["end_reason"], inst["variant"]) == ("completed", None, variant)
    messages = await run.messages(user)
    assert brief(messages) == [
        ("email", PROMOS[variant][0], "opened", None),
        ("email", "cart_reminder", "sent", None),
    ]
    assert messages[0]["sent_at"] is not None and messages[0]["opened_at"] is not None
    assert run.whatsapp_to(user) == []


async def noconsent(run: Run) -> str:
    """Scenario 1 without WhatsApp consent (opt-in): the fallback is skipped, with the reason."""
    _, variant = await reminder_and_promo(run, "noconsent")
    inst = await run.ended("noconsent")
    assert (inst["status"], inst["end_reason"], inst["variant"]) == ("completed", None, variant)
    assert brief(await run.messages("noconsent")) == [
        ("whatsapp", "cart_promo_whatsapp", "skipped", "no_consent"),
        ("email", PROMOS[variant][0], "sent", None),
        ("email", "cart_reminder", "sent", None),
    ]
    assert run.whatsapp_to("noconsent") == []
    return variant


async def ordered(run: Run) -> None:
    """Scenario 3: the order comes between the reminder and the promo: nothing more."""
    check_reminder(await run.mail("ordered", "reminder"), "ordered")

    async def reminded() -> list[dict[str, Any]] | None:
        messages = await run.messages("ordered")
        return messages if [m["status"] for m in messages] == ["sent"] else None

    await run.until(reminded, "ordered's reminder recorded as sent")
    await run.post([order("ordered")])
    inst = await run.ended("ordered")
    assert (inst["status"], inst["end_reason"]) == ("converted", "order-ordered")
    assert await run.timeline("ordered") == [
        ("instance.converted", "order-ordered"),
        ("message.sent", None),
        ("instance.started", None),
    ]


async def inflight(run: Run, release: threading.Event) -> None:
    """Scenario 3 with the order in the middle of the reminder's SMTP call: the chain ends at
    once, and the reminder, which did go out, is logged as sent."""
    check_reminder(await run.mail("inflight", "reminder"), "inflight")
    try:
        await run.post([order("inflight")])
        inst = await run.ended("inflight")
        assert (inst["status"], inst["end_reason"]) == ("converted", "order-inflight")
    finally:
        release.set()

    async def settled() -> list[dict[str, Any]] | None:
        messages = await run.messages("inflight")
        return messages if messages and messages[0]["sent_at"] is not None else None

    messages = await run.until(settled, "inflight's reminder recorded with its SMTP answer")
    assert brief(messages) == [("email", "cart_reminder", "sent", None)]
    assert messages[0]["provider_id"].startswith("<")  # the Message-ID
    assert await run.timeline("inflight") == [
        ("message.sent", None),
        ("instance.converted", "order-inflight"),
        ("instance.started", None),
    ]


async def early(run: Run) -> None:
    """Scenario 3: the order comes before the first send: nothing at all."""
    inst = await run.ended("early")
    assert (inst["status"], inst["end_reason"]) == ("converted", "order-early")
    assert await run.messages("early") == []


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    inboxes = Inboxes(asyncio.get_running_loop())
    rules = make_rules(tmp_path)
    port = free_port()
    with FakeSmtp(on_received=inboxes.on_mail) as smtp:
        async with (
            FakeWhatsApp(on_request=inboxes.on_whatsapp) as whatsapp,
            Daemons() as daemons,
            http_session() as session,
        ):
            config = make_config(tmp_path, rules, port, smtp, whatsapp)
            daemon = await daemons.start(config, port, "e2e")
            started = await daemon.started()
            assert started["rules"] == 1, daemon.tail()
            yield Run(daemon, session, smtp, whatsapp, inboxes)
            assert await daemon.terminate() == 0, daemon.tail()


async def test_abandoned_cart_cascade_on_the_real_clock(run: Run) -> None:
    rules = await run.admin("/v1/rules")
    assert [(r["id"], r["state"]) for r in rules["rules"]] == [("abandoned_cart", "active")]
    held = run.hold("inflight")
    await run.post([e for user in USERS for e in (profile(user), cart(user))])
    await run.post([order("early")])  # the reminders are 2 s away
    async with asyncio.TaskGroup() as group:
        variants = [
            group.create_task(nudge(run)),
            group.create_task(opened(run)),
            group.create_task(prefetch(run)),
            group.create_task(noconsent(run)),
        ]
        group.create_task(ordered(run))
        group.create_task(inflight(run, held))
        group.create_task(early(run))
    assert {v.result() for v in variants} == {"A", "B"}, "pick user ids that split both ways"
    # Every chain started at once and nudge's WhatsApp was the last thing due: had anything
    # else been sent, the fakes would have it by now.
    assert {user: run.inboxes.mail[user].qsize() for user in USERS} == dict.fromkeys(USERS, 0)
    mails = defaultdict(list)
    for received in run.smtp.received:
        mails[received.rcpt_tos[0].split("@", 1)[0]].append(received.message["Subject"])
    assert {user: len(mails[user]) for user in USERS} == {
        "nudge": 2,
        "opened": 2,
        "prefetch": 2,
        "noconsent": 2,
        "ordered": 1,
        "inflight": 1,
        "early": 0,
    }
    assert [b["to"] for b in run.whatsapp.requests] == [PHONES["nudge"]]
    errors = [line for line in run.daemon.lines if line.get("level") in ("error", "critical")]
    assert errors == [], errors
