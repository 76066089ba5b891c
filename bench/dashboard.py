"""How fast the dashboard's pages answer on a big store (`make bench` key "dashboard").

The `bench.stats_scale` data (at scale 1: 1M messages, ~500k instances, 100k orders, 200k
profiles over 90 days, 20 rules with data, their journey counts) plus an email and a phone
on every profile and 5 logged events per user (200 for every 1000th) is loaded into SQLite
and into PostgreSQL (a schema of its own, dropped afterwards), with 100 rule files loaded
(rule_1, an A/B rule in the data, as a chain with waits: the journey drawn has numbers);
the real daemon serves the pages over HTTP and each page of PAGES is fetched (once to warm
up, then timed). Reported per store: each page's time (the slowest of REPEAT), the slowest
page and its time. Goal: every page < 0.5 s, a rule's page (its journey) < 1 s.

PAGES is a plain table: add a row for a new page ({rule}, {user}, {template}, {message} and
{cursor}, the second page of the delivery log, are filled).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.stats_scale import DAY, JOURNEY_RULE, JOURNEY_TEMPLATE, T0, _journey_rows, _rows
from engine.api.messages import cursor_encode
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
    ("rule_30d", "/ui/rules/{rule}?since=30d"),
    ("rule_24h", "/ui/rules/{rule}?since=24h"),
    ("messages", "/ui/messages"),
    ("messages_next", "/ui/messages?cursor={cursor}"),
    ("messages_rule", "/ui/messages?rule={rule}"),
    ("messages_channel", "/ui/messages?channel=sms"),
    ("messages_status_rare", "/ui/messages?status=failed"),
    ("messages_reason", "/ui/messages?reason=frequency_cap"),
    ("messages_user", "/ui/messages?user_id={user}"),
    ("messages_dates", "/ui/messages?from=2023-12-15&to=2023-12-16"),
    ("message", "/ui/messages/{message}"),
    ("users_id", "/ui/users?q={user}"),
    ("users_id_prefix", "/ui/users?q=u424"),
    ("users_email", "/ui/users?q=u4242%40shop.test"),
    ("users_phone", "/ui/users?q=%2B15550004242"),
    ("users_busy", "/ui/users?q=u4000"),
    ("templates", "/ui/templates"),
    ("template", "/ui/templates/{template}"),
    ("template_as_user", "/ui/templates/{template}?user={user}&rule={rule}"),
]
FILL = {"rule": "rule_1", "user": "u17", "template": "note", "message": "m17"}
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
Data = dict[str, tuple[tuple[str, ...], list[Any]]]  # table -> (columns, rows)


def _rules(folder: Path) -> None:
    folder.mkdir()
    (folder / "templates").mkdir()
    (folder / "templates" / "note.yaml").write_text(TEMPLATE)
    (folder / "templates" / "t.yaml").write_text(JOURNEY_TEMPLATE)
    (folder / "rule_1.yaml").write_text(JOURNEY_RULE)
    for i in range(RULES):
        if i != 1:
            (folder / f"rule_{i}.yaml").write_text(
                f"rule: rule_{i}\ncategory: marketing\ntrigger: {{event: cart.updated}}\n"
                + (f"group: g{i % 5}\n" if i % 2 else "")
                + "steps:\n  - send: {template: note, cascade: [email, sms]}\n"
            )


def _data(n_messages: int, seed: int) -> Data:
    """Every table's rows: stats_scale's, the journey counts, addresses, logged events."""
    instances, messages, orders, profiles = _rows(n_messages, seed)
    rnd = random.Random(seed)
    users = len(profiles)
    events = []
    for u in range(users):
        for n in range(200 if u % 1000 == 0 else 5):
            etype = rnd.choice(["product.viewed", "cart.updated", "search.performed"])
            data = json.dumps({"product_id": f"p{rnd.randrange(1000)}", "price": 10})
            events.append((f"u{u}", n, T0 + n * 60.0, etype, f"e{u}-{n}", data))
    return {
        "instances": (INSTANCE_COLUMNS, instances),
        "messages": (MESSAGE_COLUMNS, messages),
        "orders": (ORDER_COLUMNS, orders),
        "profiles": (("user_id", "data", "updated_at"), profiles),
        "journey_counts": (
            ("rule_id", "step", "edge", "hour", "n"),
            _journey_rows(instances, messages),
        ),
        "profile_addresses": (
            ("kind", "value", "user_id"),
            [("email", f"u{u}@shop.test", f"u{u}") for u in range(users)]
            + [("phone", f"+1555{u:07d}", f"u{u}") for u in range(users)],
        ),
        "user_events": (("user_id", "n", "at", "type", "event_id", "data"), events),
    }


async def _fill_sqlite(path: Path, data: Data) -> None:
    import sqlite3

    store = await SqliteStore.open(f"sqlite:///{path}")
    await store.close()
    db = sqlite3.connect(path)
    for table, (columns, rows) in data.items():
        marks = ", ".join("?" * len(columns))
        db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
    db.commit()
    db.execute("ANALYZE")
    db.close()


async def _fill_postgres(url: str, data: Data) -> None:
    store = await PostgresStore.open(url, heartbeat=False)
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        for table, (columns, rows) in data.items():
            await conn.copy_records_to_table(table, records=rows, columns=list(columns))
        # A running PostgreSQL's autovacuum (on by default) keeps tables vacuumed, so index-only
        # scans skip the heap; a bulk load is not vacuumed yet (and this machine's server
        # runs with autovacuum off), so vacuum here as autovacuum would have.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def _second_page(data: Data) -> str:
    """The cursor of the delivery log's second page (the 50th newest message)."""
    columns, rows = data["messages"]
    created, mid = columns.index("created_at"), columns.index("id")
    newest = sorted(rows, key=lambda r: (r[created], r[mid]), reverse=True)[49]
    return cursor_encode(newest[created], newest[mid])


def _config(tmp: Path, url: str) -> Any:
    return parse_config(f"""
server: {{host: 127.0.0.1, port: 0}}
storage: {{url: "{url}"}}
rules: {{path: "{tmp}/rules", watch: false}}
auth: {{ingest_tokens: [ingest-token], admin_token: admin-token}}
policies: {{quiet_hours: null, frequency_caps: []}}
""")


async def _time_pages(
    tmp: Path, url: str, fill: dict[str, str], log: Callable[[str], None]
) -> dict[str, Any]:
    daemon = Daemon(_config(tmp, url), VirtualClock(T0 + 100 * DAY), background=False)
    await daemon.start()
    times: dict[str, float] = {}
    statuses: dict[str, int] = {}
    try:
        base = f"http://127.0.0.1:{daemon.port}"
        async with aiohttp.ClientSession(headers=ADMIN) as session:
            for name, path in PAGES:
                target = base + path.format(**fill)
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
    data = _data(n_messages, seed=1)
    fill = {**FILL, "cursor": _second_page(data)}
    out: dict[str, Any] = {table: len(rows) for table, (_, rows) in data.items()}
    out["rules"] = RULES
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        _rules(tmp / "rules")
        start = time.perf_counter()
        await _fill_sqlite(tmp / "kaskad.db", data)
        log(f"dashboard: SQLite filled in {time.perf_counter() - start:.1f} s")
        out["sqlite"] = await _time_pages(tmp, f"sqlite:///{tmp}/kaskad.db", fill, log)
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
            out["postgres"] = await _time_pages(tmp, url, fill, log)
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
