"""Errors as `{"error": {"code", "message", "details"}}` for every route."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from engine.api.ratelimit import TooManyFailures

log = structlog.get_logger("kaskad.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InvalidParameter(Exception):
    """A path or query parameter that cannot be used: answered 400 invalid_parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _dumps(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:  # a message quoting a lone surrogate: escape it, as JSON can
        return json.dumps(value)
    return text


def error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def too_many(exc: TooManyFailures) -> web.Response:
    seconds = exc.retry_after_s
    return error(
        429,
        "too_many_failures",
        f"too many failed authentications from this address; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def client_gone(request: web.Request, exc: BaseException) -> web.Response:
    """The answer to a client that left mid-request (ConnectionResetError, aiohttp's
    ClientConnectionResetError): nobody reads it, and it is no server error, so one info
    line and no traceback (re-raised, aiohttp would log it as an error)."""
    log.info("api.client_gone", path=request.path, error=f"{type(exc).__name__}: {exc}")
    response = web.Response(status=400, text="client closed the connection")
    response.force_close()
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidParameter as exc:
        return error(
            400, "invalid_parameter", str(exc), [{"field": exc.field, "message": exc.message}]
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "too_large",
            415: "unsupported_media_type",
        }.get(exc.status, "http_error")
        message = exc.text or exc.reason
        if exc.status == 404:
            message = f"no route for {request.method} {request.path}"
        return error(
            exc.status,
            code,
            message,
            headers={k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")},
        )
    except ConnectionError as exc:  # the client left mid-request: no error of ours
        return client_gone(request, exc)
    except Exception:
        log.exception("api.failed", path=request.path)
        return error(500, "internal", "internal error; see the server log")
