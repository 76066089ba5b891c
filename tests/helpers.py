"""Helpers the tests share: the shipped rules, a simulate run on the virtual clock, and
events in a few words. (Fixtures are in conftest.py.)"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import asyncpg

from engine.lang.config import Config, parse_config
from engine.lang.events import parse_event
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.simulate import Simulation, record_json

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"

# Policies off unless a test turns them on, so each timeline shows one thing at a time.
QUIET_CONFIG = """
policies:
  quiet_hours: null
  frequency_caps: []
"""


def shipped_rules(*rule_ids: str) -> RuleSet:
    """The shipped rules and templates, narrowed to some rules."""
    ruleset = load_ruleset([RULES])
    assert not ruleset.problems, ruleset.problems
    if rule_ids:
        ruleset.rules = {k: v for k, v in ruleset.rules.items() if k in rule_ids}
        assert set(ruleset.rules) == set(rule_ids)
        ruleset.index()
    return ruleset


def run_simulation(
    ruleset: RuleSet,
    events: list[dict[str, Any]],
    config: Config | str = QUIET_CONFIG,
    until: float | None = None,
) -> list[dict[str, Any]]:
    cfg = parse_config(config) if isinstance(config, str) else config
    parsed = [parse_event(e, received_at=0.0) for e in events]

    async def go() -> list[dict[str, Any]]:
        sim = await Simulation.create(ruleset, cfg)
        try:
            return [record_json(r) for r in await sim.run(parsed, until)]
        finally:
            await sim.close()

    return asyncio.run(go())


def ev(
    etype: str, user: str | None, time: str, data: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": etype, "time": time, "data": data or {}}
    if user is not None:
        out["user_id"] = user
    out.update(extra)
    return out


def profile(user: str, time: str, **data: Any) -> dict[str, Any]:
    data.setdefault("timezone", "UTC")
    return ev("profile.updated", user, time, data)


def brief(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(time, rule, user, step, channel, status, reason) for compact assertions."""
    return [
        (r["time"], r["rule"], r["user_id"], r["step"], r["channel"], r["status"], r["reason"])
        for r in records
    ]


def write_rules(tmp_path: Path, template: str, *files: str) -> Path:
    """tmp_path/rules holding `template` (t.yaml) and each text (dedented) as f0.yaml,
    f1.yaml...; the directory, for load_ruleset or a daemon."""
    root = tmp_path / "rules"
    root.mkdir(exist_ok=True)
    (root / "t.yaml").write_text(template)
    for n, text in enumerate(files):
        (root / f"f{n}.yaml").write_text(textwrap.dedent(text))
    return root


def load_clean(tmp_path: Path, template: str, *files: str) -> RuleSet:
    """write_rules, loaded; the test fails on any load problem."""
    ruleset = load_ruleset([write_rules(tmp_path, template, *files)])
    assert not ruleset.problems, [str(p) for p in ruleset.problems]
    return ruleset


# The trend rows' migration (engine/store/trends_sql.py): what undoes it, to test a later
# migration's backfill, or this one's, on a store that has data.
_TREND_TABLES = ("stats_hours", "stats_days", "order_hours", "order_days", "stats_settings")
TREND_TABLES = (*_TREND_TABLES, "stats_delta", "order_delta")  # every table of that migration


async def roll_back_migrations(url: str, db_file: Path, marker: str, undo: list[str]) -> None:
    """The store at `url` (SQLite: `db_file`) as it was before the migration holding the
    text `marker`: `undo` statements run, and the versions from that one on forgotten; the
    trend rows' migration is undone as well when it is among them."""
    from engine.store.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS

    sqlite = url.startswith("sqlite")
    migrations = SQLITE_MIGRATIONS if sqlite else POSTGRES_MIGRATIONS
    first = next(i for i, m in enumerate(migrations, 1) if marker in m)
    trends = next(i for i, m in enumerate(migrations, 1) if "stats_hours" in m)
    # The tables later migrations made go too (they run again); the trend rows' below.
    later = [
        t
        for m in migrations[first:]
        for t in re.findall(r"CREATE TABLE (\w+)", m)
        if t not in TREND_TABLES
    ]
    undo = [*undo, *(f"DROP TABLE IF EXISTS {t}" for t in later)]
    if sqlite:
        db = sqlite3.connect(db_file)
        if trends >= first:
            for name in ("messages_trend_insert", "messages_trend_delete", "messages_trend_update"):
                db.execute(f"DROP TRIGGER {name}")
            for name in ("orders_trend_insert", "orders_trend_delete"):
                db.execute(f"DROP TRIGGER {name}")
            db.execute("DROP INDEX instances_errors")
            for table in _TREND_TABLES:
                db.execute(f"DROP TABLE {table}")
        for statement in undo:
            db.execute(statement)
        db.execute("DELETE FROM schema_version WHERE version >= ?", (first,))
        db.commit()
        db.close()
        return
    schema = url.split("search_path=")[1].split("&")[0]
    conn = await asyncpg.connect(url.split("?")[0], server_settings={"search_path": schema})
    try:
        if trends >= first:
            await conn.execute("DROP FUNCTION kaskad_message_trend, kaskad_order_trend CASCADE")
            await conn.execute("DROP INDEX instances_errors")
            tables = ", ".join((*_TREND_TABLES, "stats_delta", "order_delta"))
            await conn.execute(f"DROP TABLE {tables}")
        for statement in undo:
            await conn.execute(statement)
        await conn.execute("DELETE FROM schema_migrations WHERE version >= $1", first)
    finally:
        await conn.close()
