"""How long a page of the delivery log takes on a big store (issue 13: under 0.5 s): the
`bench.stats_scale` data (N messages) in a fresh SQLite file, or a PostgreSQL schema with
--pg, then a page of 51 for each filter and some mixes, with the slowest first page and
the slowest next page (cursor) of each.

    python -m bench.messages_scale [--messages 1000000] [--pg postgresql://.../db]

Prints one JSON object (seconds) with each query's plan. On the 2-core dev box with 1M
messages: every page under 3 ms on SQLite, under 25 ms on PostgreSQL 15, each an index
run (SQLite: `SEARCH ... USING COVERING INDEX messages_by_*`; PostgreSQL: `Index Scan
Backward using messages_by_*`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats_scale import DAY, T0, _fill, _rows
from engine.store import Store, open_store
from engine.store.base import MessageFilter
from engine.store.postgres_messages import page_sql as pg_page_sql
from engine.store.rows import INSTANCE_COLUMNS, MESSAGE_COLUMNS
from engine.store.sqlite import SqliteStore
from engine.store.sqlite_messages import page_sql

QUERIES: dict[str, dict[str, Any]] = {
    "none": {},
    "rule": {"rule": "rule_7"},
    "channel": {"channel": "sms"},
    "status_common": {"status": "sent"},
    "status_rare": {"status": "failed"},
    "reason": {"reason": "frequency_cap"},
    "user": {"user_id": "u123"},
    "dates": {"since": T0 + 30 * DAY, "until": T0 + 31 * DAY},
    "rule_status_rare": {"rule": "rule_3", "status": "skipped"},
    "rule_channel_reason": {"rule": "rule_3", "channel": "sms", "reason": "frequency_cap"},
    "channel_status_dates": {
        "channel": "email",
        "status": "sent",
        "since": T0 + 10 * DAY,
        "until": T0 + 20 * DAY,
    },
    "no_match_mix": {"rule": "rule_5", "channel": "sms", "status": "failed"},
    "all_filters": {
        "rule": "rule_1",
        "channel": "email",
        "status": "skipped",
        "reason": "frequency_cap",
        "user_id": "u77",
        "since": T0,
        "until": T0 + 90 * DAY,
    },
}


async def _time_pages(store: Store) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, q in QUERIES.items():
        start = time.perf_counter()
        page = await store.messages(limit=51, **q)
        first = time.perf_counter() - start
        nxt = 0.0
        if page:
            start = time.perf_counter()
            await store.messages(limit=51, before=(page[-1].created_at, page[-1].id), **q)
            nxt = time.perf_counter() - start
        out[name] = {"first_s": round(first, 4), "next_s": round(nxt, 4), "rows": len(page)}
    out["slowest_s"] = max(max(v["first_s"], v["next_s"]) for v in out.values())
    return out


async def _sqlite(n: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kaskad.db"
        await (await SqliteStore.open(f"sqlite:///{path}")).close()
        sizes = _fill(path, n, seed)
        store = await SqliteStore.open(f"sqlite:///{path}")
        try:
            await _time_pages(store)  # warm the page cache, as a running daemon has it
            out: dict[str, Any] = {**sizes, "pages": await _time_pages(store), "plans": {}}
            for name, q in QUERIES.items():
                f = MessageFilter(**q)
                index, where, params = page_sql(f, (T0 + 50 * DAY, "m5"))
                rows = await store.db.execute_fetchall(
                    f"EXPLAIN QUERY PLAN SELECT id FROM messages INDEXED BY {index}{where} "
                    "ORDER BY created_at DESC, id DESC LIMIT 51",
                    params,
                )
                out["plans"][name] = " | ".join(str(r[3]) for r in rows)
        finally:
            await store.close()
    return out


async def _postgres(url: str, n: int, seed: int) -> dict[str, Any]:
    import asyncpg

    await (await open_store(url)).close()  # the schema, migrated
    instances, messages, _, _ = _rows(n, seed)
    conn = await asyncpg.connect(url, command_timeout=None)
    try:
        await conn.execute("TRUNCATE messages, instances, message_events")
        await conn.copy_records_to_table(
            "instances", records=instances, columns=list(INSTANCE_COLUMNS)
        )
        await conn.copy_records_to_table(
            "messages", records=messages, columns=list(MESSAGE_COLUMNS)
        )
        await conn.execute("VACUUM ANALYZE messages")
    finally:
        await conn.close()
    store = await open_store(url)
    try:
        await _time_pages(store)
        out: dict[str, Any] = {"messages": len(messages), "pages": await _time_pages(store)}
        out["plans"] = {}
        pool = store.pool  # type: ignore[attr-defined]
        for name, q in QUERIES.items():
            sql, params = pg_page_sql(MessageFilter(**q), (T0 + 50 * DAY, "m5"), 51)
            rows = await pool.fetch(f"EXPLAIN {sql}", *params)
            out["plans"][name] = " | ".join(
                r[0].strip() for r in rows if "Scan" in r[0] or "Sort" in r[0]
            )
    finally:
        await store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.messages_scale", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg", help="a PostgreSQL URL (a schema of its own: it is filled)")
    args = parser.parse_args(argv)
    if args.pg:
        result = asyncio.run(_postgres(args.pg, args.messages, args.seed))
    else:
        result = asyncio.run(_sqlite(args.messages, args.seed))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
