"""GET /v1/stats, POST /v1/rfm/recompute, the timeline's orders and `kaskad stats`, against
an in-process daemon (real HTTP, real SQLite file, virtual clock)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main as cli_main
from engine.clock import parse_time

from .helpers import Client, independent_cart_rules


@pytest.fixture
def rules_dir(rules_dir: Path) -> Path:
    """Both cart rules send for the same carts here (helpers.independent_cart_rules)."""
    return independent_cart_rules(rules_dir)


HOUR = 3600.0
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}


def event(etype: str, user: str, data: dict[str, Any] | None = None, **extra: Any) -> dict:
    return {"type": etype, "user_id": user, "data": data or {}, **extra}


async def post(client: Client, *events: dict[str, Any]) -> None:
    status, body = await client.post_events(list(events))
    assert status == 202, body
    await client.daemon.pump()


async def carts(client: Client, *users: str) -> None:
    """Users with an email address and a cart, then the first reminder 1 h later."""
    for user in users:
        await post(client, event("profile.updated", user, {"email": f"{user}@x.test"}))
        await post(client, event("cart.updated", user, CART))
    await client.advance(HOUR)


async def stats(client: Client, query: str = "") -> dict[str, Any]:
    status, body = await client.admin("GET", f"/v1/stats{query}")
    assert status == 200, body
    return body


def rule(body: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in body["rules"] if r["rule"] == rule_id)


async def test_stats_count_orders_attribution_and_bad_totals(client: Client) -> None:
    await carts(client, "u1", "u2")
    await post(
        client,
        event("message.clicked", "u1", {"rule": "abandoned_cart", "channel": "email"}),
    )
    await client.advance(HOUR)
    await post(
        client,
        event("order.created", "u1", {"order_id": "o1", "total": 80}, id="e1"),
        # The shop re-sends the order with a new event id: counted once.
        event("order.created", "u1", {"order_id": "o1", "total": 80}, id="e2"),
        event("order.created", "u2", {"order_id": "o2", "total": -5, "source": "offline"}),
        event("order.created", "u2", {"order_id": "o3", "source": "offline"}),
    )
    body = await stats(client)
    assert body["orders"] == {
        "count": 3,
        "revenue": 80.0,
        "attributed": 1,
        "attributed_revenue": 80.0,
        "by_source": {
            "online": {"count": 1, "revenue": 80.0},
            "offline": {"count": 2, "revenue": 0.0},
        },
    }
    cart = rule(body, "abandoned_cart")
    assert cart["state"] == "active"
    assert cart["instances"] == {
        "started": 2,
        "active": 0,
        "converted": 2,
        "exited": 0,
        "completed": 0,
        "expired": 0,
        "restarted": 0,
        "stopped": 0,
        "error": 0,
    }
    assert cart["funnel"] == {
        "sends": 2,
        "skipped": 0,
        "delivered": 1,
        "opened": 1,
        "clicked": 1,
        "converted": 1,
        "revenue": 80.0,
    }
    assert cart["steps"][0] | {"skips": {}} == {
        "step": "1",
        "name": "email: cart_reminder",
        "channel": "email",
        "variant": None,
        "sends": 2,
        "skipped": 0,
        "delivered": 1,
        "opened": 1,
        "clicked": 1,
        "converted": 1,
        "revenue": 80.0,
        "skips": {},
    }
    # The quick cart rule also mailed both users; its mails were not clicked.
    quick = rule(body, "abandoned_cart_quick")
    assert (quick["funnel"]["sends"], quick["funnel"]["converted"]) == (2, 0)
    only = await stats(client, "?rule=abandoned_cart")
    assert [r["rule"] for r in only["rules"]] == ["abandoned_cart"]
    status, profile = await client.admin("GET", "/v1/profiles/u1")
    assert status == 200
    assert (profile["orders_count"], profile["revenue"]) == (1, 80.0)

    status, timeline = await client.admin("GET", "/v1/users/u1/timeline")
    assert status == 200
    [o1] = timeline["orders"]
    assert o1["order_id"] == "o1" and o1["total"] == 80.0 and o1["source"] == "online"
    assert o1["attributed"] | {"message_id": "-", "touch_at": "-"} == {
        "message_id": "-",
        "rule": "abandoned_cart",
        "step": "1",
        "channel": "email",
        "variant": None,
        "touch": "click",
        "touch_at": "-",
    }
    kinds = [item["kind"] for item in timeline["timeline"]]
    assert kinds[0] == "order.created" and "message.clicked" in kinds
    status, other = await client.admin("GET", "/v1/users/u2/timeline")
    assert [(o["order_id"], o["total"], o["attributed"]) for o in other["orders"]] == [
        ("o3", None, None),
        ("o2", None, None),
    ]


async def test_bad_ranges_get_a_400_huge_ones_an_answer(client: Client) -> None:
    status, body = await client.admin("GET", "/v1/stats?since=yesterday")
    assert status == 400
    assert body["error"]["code"] == "invalid_parameter"
    assert body["error"]["details"] == [
        {
            "field": "since",
            "message": "since: 'yesterday' is neither an ISO 8601 time "
            "(2026-11-01T00:00:00Z) nor a duration before now (-7d)",
        }
    ]
    status, body = await client.admin("GET", "/v1/stats?since=-1d&until=-2d")
    assert status == 400 and body["error"]["details"][0]["field"] == "until"
    status, body = await client.admin("GET", "/v1/stats?since=-999999999999w&until=9999-12-31")
    assert status == 200
    assert (body["since"], body["until"]) == ("0001-01-01T00:00:00Z", "9999-12-31T00:00:00Z")
    status, body = await client.admin("GET", "/v1/stats?rule=no_such_rule")
    assert status == 200 and body["rules"] == []
    status, body = await client.request("GET", "/v1/stats")
    assert status == 401
    status, body = await client.request("POST", "/v1/rfm/recompute")
    assert status == 401


async def test_a_deleted_rule_and_a_variant_added_mid_test(client: Client, rules_dir: Path) -> None:
    users = [f"u{n}" for n in range(6)]
    await carts(client, *users)
    for _ in range(3):  # day by day (a 3-day jump would expire the timers: max_lateness)
        await client.advance(24 * HOUR)
    # The promo step: each user got a variant.
    before = rule(await stats(client), "abandoned_cart")
    assert [v["variant"] for v in before["variants"]] == ["A", "B"]
    assert sum(v["users"] for v in before["variants"]) == 6
    # The quick rule is deleted, the cart rule gets a third variant.
    (rules_dir / "abandoned_cart_quick.yaml").unlink()
    cart = rules_dir / "abandoned_cart.yaml"
    cart.write_text(
        cart.read_text().replace(
            "- {name: B, weight: 50, template: cart_promo_b}",
            "- {name: B, weight: 25, template: cart_promo_b}\n        - {name: C, weight: 25}",
        )
    )
    status, body = await client.admin("POST", "/v1/rules/reload")
    assert status == 200 and body["problems"] == []
    after = await stats(client)
    quick = rule(after, "abandoned_cart_quick")
    assert (quick["state"], quick["name"]) == ("deleted", "abandoned_cart_quick")
    assert quick["funnel"]["sends"] == 12  # its data stays: 2 mails to each of 6 users
    cart_stats = rule(after, "abandoned_cart")
    assert [v["variant"] for v in cart_stats["variants"]] == ["A", "B", "C"]
    assert [v["users"] for v in cart_stats["variants"]] == [
        *(v["users"] for v in before["variants"]),
        0,
    ]
    assert [v["variant"] for v in cart_stats["ab"]["variants"]] == ["B", "C"]
    assert cart_stats["ab"]["verdict"] == "Not enough data yet: 0 of 100 users per variant."


VIP_RULE = """
rule: vip
trigger: {event: vip.offer}
audience: user.rfm == 'champions'
steps:
  - send: {template: weekly_promo, cascade: [email]}
