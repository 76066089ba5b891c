"""GET /v1/stats's holdouts (SPEC 12) and the dashboard's rule page, against an in-process
daemon on SQLite and on PostgreSQL (real HTTP, virtual clock)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from html import escape
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from engine.api.openapi import document
from engine.clock import VirtualClock
from engine.core.variants import in_share
from engine.daemon import Daemon
from tests.pgdb import pg_schema

from .helpers import ADMIN, START, Client, make_config

HOUR = 3600.0
TEMPLATE = "template: t\nemail: {subject: hi, text: hello}\n"
PROMO = """\
rule: promo
holdout: 30%
trigger: {event: cart.updated}
goal: {event: order.created}
steps:
  - send: {template: t, cascade: [email]}
  - wait: 2d
  - send: {template: t, cascade: [email]}
"""
NOTIFY = """\
rule: notify
trigger: {event: cart.updated}
steps:
  - send: {template: t, cascade: [email]}
"""
POLICIES = "{quiet_hours: null, frequency_caps: [], ab: {min_sample: 5}, global_holdout: 10%}"
USERS = [f"h{n:03d}" for n in range(150)]


@pytest.fixture(params=["sqlite", "postgres"])
async def daemon(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Client]:
    rules = tmp_path / "rules"
    (rules / "templates").mkdir(parents=True)
    (rules / "templates" / "t.yaml").write_text(TEMPLATE)
    (rules / "promo.yaml").write_text(PROMO)
    (rules / "notify.yaml").write_text(NOTIFY)
    sqlite = contextlib.nullcontext(f"sqlite:///{tmp_path}/kaskad.db")
    async with pg_schema() if request.param == "postgres" else sqlite as url:
        config = make_config(tmp_path, rules, POLICIES, storage_url=url)
        running = Daemon(config, VirtualClock(START), background=False)
        await running.start()
        async with aiohttp.ClientSession() as session:
            yield Client(running, session)
        await running.stop()


def group_of(user: str) -> str:
    """The promo's group by the engine's stable hashes: its holdout, else the global one."""
    if in_share(f"holdout:promo:{user}", 30):
        return "holdout"
    return "global" if in_share(f"holdout:{user}", 10) else "treatment"


def orders(user: str, n: int) -> bool:
    """Who orders: 3 of 5 promo treatment users, 1 of 5 of the rest."""
    return n % 5 < (3 if group_of(user) == "treatment" else 1)


async def post(client: Client, *events: dict[str, Any]) -> None:
    status, body = await client.post_events(list(events))
    assert status == 202, body
    await client.daemon.pump()


async def test_stats_give_each_rule_its_holdout_and_the_global_one(daemon: Client) -> None:
    for first in range(0, len(USERS), 25):
        batch: list[dict[str, Any]] = []
        for user in USERS[first : first + 25]:
            batch.append({"type": "profile.updated", "user_id": user, "data": {"email": "a@x"}})
            batch.append({"type": "cart.updated", "user_id": user, "data": {"total": 30}})
        await post(daemon, *batch)
    await daemon.advance(HOUR)
    # [users, converted, revenue] per promo group, and of the users in and out of the
    # global holdout (on notify, which has no holdout of its own, they all are where the
    # global hash puts them).
    expected: dict[str, list[float]] = {
        g: [0, 0, 0.0] for g in ("treatment", "holdout", "global", "in", "out")
    }
    bought_by: list[dict[str, Any]] = []
    for n, user in enumerate(USERS):
        groups = [group_of(user), "in" if in_share(f"holdout:{user}", 10) else "out"]
        bought = orders(user, n)
        total = 10.0 + n
        if bought:
            data = {"order_id": f"o{n}", "total": total}
            bought_by.append({"type": "order.created", "user_id": user, "data": data})
        for group in groups:
            expected[group][0] += 1
            if bought:
                expected[group][1] += 1
                expected[group][2] += total
    for first in range(0, len(bought_by), 50):
        await post(daemon, *bought_by[first : first + 50])
    for _ in range(6):  # the promo chains run out
        await daemon.advance(12 * HOUR)

    status, body = await daemon.admin("GET", "/v1/stats")
    assert status == 200, body
    schema = {"$ref": "#/components/schemas/Stats", "components": document()["components"]}
    Draft202012Validator(schema).validate(body)

    [promo] = [r for r in body["rules"] if r["rule"] == "promo"]
    h = promo["holdout"]
    got = {g: [h[g]["users"], h[g]["converted"], h[g]["revenue"]] for g in ("treatment", "holdout")}
    assert got == {"treatment": expected["treatment"], "holdout": expected["holdout"]}
    assert (h["share"], h["converted_by"], h["min_sample"]) == (30.0, "goal", 5)
    n_t, x_t, _ = expected["treatment"]
    n_h, x_h, _ = expected["holdout"]
    assert h["lift_abs"] == round(x_t / n_t - x_h / n_h, 4) and h["p_value"] < 0.05
    assert h["verdict"].startswith("The rule adds ")
    # Sends: the treatment's only (the second to those who did not order); the rule's and
    # the global holdout's recorded as held out.
    n_g, x_g, _ = expected["global"]
    assert promo["skips"] == {"held_out": 2 * (n_h + n_g) - x_h - x_g}
    assert promo["funnel"]["sends"] == 2 * n_t - x_t

    [notify] = [r for r in body["rules"] if r["rule"] == "notify"]
    assert notify["holdout"] is None
    g = body["global_holdout"]
    assert [g["holdout"][k] for k in ("users", "converted", "revenue")] == expected["in"]
    assert [g["treatment"][k] for k in ("users", "converted", "revenue")] == expected["out"]
    assert expected["in"][0] >= 5
    assert (g["share"], g["converted_by"]) == (10.0, "order")

    # One rule: its holdout, and the global holdout over that rule alone.
    status, only = await daemon.admin("GET", "/v1/stats?rule=notify")
    assert status == 200
    assert [r["rule"] for r in only["rules"]] == ["notify"] and only["rules"][0]["holdout"] is None
    assert only["global_holdout"]["holdout"]["users"] == expected["in"][0]

    async with daemon.session.get(daemon.base + "/ui/rules/promo", headers=ADMIN) as resp:
        assert resp.status == 200
        html = await resp.text()
    assert f'id="holdout-verdict">{escape(h["verdict"])}<' in html
    # The holdout lift over time: the users all started on one day, whose lift is the rule's.
    chart = re.search(r'<svg[^>]*aria-label="Holdout lift per day[^"]*"(.*?)</svg>', html, re.S)
    assert chart is not None, html
    lifts = re.findall(r"<title>treatment vs holdout, [-0-9]+: ([^<]+)</title>", chart.group(1))
    assert lifts == [f"{100 * h['lift_abs']:+.1f} pt"]
    async with daemon.session.get(daemon.base + "/", headers=ADMIN) as resp:
        assert resp.status == 200
        assert f'id="global-holdout-verdict">{escape(g["verdict"])}<' in await resp.text()
