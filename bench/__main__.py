"""`python -m bench` (`make bench`): the matcher, replay, ingest, timers and throughput
benchmarks.

Progress goes to stderr; stdout gets one JSON object, ``{"match": {...}, "replay": {...},
"ingest": {...}, "timers": {...}, "segments": {...}, "fanout": {...}, "dispatch_http": {...},
"e2e": {...}, "timers_pg": {...}, "replicas": {...}, "dashboard": {...}}``. Sizes scale with
``KASKAD_BENCH_SCALE`` (default 1.0: 20,000 events for the matcher; 200,000 events from
20,000 users over 14 days for the replay; 100,000 events for ingest; 1,000,000 pending
timers; 100,000 events from 10,000 users over 90 days for segments, with 10 segments and
with none; 100,000 interested users for the fan-out; 50,000 queued messages for the webhook
dispatch; 150,000 events with 30,000 sends end to end, and through 1 and 3 PostgreSQL
replicas; 20,000 timers due at once on SQLite and on PostgreSQL; the dashboard's pages on
1,000,000 messages in SQLite and PostgreSQL, see bench/dashboard.py).
The PostgreSQL benches use KASKAD_BENCH_POSTGRES (default postgresql://127.0.0.1:5432/test).
``--timers-10m`` (or ``KASKAD_BENCH_TIMERS=10000000``) runs the timers benchmark with
10,000,000 pending timers: it builds a ~6 GB store and takes several minutes more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

MATCH_EVENTS = 20_000
REPLAY_EVENTS = 200_000
REPLAY_USERS = 20_000
REPLAY_DAYS = 14
TIMERS = 1_000_000
FANOUT_USERS = 100_000
DISPATCH_MESSAGES = 50_000
E2E_EVENTS = 150_000
DASHBOARD_MESSAGES = 1_000_000
BENCHES = (
    "match",
    "replay",
    "ingest",
    "timers",
    "timers_pg",
    "segments",
    "fanout",
    "dispatch_http",
    "e2e",
    "replicas",
    "dashboard",
)
TIMERS_PG = 20_000


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _scale() -> float:
    raw = os.environ.get("KASKAD_BENCH_SCALE", "1.0")
    try:
        scale = float(raw)
    except ValueError:
        raise SystemExit(f"KASKAD_BENCH_SCALE must be a number, got {raw!r}") from None
    if not scale > 0:
        raise SystemExit(f"KASKAD_BENCH_SCALE must be positive, got {raw!r}")
    return scale


def _timers(flag: int | None, scale: float) -> int:
    """Pending timers: the flag, else KASKAD_BENCH_TIMERS, else 1,000,000 x the scale."""
    raw = os.environ.get("KASKAD_BENCH_TIMERS")
    if flag is not None:
        return flag
    if raw is None:
        return max(10_000, round(TIMERS * scale))
    try:
        count = int(raw)
    except ValueError:
        raise SystemExit(f"KASKAD_BENCH_TIMERS must be an integer, got {raw!r}") from None
    if count < 1000:
        raise SystemExit(f"KASKAD_BENCH_TIMERS must be at least 1000, got {raw!r}")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=BENCHES, help="run one benchmark")
    parser.add_argument(
        "--timers-10m", action="store_true", help="10,000,000 pending timers (slow)"
    )
    args = parser.parse_args(argv)
    scale = _scale()
    timers = _timers(10_000_000 if args.timers_10m else None, scale)
    report: dict[str, Any] = {}
    if args.only in (None, "match"):
        from bench.match import run_match

        report["match"] = run_match(max(1, round(MATCH_EVENTS * scale)), log=_log)
        _log(f"match: {json.dumps(report['match'])}")
    if args.only in (None, "replay"):
        from bench.replay import run_replay

        report["replay"] = run_replay(
            max(1, round(REPLAY_EVENTS * scale)),
            max(1, round(REPLAY_USERS * scale)),
            REPLAY_DAYS,
            log=_log,
        )
        _log(f"replay: {json.dumps(report['replay'])}")
    if args.only in (None, "ingest"):
        from bench.ingest import run_ingest

        report["ingest"] = run_ingest(max(1000, round(100_000 * scale)), log=_log)
        _log(f"ingest: {json.dumps(report['ingest'])}")
    if args.only in (None, "timers"):
        from bench.timers import run_timers

        report["timers"] = run_timers(timers, log=_log)
        _log(f"timers: {json.dumps(report['timers'])}")
    if args.only in (None, "timers_pg"):
        from bench.timers_stores import run_timers_pg

        report["timers_pg"] = run_timers_pg(max(2000, round(TIMERS_PG * scale)), log=_log)
        _log(f"timers_pg: {json.dumps(report['timers_pg'])}")
    if args.only in (None, "segments"):
        from bench.segments import run_segments

        report["segments"] = run_segments(
            max(1000, round(100_000 * scale)), max(100, round(10_000 * scale)), log=_log
        )
        _log(f"segments: {json.dumps(report['segments'])}")
    if args.only in (None, "fanout"):
        from bench.throughput import run_fanout

        report["fanout"] = run_fanout(max(1000, round(FANOUT_USERS * scale)), log=_log)
        _log(f"fanout: {json.dumps(report['fanout'])}")
    if args.only in (None, "dispatch_http"):
        from bench.throughput import run_dispatch_http

        n = max(1000, round(DISPATCH_MESSAGES * scale))
        report["dispatch_http"] = run_dispatch_http(n, log=_log)
        _log(f"dispatch_http: {json.dumps(report['dispatch_http'])}")
    if args.only in (None, "e2e"):
        from bench.throughput import run_e2e

        report["e2e"] = run_e2e(max(5000, round(E2E_EVENTS * scale)), log=_log)
        _log(f"e2e: {json.dumps(report['e2e'])}")
    if args.only in (None, "replicas"):
        from bench.replicas import run_replicas

        report["replicas"] = run_replicas(max(5000, round(E2E_EVENTS * scale)), log=_log)
        _log(f"replicas: {json.dumps(report['replicas'])}")
    if args.only in (None, "dashboard"):
        from bench.dashboard import run_dashboard

        n = max(1000, round(DASHBOARD_MESSAGES * scale))
        report["dashboard"] = run_dashboard(n, log=_log)
        _log(f"dashboard: {json.dumps(report['dashboard'])}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