"""


async def test_rfm_recompute_feeds_audiences(client: Client, rules_dir: Path) -> None:
    (rules_dir / "vip.yaml").write_text(VIP_RULE)
    status, body = await client.admin("POST", "/v1/rules/reload")
    assert status == 200 and body["problems"] == []
    # c1 ordered most recently, most often, for most money.
    for n, user in enumerate(("c5", "c4", "c3", "c2", "c1"), start=1):
        await post(client, event("profile.updated", user, {"email": f"{user}@x.test"}))
        for k in range(n):
            await post(
                client, event("order.created", user, {"order_id": f"{user}-{k}", "total": 10 * n})
            )
        await client.advance(HOUR)
    status, result = await client.admin("POST", "/v1/rfm/recompute")
    assert status == 200
    assert result["customers"] == 5 and result["changed"] == 5
    assert result["segments"]["champions"] == 1
    status, profile = await client.admin("GET", "/v1/profiles/c1")
    assert status == 200
    assert profile["rfm"] == "champions"
    assert profile["rfm_scores"] == {"r": 5, "f": 5, "m": 5}
    await post(client, *(event("vip.offer", u) for u in ("c1", "c2", "c5")))
    status, body = await client.admin("GET", "/v1/messages?rule=vip")
    assert [(m["user_id"], m["status"]) for m in body["messages"]] == [("c1", "sent")]
    # The nightly job is the same recompute, fired by the engine loop at 03:30 (UTC here)
    # on the daemon's clock.
    for k in range(3):
        await post(client, event("order.created", "c5", {"order_id": f"c5-more-{k}", "total": 90}))
    status, profile = await client.admin("GET", "/v1/profiles/c5")
    assert profile["rfm"] != "champions"
    clock = client.daemon.clock
    await client.advance(parse_time("2026-11-24T03:29:59Z") - clock.now())
    status, profile = await client.admin("GET", "/v1/profiles/c5")
    assert profile["rfm_scores"] != {"r": 5, "f": 5, "m": 5}
    await client.advance(1)
    status, profile = await client.admin("GET", "/v1/profiles/c5")
    assert profile["rfm_scores"]["m"] == 5


async def test_kaskad_stats_prints_what_the_api_answers(
    client: Client, tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await carts(client, "u1")
    await post(client, event("order.created", "u1", {"order_id": "o1", "total": 12.5}))
    config = tmp_path / "cli.yaml"
    config.write_text(
        f'storage: {{url: "sqlite:///{tmp_path}/kaskad.db"}}\n'
        f'rules: {{path: "{rules_dir}"}}\n'
        "policies: {quiet_hours: null, frequency_caps: []}\n"
    )
    api = await stats(client)
    assert (
        await asyncio.to_thread(cli_main, ["stats", "--config", str(config), "--format", "json"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed | {"generated_at": "-"} == api | {"generated_at": "-"}
    argv = ["stats", "--config", str(config), "--rule", "abandoned_cart"]
    assert await asyncio.to_thread(cli_main, argv) == 0
    text = capsys.readouterr().out
    assert "abandoned_cart: Cart reminder, then a promo" in text
    assert "orders: 1 (online 1, offline 0), revenue 12.50" in text
    assert await asyncio.to_thread(cli_main, [*argv, "--since", "soon"]) == 2
    assert "--since: 'soon' is neither" in capsys.readouterr().err
    assert await asyncio.to_thread(cli_main, ["rfm", "--config", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "1 customers scored, 1 profiles updated",
        "  need_attention         1",  # a lone customer is in the middle
    ]
    status, profile = await client.admin("GET", "/v1/profiles/u1")
    assert status == 200
    assert (profile["rfm"], profile["rfm_scores"]) == ("need_attention", {"r": 3, "f": 3, "m": 3})
    assert (profile["orders_count"], profile["email"]) == (1, "u1@x.test")  # the rest kept
    missing = tmp_path / "missing.yaml"
    missing.write_text(f'storage: {{url: "sqlite:///{tmp_path}/none/kaskad.db"}}\n')
    assert await asyncio.to_thread(cli_main, ["stats", "--config", str(missing)]) == 2
    assert "no database at" in capsys.readouterr().err
