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

from engine.lang.policies_config import PoliciesConfig
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


def _fill(path: Path, n_messages: int, seed: int) -> dict[str, int]:
    instances, messages, orders, profiles = _rows(n_messages, seed)
    db = sqlite3.connect(path)
    for table, columns, rows in (
        ("instances", INSTANCE_COLUMNS, instances),
        ("messages", MESSAGE_COLUMNS, messages),
        ("orders", ORDER_COLUMNS, orders),
    ):
        marks = ", ".join("?" * len(columns))
        db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
    db.executemany("INSERT INTO profiles VALUES (?, ?, ?)", profiles)
    db.commit()
    db.close()
    return {
        "messages": len(messages),
        "instances": len(instances),
        "orders": len(orders),
        "profiles": len(profiles),
    }


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
