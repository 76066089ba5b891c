"""Ingest benchmark: HTTP batches acknowledged after the commit vs a raw executemany.

Both sides write the same rows into the same SQLite schema (a fresh file each, WAL,
synchronous=FULL): kaskad through `POST /v1/events` (parse, validate, dedupe by id, insert
into the inbox, commit, 202), the peer with one `executemany` + commit per batch. They take
turns, five batches each; events/s are from each side's median turn (and from the totals),
the ratio is the median over the pairs of turns (each pair ran under the same load).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from engine.clock import RealClock
from engine.daemon import Daemon
from engine.lang.config import parse_config
from engine.store.sqlite import SqliteStore

BATCH = 1000
ROUND = 5  # batches per side, alternately


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


class _Raw:
    """The peer: the same rows into the same schema with one executemany per table and a
    commit per batch (no parsing, no validation, no dedupe lookups)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")

    def insert(self, ids: list[str], rows: list[str]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO events_seen VALUES (?, ?)", [(i, 0.0) for i in ids])
        db.executemany(
            "INSERT INTO inbox (body, received_at) VALUES (?, ?)", [(r, 0.0) for r in rows]
        )
        db.execute("COMMIT")


async def _run(tmp: Path, n_events: int, n_single: int) -> tuple[list[float], list[float], float]:
    """(kaskad's round times, the peer's round times, kaskad single-event requests/s).
    Batches go in rounds, kaskad's then the peer's, so both see the same machine load."""
    rules = tmp / "rules"
    rules.mkdir()
    config = parse_config(
        f'server: {{host: 127.0.0.1, port: 0}}\nstorage: {{url: "sqlite:///{tmp}/k.db"}}\n'
        f'rules: {{path: "{rules}", watch: false}}\n'
    )
    await _schema(tmp / "raw.db")
    raw = _Raw(tmp / "raw.db")
    # No engine loop: the benchmark measures ingest up to the durable acknowledgement.
    daemon = Daemon(config, RealClock(), background=False)
    await daemon.start()
    url = f"http://127.0.0.1:{daemon.port}/v1/events"
    # Only text is kept: a heap of event dicts in this process would slow the collector
    # down for the daemon that shares it.
    events = _events(n_events, "b")
    bodies = [json.dumps(events[i : i + BATCH]) for i in range(0, n_events, BATCH)]
    events = _events(n_events, "r")
    raw_ids = [e["id"] for e in events]
    raw_rows = [json.dumps(e, separators=(",", ":")) for e in events]
    singles = [json.dumps(e) for e in _events(n_single, "s")]
    del events
    headers = {"Content-Type": "application/json"}
    kaskad_s: list[float] = []
    raw_s: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for first in range(0, len(bodies), ROUND):
                start = time.perf_counter()
                for body in bodies[first : first + ROUND]:
                    async with session.post(url, data=body, headers=headers) as resp:
                        assert resp.status == 202, await resp.text()
                kaskad_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                for i in range(first * BATCH, min(n_events, (first + ROUND) * BATCH), BATCH):
                    raw.insert(raw_ids[i : i + BATCH], raw_rows[i : i + BATCH])
                raw_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            for body in singles:
                async with session.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 202, await resp.text()
            single_s = time.perf_counter() - start
    finally:
        raw.db.close()
        await daemon.stop()
    return kaskad_s, raw_s, n_single / single_s


async def _schema(path: Path) -> None:
    store = await SqliteStore.open(f"sqlite:///{path}")
    await store.close()


def run_ingest(
    n_events: int = 100_000, n_single: int = 2_000, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = log or (lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        say(
            f"ingest: {n_events} events in batches of {BATCH} over HTTP, next to a raw "
            "executemany of the same rows"
        )
        kaskad_s, raw_s, single_rps = asyncio.run(_run(tmp, n_events, n_single))
    # The median round of each side: a burst of load from elsewhere on the machine moves
    # one round, not the result (the totals are reported too).
    sizes = [min(ROUND * BATCH, n_events - i * ROUND * BATCH) for i in range(len(kaskad_s))]
    http_eps = statistics.median(n / t for n, t in zip(sizes, kaskad_s, strict=True))
    raw_eps = statistics.median(n / t for n, t in zip(sizes, raw_s, strict=True))
    return {
        "http_batch_eps": round(http_eps, 1),
        "raw_sqlite_eps": round(raw_eps, 1),
        # Each kaskad turn against the peer's turn right after it (the same load), median.
        "ratio": round(statistics.median(r / k for k, r in zip(kaskad_s, raw_s, strict=True)), 3),
        "http_batch_eps_total": round(n_events / sum(kaskad_s), 1),
        "raw_sqlite_eps_total": round(n_events / sum(raw_s), 1),
        "rounds": len(kaskad_s),
        "single_event_rps": round(single_rps, 1),
        "events": n_events,
        "batch": BATCH,
    }
