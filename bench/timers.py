"""Timers benchmark: N pending timers in a SQLite store, fired by the real daemon on the real
clock, next to APScheduler 3 holding one `date` job per timer in memory.

kaskad: the store is built directly (the real schema, one instance row per timer of a rule
`wait 30d, then stop`, each user with a profile), then `kaskad run` starts as a subprocess,
so the RSS read from /proc is the daemon's own. Two runs over the same file:

1. start-up with N pending, of which a burst of B timers is already due: they fire at once
   (overdue after downtime), which gives the fire rate; the rest stay pending;
2. after a restart, S timers due spread over a window at RATE per second: lateness is the
   engine's time when it fired each one (the instance's `ended_at`) minus its due time.

APScheduler: an AsyncIOScheduler with a MemoryJobStore and one `date` job per timer (a
coroutine that notes how late it ran), in a subprocess of its own; as many jobs as it takes
within a time and memory budget, the same burst first, then the same spread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engine.clock import iso
from engine.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
RULE = """\
rule: timer_bench
description: Benchmark timers, each waits and then stops
trigger:
  event: bench.tick
steps:
  - wait: 30d
  - stop: true
"""
BURST = 100_000  # timers due at once when the daemon starts (fire rate)
SPREAD_RATE = 5_000  # timers per second due in the lateness window
SPREAD_WINDOW_S = 20.0
DAY_S = 86400.0
# APScheduler peer: stop adding jobs past either budget (its jobs live in memory).
PEER_ADD_BUDGET_S = 60.0
PEER_RSS_BUDGET_MB = 2048.0
PEER_DEADLINE_S = 120.0  # longest wait for its burst or its window to finish firing


def _say(log: Callable[[str], None] | None) -> Callable[[str], None]:
    return log or (lambda _m: None)


def _proc_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- the store -----------------------------------------------------------------------------


async def _schema(path: Path) -> None:
    store = await SqliteStore.open(f"sqlite:///{path}")
    await store.close()


def _rule_version(rules: Path) -> str:
    from engine.lang.ruleset import load_ruleset

    ruleset = load_ruleset([rules])
    assert not ruleset.problems, ruleset.problems
    return ruleset.rules["timer_bench"].version


def _due_far(i: int, n: int, now: float) -> float:
    """Pending timers not fired in the benchmark: 2 to 32 days ahead, in id order."""
    return now + 2 * DAY_S + 30 * DAY_S * i / n


def build_store(db: Path, rules: Path, n: int, burst: int, now: float) -> None:
    """N active instances waiting on a timer, written straight into the real schema: the
    first `burst` are due at `now - 1`, the rest 2 to 32 days ahead."""
    asyncio.run(_schema(db))
    version = _rule_version(rules)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    # Indexes are built after the rows (faster); same definitions as the migrations.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name IN "
        "('instances', 'profiles') AND sql IS NOT NULL"
    ).fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    started = now - 3600.0
    started_iso = iso(started)
    state = '{"kind":"wait"}'

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(n):
            uid = f"u{i:08d}"
            trigger = (
                f'{{"id":"e{i:08d}","type":"bench.tick","user_id":"{uid}",'
                f'"time":"{started_iso}","data":{{}}}}'
            )
            due = now - 1.0 if i < burst else _due_far(i, n, now)
            yield (f"t{i:08d}", version, uid, state, trigger, started, due)

    conn.executemany(
        "INSERT INTO instances (id, rule_id, rule_version, user_id, key, status, pc, state, "
        "trigger, started_at, due_at) VALUES (?, 'timer_bench', ?, ?, '', 'active', 0, ?, ?, ?, ?)",
        rows(),
    )
    conn.executemany(
        "INSERT INTO profiles (user_id, data, updated_at) VALUES (?, ?, ?)",
        (
            (
                f"u{i:08d}",
                f'{{"user_id":"u{i:08d}","created_at":{started},"attributes":{{}},'
                f'"consent":{{}},"email":"u{i:08d}@example.com"}}',
                started,
            )
            for i in range(n)
        ),
    )
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.close()


# -- the daemon as a subprocess ------------------------------------------------------------


class DaemonRun:
    """`kaskad run` on the benchmark's store; its JSON log lines are read as they come."""

    def __init__(self, config: Path) -> None:
        self.spawned_at = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started_at: float | None = None
        self.lines: list[str] = []
        self._started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if self.started_at is None and '"daemon.started"' in line:
                self.started_at = time.time()
                self._started.set()
        self._started.set()

    def wait_started(self, within: float) -> float:
        """Seconds from spawn to the `daemon.started` line."""
        self._started.wait(within)
        if self.started_at is None:
            self.stop()
            raise RuntimeError("kaskad did not start:\n" + "".join(self.lines[-20:]))
        return self.started_at - self.spawned_at

    def memory(self) -> dict[str, float]:
        return _proc_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        errors = [line for line in self.lines if '"error"' in line or "Traceback" in line]
        if errors:
            raise RuntimeError("kaskad logged errors:\n" + "".join(errors[:10]))


