"""How fast the dashboard's pages answer on a big store (`make bench` key "dashboard").

The `bench.stats_scale` data (at scale 1: 1M messages, ~500k instances, 100k orders, 200k
profiles over 90 days, 20 rules with data) is loaded into SQLite and into PostgreSQL (a
schema of its own, dropped afterwards), with 100 rule files loaded; the real daemon serves
the pages over HTTP and each page of PAGES is fetched (once to warm up, then timed).
Reported per store: each page's time (the slowest of REPEAT), the slowest page and its
time. Goal: every page < 0.5 s, a rule's page < 1 s.

PAGES is a plain table: add a row for a new page ({rule}, {user} and {template} are filled).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.stats_scale import DAY, T0, _rows
from engine.clock import VirtualClock
from engine.daemon import Daemon
from engine.lang.config import parse_config
from engine.store.postgres import PostgresStore
from engine.store.rows import INSTANCE_COLUMNS, MESSAGE_COLUMNS, ORDER_COLUMNS
from engine.store.sqlite import SqliteStore

# (name, path): the pages a marketer opens.
PAGES: list[tuple[str, str]] = [
    ("overview", "/"),
    ("overview_7d", "/?since=7d"),
    ("overview_sorted", "/?sort=revenue&channel=email"),
    ("rule", "/ui/rules/{rule}"),
    ("rule_24h", "/ui/rules/{rule}?since=24h"),
    ("messages", "/ui/messages"),
    ("messages_rule", "/ui/messages?rule={rule}"),
    ("users_search", "/ui/users?q={user}"),
    ("templates", "/ui/templates"),
    ("template", "/ui/templates/{template}"),
]
FILL = {"rule": "rule_1", "user": "u17", "template": "note"}
RULES = 100
REPEAT = 3
ADMIN = {"Authorization": "Bearer admin-token"}
# The PostgreSQL server (a schema of its own is made and dropped): KASKAD_BENCH_POSTGRES,
# "none" for SQLite only.
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TEMPLATE = """\
template: note
email: {subject: "Hello {{ user.user_id }}", text: "Hello"}
sms: {text: "Hello"}
mobile_push: {title: Hello, body: Hello}
"""


def _rules(folder: Path) -> None:
    folder.mkdir()
    (folder / "templates").mkdir()
    (folder / "templates" / "note.yaml").write_text(TEMPLATE)
    for i in range(RULES):
        (folder / f"rule_{i}.yaml").write_text(
            f"rule: rule_{i}\ncategory: marketing\ntrigger: {{event: cart.updated}}\n"
            + (f"group: g{i % 5}\n" if i % 2 else "")
            + "steps:\n  - send: {template: note, cascade: [email, sms]}\n"
        )


async def _fill_sqlite(path: Path, data: tuple[list[Any], ...]) -> None:
    import sqlite3

    store = await SqliteStore.open(f"sqlite:///{path}")
    await store.close()
    instances, messages, orders, profiles = data
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


async def _fill_postgres(url: str, data: tuple[list[Any], ...]) -> None:
    store = await PostgresStore.open(url, heartbeat=False)
    await store.close()
    instances, messages, orders, profiles = data
    conn = await asyncpg.connect(url)
    try:
        for table, columns, rows in (
            ("instances", INSTANCE_COLUMNS, instances),
            ("messages", MESSAGE_COLUMNS, messages),
            ("orders", ORDER_COLUMNS, orders),
            ("profiles", ("user_id", "data", "updated_at"), profiles),
        ):
            await conn.copy_records_to_table(table, records=rows, columns=list(columns))
        # A running PostgreSQL's autovacuum (on by default) keeps tables vacuumed, so index-only
        # scans skip the heap; a bulk load is not vacuumed yet (and this machine's server
        # runs with autovacuum off), so vacuum here as autovacuum would have.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def _config(tmp: Path, url: str) -> Any:
    return parse_config(f"""
server: {{host: 127.0.0.1, port: 0}}
storage: {{url: "{url}"}}
rules: {{path: "{tmp}/rules", watch: false}}
auth: {{ingest_tokens: [ingest-token], admin_token: admin-token}}
policies: {{quiet_hours: null, frequency_caps: []}}
""")


async def _time_pages(tmp: Path, url: str, log: Callable[[str], None]) -> dict[str, Any]:
    daemon = Daemon(_config(tmp, url), VirtualClock(T0 + 100 * DAY), background=False)
    await daemon.start()
    times: dict[str, float] = {}
    statuses: dict[str, int] = {}
    try:
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession(headers=ADMIN) as session:
            for name, path in PAGES:
                target = base + path.format(**FILL)
                best = 0.0
                for attempt in range(REPEAT + 1):
                    start = time.perf_counter()
                    async with session.get(target) as resp:
                        await resp.read()
                        statuses[name] = resp.status
                    if attempt:  # the first one warms up (caches, the trend deltas)
                        best = max(best, time.perf_counter() - start)
                times[name] = round(best, 3)
                log(f"dashboard: {name} {times[name]} s ({statuses[name]})")
    finally:
        await daemon.stop()
    slowest = max(times, key=lambda k: times[k])
    return {
        "pages": times,
        "status": statuses,
        "slowest": slowest,
        "slowest_s": times[slowest],
    }


async def _run(n_messages: int, pg_url: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    data = _rows(n_messages, seed=1)
    out: dict[str, Any] = {
        "messages": len(data[1]),
        "instances": len(data[0]),
        "orders": len(data[2]),
        "profiles": len(data[3]),
        "rules": RULES,
    }
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        _rules(tmp / "rules")
        start = time.perf_counter()
        await _fill_sqlite(tmp / "kaskad.db", data)
        log(f"dashboard: SQLite filled in {time.perf_counter() - start:.1f} s")
        out["sqlite"] = await _time_pages(tmp, f"sqlite:///{tmp}/kaskad.db", log)
        if pg_url is None:
            return out
        schema = f"kaskad_bench_{uuid.uuid4().hex[:8]}"
        try:
            admin = await asyncpg.connect(pg_url, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            out["postgres"] = {"skipped": f"PostgreSQL not reachable: {exc}"}
            return out
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{pg_url}{'&' if '?' in pg_url else '?'}search_path={schema}"
        try:
            start = time.perf_counter()
            await _fill_postgres(url, data)
            log(f"dashboard: PostgreSQL filled in {time.perf_counter() - start:.1f} s")
            out["postgres"] = await _time_pages(tmp, url, log)
        finally:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.close()
    return out


def run_dashboard(n_messages: int, *, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The pages' times on SQLite and PostgreSQL."""
    pg_url: str | None = os.environ.get("KASKAD_BENCH_POSTGRES", PG_URL)
    if pg_url == "none":
        pg_url = None
    return asyncio.run(_run(n_messages, pg_url, log or (lambda _m: None)))
