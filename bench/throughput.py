"""Throughput benchmarks of the real daemon (in process, SQLite, real clock):

- ``fanout``: N users who favourited one product, one product event POSTed; the time from
  the POST to the last recorded send (sandbox channel), as sends/s, and as a ratio to a bare
  insert of the same number of message rows into SQLite;
- ``dispatch_http``: N messages queued (by a fan-out, before the clock starts) sent to a
  loopback webhook receiver in a process of its own; sends/s from the dispatcher's start to
  the last recorded answer;
- ``e2e``: N events from N/5 users POSTed in batches, one in five of a type whose rule sends
  at once (sandbox channel); events/s from the first POST until every event is applied and
  every message sent.

Each reports `cpu_s`, the process's CPU seconds (every thread: event loop, engine, SQLite)
over the measured window: steadier than the wall clock on a shared machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import multiprocessing
import socket
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from engine.core.changes import Changes
from engine.core.model import new_profile
from engine.daemon import Daemon
from engine.lang.config import parse_config
from engine.runtime.logs import configure
from engine.store.sqlite import SqliteStore

INGEST = {"Authorization": "Bearer ingest-token"}
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
TEMPLATE = """\
template: note
email: {subject: Hello, text: "Hello {{ user.user_id }}"}
webhook:
  body: {user: "{{ user.user_id }}"}
"""
FANOUT_RULE = """\
rule: drop
category: transactional
trigger:
  event: product.price_dropped
  fan_out: [favorite]
steps:
  - send: {template: note, cascade: [CHANNEL]}
"""
E2E_RULE = """\
rule: bonus
category: transactional
trigger: {event: bonus.credited}
steps:
  - send: {template: note, cascade: [email]}
"""
START = 1_790_000_000.0  # the interests' time (recent: a view counts for 30 days)


def _say(log: Callable[[str], None] | None) -> Callable[[str], None]:
    return log or (lambda _m: None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(tmp: Path, channels: str) -> Any:
    return parse_config(f"""
server: {{host: 127.0.0.1, port: 0, max_batch_events: 1000}}
storage: {{url: "sqlite:///{tmp}/kaskad.db"}}
rules: {{path: "{tmp}/rules", watch: false}}
auth: {{ingest_tokens: [ingest-token], admin_token: admin-token}}
policies: {{quiet_hours: null, frequency_caps: []}}
channels: {channels}
""")


def _rules(tmp: Path, rule: str) -> None:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "rule.yaml").write_text(rule)
    (rules / "note.yaml").write_text(TEMPLATE)


async def _interested(db: Path, n: int) -> None:
    """N users with an email address who favourited product p1 (through the store's save)."""
    store = await SqliteStore.open(f"sqlite:///{db}")
    try:
        for first in range(0, n, 20_000):
            changes = Changes()
            for i in range(first, min(n, first + 20_000)):
                uid = f"u{i:07d}"
                profile = new_profile(uid, START)
                profile["email"] = f"{uid}@example.com"
                changes.profiles[uid] = profile
                changes.interest("p1", "favorite", uid, START)
            await store.save(changes)
    finally:
        await store.close()


def _count(db: Path, where: str) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        row = conn.execute(f"SELECT count(*) FROM messages WHERE {where}").fetchone()
        return int(row[0])


async def _wait_count(db: Path, where: str, n: int, deadline_s: float) -> float:
    """Poll until `n` messages match; the time it was seen."""
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if await asyncio.to_thread(_count, db, where) >= n:
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"fewer than {n} messages {where} after {deadline_s}s")


async def _wait_answers(count: Callable[[], int], n: int, deadline_s: float) -> float:
    """Poll an in-process count (no query: a scan of the messages every few ms would take
    the daemon's CPU on a small machine) until it reaches `n`; the time it was seen."""
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if count() >= n:
            return time.perf_counter()
        await asyncio.sleep(0.01)
    raise TimeoutError(f"fewer than {n} answers after {deadline_s}s")


