"""SPEC 12's case end to end through `kaskad simulate --stats`: a generated population,
some with the CRM field child_age < 3, some browsing baby food / Nutrilon (the baby_0_3
segment), overlapping partly; the shipped one-off nutrilon_promo broadcast compares the two
audiences as variants; orders (seeded) come more often from the behaviour segment. The
stats must show each variant's funnel and the A/B comparison, and the users in neither
audience `no_variant`."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from tests.helpers import QUIET_CONFIG

ROOT = Path(__file__).resolve().parents[1]
N_USERS = 2_000
SEED = 12
BROADCAST = "2026-12-24T07:00:00Z"  # rules/nutrilon_promo.yaml: 10:00 Moscow time
ORDER_RATE = {"behaviour": 0.20, "crm": 0.03}
OPEN_RATE, CLICK_RATE = 0.6, 0.5


def _ev(etype: str, user: str, time: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": etype, "user_id": user, "time": time, "data": data}


def population(rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """Profiles for everyone; CRM parents (child_age < 3) and baby-food browsers (two views
    within 30 days), partly the same users; everyone else neither."""
    events: list[dict[str, Any]] = []
    groups: dict[str, set[str]] = {"crm": set(), "behaviour": set()}
    for n in range(N_USERS):
        uid = f"u{n:05d}"
        attributes: dict[str, Any] = {}
        roll = rng.random()
        crm = roll < 0.25 or 0.85 <= roll < 0.9  # 30% with a CRM child under 3
        browses = 0.15 <= roll < 0.45 or 0.85 <= roll < 0.9  # 35% browse; 15% both
        if crm:
            attributes["child_age"] = rng.choice([0, 1, 2])
            groups["crm"].add(uid)
        elif rng.random() < 0.2:
            attributes["child_age"] = rng.choice([4, 6, 9])  # older children: neither
        events.append(
            _ev(
                "profile.updated",
                uid,
                "2026-11-20T09:00:00Z",
                {"email": f"{uid}@shop.test", "attributes": attributes},
            )
        )
        if browses:
            groups["behaviour"].add(uid)
            day_a, day_b = sorted(rng.sample(range(1, 20), 2))
            for day, data in (
                (day_a, {"product_id": "nut1", "category": "baby_food", "brand": "Nutrilon"}),
                (day_b, {"product_id": "dia7", "category": "diapers", "brand": "Pampers"}),
            ):
                events.append(_ev("product.viewed", uid, f"2026-12-{day:02d}T12:00:00Z", data))
        elif rng.random() < 0.3:  # one view only, or of something else: not in the segment
            events.append(_ev("product.viewed", uid, "2026-12-10T12:00:00Z", {"product_id": "k1"}))
    return events, groups


def reactions(rng: random.Random, sent: dict[str, str]) -> list[dict[str, Any]]:
    """Opens and clicks of the promo by rule + channel; orders after a click, more often
    from the behaviour variant."""
    events: list[dict[str, Any]] = []
    ref = {"rule": "nutrilon_promo", "channel": "email"}
    for uid, variant in sorted(sent.items()):
        if rng.random() >= OPEN_RATE:
            continue
        events.append(_ev("message.opened", uid, "2026-12-24T08:00:00Z", ref))
        if rng.random() >= CLICK_RATE:
            continue
        events.append(_ev("message.clicked", uid, "2026-12-24T08:05:00Z", ref))
        if rng.random() < ORDER_RATE[variant] / CLICK_RATE / OPEN_RATE:
            order = {"order_id": f"o-{uid}", "total": 25.0}
            events.append(_ev("order.created", uid, "2026-12-24T09:00:00Z", order))
    return events


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """The shipped broadcast, segment and templates (the other rules are not the point)."""
    root = tmp_path / "rules"
    shutil.copytree(ROOT / "rules" / "templates", root / "templates")
    shutil.copytree(ROOT / "rules" / "segments", root / "segments")
    shutil.copy(ROOT / "rules" / "nutrilon_promo.yaml", root)
    return root


def simulate(capsys: pytest.CaptureFixture[str], tmp: Path, rules: Path, *args: str) -> str:
    (tmp / "quiet.yaml").write_text(QUIET_CONFIG, encoding="utf-8")
    capsys.readouterr()
    events, config = str(tmp / "events.jsonl"), str(tmp / "quiet.yaml")
    argv = ["simulate", "--events", events, "--rules", str(rules), "--config", config]
    code = main([*argv, "--format", "json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def write(path: Path, events: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def test_crm_against_behaviour_funnels_and_ab_in_simulate_stats(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, rules: Path
) -> None:
    rng = random.Random(SEED)
    events, groups = population(rng)
    write(tmp_path / "events.jsonl", events)
    # First pass: who got which variant, and who none.
    records = [json.loads(line) for line in simulate(capsys, tmp_path, rules).splitlines()]
    promo = [r for r in records if r["rule"] == "nutrilon_promo"]
    assert {r["time"] for r in promo} == {BROADCAST}  # fired once, at its instant
    sent = {r["user_id"]: r["variant"] for r in promo if r["status"] == "sent"}
    skipped = {r["user_id"]: r["reason"] for r in promo if r["status"] == "skipped"}
    everyone = {e["user_id"] for e in events}
    in_crm, in_behaviour = groups["crm"], groups["behaviour"]
    assert set(sent) == in_crm | in_behaviour
    assert skipped == dict.fromkeys(everyone - in_crm - in_behaviour, "no_variant")
    # baby_0_3 also holds its profile condition (child_age < 3): a CRM parent is in both
    # audiences, a browser without the CRM field only in behaviour's.
    for uid, variant in sent.items():
        assert uid in (in_crm if variant == "crm" else in_behaviour | in_crm)
    assert all(sent[u] == "behaviour" for u in in_behaviour - in_crm)
    both = in_crm
    split = Counter(sent[u] for u in both)
    assert split["crm"] > 0.3 * len(both) and split["behaviour"] > 0.3 * len(both)

    # Second pass: the same population with its reactions and orders, as stats.
    write(tmp_path / "events.jsonl", events + reactions(rng, sent))
    stats = json.loads(simulate(capsys, tmp_path, rules, "--stats"))
    [rule] = [r for r in stats["rules"] if r["rule"] == "nutrilon_promo"]
    by_name = {v["variant"]: v for v in rule["variants"]}
    assert set(by_name) == {"crm", "behaviour"}
    counts = Counter(sent.values())
    for name, row in by_name.items():
        assert row["sends"] == counts[name]
        assert 0 < row["clicked"] < row["opened"] < row["sends"]
        assert row["converted"] > 0
    assert by_name["behaviour"]["converted"] > 2 * by_name["crm"]["converted"]
    assert rule["skips"] == {"no_variant": len(skipped)}
    assert rule["funnel"]["sends"] == len(sent)
    ab = rule["ab"]
    assert ab["baseline"] == "crm"
    [row] = ab["variants"]
    assert (row["variant"], row["users"]) == ("behaviour", counts["behaviour"])
    by_cohort = {v["variant"]: v for v in rule["variants"]}
    assert by_cohort["crm"]["users"] == counts["crm"]
    conversion = row["conversion"]
    assert conversion["lift_abs"] > 0.1 and conversion["p_value"] < 0.001
    assert ab["verdict"].startswith("behaviour beats crm on conversion")
