"""The `kaskad` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import __version__
from engine.clock import parse_time
from engine.errors import LoadError, did_you_mean
from engine.lang.config import Config, ConfigCheck, load_config
from engine.lang.durations import parse_duration
from engine.runtime.logs import configure

if TYPE_CHECKING:
    from engine.store import Store

# Options whose value may start with '-' (a duration back from now: `--since -7d`).
_DASH_VALUES = ("--since", "--until")
_NEGATIVE = re.compile(r"-\d")


class CliError(Exception):
    """A command cannot go on: its message goes to stderr as one line, and it exits `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _config(path: str | None, check: ConfigCheck | None = None) -> Config:
    try:
        return load_config(path, check)
    except LoadError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None


def _channels_check() -> ConfigCheck:
    from engine.daemon import check_channels

    return check_channels


def cmd_validate(args: argparse.Namespace) -> int:
    """Rules and templates (PATHs, else rules.path); with --config also that config file,
    each channel's provider keys included."""
    from engine.lang.ruleset import load_ruleset

    config: Config | None = None
    problems: list[str] = []
    if args.config:
        try:
            config = load_config(args.config, _channels_check())
        except LoadError as exc:
            problems += [str(p) for p in exc.problems]
    elif not args.paths:
        config = _config(None)
    paths = [Path(p) for p in args.paths] or ([Path(config.rules.path)] if config else [])
    missing = [p for p in paths if not p.exists()]
    problems += [f"{path}:1:1: no such file or directory" for path in missing]
    ruleset = load_ruleset([p for p in paths if p.exists()])
    problems += [str(p) for p in ruleset.problems]
    for line in problems:
        print(line)
    checked = [args.config] if args.config else []
    if paths:
        n_seg = len(ruleset.segments)
        segments = f"{n_seg} segment{'s' * (n_seg != 1)}, " if n_seg else ""
        checked.append(f"{len(ruleset.rules)} rules, {segments}{len(ruleset.templates)} templates")
    if problems:
        # stdout holds only the problem lines, for the editors and scripts that parse them
        print(f"{', '.join(checked)}, {len(problems)} problems", file=sys.stderr)
        return 1
    print(f"{', '.join(checked)} valid")
    return 0


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
        if args.events == "-":
            events, problems = read_events(sys.stdin, "<stdin>")
        else:
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

    async def run() -> tuple[list[Any], dict[str, Any] | None]:
        sim = await Simulation.create(ruleset, config)
        try:
            records = await sim.run(events, until)
            return records, (await sim.stats() if args.stats else None)
        finally:
            await sim.close()

    records, stats = asyncio.run(run())
    if stats is None:
        write_records(records, sys.stdout, args.format)
    elif args.format == "json":
        json.dump(stats, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        from engine.measure.stats_text import format_text

        sys.stdout.write(format_text(stats))
    return 0


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"{what} {path}: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"{what} {path}: must be a JSON object")
    return value


def cmd_preview(args: argparse.Namespace) -> int:
    from engine.core.preview import SAMPLE_USER_ID, preview, trigger_from_file, user_from_file

    config = _config(args.config)
    ruleset_path = Path(args.rules or config.rules.path)
    user = trigger = None
    try:
        if args.user:
            user = user_from_file(_read_json(args.user, "--user"), f"--user {args.user}")
        if args.trigger:
            uid = str((user or {}).get("user_id", SAMPLE_USER_ID))
            where = f"--trigger {args.trigger}"
            trigger = trigger_from_file(_read_json(args.trigger, "--trigger"), uid, where)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return preview(ruleset_path, args.template, user, trigger, config, sys.stdout, sys.stderr)


def cmd_schema(args: argparse.Namespace) -> int:
    from engine.lang.schema import schema

    json.dump(schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


async def _open_existing_store(config: Config) -> Store:
    """The daemon's store; a missing SQLite file is an error, not a new empty database, and
    a store that cannot be opened is one line naming the url (password masked)."""
    import sqlite3

    from engine.store import open_store
    from engine.store.urls import PgSettings, redact, sqlite_path

    url = config.storage.url
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if path != ":memory:" and not await asyncio.to_thread(Path(path).is_file):
            raise CliError(f"storage.url {url}: no database at {path} (has the daemon run?)")
    try:
        return await open_store(url, pg=PgSettings.of(config.storage))
    except (OSError, ValueError, sqlite3.Error) as exc:
        text = str(exc)
        raise CliError(
            text if text.startswith("storage.url") else f"storage.url {redact(url)}: {text}"
        ) from None


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
    if args.rule and not stats["rules"]:
        known = asyncio.run(_known_rules(config, rules))
        if args.rule not in known:
            raise CliError(f"unknown rule '{args.rule}'{did_you_mean(args.rule, known)}", 1)
    if args.format == "json":
        json.dump(stats, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(stats))
    return 0


async def _known_rules(config: Config, rules: Any) -> set[str]:
    from engine.measure.stats import known_rules

    store = await _open_existing_store(config)
    try:
        return await known_rules(store, rules)
    finally:
        await store.close()


def cmd_rfm(args: argparse.Namespace) -> int:
    from engine.measure.rfm import recompute

    config = _config(args.config)

    async def run() -> dict[str, Any]:
        store = await _open_existing_store(config)
        try:
            # Beside a running daemon: only the two keys change, in place (Store.set_rfm).
            return (await recompute(store, store.set_rfm)).json()
        finally:
            await store.close()

    result = asyncio.run(run())
    print(f"{result['customers']} customers scored, {result['changed']} profiles updated")
    for name, count in result["segments"].items():
        print(f"  {name:<16}{count:>8}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from engine.daemon import main as daemon_main

    # Every problem of the config file, each channel's provider keys included, before
    # anything starts: a container with a bad config exits at once and says why.
    return daemon_main(_config(args.config, _channels_check()))


CONFIG_HELP = "config file (default: $KASKAD_CONFIG, else ./config.yaml if present)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaskad", description="Trigger-chain automation daemon for e-commerce."
    )
    parser.add_argument("--version", action="version", version=f"kaskad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "validate",
        help="check rules and templates (and, with --config, a config file)",
        description="Check rule and template files, and with --config a config file (its "
        "keys and each channel's provider keys, without connecting anywhere). One "
        "'path:line:col: message' line per problem on stdout and exit 1, else a success "
        "line and exit 0.",
    )
    p.add_argument("paths", nargs="*", help="files or directories (default: rules.path)")
    p.add_argument("--config", help="a config file to check; its rules.path is the default PATH")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("simulate", help="run rules over events on a virtual clock")
    p.add_argument("--events", required=True, help="JSON lines of events; - reads stdin")
    p.add_argument("--rules", help="rules directory (default: rules.path from the config)")
    p.add_argument("--config", help=CONFIG_HELP + "; its policies apply")
    p.add_argument(
        "--until",
        help="ISO time, or +DURATION after the last event (default: until no timer is "
        "left, at most 400 days after the last event)",
    )
    p.add_argument(
        "--format", choices=("text", "json"), default="text", help="output (default: text)"
    )
    p.add_argument(
        "--stats",
        action="store_true",
        help="print what `kaskad stats` would say of the simulated timeline instead of the "
        "timeline (what a new or changed rule would have done on these events)",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("preview", help="render a template for every channel it has")
    p.add_argument("template", help="template name")
    p.add_argument(
        "--user",
        help="profile JSON (profile.updated data plus user_id; default: a sample user "
        "with every address)",
    )
    p.add_argument(
        "--trigger",
        help="trigger event JSON (an event envelope; default: a sample event of the type "
        "that starts the rule using the template)",
    )
    p.add_argument("--rules", help="rules directory (default: rules.path from the config)")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("stats", help="funnels per rule, step, channel, variant; A/B results")
    p.add_argument("--rule", help="one rule id (default: every rule)")
    p.add_argument("--since", help="ISO time, or a duration before now such as -7d")
    p.add_argument("--until", help="ISO time, or a duration before now (default: now)")
    p.add_argument(
        "--format", choices=("text", "json"), default="text", help="output (default: text)"
    )
    p.add_argument("--config", help=CONFIG_HELP + "; its storage.url is read")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("rfm", help="recompute RFM segments on the profiles now")
    p.add_argument("--config", help=CONFIG_HELP + "; its storage.url is written")
    p.set_defaults(func=cmd_rfm)

    p = sub.add_parser("schema", help="JSON Schema of rule and template files")
    p.set_defaults(func=cmd_schema)
    return parser


def _join_dash_values(argv: list[str]) -> list[str]:
    """`--since -7d` as `--since=-7d`: argparse reads a value starting with '-' as an option."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in _DASH_VALUES:
            value = next(args, None)
            if value is not None and _NEGATIVE.match(value):
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the reader is gone, and the final flush must not fail."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
    configure(level="warning" if args.command != "run" else "info")
    try:
        result: int = args.func(args)
        sys.stdout.flush()
    except CliError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # `kaskad simulate ... | head`: the reader has what it wanted. End quietly with the
        # status a process killed by SIGPIPE has (as grep's in `grep ... | head`).
        _silence_stdout()
        return 128 + signal.SIGPIPE
    return result


if __name__ == "__main__":
    sys.exit(main())
