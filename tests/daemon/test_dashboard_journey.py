"""The journey diagram of the rule page against a daemon with real data flowing: for every
shipped rule and a rule with every kind of step, on SQLite and PostgreSQL, the numbers
drawn on each step and way are those of /v1/stats for the same range."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from engine.clock import iso
from tests.pgdb import pg_schema

from .helpers import ADMIN, START, Client

SVG = "{http://www.w3.org/2000/svg}"
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}]}
PROBE = """\
rule: probe
description: every kind of step
trigger: {event: cart.updated}
goal: {event: order.created}
exit_on: [{event: cart.cleared}]
mode: restart
steps:
  - wait: 30m
    name: Let them think
  - if: trigger.data.total > 50
    then:
      - send:
          template: cart_reminder
          cascade: [{channel: mobile_push, await: opened, within: 1h}, email]
    else:
      - send: {template: cart_reminder, cascade: [email]}
  - wait_for: {event: product.viewed, timeout: 1d}
    on_event:
      - send:
          template: cart_reminder
          cascade: [email]
          variants: [{name: A, weight: 1}, {name: B, weight: 1}]
    on_timeout:
      - if: user.orders_count > 0
        then:
          - stop: true
  - wait: 2h
  - send: {template: cart_reminder, cascade: [email]}
"""


@pytest.fixture(params=["sqlite", "postgres"])
async def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/kaskad.db"
    else:
        async with pg_schema() as url:
            yield url


@pytest.fixture
def rules_dir(rules_dir: Path) -> Path:
    (rules_dir / "probe.yaml").write_text(PROBE)
    return rules_dir


async def flow(client: Client) -> None:
    """Six users through the probe and the shipped cart chains: big and small carts, a
    view, an order, a cleared cart, an opened push; then days pass."""
    users = ["ann", "bob", "cy", "dan", "eve", "fay"]
    totals = {"ann": 80, "bob": 20, "cy": 90, "dan": 20, "eve": 70, "fay": 10}
    events: list[dict[str, Any]] = [
        {"type": "profile.updated", "user_id": u, "data": {"email": f"{u}@shop.test"}}
        for u in users
    ]
    events += [
        {"type": "cart.updated", "user_id": u, "data": {**CART, "total": totals[u]}} for u in users
    ]
    assert (await client.post_events(events))[0] == 202
    await client.advance(600)
    cleared = {"type": "cart.cleared", "user_id": "fay", "data": {}}
    assert (await client.post_events([cleared]))[0] == 202
    await client.advance(3600)  # the probe's first sends, the cart reminders
    viewed = {"type": "product.viewed", "user_id": "ann", "data": {"product_id": "p1"}}
    order = {"type": "order.created", "user_id": "bob", "data": {"order_id": "o1", "total": 20}}
    assert (await client.post_events([viewed, order]))[0] == 202
    await client.advance(3 * 3600)
    again = {"type": "cart.updated", "user_id": "dan", "data": {**CART, "total": 95}}
    assert (await client.post_events([again]))[0] == 202
    for _ in range(4):
        await client.advance(86400)


def journey_of(html: str) -> ET.Element:
    found = re.search(r'<svg [^>]*class="journey".*?</svg>', html, re.S)
    assert found, "no journey diagram on the page"
    return ET.fromstring(found.group(0))


def drawn(svg: ET.Element) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], int], str]:
    """(step -> its node's data-*, (step, way) -> count, all the text)."""
    nodes: dict[str, dict[str, str]] = {}
    ways: dict[tuple[str, str], int] = {}
    for g in svg.iter(f"{SVG}g"):
        classes = g.get("class", "").split()
        if "jnode" in classes and g.get("data-step") is not None:
            nodes[g.get("data-step", "")] = dict(g.attrib)
        elif "jedge" in classes:
            ways[(g.get("data-step", ""), g.get("data-way", ""))] = int(g.get("data-n", "-1"))
    text = " ".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    return nodes, ways, text


def check(svg: ET.Element, row: dict[str, Any], all_time: bool) -> int:
    """The diagram's numbers against the stats row; how many instances it drew."""
    nodes, ways, text = drawn(svg)
    journey = {j["step"]: j for j in row["journey"]}
    sends: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for s in row["steps"]:
        sends[s["step"]] = sends.get(s["step"], 0) + s["sends"]
        skipped[s["step"]] = skipped.get(s["step"], 0) + s["skipped"]
    assert set(nodes) == {*journey, "$end"}
    for step, node in nodes.items():
        if step == "$end":
            expected = journey[""]["ended"].get("completed", 0)
            assert int(node["data-reached"]) == expected
            assert f"completed {expected}" in text
            continue
        j = journey[step]
        assert int(node["data-reached"]) == j["reached"], step
        assert int(node["data-sends"]) == sends.get(step, 0), step
        assert int(node["data-skipped"]) == skipped.get(step, 0), step
        word = "started" if step == "" else "reached"
        assert f"{word} {j['reached']}" in text
        for way, n in j["edges"].items():
            assert ways[(step, way)] == n, (step, way)
    side = next(g for g in svg.iter(f"{SVG}g") if "jnode-side" in g.get("class", ""))
    for end in ("converted", "exited"):
        total = sum(j["ended"].get(end, 0) for j in row["journey"])
        assert int(side.get(f"data-{end}", -1)) == total
        if all_time:  # then every instance that ended is one that started in range
            assert total == row["instances"][end]
    return int(nodes[""]["data-reached"])


async def test_the_diagram_numbers_are_those_of_v1_stats(client: Client) -> None:
    await flow(client)
    _, described = await client.admin("GET", "/v1/rules")
    rule_ids = sorted(r["id"] for r in described["rules"])
    assert "probe" in rule_ids and "abandoned_cart" in rule_ids
    drew = {}
    for since in (None, iso(START + 2.5 * 3600)):
        for rule_id in rule_ids:
            query = f"?since={quote(since)}" if since else ""
            status, html = await client.request("GET", f"/ui/rules/{rule_id}{query}", headers=ADMIN)
            assert status == 200, html[:300]
            sep = "&" if query else "?"
            status, stats = await client.admin("GET", f"/v1/stats{query}{sep}rule={rule_id}")
            assert status == 200, stats
            (row,) = stats["rules"]
            drew[(since, rule_id)] = check(journey_of(html), row, since is None)
    # real traffic was drawn, and the range made a difference
    assert drew[(None, "probe")] == 7 and drew[(None, "abandoned_cart")] >= 6
    assert drew[(iso(START + 2.5 * 3600), "probe")] == 1  # dan's second cart
    _, stats = await client.admin("GET", "/v1/stats?rule=probe")
    journey = {j["step"]: j for j in stats["rules"][0]["journey"]}
    assert journey["1"]["edges"] == {"then": 4, "else": 2}  # fay's cart was cleared first
    assert journey["2"]["edges"]["event"] == 1  # ann viewed the product
    # bob ordered while it waited; dan's new cart restarted his chain there
    assert journey["2"]["ended"] == {"converted": 1, "restarted": 1}
    assert journey["0"]["ended"] == {"exited": 1}  # fay cleared her cart
