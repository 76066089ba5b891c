"""`kaskad run` as a real subprocess: start it, read its JSON log lines, wait on them.

Nothing here waits on the clock: a test waits for a log line or an HTTP answer, each under
a deadline, and every process started here is killed when its group closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
LogLine = dict[str, Any]
T = TypeVar("T")

_LINE_LIMIT = 1 << 20  # a JSON log line with a traceback can be long


class DaemonError(AssertionError):
    """The daemon exited or did not log what a test waited for; the message has its log."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """A config file (JSON is YAML, so no quoting surprises)."""
    path.write_text(json.dumps(config, indent=2))
    return path


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in a Prometheus text page, None if absent."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            return float(parts[1])
    return None


async def port_open(host: str, port: int, within: float = 0.5) -> bool:
    """One connection attempt, bounded in time."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def wait_port(host: str, port: int, within: float) -> None:
    """Connection attempts (each bounded) until one succeeds, or fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await port_open(host, port, within=0.5):
        if loop.time() > deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} in {within} s")


async def poll(probe: Callable[[], Awaitable[T | None]], *, within: float, what: str) -> T:
    """Call `probe` (which awaits an answer, e.g. over HTTP) until it returns a value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if value is not None:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {within} s waiting for {what}")


class DaemonProcess:
    """One `kaskad run --config FILE` process and everything it logged on stderr."""

    def __init__(self, config_path: Path, port: int, name: str = "kaskad") -> None:
        self.config_path = config_path
        self.port = port
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[LogLine] = []
        self.eof = False
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # `python -m engine` is the `kaskad` console script (engine.cli:main); run from the
        # checkout so the code under test is the code in this tree, however it was installed.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KASKAD_CONFIG", None)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine",
            "run",
            "--config",
            str(self.config_path),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
        )
        self._reader = asyncio.create_task(self._read(), name=f"{self.name}-stderr")

    async def _read(self) -> None:
        # Always drained, so the daemon never blocks on a full pipe.
        assert self.proc is not None and self.proc.stderr is not None
        try:
            while raw := await self.proc.stderr.readline():
                text = raw.decode("utf-8", "replace").rstrip("\n")
                try:
                    line = json.loads(text)
                except ValueError:
                    line = None
                self.lines.append(line if isinstance(line, dict) else {"raw": text})
                self._changed.set()
        finally:
            self.eof = True
            self._changed.set()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tail(self, count: int = 30) -> str:
        return "\n".join(json.dumps(line) for line in self.lines[-count:])

    def events(self, name: str) -> list[LogLine]:
        return [line for line in self.lines if line.get("event") == name]

    async def wait_for(
        self,
        event: str | None,
        *,
        within: float,
        where: Callable[[LogLine], bool] | None = None,
        after: int = 0,
    ) -> tuple[int, LogLine]:
        """The first line at or past index `after` with this event (None: any line) that
        matches `where`; returns (the index after it, the line) for the next wait."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        index = after
        while True:
            while index < len(self.lines):
                line = self.lines[index]
                index += 1
                if (event is None or line.get("event") == event) and (where is None or where(line)):
                    return index, line
            if self.eof:
                raise DaemonError(
                    f"{self.name} exited ({self.proc and self.proc.returncode}) before "
                    f"logging {event!r}; its log ends with:\n{self.tail()}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.name} logged no {event!r} within {within} s; log tail:\n{self.tail()}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def started(self, within: float = 30.0) -> LogLine:
        _, line = await self.wait_for("daemon.started", within=within)
        return line

    async def kill(self) -> None:
        """kill -9, then reap the process and read the rest of its log."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        await self._reap(within=30)

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM (a graceful stop) and the exit code; killed if it does not stop in time."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            await self._reap(within=within)
        except TimeoutError:
            await self.kill()
            raise DaemonError(
                f"{self.name} did not stop within {within} s of SIGTERM:\n{self.tail()}"
            ) from None
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def _reap(self, within: float) -> None:
        assert self.proc is not None
        await asyncio.wait_for(self.proc.wait(), within)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, within)

    async def close(self) -> None:
        if self.proc is None:
            return
        try:
            await self.kill()
        finally:
            if self._reader is not None and not self._reader.done():
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader


class Daemons:
    """Daemon processes of one test; `async with` kills whatever is still running."""

    def __init__(self) -> None:
        self.started: list[DaemonProcess] = []

    async def start(self, config_path: Path, port: int, name: str = "kaskad") -> DaemonProcess:
        daemon = DaemonProcess(config_path, port, name)
        self.started.append(daemon)
        await daemon.start()
        return daemon

    async def __aenter__(self) -> Daemons:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for daemon in self.started:
            with contextlib.suppress(Exception):
                await daemon.close()


async def http_json(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    """(status, body): JSON bodies decoded, anything else as text."""
    async with session.request(method, url, **kwargs) as resp:
        if "json" in resp.headers.get("Content-Type", ""):
            return resp.status, await resp.json()
        return resp.status, await resp.text()


@contextlib.asynccontextmanager
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session that gives up on a stuck request rather than hang the test."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session
