"""Dashboard pages rendered from stats that follow the JSON contract exactly, including the
awkward cases real data rarely produces: rules gone with data left, undefined p-values,
no A/B, hostile names. (The pages over real data: test_dashboard_http.py.)"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from html import unescape
from html.parser import HTMLParser
from typing import Any

from engine.api import dashboard
from engine.api.accounts import Account
from engine.api.dashboard.overview import overview_context, parse_params
from engine.api.sessions import SESSION_S, session_ok, session_value
from engine.clock import parse_time
from engine.core.model import Message
from engine.lang.policies_config import PoliciesConfig
from engine.measure.holdout import holdout_json
from engine.measure.trends import Series, Trends

NOW = parse_time("2026-11-23T12:00:00Z")
HOSTILE = "<script>alert(1)</script>"
VOID = {"meta", "input", "br", "img", "link", "hr", "rect", "line", "circle", "option"}


def counts(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "sends": 0,
        "skipped": 0,
        "delivered": 0,
        "opened": 0,
        "clicked": 0,
        "converted": 0,
        "revenue": 0.0,
        "skips": {},
    }
    row.update(values)
    return row


def metric(rate: float, base: float, p: float | None, ci: list[float]) -> dict[str, Any]:
    lift = round(rate - base, 4)
    return {
        "rate": rate,
        "baseline_rate": base,
        "lift_abs": lift,
        "lift_rel": round(lift / base, 4) if base else None,
        "p_value": p,
        "ci95": ci,
    }


def rule_row(rule: str, name: str, state: str = "active", **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "rule": rule,
        "name": name,
        "state": state,
        "instances": {
            "started": 0,
            "active": 0,
            "converted": 0,
            "exited": 0,
            "completed": 0,
            "expired": 0,
            "restarted": 0,
            "stopped": 0,
            "error": 0,
        },
        "funnel": {k: v for k, v in counts().items() if k != "skips"},
        "skips": {},
        "steps": [],
        "channels": [],
        "variants": [],
        "ab": None,
        "holdout": None,
    }
    row.update(extra)
    return row


def contract_stats() -> dict[str, Any]:
    """Stats as engine.stats returns them: a loaded A/B rule, a deleted rule with data."""
    cart = rule_row(
        "abandoned_cart",
        "Cart reminder, then a promo",
        instances={
            "started": 40,
            "active": 5,
            "converted": 12,
            "exited": 3,
            "completed": 18,
            "expired": 2,
            "restarted": 0,
            "stopped": 0,
            "error": 0,
        },
        funnel={
            "sends": 70,
            "skipped": 6,
            "delivered": 66,
            "opened": 30,
            "clicked": 14,
            "converted": 9,
            "revenue": 812.5,
        },
        skips={"no_address": 4, "quiet_hours": 2},
        steps=[
            {"step": "1", "channel": "email", "variant": None, **counts(sends=40, delivered=38)},
            {
                "step": "3",
                "channel": "whatsapp",
                "variant": "B",
                **counts(sends=5, skipped=4, skips={"no_address": 4}),
            },
        ],
        channels=[{"channel": "email", **counts(sends=65, converted=9, revenue=812.5)}],
        variants=[
            {"variant": "A", "users": 120, **counts(sends=20)},
            {"variant": "B", "users": 118, **counts(sends=21)},
        ],
        ab={
            "baseline": "A",
            "min_sample": 100,
            "variants": [
                {
                    "variant": "B",
                    "users": 118,
                    "conversion": metric(0.0847, 0.05, 0.0031, [0.0121, 0.0573]),
                    "clicks": metric(0.0, 0.0, None, [0.0, 0.0]),
                }
            ],
            "verdict": "B beats A on conversion: +3.5 points (+69%), p = 0.003.",
        },
    )
    gone = rule_row(
        "old_promo",
        "old_promo",
        state="deleted",
        instances={**rule_row("x", "x")["instances"], "started": 3, "stopped": 3},
        funnel={**rule_row("x", "x")["funnel"], "sends": 3},
    )
    return {
        "generated_at": "2026-11-23T12:00:00Z",
        "since": None,
        "until": None,
        "attribution": {"window": "7d", "touch": "click"},
        "orders": {
            "count": 20,
            "revenue": 1999.99,
            "attributed": 9,
            "attributed_revenue": 812.5,
            "by_source": {
                "online": {"count": 18, "revenue": 1800.0},
                "offline": {"count": 2, "revenue": 199.99},
            },
        },
        "rules": [cart, gone],
        "global_holdout": None,
    }


DESCRIBED: dict[str, Any] = {
    "rules": [
        {
            "id": "abandoned_cart",
            "path": "rules/abandoned_cart.yaml",
            "description": "Cart reminder, then a promo",
            "state": "active",
            "errors": [],
        },
        {
            "id": "broken_rule",
            "path": "rules/broken_rule.yaml",
            "state": "invalid",
            "errors": ["rules/broken_rule.yaml:3:7: 'delya' is an invalid option"],
        },
    ],
    "templates": [],
    "problems": ["rules/broken_rule.yaml:3:7: 'delya' is an invalid option"],
    "loaded_at": NOW,
}


class Balance(HTMLParser):
    """Every element opened is closed, in order: the templates are not broken."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def page(template: str, **context: Any) -> str:
    _, since = dashboard.since_context(None, NOW)
    defaults = {"request_path": "/", "logout": True, **since}
    html = dashboard.render(template, **{**defaults, **context})
    checker = Balance()
    checker.feed(html)
    checker.close()
    assert not checker.errors and checker.stack == [], (checker.errors, checker.stack)
    return html


