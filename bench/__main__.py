"""`python -m bench` (`make bench`): the matcher, replay and ingest benchmarks.

Progress goes to stderr; stdout gets one JSON object, ``{"match": {...}, "replay": {...}}``.
Sizes scale with ``KASKAD_BENCH_SCALE`` (default 1.0: 20,000 events for the matcher; 200,000
events from 20,000 users over 14 days for the replay).
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=("match", "replay", "ingest"), help="run one benchmark")
    args = parser.parse_args(argv)
    scale = _scale()
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
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
