"""One vocabulary: rule states and instance statuses are the same words in /v1/rules,
/v1/stats, `kaskad stats`, the timeline and the dashboard; every API time is ISO 8601 UTC."""

from __future__ import annotations

import re
from typing import Any

from engine.measure.stats import INSTANCE_KEYS, RULE_STATES

from .helpers import Client

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}


def event(etype: str, user: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": etype, "user_id": user, "data": data or {}}


async def post(client: Client, *events: dict[str, Any]) -> None:
    status, body = await client.post_events(list(events))
    assert status == 202, body
    await client.daemon.pump()


async def get(client: Client, path: str) -> Any:
    status, body = await client.admin("GET", path)
    assert status == 200, body
    return body


def badge(html: str, rule: str) -> str:
    row = re.search(rf'<tr id="rule-{rule}">(.*?)</tr>', html, re.S)
    assert row, rule
    found = re.search(r'<span class="badge (\w+)">(\w+)</span>', row.group(1))
    assert found and found[1] == found[2]
    return found[1]


async def test_rule_states_are_the_same_words_everywhere(client: Client, rules_dir: Any) -> None:
    await post(client, event("profile.updated", "u1", {"email": "u1@x.test"}))
    await post(client, event("cart.updated", "u1", CART))  # data for abandoned_cart_quick
    (rules_dir / "broken.yaml").write_text(
        "rule: broken\ntrigger: {event: a.b}\nsteps: [{wait: 1x}]\n"
    )
    changed = rules_dir / "abandoned_cart.yaml"
    changed.write_text(changed.read_text().replace("wait: 1h", "wiat: 1h"))
    (rules_dir / "abandoned_cart_quick.yaml").unlink()
    status, _ = await client.admin("POST", "/v1/rules/reload")
    assert status == 200
    expected = {
        "bonus_credited": "active",
        "abandoned_cart": "stale",  # the previous version runs
        "broken": "invalid",
        "abandoned_cart_quick": "deleted",  # only its numbers are left
    }

    listed = await get(client, "/v1/rules")
    states = {r["id"]: r["state"] for r in listed["rules"]}
    assert ISO_Z.match(listed["loaded_at"])  # was a float
    stats = await get(client, "/v1/stats")
    in_stats = {r["rule"]: r["state"] for r in stats["rules"]}
    _, html = await client.request("GET", "/", headers={"Authorization": "Bearer admin-token"})
    for rule, state in expected.items():
        assert in_stats[rule] == state, rule
        assert badge(html, rule) == state, rule  # a deleted one has only a skip (group_busy)
        if state != "deleted":
            assert states[rule] == state, rule
    assert "abandoned_cart_quick" not in states
    assert set(states.values()) | set(in_stats.values()) <= set(RULE_STATES)


async def test_instance_statuses_are_the_same_words_in_stats_and_the_timeline(
    client: Client,
) -> None:
    await post(client, event("profile.updated", "u1", {"email": "u1@x.test"}))
    await post(client, event("cart.updated", "u1", CART))
    await post(client, event("cart.updated", "u1", CART))  # restarts both cart chains
    await client.advance(3600)
    await post(client, event("order.created", "u1", {"order_id": "o1", "total": 30}))
    timeline = await get(client, "/v1/users/u1/timeline")
    seen = {(i["rule"], i["status"]) for i in timeline["instances"]}
    assert ("abandoned_cart", "converted") in seen and ("abandoned_cart", "restarted") in seen
    stats = await get(client, "/v1/stats?rule=abandoned_cart")
    instances = stats["rules"][0]["instances"]
    assert list(instances) == list(INSTANCE_KEYS)
    assert {s for r, s in seen if r == "abandoned_cart"} <= set(instances)
    assert (instances["converted"], instances["restarted"], instances["started"]) == (1, 1, 2)
    _, html = await client.request(
        "GET", "/ui/rules/abandoned_cart", headers={"Authorization": "Bearer admin-token"}
    )
    table = html.partition('<table class="instances">')[2].partition("</table>")[0]
    assert re.findall(r"<th>(\w+)</th>", table) == list(INSTANCE_KEYS)


def times(value: Any, where: str = "") -> list[tuple[str, Any]]:
    """Every time-like field (`*_at`, `time`, `since`, `until`) with its value."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("_at") or key in ("time", "since", "until"):
                found.append((f"{where}.{key}", item))
            found += times(item, f"{where}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found += times(item, f"{where}[{n}]")
    return found


async def test_every_api_time_is_iso_utc(client: Client) -> None:
    await post(client, event("profile.updated", "u1", {"email": "u1@x.test"}))
    await post(client, event("cart.updated", "u1", CART))
    await client.advance(3600)
    await post(client, event("order.created", "u1", {"order_id": "o1", "total": 30}))
    found: list[tuple[str, Any]] = []
    for path in (
        "/v1/rules",
        "/v1/stats?since=-7d",
        "/v1/messages",
        "/v1/users/u1/timeline",
        "/v1/profiles/u1",
    ):
        found += times(await get(client, path), path)
    assert len(found) > 20
    bad = [(where, v) for where, v in found if v is not None and not ISO_Z.match(str(v))]
    assert bad == []
    assert all(isinstance(v, str) for where, v in found if where.endswith(".loaded_at"))
