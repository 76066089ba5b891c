"""Request bodies read under a deadline, and clients that leave mid-request.

A client that sends its body slowly (slowloris) would hold a connection and a handler for
ever: the body must arrive within `server.read_timeout_s`, else 408 and the connection is
closed. (Headers that do not arrive within it close the connection: the daemon gives
aiohttp the same time as its keep-alive timeout.) A client that disconnects mid-request
is no server error: one info line, no traceback.
"""

from __future__ import annotations

import asyncio
import codecs
from urllib.parse import parse_qsl

import structlog
from aiohttp import web
from multidict import MultiDict

from engine.api.errors import Handler, InvalidParameter, client_gone, error
from engine.api.state import STATE

log = structlog.get_logger("kaskad.api")


@web.middleware
async def read_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The whole body read (and kept by aiohttp for the handler) within the deadline."""
    server = request.app[STATE].config.server
    length = request.content_length
    # A body over the limit is left to the handler (ingest answers 413 without reading it).
    if request.body_exists and (length is None or length <= server.max_body_bytes):
        try:
            async with asyncio.timeout(server.read_timeout_s):
                await request.read()
        except TimeoutError:
            log.info("api.read_timeout", path=request.path, timeout_s=server.read_timeout_s)
            response = error(
                408,
                "request_timeout",
                f"the request body did not arrive within {server.read_timeout_s:g} s "
                "(server.read_timeout_s)",
            )
            response.force_close()
            # Whatever else the client sends is not waited for (aiohttp would otherwise
            # read and drop it for up to 10 s before it closes the connection).
            request.content.feed_eof()
            return response
        except ConnectionError as exc:
            return client_gone(request, exc)
    return await handler(request)


FORM_TYPE = "application/x-www-form-urlencoded"


async def read_form(request: web.Request) -> MultiDict[str]:
    """A form's fields: application/x-www-form-urlencoded (what the dashboard's forms and
    Twilio's callbacks send) in UTF-8 or the charset it names; InvalidParameter (400)
    naming Content-Type for any other body, or an unknown charset. (aiohttp's post() would
    raise on a multipart body, which read_body has read already, and on a bogus charset.)"""
    body = await request.read()
    if not body:
        return MultiDict()
    if request.content_type != FORM_TYPE:
        raise InvalidParameter(
            "Content-Type", f"a form must be sent as {FORM_TYPE}, not {request.content_type}"
        )
    charset = request.charset or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        raise InvalidParameter("Content-Type", f"unknown charset {charset[:40]!r}") from None
    try:
        text = body.decode(charset)
    except (UnicodeDecodeError, ValueError):
        raise InvalidParameter("body", f"not valid {charset[:40]} text") from None
    # A percent-escape that is no text in the charset reads as U+FFFD, as aiohttp's post()
    # reads it: such a token is a wrong token (401), not a bad request.
    return MultiDict(parse_qsl(text, keep_blank_values=True, encoding=charset, errors="replace"))
