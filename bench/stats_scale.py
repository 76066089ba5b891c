"""How long `kaskad stats` takes on a big store: N messages written straight into a fresh
SQLite file with kaskad's schema, then compute_stats timed (all time, one rule, 10 days).

    python -m bench.stats_scale [--messages 1000000] [--seed 1]

Shape (seeded): 20 rules, 3 of them A/B; 1-3 messages per instance, 10% skipped by the cap,
80% delivered, 30% of those opened, 20% of those clicked; one order per 10 messages with
random touches; a user per 5 messages. Prints one JSON object (seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.api.dashboard.journey import journey_svg
from engine.lang.policies_config import PoliciesConfig
from engine.lang.ruleset import load_ruleset
from engine.measure.stats import compute_stats
from engine.store.rows import INSTANCE_COLUMNS, MESSAGE_COLUMNS, ORDER_COLUMNS
from engine.store.sqlite import SqliteStore

T0 = 1.7e9
DAY = 86400.0


def _rows(n_messages: int, seed: int) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    rnd = random.Random(seed)
    users = max(1, n_messages // 5)
    instances: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    while len(messages) < n_messages:
        iid = f"i{len(instances)}"
        rule = f"rule_{rnd.randrange(20)}"
        uid = f"u{rnd.randrange(users)}"
        variant = rnd.choice("AB") if rule in ("rule_0", "rule_1", "rule_2") else None
        start = T0 + rnd.random() * 90 * DAY
        status = rnd.choice(["active", "converted", "exited", "completed", "restarted"])
        instances.append(
            {
                "id": iid,
                "rule_id": rule,
                "rule_version": "v1",
                "user_id": uid,
                "key": "",
                "status": status,
                "pc": 0,
                "trigger": "{}",
                "variant": variant,
                "started_at": start,
            }
        )
        for step in range(rnd.randrange(1, 4)):
            created = start + step * DAY
            skipped = rnd.random() < 0.1
            m = {
                "id": f"m{len(messages)}",
                "instance_id": iid,
                "rule_id": rule,
                "user_id": uid,
                "step": str(step * 2 + 1),
                "channel": rnd.choice(["email", "mobile_push", "sms"]),
                "template": "t",
                "variant": variant,
                "category": "marketing",
                "status": "skipped" if skipped else "sent",
                "reason": "frequency_cap" if skipped else None,
                "created_at": created,
                "sent_at": None if skipped else created,
                "attempts": 0 if skipped else 1,
            }
            if not skipped and rnd.random() < 0.8:
                m["delivered_at"] = created + 60
                if rnd.random() < 0.3:
                    m["opened_at"] = created + 600
                    if rnd.random() < 0.2:
                        m["clicked_at"] = created + 900
            messages.append(m)
    clicked = [m for m in messages if m.get("clicked_at")]
    orders = []
    for k in range(n_messages // 10):
        sent = rnd.choice(messages)
        click = rnd.choice(clicked) if clicked else None
        row: dict[str, Any] = {
            "user_id": sent["user_id"],
            "order_id": f"o{k}",
            "at": sent["created_at"] + rnd.random() * 10 * DAY,
            "total": rnd.choice([10.0, 99.5, None]),
            "currency": "EUR",
            "source": rnd.choice(["online", "offline"]),
        }
        for kind, m, field in (
            ("click", click, "clicked_at"),
            ("open", sent, "opened_at"),
            ("send", sent, "sent_at"),
        ):
            if m is not None and m.get(field) is not None:
                row |= {
                    f"{kind}_id": m["id"],
                    f"{kind}_at": m[field],
                    f"{kind}_rule": m["rule_id"],
                    f"{kind}_step": m["step"],
                    f"{kind}_channel": m["channel"],
                    f"{kind}_variant": m["variant"],
                }
        orders.append(row)
    profiles = []
    for u in range(users):
        n = rnd.randrange(0, 6)
        last = f"2026-0{rnd.randrange(1, 9)}-1{rnd.randrange(0, 9)}T10:00:00Z" if n else None
        data = {
            "user_id": f"u{u}",
            "orders_count": n,
            "revenue": round(n * rnd.random() * 100, 2),
            "last_order_at": last,
        }
        profiles.append((f"u{u}", json.dumps(data), 0.0))
    return (
        [tuple(i.get(c) for c in INSTANCE_COLUMNS) for i in instances],
        [tuple(m.get(c) for c in MESSAGE_COLUMNS) for m in messages],
        [tuple(o.get(c) for c in ORDER_COLUMNS) for o in orders],
        profiles,
    )


def _journey_rows(instances: list[Any], messages: list[Any]) -> list[tuple[Any, ...]]:
    """journey_counts as the engine keeps them: each instance started, reached its steps
    (a wait before each send) and ended where its last message was."""
    counts: dict[tuple[str, float, str, str], int] = {}

    def add(rule: str, at: float, step: str, edge: str) -> None:
        key = (rule, at // 3600 * 3600, step, edge)
        counts[key] = counts.get(key, 0) + 1

    col = {c: n for n, c in enumerate(INSTANCE_COLUMNS)}
    mcol = {c: n for n, c in enumerate(MESSAGE_COLUMNS)}
    last: dict[str, tuple[str, float]] = {}
    for m in messages:
        iid, step, at = m[mcol["instance_id"]], m[mcol["step"]], m[mcol["created_at"]]
        add(m[mcol["rule_id"]], at, str(int(step) - 1), "reached")
        add(m[mcol["rule_id"]], at, step, "reached")
        last[iid] = (step, at)
    for i in instances:
        rule, start, status = i[col["rule_id"]], i[col["started_at"]], i[col["status"]]
        add(rule, start, "", "start")
        if status != "active" and i[col["id"]] in last:
            step, at = last[i[col["id"]]]
            add(rule, at, step, f"end:{status}")
    return [(r, step, edge, hour, n) for (r, hour, step, edge), n in counts.items()]


def _fill(path: Path, n_messages: int, seed: int) -> dict[str, int]:
    instances, messages, orders, profiles = _rows(n_messages, seed)
    journey = _journey_rows(instances, messages)
    db = sqlite3.connect(path)
    for table, columns, rows in (
        ("instances", INSTANCE_COLUMNS, instances),
        ("messages", MESSAGE_COLUMNS, messages),
        ("orders", ORDER_COLUMNS, orders),
    ):
        marks = ", ".join("?" * len(columns))
        db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
    db.executemany("INSERT INTO profiles VALUES (?, ?, ?)", profiles)
    db.executemany(
        "INSERT INTO journey_counts (rule_id, step, edge, hour, n) VALUES (?, ?, ?, ?, ?)",
        journey,
    )
    db.commit()
    db.close()
    return {
        "messages": len(messages),
        "instances": len(instances),
        "orders": len(orders),
        "profiles": len(profiles),
        "journey_counts": len(journey),
    }


# The rule the journey view is timed on: rule_1 as a loaded rule (waits before its sends).
JOURNEY_RULE = """\
rule: rule_1
trigger: {event: cart.updated}
goal: {event: order.created}
steps:
  - wait: 1d
  - send: {template: t, cascade: [email, mobile_push, sms]}
  - wait: 1d
  - send: {template: t, cascade: [email, mobile_push, sms]}
  - wait: 1d
  - send: {template: t, cascade: [email, mobile_push, sms]}