def trends_of(stats: dict[str, Any] | None) -> Trends:
    """The stats' rules as trend rows of one day (the overview reads those)."""
    day = int(NOW // 86400 * 86400)
    t = Trends(86400, [day - 86400, day] if stats else [], {}, Series(), Series(), {})
    for r in (stats or {}).get("rules", []):
        s = t.rules.setdefault(r["rule"], Series())
        funnel = r["funnel"]
        for target in (s, t.overall):
            numbers = [funnel["sends"] + funnel["skipped"]]
            numbers += [funnel[k] for k in ("sends", "skipped")] + [0]
            numbers += [funnel[k] for k in ("delivered", "opened", "clicked")]
            target.add(day, numbers)
            target.add_orders(day, "EUR", funnel["converted"], funnel["revenue"])
    if stats:
        t.orders.conversions[day] = stats["orders"]["count"]
        t.orders.revenue["EUR"] = {day: stats["orders"]["revenue"]}
    return t


def overview(
    stats: dict[str, Any] | None,
    described: dict[str, Any] = DESCRIBED,
    query: dict[str, str] | None = None,
) -> str:
    context = overview_context(
        t=trends_of(stats),
        errors={"abandoned_cart": 2} if stats else {},
        described=described,
        loaded={},
        params=parse_params(query or {}),
        since_param="all",
        attribution=PoliciesConfig().attribution,
        global_holdout=(stats or {}).get("global_holdout"),
    )
    return page(
        "overview.html",
        stats_error=None if stats else "Statistics are not available.",
        **context,
    )


def row_of(html: str, rule: str) -> str:
    match = re.search(rf'<tr id="rule-{rule}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {rule}"
    return text_of(match.group(1))


def text_of(html: str) -> str:
    """The visible text, whitespace collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def test_overview_lists_loaded_broken_and_deleted_rules_with_their_numbers() -> None:
    html = overview(contract_stats())
    # sends, conversions, revenue, errors (instances stopped by bad data), sparkline title
    assert row_of(html, "abandoned_cart") == (
        "abandoned_cart Cart reminder, then a promo active 70 9 812.50 EUR "
        "2 stopped by bad data Sends per day of abandoned_cart: 70 in all"
    )
    assert row_of(html, "broken_rule") == (
        "broken_rule invalid 0 0 — rules/broken_rule.yaml:3:7: 'delya' is an invalid option"
    )
    assert row_of(html, "old_promo") == (
        "old_promo deleted 3 0 0.00 EUR 0 Sends per day of old_promo: 3 in all"
    )
    # One sparkline per rule with data; the broken rule without any is folded away.
    assert html.count('class="chart sparkline"') == 2
    assert re.search(r'<details class="quiet" id="quiet-rules">\s*<summary>1 rule without', html)
    assert 'aria-label="Sends per day, all rules"' in html
    assert "Orders: <b>20</b>\n   (1\u202f999.99 EUR)" in html
    assert "last click within\n   7d" in html


def test_overview_sorts_by_revenue_and_filters_by_state() -> None:
    html = overview(contract_stats(), query={"sort": "revenue", "dir": "asc"})
    assert re.findall(r'<tr id="rule-([^"]+)">', html) == [
        "old_promo",
        "abandoned_cart",
        "broken_rule",
    ]
    assert 'aria-sort="ascending"><a href="/?sort=revenue&amp;dir=desc">Revenue ▲</a>' in html
    html = overview(contract_stats(), query={"state": "deleted"})
    assert re.findall(r'<tr id="rule-([^"]+)">', html) == ["old_promo"]
    assert '<option value="deleted" selected>deleted</option>' in html


def test_overview_without_stats_still_lists_the_rules() -> None:
    html = overview(None)
    assert "Statistics are not available." in html
    assert row_of(html, "abandoned_cart").startswith("abandoned_cart Cart reminder")
    assert "Trends" not in html


def test_hostile_names_are_escaped_everywhere() -> None:
    stats = contract_stats()
    stats["rules"][0]["name"] = HOSTILE
    stats["rules"][0]["skips"] = {HOSTILE: 1}
    stats["rules"][0]["ab"]["verdict"] = HOSTILE
    described = copy.deepcopy(DESCRIBED)
    described["rules"][0]["description"] = HOSTILE
    described["problems"] = [HOSTILE]
    html = overview(stats, described)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    message = Message(
        id="m1",
        instance_id="i1",
        rule_id="abandoned_cart",
        user_id=HOSTILE,
        step="1",
        channel="email",
        template="cart_reminder",
        variant=None,
        category="marketing",
        status="skipped",
        created_at=NOW,
        reason=HOSTILE,
        detail=HOSTILE,
    )
    html = page(
        "messages.html",
        messages=[message],
        values={
            "rule": HOSTILE,
            "channel": "",
            "status": "",
            "reason": HOSTILE,
            "user_id": HOSTILE,
            "from": HOSTILE,
            "to": "",
        },
        statuses=("sent", "skipped"),
        channels=("email",),
        reasons=(HOSTILE,),
        rule_ids=[HOSTILE],
        limit=100,
        first_url="/ui/messages",
        paged=True,
        next_url="/ui/messages?cursor=x",
    )
    assert "<script>" not in html
    assert "/ui/users?q=%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in html


def test_rule_page_shows_ab_table_verdict_steps_and_skip_reasons() -> None:
    stats = contract_stats()
    [row] = [r for r in dashboard.merge_rules(DESCRIBED, stats) if r["id"] == "abandoned_cart"]
    html = page("rule.html", row=row, rule=None, stats_error=None, messages=[])
    text = text_of(html)
    assert 'id="verdict">B beats A on conversion: +3.5 points (+69%), p = 0.003.<' in html
    # variant, users, metric, rate, baseline, lift, relative, p, CI
    assert "A (baseline) 120 conversion 5.0% clicks 0.0% B 118" in text
    assert "B 118 conversion 8.5% 5.0% +3.5 pt 69.4% 0.003 [+1.2 pt, +5.7 pt]" in text
    assert "clicks 0.0% 0.0% +0.0 pt — — [+0.0 pt, +0.0 pt]" in text  # undefined: a dash
    assert "no_address 4 quiet_hours 2" in text  # skip reasons, most frequent first
    assert "3 whatsapp B 5 4 0 0 0 0 0.00 no_address: 4" in text
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart lift"' in html
    assert "converted 12" in text and "expired 2" in text


def test_rule_page_of_a_deleted_rule_without_ab() -> None:
    stats = contract_stats()
    [row] = [r for r in dashboard.merge_rules(DESCRIBED, stats) if r["id"] == "old_promo"]
    html = page("rule.html", row=row, rule=None, stats_error=None, messages=[])
    assert "This rule is no longer loaded" in html
    assert "A/B test" not in html
    assert "Nothing was skipped." in html


def test_rule_page_and_overview_show_the_holdouts() -> None:
    stats = contract_stats()
    measured = holdout_json(
        (1000, 150, 9000.0),
        (250, 20, 1000.0),
        share=20.0,
        converted_by="goal",
        min_sample=100,
        subject="The rule",
    )
    stats["rules"][0]["holdout"] = measured
    stats["global_holdout"] = holdout_json(
        (3000, 300, 0.0),
        (40, 4, 0.0),
        share=5.0,
        converted_by="order",
        min_sample=100,
        subject="Marketing",
    )
    [row] = [r for r in dashboard.merge_rules(DESCRIBED, stats) if r["id"] == "abandoned_cart"]
    html = page("rule.html", row=row, rule=None, stats_error=None, messages=[])
    text = text_of(html)
    assert (
        'id="holdout-verdict">The rule adds 7.0 pp conversion (95% CI 3.0..11.0 pp), p = 0.004.<'
    ) in html
    assert "20% held out; converted by the rule's goal; at least 100 users" in text
    # group, users, converted, rate, revenue, per user
    assert "Treatment 1 000 150 15.0% 9 000.00 9.00" in text
    assert "Holdout 250 20 8.0% 1 000.00 4.00" in text
    # lift, relative, p, CI, incremental conversions and revenue
    assert "+7.0 pt 87.5% 0.004 [+3.0 pt, +11.0 pt] +70.0 5 000.00" in text
    assert "Global holdout" not in html  # the overview's
    html = overview(stats)
    text = text_of(html)
    assert 'id="global-holdout-verdict">Not enough data yet: 40 of 100 users in the holdout.<' in (
        html
    )
    assert "Everyone else 3 000 300 10.0%" in text and "Global holdout 40 4 10.0%" in text
    # A rule without a holdout, and stats without a global one, show neither.
    stats["rules"][0]["holdout"] = None
    stats["global_holdout"] = None
    assert "Global holdout" not in overview(stats)
    [row] = [r for r in dashboard.merge_rules(DESCRIBED, stats) if r["id"] == "abandoned_cart"]
    assert "<h2>Holdout</h2>" not in page(
        "rule.html", row=row, rule=None, stats_error=None, messages=[]
    )


def test_since_parsing_is_forgiving_but_says_what_it_could_not_read() -> None:
    day = 86400.0
    assert dashboard.parse_since(None, NOW) == (None, None)
    assert dashboard.parse_since("all", NOW) == (None, None)
    assert dashboard.parse_since("7d", NOW) == (NOW - 7 * day, None)
    assert dashboard.parse_since("2026-11-01", NOW) == (parse_time("2026-11-01T00:00:00Z"), None)
    assert dashboard.parse_since("2026-11-01T06:00:00Z", NOW)[0] == parse_time("2026-11-01T06:00Z")
    # Further back than the epoch, or absurdly far: all time.
    assert dashboard.parse_since("99999999999d", NOW) == (None, None)
    assert dashboard.parse_since("9" * 400 + "d", NOW) == (None, None)
    assert dashboard.parse_since("0001-01-01", NOW) == (None, None)
    # In the future: nothing yet, rather than an error.
    assert dashboard.parse_since("9999-12-31", NOW) == (parse_time("9999-12-31"), None)
    since, problem = dashboard.parse_since("last tuesday", NOW)
    assert since is None and problem is not None and "'last tuesday'" in problem


def test_session_cookie_is_an_expiring_hmac_of_the_account_not_the_token() -> None:
    secret, nonce = "s" * 64, "0123456789abcdef"
    key = hashlib.sha256(b"admin-token").hexdigest()
    admin = Account("admin", "admin", key)
    value = session_value(secret, "admin", key, int(NOW) + 60, nonce)
    assert "admin-token" not in value and key not in value
    assert value.startswith("admin.")
    assert session_ok(secret, admin, value, NOW)
    assert not session_ok(secret, admin, value, NOW + 61)  # expired
    rotated = Account("admin", "admin", hashlib.sha256(b"other-token").hexdigest())
    assert not session_ok(secret, rotated, value, NOW)  # token rotated
    name, expires, _, mac = value.split(".")
    forged = f"{name}.{int(NOW) + 10**6}.{nonce}.{mac}"  # expiry pushed out
    assert not session_ok(secret, admin, forged, NOW)
    # Another account's name on this MAC: refused.
    ann = Account("ann", "admin", key)
    assert not session_ok(secret, ann, f"ann.{expires}.{nonce}.{mac}", NOW)
    assert not session_ok(secret, admin, "garbage", NOW)
    assert not session_ok(secret, admin, f"admin.²³.{nonce}.x", NOW)
    assert not session_ok(secret, admin, f"admin.{expires}.{nonce.upper()}.{mac}", NOW)


def test_a_cookie_cannot_be_made_from_the_config_alone() -> None:
    """The config holds the token's SHA-256: a MAC keyed by it alone (as cookies once were)
    is refused; so is a well-made cookie that claims to last longer than a session."""
    secret, nonce = "s" * 64, "0123456789abcdef"
    key = hashlib.sha256(b"admin-token").hexdigest()
    admin = Account("admin", "admin", key)
    far = int(NOW) + 10**8
    old_style = hmac.new(key.encode(), f"kaskad-dashboard:admin:{far}".encode(), hashlib.sha256)
    assert not session_ok(secret, admin, f"admin.{far}.{old_style.hexdigest()}", NOW)
    keyed_by_hash = session_value(key, "admin", key, int(NOW) + 60, nonce)
    assert not session_ok(secret, admin, keyed_by_hash, NOW)
    # Made with the secret but 13 hours ahead: longer than any session, refused.
    longer = session_value(secret, "admin", key, int(NOW) + SESSION_S + 3600, nonce)
    assert not session_ok(secret, admin, longer, NOW)
    # A replica whose clock runs a few seconds behind the one that made it still takes it.
    made = session_value(secret, "admin", key, int(NOW) + SESSION_S, nonce)
    assert session_ok(secret, admin, made, NOW - 5)