def _remaining(db: sqlite3.Connection, until: float) -> int:
    """Timers due by `until` not fired yet (a count over the instances_due index)."""
    row = db.execute(
        "SELECT count(*) FROM instances WHERE due_at IS NOT NULL AND due_at <= ?", (until,)
    ).fetchone()
    return int(row[0])


def _wait_fired(
    db: sqlite3.Connection, until: float, deadline: float, on_poll: Callable[[], None]
) -> float:
    """Poll until every timer due by `until` has fired; the time it was seen done."""
    while _remaining(db, until):
        on_poll()
        if time.time() > deadline:
            raise RuntimeError(f"{_remaining(db, until)} timers due by {until} did not fire")
        time.sleep(0.05)
    return time.time()


def _ended(db: sqlite3.Connection, first: int, last: int) -> list[tuple[str, str, float]]:
    return db.execute(
        "SELECT id, status, ended_at FROM instances WHERE id >= ? AND id < ? ORDER BY id",
        (f"t{first:08d}", f"t{last:08d}"),
    ).fetchall()


def run_kaskad(tmp: Path, n: int, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = _say(log)
    burst = min(BURST, n // 4)
    spread = min(round(SPREAD_RATE * SPREAD_WINDOW_S), n // 4)
    rate = spread / SPREAD_WINDOW_S
    rules, db_path = tmp / "rules", tmp / "kaskad.db"
    rules.mkdir()
    (rules / "timer_bench.yaml").write_text(RULE)
    now = time.time()
    say(f"timers: building {n:,} pending timers ({burst:,} due now)")
    build_start = time.perf_counter()
    build_store(db_path, rules, n, burst, now)
    build_s = time.perf_counter() - build_start
    say(f"timers: built in {build_s:.1f} s ({db_path.stat().st_size / 1e6:.0f} MB)")
    config = tmp / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "server": {"host": "127.0.0.1", "port": free_port()},
                "storage": {"url": f"sqlite:///{db_path}"},
                "rules": {"path": str(rules), "watch": False},
                "logging": {"format": "json", "level": "info"},
            }
        )
    )
    reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    peak = {"VmRSS": 0.0, "VmHWM": 0.0}

    def sample(run: DaemonRun) -> Callable[[], None]:
        def poll() -> None:
            with contextlib.suppress(OSError):
                for key, value in run.memory().items():
                    peak[key] = max(peak[key], value)

        return poll

    # Run 1: start-up with N pending, the burst overdue.
    run = DaemonRun(config)
    try:
        startup_s = run.wait_started(600)
        after_start = run.memory()
        say(f"timers: started in {startup_s:.2f} s, RSS {after_start['VmRSS']:.0f} MB")
        done_at = _wait_fired(reader, now - 1.0, time.time() + 600, sample(run))
        assert run.started_at is not None
        fires_per_s = burst / (done_at - run.started_at)
        sample(run)()
    finally:
        run.stop()
    fired = _ended(reader, 0, burst)
    assert len(fired) == burst and all(s == "completed" for _, s, _ in fired), "burst not fired"
    say(f"timers: {burst:,} due at once fired at {fires_per_s:,.0f}/s")

    # Run 2 (a restart): timers due over a window, at a rate the daemon sustains.
    lead_s = 2 * startup_s + 3.0
    window_at = time.time() + lead_s
    first, last = burst, burst + spread
    writer = sqlite3.connect(db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.executemany(
        "UPDATE instances SET due_at = ? WHERE id = ?",
        ((window_at + (i - first) / rate, f"t{i:08d}") for i in range(first, last)),
    )
    writer.execute("COMMIT")
    writer.close()
    window_end = window_at + (spread - 1) / rate
    run = DaemonRun(config)
    try:
        restart_s = run.wait_started(600)
        poll = sample(run)
        while time.time() < window_end:
            poll()
            time.sleep(0.1)
        _wait_fired(reader, window_end, time.time() + 600, poll)
        poll()
        end_mb = run.memory()["VmRSS"]
    finally:
        run.stop()
    late: list[float] = []
    for iid, status, ended_at in _ended(reader, first, last):
        assert status == "completed", f"{iid} {status}"
        late.append(ended_at - (window_at + (int(iid[1:]) - first) / rate))
    pending = _remaining(reader, now + 365 * DAY_S)
    reader.close()
    say(
        f"timers: {spread:,} at {rate:,.0f}/s: lateness p50 {_quantile(late, 0.5):.3f} s, "
        f"p99 {_quantile(late, 0.99):.3f} s; peak RSS {peak['VmHWM']:.0f} MB"
    )
    return {
        "pending": n,
        "build_s": round(build_s, 1),
        "startup_s": round(startup_s, 2),
        "restart_s": round(restart_s, 2),
        "rss_mb": round(peak["VmHWM"], 1),
        "rss_after_start_mb": round(after_start["VmRSS"], 1),
        "rss_end_mb": round(end_mb, 1),
        "burst": burst,
        "fires_per_s": round(fires_per_s, 1),
        "spread": spread,
        "spread_rate_per_s": round(rate, 1),
        "lateness_p50_s": round(_quantile(late, 0.5), 4),
        "lateness_p99_s": round(_quantile(late, 0.99), 4),
        "lateness_max_s": round(max(late), 4),
        "still_pending": pending,
    }


# -- APScheduler ---------------------------------------------------------------------------


def _peer_main(n: int, burst: int, spread: int, rate: float) -> dict[str, Any]:
    """In its own process: add jobs within the budgets, then fire the burst and the window."""
    from datetime import UTC, datetime

    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    fired: list[float] = []
    window: list[float] = []
    burst_done, window_done = asyncio.Event(), asyncio.Event()

    async def job(due: float, in_window: bool) -> None:
        late = time.time() - due
        if in_window:
            window.append(late)
            if len(window) == spread:
                window_done.set()
        elif due == burst_at:
            fired.append(late)
            if len(fired) == burst:
                burst_done.set()

    burst_at = 0.0

    def at(ts: float) -> datetime:
        return datetime.fromtimestamp(ts, UTC)

    async def main() -> dict[str, Any]:
        # misfire_grace_time None: a late job still runs (the default would drop it after 1 s).
        scheduler = AsyncIOScheduler(
            timezone="UTC", job_defaults={"misfire_grace_time": None, "coalesce": False}
        )
        # Jobs are added before start() (the pending list; start() files them in the store).
        # Due times are fixed first: the burst and the window start after a lead sized from
        # a first chunk's add rate, so they are still ahead when the scheduler starts.
        start = time.time()
        sample = 10_000
        for i in range(sample):
            d = start + 2 * DAY_S + i
            scheduler.add_job(job, "date", run_date=at(d), args=[d, False], id=f"s{i}")
        per_job_s = (time.time() - start) / sample
        expected = min(n, PEER_ADD_BUDGET_S / per_job_s)
        lead_s = 2.5 * expected * per_job_s + 5.0
        nonlocal burst_at
        burst_at = start + lead_s
        window_at = burst_at + 10.0
        added = sample
        for _ in range(burst):
            scheduler.add_job(job, "date", run_date=at(burst_at), args=[burst_at, False])
        for i in range(spread):
            d = window_at + i / rate
            scheduler.add_job(job, "date", run_date=at(d), args=[d, True])
        added += burst + spread
        while added < n:
            chunk = min(10_000, n - added)
            for i in range(added, added + chunk):
                d = start + 2 * DAY_S + 30 * DAY_S * i / n
                scheduler.add_job(job, "date", run_date=at(d), args=[d, False])
            added += chunk
            if (
                time.time() - start > PEER_ADD_BUDGET_S
                or _proc_mb(os.getpid())["VmRSS"] > PEER_RSS_BUDGET_MB
            ):
                break
        scheduler.start()
        add_s = time.time() - start
        rss_added = _proc_mb(os.getpid())["VmRSS"]
        late_start = max(0.0, time.time() - burst_at)
        deadline = time.time() + max(PEER_DEADLINE_S, lead_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(burst_done.wait(), deadline - time.time())
        burst_end = time.time()
        burst_fired = len(fired)
        window_end = window_at + (spread - 1) / rate
        deadline = max(window_end, time.time()) + PEER_DEADLINE_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(window_done.wait(), deadline - time.time())
        memory = _proc_mb(os.getpid())
        scheduler.shutdown(wait=False)
        return {
            "jobs": added,
            "add_s": round(add_s, 1),
            "rss_mb": round(memory["VmHWM"], 1),
            "rss_after_add_mb": round(rss_added, 1),
            "burst": burst,
            "burst_fired": burst_fired,
            "fires_per_s": round(burst_fired / (burst_end - max(burst_at, start + add_s)), 1),
            "burst_started_late_s": round(late_start, 2),
            "spread": spread,
            "spread_fired": len(window),
            "lateness_p50_s": round(_quantile(window, 0.5), 4) if window else None,
            "lateness_p99_s": round(_quantile(window, 0.99), 4) if window else None,
            "lateness_max_s": round(max(window), 4) if window else None,
        }

    return asyncio.run(main())


def run_apscheduler(n: int, burst: int, spread: int, rate: float) -> dict[str, Any]:
    sizes = [str(n), str(burst), str(spread), str(rate)]
    out = subprocess.run(
        [sys.executable, "-m", "bench.timers", "apscheduler", *sizes],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"APScheduler peer failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_timers(n: int = 1_000_000, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = _say(log)
    with tempfile.TemporaryDirectory(prefix="kaskad-timers-") as tmp_dir:
        report = run_kaskad(Path(tmp_dir), n, log)
    say(f"timers: APScheduler with up to {n:,} date jobs")
    peer = run_apscheduler(n, report["burst"], report["spread"], report["spread_rate_per_s"])
    say(f"timers: APScheduler {json.dumps(peer)}")
    report["apscheduler"] = peer
    return report


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "apscheduler":
        args = [int(a) for a in sys.argv[2:5]]
        print(json.dumps(_peer_main(args[0], args[1], args[2], float(sys.argv[5]))))
    else:
        print(json.dumps(run_timers(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
