"""The dashboard in headless Chromium (Debian `chromium` + `chromium-driver`, via selenium)
against `kaskad run` as a real process, with real data flowing through the seed rules.

The data: a few shoppers go through the shipped abandoned-cart chains on a virtual clock
(the in-process daemon, on the same SQLite file, so days pass in no time), then the real
daemon takes over that database and receives live events: promo clicks and orders that get
attributed, and a bonus that cannot be delivered. The browser logs in with the admin token
and checks what a marketer would look at; a screenshot is kept in tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.lang.config import parse_config

from .helpers import ROOT, Client, independent_cart_rules
from .proc import Daemons, free_port, http_json, http_session, poll, write_config

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "tests" / "artifacts"
ADMIN_TOKEN = "browser-admin-token"
INGEST = {"Authorization": "Bearer browser-ingest-token"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 49.9, "qty": 1}], "total": 49.9}
DAY = 86400.0
# Variants come from a hash of rule and user: bob, cleo, dan get A; fay and gus get B.
SHOPPERS = {
    "ann": {"email": "ann@shop.test"},
    "bob": {"email": "bob@shop.test"},
    "cleo": {"email": "cleo@shop.test", "whatsapp": "79990000003"},
    "dan": {"email": "dan@shop.test"},
    "fay": {"email": "fay@shop.test", "whatsapp": "79990000006"},
    "gus": {"email": "gus@shop.test"},
}


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium through /usr/bin/chromedriver (never a downloaded driver)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install '.[test]')")
    if missing:
        why = f"headless browser test needs {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: in CI it must run (.ci/run installs chromium)")
        pytest.skip(f"{why}; apt-get install chromium chromium-driver to run it")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,2400",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console and CSP reports
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def config(tmp_path: Path, port: int) -> dict[str, Any]:
    rules = tmp_path / "rules"
    if not rules.exists():
        independent_cart_rules(shutil.copytree(ROOT / "rules", rules))
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "storage": {"url": f"sqlite:///{tmp_path / 'kaskad.db'}"},
        "rules": {"path": str(rules), "watch": False},
        "auth": {"ingest_tokens": ["browser-ingest-token"], "admin_token": ADMIN_TOKEN},
        "tracking": {"base_url": f"http://127.0.0.1:{port}", "secret": "browser-secret"},
        "policies": {"quiet_hours": None, "frequency_caps": [], "ab": {"min_sample": 2}},
        "logging": {"format": "json", "level": "info"},
    }


def event(etype: str, user: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": etype, "user_id": user, "data": data}


async def post(client: Client, *events: dict[str, Any]) -> None:
    status, body = await client.request("POST", "/v1/events", json=list(events), headers=INGEST)
    assert status == 202, body


async def history(tmp_path: Path, start: float) -> None:
    """Four days of the abandoned cart chains, on a virtual clock, into kaskad.db."""
    cfg_path = write_config(tmp_path / "history.yaml", config(tmp_path, 0))
    daemon = Daemon(parse_config(cfg_path.read_text()), VirtualClock(start), background=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(daemon, session)
            await post(client, *(event("profile.updated", u, p) for u, p in SHOPPERS.items()))
            await post(client, *(event("cart.updated", u, CART) for u in SHOPPERS))
            await client.advance(3600)  # the reminders
            reminder = {"rule": "abandoned_cart", "channel": "email"}
            await post(client, event("message.clicked", "ann", reminder))
            await client.advance(60)
            await post(client, event("order.created", "ann", {"order_id": "o-ann", "total": 49.9}))
            for _ in range(3):  # day by day, so no timer is found late
                await client.advance(DAY)
            await post(client, event("message.opened", "bob", reminder))  # bob's promo
            await client.advance(DAY)  # no open: WhatsApp, or skipped without a number
    finally:
        await daemon.stop()


async def live_events(url: str, session: aiohttp.ClientSession) -> None:
    """Promo clicks and orders, and a bonus nobody can receive, into the real daemon."""

    async def send(one: dict[str, Any]) -> None:
        status, body = await http_json(
            session, "POST", f"{url}/v1/events", json=one, headers=INGEST
        )
        assert status == 202, body

    async def timeline(user: str) -> dict[str, Any]:
        status, body = await http_json(
            session, "GET", f"{url}/v1/users/{user}/timeline", headers=ADMIN
        )
        assert status == 200, body
        return dict(body)

    promo = {"rule": "abandoned_cart", "channel": "email"}
    for user, total in (("bob", 120.0), ("gus", 80.0)):
        await send(event("message.clicked", user, promo))

        async def clicked(user: str = user) -> bool | None:
            items = (await timeline(user))["timeline"]
            return True if any(i["kind"] == "message.clicked" for i in items) else None

        # The shopper orders after the click has been recorded, as one would.
        await poll(clicked, within=20, what=f"{user}'s promo click recorded")
        await send(event("order.created", user, {"order_id": f"o-{user}", "total": total}))

        async def attributed(user: str = user) -> bool | None:
            orders = (await timeline(user))["orders"]
            return True if any(o["attributed"] for o in orders) else None

        await poll(attributed, within=20, what=f"{user}'s order attributed to the click")
    await send(event("bonus.credited", "ivy", {"amount": 50, "balance": 50}))

    async def skipped() -> bool | None:
        query = "rule=bonus_credited&status=skipped"
        _, body = await http_json(session, "GET", f"{url}/v1/messages?{query}", headers=ADMIN)
        return True if body["messages"] else None

    await poll(skipped, within=20, what="the bonus for ivy skipped: no phone")


async def test_dashboard_in_headless_chromium(tmp_path: Path, browser: Any) -> None:
    # Start the history ten days ago, on the hour, so all of it is in the real past.
    start = math.floor(time.time() / 3600) * 3600 - 10 * DAY
    await history(tmp_path, start)
    port = free_port()
    cfg = write_config(tmp_path / "kaskad.yaml", config(tmp_path, port))
    async with Daemons() as daemons, http_session() as session:
        daemon = await daemons.start(cfg, port)
        await daemon.started()
        await live_events(daemon.url, session)
        status, stats = await http_json(
            session, "GET", f"{daemon.url}/v1/stats?rule=abandoned_cart", headers=ADMIN
        )
        assert status == 200, stats
        [cart] = stats["rules"]
        # The browser blocks; the daemon's log must keep draining, so it runs in a thread.
        await asyncio.to_thread(drive, browser, daemon.url, cart)


def drive(driver: Any, url: str, cart: dict[str, Any]) -> None:
    """What a marketer does, checked step by step."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def wait_for(css: str) -> Any:
        return WebDriverWait(driver, 15).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    # Not logged in: the login form. A wrong token is refused, the right one lets us in.
    driver.get(url + "/")
    token = wait_for("form.login input[name=token]")
    assert_accessible(driver, "login")
    token.send_keys("not-the-token")
    loads(driver, token.submit)
    assert "That token is not valid." in wait_for("form.login").text
    token = wait_for("form.login input[name=token]")
    token.send_keys(ADMIN_TOKEN)
    token.submit()
    row = wait_for("tr#rule-abandoned_cart")
    session = driver.get_cookie("kaskad_session")
    assert session is not None and session["httpOnly"] and session["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in session["value"]

    # The rules table: every seed rule, active, with the cart chain's real numbers.
    for rule in ("abandoned_cart", "abandoned_cart_quick", "bonus_credited", "weekly_promo"):
        # (rules without traffic are in a folded table: their text is there, not shown)
        assert "active" in driver.find_element(By.ID, f"rule-{rule}").get_attribute("textContent")
    # sends, conversions, revenue, errors: the numbers of the stats API, from the hourly rows
    cells = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td.n")]
    funnel = cart["funnel"]
    assert cells[:2] == [str(funnel["sends"]), str(funnel["converted"])]
    assert cells[2].startswith(f"{funnel['revenue']:.2f}") and cells[3] == "0"
    assert funnel["converted"] == 3 and funnel["revenue"] == 249.9  # ann, bob, gus
    # The rule's sparkline and the overall trends: inline SVG, drawn, with points.
    spark = row.find_element(By.CSS_SELECTOR, "svg.chart.sparkline")
    assert spark.find_elements(By.TAG_NAME, "polyline") or spark.find_elements(
        By.TAG_NAME, "circle"
    )
    assert spark.size["width"] >= 100
    trend = driver.find_element(By.CSS_SELECTOR, "svg.chart.trend")
    assert trend.size["width"] > 300 and trend.size["height"] > 100  # drawn, not just there
    assert trend.find_elements(By.TAG_NAME, "circle")
    # Sorting is a link: by sends, the busiest rule first.
    driver.find_element(By.LINK_TEXT, "Sends").click()
    WebDriverWait(driver, 15).until(ec.url_contains("sort=sends"))
    first = wait_for("table#rules tbody tr")
    assert first.get_attribute("id") == "rule-abandoned_cart"
    verdict = cart["ab"]["verdict"]
    assert re.match(r"(No significant difference|Not enough data|[AB] (beats|loses))", verdict)
    driver.save_screenshot(str(screenshot_path()))

    # The rule's page: the A/B table with lift, p-value and CI, and the steps.
    driver.find_element(By.LINK_TEXT, "abandoned_cart").click()
    assert wait_for("#verdict").text == verdict
    ab_rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "table.ab tbody tr")]
    assert len(ab_rows) == 4  # A (the baseline) and B: conversion and clicks each
    [b] = cart["ab"]["variants"]
    rate, lift = b["conversion"]["rate"], b["conversion"]["lift_abs"]
    assert ab_rows[0] == f"A (baseline) 3 conversion {100 * b['conversion']['baseline_rate']:.1f}%"
    assert ab_rows[2].startswith(f"B 2 conversion {100 * rate:.1f}%")
    assert f"{100 * lift:+.1f} pt" in ab_rows[2]
    assert driver.find_element(By.CSS_SELECTOR, "svg.journey g.jnode-send title")
    assert driver.find_element(By.CSS_SELECTOR, "svg.chart.lift")
    assert driver.find_elements(By.CSS_SELECTOR, "#trends svg.chart.trend")
    steps = driver.find_element(By.CSS_SELECTOR, "table.steps").text
    assert "whatsapp" in steps and "no_address" in steps
    assert "no_address" in driver.find_element(By.CSS_SELECTOR, "table.skips").text

    # Recent messages, filtered to the skipped ones: each says why.
    driver.find_element(By.LINK_TEXT, "Messages").click()
    Select(wait_for("select#status")).select_by_value("skipped")
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    WebDriverWait(driver, 15).until(ec.url_contains("status=skipped"))
    rows = driver.find_elements(By.CSS_SELECTOR, "table.messages tbody tr")
    texts = [r.text for r in rows]
    assert texts and all("skipped" in t and "no_address" in t for t in texts), texts
    assert any("bonus_credited ivy" in t for t in texts)  # the live one

    # One sent e-mail: what was sent (in a sandboxed frame) and its status changes.
    Select(wait_for("select#status")).select_by_value("sent")
    Select(driver.find_element(By.CSS_SELECTOR, "select#channel")).select_by_value("email")
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    WebDriverWait(driver, 15).until(ec.url_contains("channel=email"))
    driver.find_element(By.CSS_SELECTOR, "table.messages tbody tr td a").click()
    history = wait_for("table.history").text
    assert "queued" in history and "sent" in history, history
    frame = driver.find_element(By.CSS_SELECTOR, "section.sent-field iframe.preview")
    assert frame.get_attribute("sandbox") == ""
    driver.save_screenshot(str(ARTIFACTS / "message.png"))

    # User search by email: bob's card and timeline, with his order attributed to the promo
    # click, and his own events (the cart he left) beside what kaskad did.
    driver.find_element(By.LINK_TEXT, "Users").click()
    search = wait_for("input#q")
    search.send_keys("Bob@Shop.test")
    search.submit()
    timeline = wait_for("table.timeline").text
    assert "order.created" in timeline and "order o-bob: 120.00" in timeline
    assert "attributed to this message (click at" in timeline
    assert "message.clicked" in timeline and "cart_promo" in timeline
    channels = driver.find_element(By.CSS_SELECTOR, "#card-channels").text
    assert "bob@shop.test valid" in channels and "whatsapp none missing" in channels
    own = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "tr.user-event")]
    assert any("cart.updated" in r and "1 item" in r for r in own), own
    driver.save_screenshot(str(ARTIFACTS / "dashboard-user.png"))

    # Template previews: every channel; the e-mail HTML in a sandboxed frame.
    driver.find_element(By.LINK_TEXT, "Templates").click()
    wait_for("table.templates")
    driver.find_element(By.LINK_TEXT, "cart_promo").click()
    frame = wait_for("section#channel-email iframe.preview")
    assert frame.get_attribute("sandbox") == ""
    driver.switch_to.frame(frame)
    assert "CART10" in driver.find_element(By.TAG_NAME, "body").text
    driver.switch_to.default_content()
    subject = driver.find_element(By.CSS_SELECTOR, "section#channel-email pre").text
    assert subject == "Still thinking? Here is 10% off your cart"
    # The same template for bob: his profile and his last event of the trigger's type.
    user = driver.find_element(By.CSS_SELECTOR, "input#user")
    user.send_keys("bob")
    loads(driver, user.submit)
    origin = wait_for("#preview-origin").text
    assert "rendered for user bob with their stored profile" in origin, origin
    assert "template_error" not in driver.find_element(By.TAG_NAME, "main").text

    # Nothing on any page broke the Content-Security-Policy or failed to load; the only
    # errors are the login form's own 401 answers.
    problems = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]
    ]
    assert all("status of 401" in p for p in problems), problems

    # Every page, as it is now with data in it: a screenshot each (tests/artifacts/pages/)
    # and axe-core's accessibility rules, no serious or critical violation anywhere.
    accessible_everywhere(driver, url)

    # Log out: back to the login form.
    driver.find_element(By.CSS_SELECTOR, "header form button").click()
    wait_for("form.login input[name=token]")
    assert driver.get_cookie("kaskad_session") is None


AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


def loads(driver: Any, act: Callable[[], Any]) -> None:
    """Do what loads a new page, and wait until the old one is gone (the new page may hold
    the same elements, which a wait would otherwise find on the old one)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    act()
    WebDriverWait(driver, 15).until(ec.staleness_of(old))


def assert_accessible(driver: Any, name: str) -> None:
    """axe-core (tests/vendor) on the page as it is: a screenshot, then no violation of
    serious or critical impact (WCAG 2.x A and AA rules and axe's best practices)."""
    pages = ARTIFACTS / "pages"
    pages.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(pages / f"{name}.png"))
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations), e => done(String(e)));"
    )
    assert isinstance(result, list), f"{name}: axe failed: {result}"
    serious = [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + "; ".join(
            " ".join(n["target"]) if isinstance(n["target"], list) else str(n["target"])
            for n in v["nodes"][:3]
        )
        for v in result
        if v.get("impact") in SERIOUS
    ]
    assert not serious, f"{name}: " + " | ".join(serious)


def accessible_everywhere(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.set_script_timeout(60)
    pages = {
        "overview": "/",
        "overview-sorted": "/?sort=revenue&dir=desc&since=7d",
        "messages": "/ui/messages",
        "messages-skipped": "/ui/messages?status=skipped",
        "users": "/ui/users",
        "user-bob": "/ui/users?q=bob",
        "templates": "/ui/templates",
        "template-cart_promo": "/ui/templates/cart_promo",
        "template-cart_promo-bob": "/ui/templates/cart_promo?rule=abandoned_cart&user=bob",
    }
    driver.get(url + "/")
    rules = [
        a.get_attribute("href").split("?")[0].rsplit("/", 1)[1]
        for a in driver.find_elements(By.CSS_SELECTOR, "a[href^='/ui/rules/']")
    ]
    assert rules, "no rule links on the overview"
    for rule in dict.fromkeys(rules):
        pages[f"rule-{rule}"] = f"/ui/rules/{rule}"
    driver.get(url + "/ui/messages?status=sent&channel=email")
    sent = driver.find_elements(
        By.CSS_SELECTOR, "table.messages tbody tr td a[href^='/ui/messages/']"
    )
    assert sent, "no sent e-mail to open"
    pages["message"] = "/ui/messages/" + sent[0].get_attribute("href").rsplit("/", 1)[1]
    for name, path in pages.items():
        driver.get(url + path)
        assert "Internal Server Error" not in driver.title, name
        assert_accessible(driver, name)


def screenshot_path() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / "dashboard.png"
