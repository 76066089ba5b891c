"""The stats table on real data: the committed OTTO sample through the seed rules.

OTTO (tests/data/otto_events.jsonl, CC BY 4.0) has real views, carts and orders of 20
sessions but no message reactions, so they are simulated, seeded and in two passes:

1. simulate the sample through rules/ and take every message that was sent;
2. for each, draw a delivery, an open and a click (probabilities per channel, a little
   higher for variant B), and after a click sometimes an extra order ("sim-" ids,
   source online); simulate the sample again with those events and print `kaskad stats`.

    python -m bench.otto_stats [--seed 7] [--config config.yaml] [--format text|json]

Same seed, same bytes. The OTTO orders themselves are in the data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

from engine.clock import iso
from engine.core.model import Record
from engine.lang.config import Config, load_config
from engine.lang.events import Event, parse_event
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.measure.stats import compute_stats
from engine.measure.stats_text import format_text
from engine.simulate import Simulation

ROOT = Path(__file__).resolve().parent.parent
OTTO = ROOT / "tests" / "data" / "otto_events.jsonl"
# (delivered, opened | delivered, clicked | opened) per channel; variant B opens and clicks
# a little more often (its subject line is the one being tested).
REACTIONS = {
    "email": (0.97, 0.40, 0.30),
    "mobile_push": (0.90, 0.25, 0.40),
    "webpush": (0.85, 0.15, 0.35),
    "whatsapp": (0.98, 0.70, 0.30),
    "sms": (0.98, 0.0, 0.15),
    "telegram": (0.95, 0.50, 0.25),
}
B_BOOST = 1.25
ORDER_AFTER_CLICK = 0.3


def reactions(records: list[Record], seed: int) -> list[dict[str, Any]]:
    """Seeded delivery/open/click events (and orders after some clicks) for sent messages."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for n, rec in enumerate(r for r in records if r.status == "sent"):
        delivered, opens, clicks = REACTIONS.get(rec.channel or "", (0.9, 0.2, 0.2))
        boost = B_BOOST if rec.variant == "B" else 1.0
        ref = {"rule": rec.rule, "channel": rec.channel}
        t = rec.time + 60
        if rng.random() >= delivered:
            continue
        out.append(_event(f"sim-{n}-d", "message.delivered", rec.user_id, t, ref))
        if rng.random() >= opens * boost:
            continue
        t += rng.uniform(300, 6 * 3600)
        out.append(_event(f"sim-{n}-o", "message.opened", rec.user_id, t, ref))
        if rng.random() >= clicks * boost:
            continue
        t += rng.uniform(30, 1800)
        out.append(_event(f"sim-{n}-c", "message.clicked", rec.user_id, t, ref))
        if rng.random() < ORDER_AFTER_CLICK:
            t += rng.uniform(3600, 48 * 3600)
            total = round(rng.uniform(20, 150), 2)
            data = {"order_id": f"sim-{n}", "total": total, "source": "online"}
            out.append(_event(f"sim-{n}-order", "order.created", rec.user_id, t, data))
    return out


def _event(eid: str, etype: str, user: str, t: float, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": eid, "type": etype, "user_id": user, "time": iso(round(t)), "data": data}


async def _simulate(
    rules: RuleSet, config: Config, events: list[Event], *, with_stats: bool
) -> tuple[list[Record], dict[str, Any] | None]:
    sim = await Simulation.create(rules, config)
    try:
        records = await sim.run(events)
        if not with_stats:
            return records, None
        stats = await compute_stats(
            sim.store, rules=rules, policies=config.policies, now=sim.clock.now()
        )
        return records, stats
    finally:
        await sim.close()


async def otto_stats(config: Config, seed: int) -> dict[str, Any]:
    rules = load_ruleset([ROOT / "rules"])
    raw = [json.loads(line) for line in OTTO.read_text().splitlines() if line.strip()]
    events = [parse_event(e, received_at=0.0) for e in raw]
    first, _ = await _simulate(rules, config, events, with_stats=False)
    extra = [parse_event(e, received_at=0.0) for e in reactions(first, seed)]
    _, stats = await _simulate(rules, config, events + extra, with_stats=True)
    assert stats is not None
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.otto_stats", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    from engine.runtime.logs import configure

    configure(level="error", fmt="console")
    stats = asyncio.run(otto_stats(load_config(args.config), args.seed))
    if args.format == "json":
        json.dump(stats, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
