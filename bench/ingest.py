"""Ingest benchmark: HTTP batches acknowledged after the commit vs a raw executemany.

Both sides write the same rows into the same SQLite schema (a fresh file each, WAL,
synchronous=FULL): kaskad through `POST /v1/events` (parse, validate, dedupe by id, insert
into the inbox, commit, 202), the peer with one `executemany` + commit per batch.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from engine.clock import RealClock
from engine.config import parse_config
from engine.daemon import Daemon
from engine.store.sqlite import SqliteStore

BATCH = 1000


def _events(n: int, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}-{i}",
            "type": "cart.updated",
            "user_id": f"u{i % 5000}",
            "time": "2026-11-23T10:00:00Z",
            "data": {
                "items": [{"product_id": f"p{i % 700}", "price": 19.9, "qty": 1}],
                "total": 19.9,
            },
        }
        for i in range(n)
    ]


async def _kaskad(tmp: Path, n_events: int, n_single: int) -> tuple[float, float]:
    rules = tmp / "rules"
    rules.mkdir()
    config = parse_config(
        f'server: {{host: 127.0.0.1, port: 0}}\nstorage: {{url: "sqlite:///{tmp}/k.db"}}\n'
        f'rules: {{path: "{rules}", watch: false}}\n'
    )
    # No engine loop: the benchmark measures ingest up to the durable acknowledgement.
    daemon = Daemon(config, RealClock(), background=False)
    await daemon.start()
    url = f"http://127.0.0.1:{daemon.port}/v1/events"
    events = _events(n_events, "b")
    bodies = [json.dumps(events[i : i + BATCH]) for i in range(0, n_events, BATCH)]
    singles = [json.dumps(e) for e in _events(n_single, "s")]
    headers = {"Content-Type": "application/json"}
    try:
        async with aiohttp.ClientSession() as session:
            start = time.perf_counter()
            for body in bodies:
                async with session.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 202, await resp.text()
            batch_s = time.perf_counter() - start
            start = time.perf_counter()
            for body in singles:
                async with session.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 202, await resp.text()
            single_s = time.perf_counter() - start
    finally:
        await daemon.stop()
    return n_events / batch_s, n_single / single_s


def _raw(tmp: Path, n_events: int) -> float:
    asyncio.run(_schema(tmp / "raw.db"))
    db = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    events = _events(n_events, "r")
    rows = [json.dumps(e, separators=(",", ":")) for e in events]
    start = time.perf_counter()
    for i in range(0, n_events, BATCH):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO events_seen VALUES (?, ?)", [(e["id"], 0.0) for e in events[i : i + BATCH]]
        )
        db.executemany(
            "INSERT INTO inbox (body, received_at) VALUES (?, ?)",
            [(r, 0.0) for r in rows[i : i + BATCH]],
        )
        db.execute("COMMIT")
    seconds = time.perf_counter() - start
    db.close()
    return n_events / seconds


async def _schema(path: Path) -> None:
    store = await SqliteStore.open(f"sqlite:///{path}")
    await store.close()


def run_ingest(
    n_events: int = 100_000, n_single: int = 2_000, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = log or (lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        say(f"ingest: {n_events} events in batches of {BATCH} over HTTP")
        http_eps, single_rps = asyncio.run(_kaskad(tmp, n_events, n_single))
        say("ingest: the same rows with a raw executemany")
        raw_eps = _raw(tmp, n_events)
    return {
        "http_batch_eps": round(http_eps, 1),
        "raw_sqlite_eps": round(raw_eps, 1),
        "ratio": round(http_eps / raw_eps, 3),
        "single_event_rps": round(single_rps, 1),
        "events": n_events,
        "batch": BATCH,
    }
