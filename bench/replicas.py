"""The e2e load through 1 and 3 PostgreSQL replicas (``"replicas"``): real `kaskad run`
processes on one database (a schema of its own), the events POSTed to the replicas in turn
(one poster per replica), one in five of a type whose rule sends at once (sandbox channel).

For each run: events/s from the first POST until every event is applied and every message
sent; each replica's CPU seconds (utime + stime from /proc/<pid>/stat) per event, and the
database backends' (the replicas' connections, found by application_name); the share of
the database's busy time spent waiting on locks, from pg_stat_activity sampled every 20 ms
(samples of the replicas' backends in a `Lock` wait / samples of them active).

This machine has 2 cores (shared), so scaling cannot show here. What shows instead: whether
the CPU per event, and the lock wait share, grow with the replicas (a serial section would
make them grow). ``expected_n_cores`` states the throughput of N replicas on N cores from
the measured CPU per event: min(N / replica CPU per event, D / database CPU per event) with
D cores for the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.pgbench import pg_schema
from bench.throughput import E2E_RULE, INGEST, START, TEMPLATE, _e2e_events, _free_port
from engine.core.changes import Changes
from engine.core.model import new_profile
from engine.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[1]
APP = "kaskad-bench"
SAMPLE_S = 0.02
_TICK = os.sysconf("SC_CLK_TCK")


def _say(log: Callable[[str], None] | None) -> Callable[[str], None]:
    return log or (lambda _m: None)


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command: state is field 3, so utime (14) and stime (15) are [11], [12].
    return (int(fields[11]) + int(fields[12])) / _TICK


class Sampler:
    """pg_stat_activity of the replicas' backends every SAMPLE_S, and their CPU."""

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        self.conn = conn
        self.states: Counter[str] = Counter()
        self.waits: Counter[str] = Counter()
        self.backends: dict[int, float] = {}  # pid -> CPU seconds when first seen

    async def run(self) -> None:
        while True:
            rows = await self.conn.fetch(
                "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE $1",
                f"{APP}-%",
            )
            for pid, state, wait_type, wait in rows:
                if pid not in self.backends:
                    self.backends[pid] = cpu_s(pid)
                self.states[state or "?"] += 1
                if state == "active" and wait_type:
                    self.waits[f"{wait_type}:{wait}"] += 1
            await asyncio.sleep(SAMPLE_S)

    def backend_cpu_s(self) -> float:
        return sum(max(0.0, cpu_s(pid) - first) for pid, first in self.backends.items())

    def lock_share(self) -> float:
        active = self.states["active"]
        locks = sum(n for key, n in self.waits.items() if key.startswith("Lock:"))
        return locks / active if active else 0.0


def _config(tmp: Path, url: str, name: str, port: int) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port, "max_batch_events": 1000},
        "storage": {"url": f"{url}&application_name={APP}-{name}"},
        "rules": {"path": str(tmp / "rules"), "watch": False},
        "auth": {"ingest_tokens": ["ingest-token"], "admin_token": "admin-token"},
        "policies": {"quiet_hours": None, "frequency_caps": []},
        "logging": {"format": "json", "level": "warning"},
        "channels": {"email": {"provider": "sandbox"}},
    }
    path = tmp / f"config-{name}.yaml"
    path.write_text(json.dumps(config))
    return path


