"""Issue 13 in headless Chromium against `kaskad run`: a marketer logs in with their own
token, pauses a misbehaving rule in two clicks (hold ticked, Pause), resumes it, ends a
user's running chain and sends a test of a template. Screenshots in tests/artifacts/."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .proc import Daemons, free_port, http_json, http_session
from .test_dashboard_browser import ARTIFACTS, browser, loads  # noqa: F401  (the fixture)
from .test_pause_restart import ADMIN, cart_started, config


async def test_a_marketer_acts_from_the_dashboard(tmp_path: Path, browser: Any) -> None:  # noqa: F811
    port = free_port()
    async with Daemons() as daemons, http_session() as session:
        daemon = await daemons.start(config(tmp_path, port), port)
        await daemon.started()
        assert await cart_started(session, daemon.url, "u1") == 1
        await asyncio.to_thread(drive, browser, daemon.url)
        status, body = await http_json(session, "GET", f"{daemon.url}/v1/audit", headers=ADMIN)
        assert status == 200 and [(a["who"], a["action"]) for a in reversed(body["actions"])] == [
            ("mark", "pause"),
            ("mark", "resume"),
            ("mark", "end_instance"),
            ("mark", "test_send"),
        ]
        status, body = await http_json(
            session, "GET", f"{daemon.url}/v1/users/u1/timeline", headers=ADMIN
        )
        assert status == 200 and [(i["status"], i["end_reason"]) for i in body["instances"]] == [
            ("stopped", "ended_by_user")
        ]


def drive(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def wait_for(css: str) -> Any:
        return WebDriverWait(driver, 15).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, css))
        )

    def shot(name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"actions-{name}.png"))

    driver.get(url + "/ui/rules/nudge")
    token = wait_for("form.login input[name=token]")
    token.send_keys("marketer-token")
    token.submit()
    # Back on the rule's page: two clicks pause it, holding its running chains.
    wait_for("section.actions")
    shot("rule-active")
    driver.find_element(By.CSS_SELECTOR, "section.actions input[name=hold]").click()
    driver.find_element(By.XPATH, "//section[@class='card actions']//button[.='Pause']").click()
    notice = wait_for("section.actions p.notice").text
    assert "Paused by mark" in notice and "Running instances are held" in notice
    assert "paused" in driver.find_element(By.CSS_SELECTOR, "h1 .badge").text
    assert "pause" in driver.find_element(By.CSS_SELECTOR, "table.audit").text
    shot("rule-paused")
    driver.find_element(By.XPATH, "//button[.='Resume']").click()
    wait_for("section.actions input[name=hold]")
    assert "active" in driver.find_element(By.CSS_SELECTOR, "h1 .badge").text

    # The user's page: End next to the running chain.
    driver.get(url + "/ui/users?q=u1")
    end = wait_for("table.instances button")
    assert end.text == "End"
    loads(driver, end.click)
    wait_for("table.instances")
    assert "ended_by_user" in driver.find_element(By.CSS_SELECTOR, "table.instances").text
    assert not driver.find_elements(By.CSS_SELECTOR, "table.instances button")
    shot("user-ended")

    # The template's page: send a test by SMS.
    driver.get(url + "/ui/templates/nudge_t")
    Select(wait_for("#test-channel")).select_by_value("sms")
    driver.find_element(By.ID, "test-address").send_keys("+15550009999")
    loads(driver, driver.find_element(By.XPATH, "//button[.='Send test']").click)
    assert wait_for("main h1").text == "Test sent"
    assert "accepted" in driver.find_element(By.TAG_NAME, "main").text
    shot("test-sent")
    # The CSP refused nothing (the one error: the login form's own 401).
    problems = [
        e
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "status of 401" not in e["message"]
    ]
    assert problems == [], problems
