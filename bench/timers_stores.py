"""Timers on PostgreSQL next to SQLite (``"timers_pg"``): N instances of a rule
`wait 30d, then stop`, each user with a profile, all due at one instant, written through the
store; then the real daemon (in process, foreground: no loop polls) fires them with
`processor.drain()`. The fire rate of each store (the best of a few rounds, taken in turn) and their
ratio PG / SQLite (goal >= 0.8).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.pgbench import pg_schema
from engine.core.changes import Changes
from engine.core.model import Instance, new_profile
from engine.core.waits import Waiting
from engine.daemon import Daemon
from engine.lang.config import parse_config
from engine.lang.ruleset import load_ruleset
from engine.runtime.logs import configure
from engine.store.urls import open_store

RULE = """\
rule: timer_bench
trigger: {event: bench.tick}
steps:
  - wait: 30d
  - stop: true
"""
CHUNK = 10_000


def _say(log: Callable[[str], None] | None) -> Callable[[str], None]:
    return log or (lambda _m: None)


async def _build(url: str, rules: Path, n: int, due: float) -> None:
    ruleset = load_ruleset([rules])
    version = ruleset.rules["timer_bench"].version
    store = await open_store(url)
    try:
        for first in range(0, n, CHUNK):
            changes = Changes()
            for i in range(first, min(n, first + CHUNK)):
                uid = f"u{i:08d}"
                profile = new_profile(uid, due - 3600)
                profile["email"] = f"{uid}@example.com"
                changes.profiles[uid] = profile
                trigger = {"id": f"e{i}", "type": "bench.tick", "user_id": uid, "data": {}}
                inst = Instance(f"t{i:08d}", "timer_bench", version, uid, "", due - 3600, trigger)
                inst.state, inst.due_at = Waiting(), due
                changes.instances[inst.id] = inst
            await store.save(changes)
    finally:
        await store.close()


async def _fire(url: str, rules: Path, n: int) -> float:
    """Seconds for the daemon to fire every due timer (from the first step to idle)."""
    config = parse_config(f"""
server: {{host: 127.0.0.1, port: 0}}
storage: {{url: "{url}"}}
rules: {{path: "{rules}", watch: false}}
auth: {{ingest_tokens: [ingest-token], admin_token: admin-token}}
policies: {{quiet_hours: null, frequency_caps: []}}
""")
    due = time.time() - 1.0
    await _build(url, rules, n, due)
    daemon = Daemon(config, background=False)
    try:
        await daemon.start()
    except BaseException:
        await daemon.abort()
        raise
    try:
        start = time.perf_counter()
        await daemon.processor.drain()
        seconds = time.perf_counter() - start
        fired = daemon.processor.counters.timers
    finally:
        await daemon.stop()
    if fired != n:
        raise RuntimeError(f"timers_pg: {fired} of {n} timers fired on {url.split(':')[0]}")
    return seconds


async def _both(tmp: Path, n: int, rounds: int, say: Callable[[str], None]) -> dict[str, float]:
    """The best of `rounds` runs of each store, taken in turn (the machine is shared: the
    best run is the one least disturbed)."""
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "timer_bench.yaml").write_text(RULE)
    best = {"sqlite": float("inf"), "postgresql": float("inf")}
    for k in range(rounds):
        sqlite_s = await _fire(f"sqlite:///{tmp}/kaskad-{k}.db", rules, n)
        async with pg_schema("kaskad_bench_timers") as url:
            pg_s = await _fire(url, rules, n)
        say(f"timers_pg: round {k + 1}: sqlite {n / sqlite_s:,.0f}/s, pg {n / pg_s:,.0f}/s")
        best = {
            "sqlite": min(best["sqlite"], sqlite_s),
            "postgresql": min(best["postgresql"], pg_s),
        }
    return best


def run_timers_pg(
    n: int = 20_000, rounds: int = 3, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = _say(log)
    configure(level="warning", fmt="json")
    say(f"timers_pg: {n} timers due at one instant, SQLite then PostgreSQL")
    with tempfile.TemporaryDirectory() as tmp:
        seconds = asyncio.run(_both(Path(tmp), n, rounds, say))
    sqlite_rate = n / seconds["sqlite"]
    pg_rate = n / seconds["postgresql"]
    return {
        "timers": n,
        "sqlite_per_s": round(sqlite_rate, 1),
        "postgresql_per_s": round(pg_rate, 1),
        "ratio": round(pg_rate / sqlite_rate, 3),
        "rounds": rounds,
        "goal_ratio": 0.8,
    }


if __name__ == "__main__":
    import json
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(json.dumps(run_timers_pg(count, log=lambda m: print(m, file=sys.stderr))))
