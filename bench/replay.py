"""Replay benchmark: the shipped rules over a synthetic shop stream, end to end in simulate.

Events are generated and parsed before the clock starts; the timed part is
``Simulation.create`` and ``Simulation.run``: every event, and every timer and broadcast up to
the horizon (the last event + ``engine.simulate.MAX_HORIZON_S``), written behind to the
in-memory SQLite store.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.datasets import generate_stream
from engine.lang.config import Config
from engine.lang.events import Event, parse_event
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.runtime.logs import configure
from engine.simulate import Simulation

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
SEED = 1


def replay_events(n_events: int, users: int, days: float, seed: int = SEED) -> list[Event]:
    """The synthetic stream, parsed (and so validated) like `kaskad simulate` does."""
    return [
        parse_event(obj, received_at=0.0)
        for obj in generate_stream(n_events, n_users=users, days=days, seed=seed)
    ]


def shipped_rules() -> RuleSet:
    ruleset = load_ruleset([RULES])
    if ruleset.problems:
        raise ValueError("the shipped rules do not load: " + "; ".join(map(str, ruleset.problems)))
    return ruleset


async def _simulate(
    ruleset: RuleSet, config: Config, events: list[Event]
) -> tuple[float, int, int]:
    start = time.perf_counter()
    sim = await Simulation.create(ruleset, config)
    try:
        records = await sim.run(events)
        seconds = time.perf_counter() - start
    finally:
        await sim.close()
    sends = sum(1 for r in records if r.status == "sent")
    return seconds, sends, len(records) - sends


def run_replay(
    n_events: int = 200_000,
    users: int = 20_000,
    days: float = 14,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = log or (lambda _message: None)
    say(f"replay: generating {n_events} events, {users} users, {days} days")
    events = replay_events(n_events, users, days)
    ruleset, config = shipped_rules(), Config()
    configure(level="warning", fmt="json")  # as `kaskad simulate`: no per-instance logs
    say(f"replay: simulating {len(ruleset.rules)} rules")
    seconds, sends, skips = asyncio.run(_simulate(ruleset, config, events))
    say(f"replay: {seconds:.2f}s, {sends} sends, {skips} skips")
    return {
        "events": len(events),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(events) / seconds, 1) if seconds > 0 else None,
        "sends": sends,
        "skips": skips,
    }


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(json.dumps(run_replay(n, max(1, n // 10), log=lambda m: print(m, file=sys.stderr))))
