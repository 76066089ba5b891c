"""The `kaskad` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from engine import __version__
from engine.clock import parse_time
from engine.errors import LoadError
from engine.lang.config import Config, load_config
from engine.lang.durations import parse_duration
from engine.runtime.logs import configure


def _config(path: str | None) -> Config:
    try:
        return load_config(path)
    except LoadError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.lang.ruleset import load_ruleset

    paths = [Path(p) for p in args.paths] or [Path(_config(args.config).rules.path)]
    missing = [p for p in paths if not p.exists()]
    for path in missing:
        print(f"{path}:1:1: no such file or directory")
    ruleset = load_ruleset([p for p in paths if p.exists()])
    for problem in ruleset.problems:
        print(problem)
    bad = bool(ruleset.problems or missing)
    print(
        f"{len(ruleset.rules)} rules, {len(ruleset.templates)} templates"
        f"{', ' + str(len(ruleset.problems)) + ' problems' if bad else ' valid'}",
        file=sys.stderr,
    )
    return 1 if bad else 0


def _until(text: str | None, last_event: float | None) -> float | None:
    if text is None:
        return None
    if text.startswith("+"):
        return (last_event or 0.0) + parse_duration(text[1:])
    return parse_time(text)


def cmd_simulate(args: argparse.Namespace) -> int:
    from engine.lang.ruleset import load_ruleset
    from engine.simulate import Simulation, read_events, write_records

    config = _config(args.config)
    rules_path = Path(args.rules or config.rules.path)
    ruleset = load_ruleset([rules_path])
    for problem in ruleset.problems:
        print(f"warning: {problem} (rule left out)", file=sys.stderr)
    try:
        with open(args.events, encoding="utf-8") as handle:
            events, problems = read_events(handle, args.events)
    except OSError as exc:
        print(f"{args.events}: cannot read: {exc}", file=sys.stderr)
        return 2
    for line in problems:
        print(f"warning: {line} (event skipped)", file=sys.stderr)
    try:
        until = _until(args.until, max((e.time for e in events), default=None))
    except ValueError as exc:
        print(f"--until: {exc}", file=sys.stderr)
        return 2

    async def run() -> list[Any]:
        sim = await Simulation.create(ruleset, config)
        try:
            return await sim.run(events, until)
        finally:
            await sim.close()

    records = asyncio.run(run())
    write_records(records, sys.stdout, args.format)
    return 0


def _read_json(path: str | None, what: str) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{what} {path}: {exc}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"{what} {path}: must be a JSON object")
    return value


def cmd_preview(args: argparse.Namespace) -> int:
    from engine.core.preview import preview

    config = _config(args.config)
    ruleset_path = Path(args.rules or config.rules.path)
    user = _read_json(args.user, "--user")
    trigger = _read_json(args.trigger, "--trigger")
    return preview(ruleset_path, args.template, user, trigger, config, sys.stdout)


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.lang.schema import schema

    json.dump(schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _open_existing_store(config: Config) -> Any:
    """The daemon's store; a missing SQLite file is an error, not a new empty database."""
    from engine.store import open_store
    from engine.store.urls import sqlite_path

    url = config.storage.url
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if path != ":memory:" and not Path(path).is_file():
            raise SystemExit(f"storage.url {url}: no database at {path} (has the daemon run?)")
    return open_store(url)


def cmd_stats(args: argparse.Namespace) -> int:
    from engine.clock import RealClock
    from engine.lang.ruleset import load_ruleset
    from engine.measure.stats import compute_stats, parse_bound
    from engine.measure.stats_text import format_text

    config = _config(args.config)
    now = RealClock().now()
    try:
        since = parse_bound(args.since, now, "--since") if args.since else None
        until = parse_bound(args.until, now, "--until") if args.until else None
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if since is not None and until is not None and until <= since:
        print("--until must be after --since", file=sys.stderr)
        return 2
    rules_path = Path(config.rules.path)
    rules = load_ruleset([rules_path]) if rules_path.exists() else None

    async def run() -> dict[str, Any]:
        store = await _open_existing_store(config)
        try:
            return await compute_stats(
                store,
                rules=rules,
                policies=config.policies,
                rule=args.rule,
                since=since,
                until=until,
                now=now,
            )
        finally:
            await store.close()

    stats = asyncio.run(run())
    if args.format == "json":
        json.dump(stats, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(stats))
    return 0


def cmd_rfm(args: argparse.Namespace) -> int:
    from engine.clock import RealClock
    from engine.core.runner import Engine
    from engine.core.tracking import Tracker
    from engine.lang.ruleset import RuleSet
    from engine.measure.rfm import Write, recompute, through
    from engine.runtime.processor import Processor
    from engine.store.sqlite import SqliteStore

    config = _config(args.config)

    async def run() -> dict[str, Any]:
        store = await _open_existing_store(config)
        try:
            write: Write
            if isinstance(store, SqliteStore):
                # Beside a running daemon: only the two keys change, in place.
                write = store.set_rfm
            else:
                # No rule runs here, so no link is signed: a key of this process will do.
                tracker = Tracker(config.tracking.base_url, secrets.token_hex(16))
                engine = Engine(RuleSet(), config, lambda m: None, tracker=tracker)
                processor = Processor(engine, store, RealClock())
                write = through(processor.call)
            return (await recompute(store, write)).json()
        finally:
            await store.close()

    result = asyncio.run(run())
    print(f"{result['customers']} customers scored, {result['changed']} profiles updated")
    for name, count in result["segments"].items():
        print(f"  {name:<16}{count:>8}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from engine.daemon import main as daemon_main

    return daemon_main(_config(args.config))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaskad", description="Trigger-chain automation daemon for e-commerce."
    )
    parser.add_argument("--version", action="version", version=f"kaskad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", help="config file (default: $KASKAD_CONFIG or ./config.yaml)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check rules and templates")
    p.add_argument("paths", nargs="*", help="files or directories (default: rules.path)")
    p.add_argument("--config")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("simulate", help="run rules over events on a virtual clock")
    p.add_argument("--events", required=True, help="JSON lines of events")
    p.add_argument("--rules", help="rules directory (default: rules.path from the config)")
    p.add_argument("--config")
    p.add_argument("--until", help="ISO time, or +DURATION after the last event")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("preview", help="render a template for every channel it has")
    p.add_argument("template")
    p.add_argument("--user", help="profile JSON (as profile.updated data, plus user_id)")
    p.add_argument("--trigger", help="trigger event JSON")
    p.add_argument("--rules", help="rules directory (default: rules.path from the config)")
    p.add_argument("--config")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("stats", help="funnels per rule, step, channel, variant; A/B results")
    p.add_argument("--rule", help="one rule id (default: every rule)")
    p.add_argument("--since", help="ISO time, or a duration before now such as -7d")
    p.add_argument("--until", help="ISO time, or a duration before now (default: now)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--config")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("rfm", help="recompute RFM segments on the profiles now")
    p.add_argument("--config")
    p.set_defaults(func=cmd_rfm)

    p = sub.add_parser("schema", help="JSON Schema of rule and template files")
    p.set_defaults(func=cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(level="warning" if args.command != "run" else "info")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
