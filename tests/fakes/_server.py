"""What the HTTP fakes share: an aiohttp app on 127.0.0.1, at a port the OS picks."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Self

from aiohttp import web
from aiohttp.test_utils import TestServer


class FakeServer:
    """`async with fake:` serves the routes `add_routes` sets up, until the block ends.

    Works as the base of a plain class or of a dataclass: it defines no __init__.
    """

    _server: TestServer | None = None
    _closing: asyncio.Event | None = None
    _port: int | None = None

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.add_routes(app)
        self._closing = asyncio.Event()
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._closing is not None:
            self._closing.set()  # release held answers so the server shuts down at once
        if self._server is not None:
            await self._server.close()

    async def down(self) -> None:
        """Stop listening: connections to the port are refused until `up()`."""
        assert self._server is not None, "the fake serves inside `async with` only"
        self._port = self._server.port
        await self.__aexit__()

    async def up(self) -> None:
        """Listen again on the same port (a provider back from an outage)."""
        app = web.Application()
        self.add_routes(app)
        self._closing = asyncio.Event()
        self._server = TestServer(app, host="127.0.0.1", port=self._port)
        await self._server.start_server()

    def url_for(self, path: str = "") -> str:
        assert self._server is not None, "the fake serves inside `async with` only"
        return str(self._server.make_url(path))

    @property
    def base_url(self) -> str:
        return self.url_for().rstrip("/")

    async def hold_until(self, gate: asyncio.Event) -> None:
        """Wait until the test opens `gate`, or until the server closes."""
        if self._closing is None:
            return
        closing = asyncio.ensure_future(self._closing.wait())
        opened = asyncio.ensure_future(gate.wait())
        try:
            await asyncio.wait({closing, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            opened.cancel()

    async def hold(self, delay_s: float) -> None:
        """Wait this long before answering, or until the server closes: a client timeout."""
        if delay_s and self._closing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay_s)


def response(body: Any, status: int, headers: dict[str, str]) -> web.Response:
    """dict/list: a JSON answer; bytes: sent as is; str (or None): text."""
    if isinstance(body, dict | list):
        return web.json_response(body, status=status, headers=headers)
    if isinstance(body, bytes):
        return web.Response(body=body, status=status, headers=headers)
    return web.Response(text=body or "", status=status, headers=headers)