"""
JOURNEY_TEMPLATE = """\
template: t
email: {subject: Hi, text: Hello}
mobile_push: {body: Hello}
sms: {text: Hello}
"""


async def _journey_view(store: SqliteStore, root: Path) -> float:
    """The rule page's journey: the rule's stats for 30 days and its diagram drawn."""
    (root / "templates").mkdir(parents=True, exist_ok=True)
    (root / "rule_1.yaml").write_text(JOURNEY_RULE)
    (root / "templates" / "t.yaml").write_text(JOURNEY_TEMPLATE)
    ruleset = load_ruleset([root])
    start = time.perf_counter()
    stats = await compute_stats(
        store,
        rules=ruleset,
        policies=PoliciesConfig(),
        rule="rule_1",
        since=T0 + 70 * DAY,
        now=T0 + 100 * DAY,
    )
    journey_svg(ruleset.rules["rule_1"], stats["rules"][0])
    return round(time.perf_counter() - start, 3)


async def _timed(store: SqliteStore, **kwargs: Any) -> float:
    start = time.perf_counter()
    await compute_stats(store, rules=None, policies=PoliciesConfig(), now=T0 + 100 * DAY, **kwargs)
    return round(time.perf_counter() - start, 3)


async def run(n_messages: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kaskad.db"
        store = await SqliteStore.open(f"sqlite:///{path}")
        await store.close()
        sizes = _fill(path, n_messages, seed)
        store = await SqliteStore.open(f"sqlite:///{path}")
        try:
            await _timed(store)  # warm the page cache: the numbers are of a running daemon
            out: dict[str, Any] = {**sizes}
            out["all_time_s"] = await _timed(store)
            out["one_rule_s"] = await _timed(store, rule="rule_1")
            out["last_10_days_s"] = await _timed(store, since=T0 + 90 * DAY)
            out["journey_view_s"] = await _journey_view(store, Path(tmp) / "rules")
            start = time.perf_counter()
            await store.rfm_scores()
            out["rfm_scores_s"] = round(time.perf_counter() - start, 3)
        finally:
            await store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stats_scale", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.messages, args.seed))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