async def _start(config: Path, port: int, errors: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        "run",
        "--config",
        str(config),
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=errors.open("wb"),
    )
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(OSError, aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return proc
            if proc.returncode is not None or time.monotonic() > deadline:
                text = await asyncio.to_thread(errors.read_text)
                raise RuntimeError(f"replica did not start:\n{text[-3000:]}")
            await asyncio.sleep(0.1)


async def _post_all(port: int, batches: list[list[dict[str, Any]]]) -> None:
    url = f"http://127.0.0.1:{port}/v1/events"
    async with aiohttp.ClientSession() as session:
        for events in batches:
            while True:
                async with session.post(url, json=events, headers=INGEST) as resp:
                    if resp.status in (200, 202):
                        break
                    if resp.status not in (429, 503):
                        raise RuntimeError(f"POST /v1/events: {resp.status} {await resp.text()}")
                await asyncio.sleep(0.05)  # back-pressure: the replica is behind


async def _done(conn: asyncpg.Connection[asyncpg.Record], sends: int) -> bool:
    sent = await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'")
    inbox = await conn.fetchval("SELECT count(*) FROM inbox")
    return bool(sent >= sends and inbox == 0)


async def _profiles(url: str, users: int) -> None:
    store = await PostgresStore.open(url, heartbeat=False)
    try:
        for first in range(0, users, 20_000):
            changes = Changes()
            for i in range(first, min(users, first + 20_000)):
                uid = f"u{i:07d}"
                profile = {**new_profile(uid, START), "email": f"{uid}@example.com"}
                changes.profiles[uid] = profile
            await store.save(changes)
    finally:
        await store.close()


async def _run(n: int, replicas: int, say: Callable[[str], None]) -> dict[str, Any]:
    events = _e2e_events(n)
    sends = sum(1 for e in events if e["type"] == "bonus.credited")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        rules = tmp / "rules"
        rules.mkdir()
        (rules / "rule.yaml").write_text(E2E_RULE)
        (rules / "note.yaml").write_text(TEMPLATE)
        async with pg_schema("kaskad_bench_replicas") as url:
            await _profiles(url, max(1, n // 5))
            procs: list[asyncio.subprocess.Process] = []
            ports = [_free_port() for _ in range(replicas)]
            admin = await asyncpg.connect(url)
            try:
                for i, port in enumerate(ports):
                    config = _config(tmp, url, f"r{i}", port)
                    procs.append(await _start(config, port, tmp / f"r{i}.log"))
                batches = [events[k : k + 1000] for k in range(0, n, 1000)]
                sampler = Sampler(await asyncpg.connect(url))
                cpu0 = [cpu_s(p.pid) for p in procs]
                sampling = asyncio.ensure_future(sampler.run())
                start = time.perf_counter()
                await asyncio.gather(
                    *(_post_all(port, batches[i::replicas]) for i, port in enumerate(ports))
                )
                deadline = time.perf_counter() + 900
                while not await _done(admin, sends):
                    if time.perf_counter() > deadline:
                        raise TimeoutError(f"replicas={replicas}: not done after 900 s")
                    await asyncio.sleep(0.05)
                seconds = time.perf_counter() - start
                cpu = [cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
                db_cpu = sampler.backend_cpu_s()
                await sampler.conn.close()
            finally:
                for proc in procs:
                    if proc.returncode is None:
                        proc.terminate()
                for proc in procs:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(proc.wait(), 30)
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
                await admin.close()
            errors = [
                line
                for i in range(replicas)
                for line in (tmp / f"r{i}.log").read_text().splitlines()
                if '"error"' in line or "Traceback" in line
            ]
    if errors:
        raise RuntimeError("replicas logged errors:\n" + "\n".join(errors[:10]))
    waits = sampler.waits.most_common(6)
    result = {
        "replicas": replicas,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds, 1),
        "replica_cpu_s": [round(c, 2) for c in cpu],
        "replica_cpu_ms_per_event": round(1000 * sum(cpu) / n, 4),
        # Busy share of each replica's wall time: well under 1 means it waits (round trips,
        # commits' WAL flushes), not computes: more replicas per core would still help.
        "replica_busy": [round(c / seconds, 3) for c in cpu],
        "db_cpu_ms_per_event": round(1000 * db_cpu / n, 4),
        "lock_wait_share": round(sampler.lock_share(), 4),
        "db_active_samples": sampler.states["active"],
        "top_waits": {key: count for key, count in waits},
    }
    say(f"replicas: {json.dumps(result)}")
    return result


def expected(one: dict[str, Any]) -> dict[str, Any]:
    """Events/s of N replicas on N cores (the database with D cores of its own), from the
    CPU per event measured with one replica."""
    replica_s = one["replica_cpu_ms_per_event"] / 1000
    db_s = one["db_cpu_ms_per_event"] / 1000
    table = {
        f"N={n},D={d}": round(min(n / replica_s, d / db_s if db_s else float("inf")), 0)
        for n, d in ((1, 1), (2, 1), (4, 2), (8, 4), (16, 8))
    }
    return {
        "formula": "events_per_s(N, D) = min(N / replica_cpu_s_per_event, "
        "D / db_cpu_s_per_event): each replica's work per event is its own (no serial "
        "section: CPU per event and lock waits stay flat from 1 to 3 replicas), the "
        "database's is shared. A replica that is not busy all the time (replica_busy < 1: "
        "it waits on round trips and commits) reaches this only with more work in flight "
        "(replicas per core > 1)",
        "replica_cpu_s_per_event": replica_s,
        "db_cpu_s_per_event": db_s,
        **table,
    }


def run_replicas(n: int = 150_000, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = _say(log)
    say(f"replicas: {n} events, {n // 5} of them sending, through 1 then 3 replicas")
    runs = [asyncio.run(_run(n, k, say)) for k in (1, 3)]
    one, three = runs
    return {
        "events": n,
        "sends": n // 5,
        "runs": runs,
        "cpu_per_event_ratio_3_to_1": round(
            three["replica_cpu_ms_per_event"] / one["replica_cpu_ms_per_event"], 3
        ),
        "expected_n_cores": expected(one),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 30_000
    print(json.dumps(run_replicas(count, log=lambda m: print(m, file=sys.stderr))))
