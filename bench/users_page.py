"""How long the dashboard's users page takes on a big store (issue 13: < 0.5 s with 200k
profiles): bench.stats_scale's data (1M messages, 200k profiles by default) plus an email
and a phone on every profile (the profile_addresses index) and logged events for every
user (the newest 200 for the busiest), then the page fetched over HTTP from a daemon on
that file: a search by email, by phone, by the start of an id, and a user's full card and
timeline. Prints one JSON object (seconds, the slowest of 3 tries each).

    python -m bench.users_page [--messages 1000000]
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

import aiohttp

from bench.stats_scale import T0, _fill
from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.lang.config import parse_config
from engine.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token"


def _fill_users(path: Path, users: int, seed: int) -> int:
    """Addresses for every profile, and 5 events per user (200 for every 1000th)."""
    rnd = random.Random(seed)
    db = sqlite3.connect(path)
    db.executemany(
        "INSERT INTO profile_addresses VALUES (?, ?, ?)",
        [("email", f"u{u}@shop.test", f"u{u}") for u in range(users)]
        + [("phone", f"+1555{u:07d}", f"u{u}") for u in range(users)],
    )
    rows = []
    for u in range(users):
        for n in range(200 if u % 1000 == 0 else 5):
            etype = rnd.choice(["product.viewed", "cart.updated", "search.performed"])
            data = json.dumps({"product_id": f"p{rnd.randrange(1000)}", "price": 10})
            rows.append((f"u{u}", T0 + n * 60.0, etype, f"e{u}-{n}", data))
    db.executemany(
        "INSERT INTO user_events (user_id, at, type, event_id, data) VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    db.close()
    return len(rows)


async def _page(session: aiohttp.ClientSession, url: str) -> float:
    worst = 0.0
    for _ in range(3):
        start = time.perf_counter()
        async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200, (url, resp.status)
            await resp.read()
        worst = max(worst, time.perf_counter() - start)
    return round(worst, 3)


async def run(n_messages: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kaskad.db"
        store = await SqliteStore.open(f"sqlite:///{path}")
        await store.close()
        sizes = _fill(path, n_messages, seed)
        sizes["user_events"] = _fill_users(path, sizes["profiles"], seed)
        config = parse_config(f"""
server: {{host: 127.0.0.1, port: 0}}
storage: {{url: "sqlite:///{path}"}}
rules: {{path: "{ROOT / "rules"}", watch: false}}
auth: {{ingest_tokens: [bench-ingest-token], admin_token: {TOKEN}}}
""")
        daemon = Daemon(config, VirtualClock(T0 + 100 * 86400), background=False)
        await daemon.start()
        base = f"http://127.0.0.1:{daemon.port}/ui/users?q="
        out: dict[str, Any] = {**sizes}
        try:
            async with aiohttp.ClientSession() as session:
                await _page(session, base + "u1")  # warm the page cache
                out["by_email_s"] = await _page(session, base + "u4242%40shop.test")
                out["by_phone_s"] = await _page(session, base + "%2B15550004242")
                out["by_id_prefix_s"] = await _page(session, base + "u424")
                out["busy_user_s"] = await _page(session, base + "u4000")
        finally:
            await daemon.stop()
    out["slowest_s"] = max(v for k, v in out.items() if k.endswith("_s"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.users_page", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.messages, args.seed))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