async def _wait_inbox(daemon: Daemon, deadline_s: float) -> float:
    """Poll until the inbox is empty (every event applied); the time it was seen."""
    end = time.perf_counter() + deadline_s
    while time.perf_counter() < end:
        if not await daemon.store.inbox_size():
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"events still in the inbox after {deadline_s}s")


def bare_insert_s(n: int) -> float:
    """Seconds to insert n message rows (the real table) in one transaction."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bare.db"
        asyncio.run(_schema(db))
        rows = [
            (f"m{i:09d}", f"i{i:09d}", "drop", f"u{i:07d}", "1", "email", "note", None)
            for i in range(n)
        ]
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            start = time.perf_counter()
            conn.executemany(
                "INSERT INTO messages (id, instance_id, rule_id, user_id, step, channel, "
                "template, variant, category, status, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'transactional', 'queued', 0)",
                rows,
            )
            conn.commit()
            return time.perf_counter() - start


async def _schema(db: Path) -> None:
    store = await SqliteStore.open(f"sqlite:///{db}")
    await store.close()


@contextlib.asynccontextmanager
async def _daemon(config: Any, *, background: bool = True) -> AsyncIterator[Daemon]:
    daemon = Daemon(config, background=background)
    try:
        await daemon.start()
    except BaseException:
        await daemon.abort()
        raise
    try:
        yield daemon
    finally:
        await daemon.stop()


async def _post(session: aiohttp.ClientSession, port: int, events: list[dict[str, Any]]) -> None:
    url = f"http://127.0.0.1:{port}/v1/events"
    async with session.post(url, json=events, headers=INGEST) as resp:
        if resp.status != 202 and resp.status != 200:
            raise RuntimeError(f"POST /v1/events: {resp.status} {await resp.text()}")


def _drop_event() -> dict[str, Any]:
    return {
        "id": "drop-1",
        "type": "product.price_dropped",
        "data": {"product_id": "p1", "old_price": 10, "new_price": 8},
    }


# -- fanout ----------------------------------------------------------------------------------


async def _fanout(tmp: Path, n: int) -> tuple[float, float]:
    _rules(tmp, FANOUT_RULE.replace("CHANNEL", "email"))
    await _interested(tmp / "kaskad.db", n)
    config = _config(tmp, "{email: {provider: sandbox}}")
    async with _daemon(config) as daemon, aiohttp.ClientSession() as session:
        start, cpu = time.perf_counter(), time.process_time()
        await _post(session, daemon.port, [_drop_event()])
        # Every answer applied (the engine's outcome count), then checked in the store.
        end = await _wait_answers(lambda: daemon.processor.counters.outcomes, n, 600)
        cpu = time.process_time() - cpu
        await _wait_count(tmp / "kaskad.db", "status = 'sent'", n, 60)
    return end - start, cpu


def run_fanout(n: int = 100_000, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = _say(log)
    configure(level="warning", fmt="json")
    with tempfile.TemporaryDirectory() as tmp:
        say(f"fanout: {n} interested users, one product event")
        seconds, cpu = asyncio.run(_fanout(Path(tmp), n))
    bare = bare_insert_s(n)
    say(f"fanout: {seconds:.2f}s; bare insert of {n} message rows {bare:.3f}s")
    return {
        "users": n,
        "seconds": round(seconds, 3),
        "sends_per_s": round(n / seconds, 1),
        "cpu_s": round(cpu, 2),
        "bare_insert_s": round(bare, 3),
        "ratio": round(seconds / bare, 1),
    }


# -- dispatch_http ---------------------------------------------------------------------------


def _receiver(port: int, ready: Any) -> None:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def _dispatch(tmp: Path, n: int, port: int) -> tuple[float, float]:
    _rules(tmp, FANOUT_RULE.replace("CHANNEL", "webhook"))
    await _interested(tmp / "kaskad.db", n)
    # The adapter's own limits (concurrency 10) stand; the webhook kind needs no address.
    url = f"http://127.0.0.1:{port}/hook"
    channels = f'{{webhook: {{provider: webhook, url: "{url}", secret: "{SECRET}"}}}}'
    async with _daemon(_config(tmp, channels), background=False) as daemon:
        async with aiohttp.ClientSession() as session:
            await _post(session, daemon.port, [_drop_event()])
        await daemon.processor.drain()  # the fan-out: n messages queued
        queued = _count(tmp / "kaskad.db", "status = 'queued'")
        if queued != n:
            raise RuntimeError(f"dispatch_http: {queued} messages queued, expected {n}")
        start, cpu = time.perf_counter(), time.process_time()
        task = asyncio.ensure_future(daemon.dispatcher.run())
        try:
            # Every answer stored (each is handed to the engine's queue once it is).
            end = await _wait_answers(daemon.processor.outcomes.qsize, n, 600)
            cpu = time.process_time() - cpu
            await _wait_count(tmp / "kaskad.db", "status IN ('answered', 'sent', 'failed')", n, 60)
        finally:
            await daemon.dispatcher.drain(5.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return end - start, cpu


def run_dispatch_http(n: int = 50_000, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = _say(log)
    configure(level="warning", fmt="json")
    port = _free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_receiver, args=(port, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the webhook receiver did not start")
        with tempfile.TemporaryDirectory() as tmp:
            say(f"dispatch_http: {n} queued messages to a loopback webhook")
            seconds, cpu = asyncio.run(_dispatch(Path(tmp), n, port))
    finally:
        proc.terminate()
        proc.join(5)
    say(f"dispatch_http: {seconds:.2f}s")
    return {
        "messages": n,
        "seconds": round(seconds, 3),
        "sends_per_s": round(n / seconds, 1),
        "cpu_s": round(cpu, 2),
    }


# -- e2e -------------------------------------------------------------------------------------


def _e2e_events(n: int) -> list[dict[str, Any]]:
    users = max(1, n // 5)
    out = []
    for i in range(n):
        uid = f"u{i % users:07d}"
        if i % 5 == 4:  # each user's one bonus: one send each
            uid = f"u{i // 5:07d}"
            out.append({"id": f"e{i}", "type": "bonus.credited", "user_id": uid, "data": {}})
        else:
            data = {"product_id": f"p{i % 97}"}
            out.append({"id": f"e{i}", "type": "product.viewed", "user_id": uid, "data": data})
    return out


async def _e2e(tmp: Path, n: int) -> tuple[float, float, int]:
    _rules(tmp, E2E_RULE)
    events = _e2e_events(n)
    db = tmp / "kaskad.db"
    await _schema(db)
    profiles = Changes()
    for i in range(max(1, n // 5)):
        uid = f"u{i:07d}"
        profiles.profiles[uid] = {**new_profile(uid, START), "email": f"{uid}@example.com"}
    store = await SqliteStore.open(f"sqlite:///{db}")
    await store.save(profiles)
    await store.close()
    sends = sum(1 for e in events if e["type"] == "bonus.credited")
    config = _config(tmp, "{email: {provider: sandbox}}")
    async with _daemon(config) as daemon, aiohttp.ClientSession() as session:
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, n, 1000):
            await _post(session, daemon.port, events[first : first + 1000])
        await _wait_answers(lambda: daemon.processor.counters.outcomes, sends, 900)
        end = await _wait_inbox(daemon, 900)
        cpu = time.process_time() - cpu
        await _wait_count(db, "status = 'sent'", sends, 60)
    return end - start, cpu, sends


def run_e2e(n: int = 150_000, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    say = _say(log)
    configure(level="warning", fmt="json")
    with tempfile.TemporaryDirectory() as tmp:
        say(f"e2e: {n} events, {n // 5} of them sending")
        seconds, cpu, sends = asyncio.run(_e2e(Path(tmp), n))
    say(f"e2e: {seconds:.2f}s")
    return {
        "events": n,
        "sends": sends,
        "seconds": round(seconds, 3),
        "events_per_s": round(n / seconds, 1),
        "cpu_s": round(cpu, 2),
    }
