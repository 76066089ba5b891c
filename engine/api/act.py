"""The actions' API (issue 13): pause and resume a rule, end an instance, send a test,
and read the audit log. Roles: marketer or above for the actions (api/accounts.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.api.accounts import ACCOUNT_KEY, ANONYMOUS, Account
from engine.api.actions import actions, audit_json, control_json, parse_test_send, status_of
from engine.api.errors import error
from engine.api.params import path_id, query_id, query_int, read_json
from engine.api.state import STATE
from engine.runtime.actions import ActionError


def _who(request: web.Request) -> str:
    account: Account = request.get(ACCOUNT_KEY, ANONYMOUS)
    return account.name


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return read_json(raw)
    except ValueError as exc:
        raise ActionError("invalid", str(exc)) from None


async def _answer(work: Callable[[], Awaitable[dict[str, Any]]]) -> web.Response:
    try:
        return web.json_response(await work())
    except ActionError as exc:
        return error(status_of(exc), exc.code, exc.message)


async def pause_rule(request: web.Request) -> web.Response:
    """Body `{"hold": bool}` (optional): hold the running instances too."""
    state = request.app[STATE]
    rule_id = path_id(request, "rule_id")

    async def work() -> dict[str, Any]:
        body = await _body(request)
        if not isinstance(body, dict) or set(body) - {"hold"}:
            raise ActionError("invalid", 'the body must be {"hold": true|false}')
        hold = body.get("hold", False)
        if not isinstance(hold, bool):
            raise ActionError("invalid", "hold: must be true or false")
        control = await actions(state).set_paused(_who(request), rule_id, paused=True, hold=hold)
        return {"rule": rule_id, "state": "paused", **control_json(control)}

    return await _answer(work)


async def resume_rule(request: web.Request) -> web.Response:
    state = request.app[STATE]
    rule_id = path_id(request, "rule_id")

    async def work() -> dict[str, Any]:
        control = await actions(state).set_paused(_who(request), rule_id, paused=False)
        return {"rule": rule_id, "state": "active", **control_json(control)}

    return await _answer(work)


async def post_end_instance(request: web.Request) -> web.Response:
    state = request.app[STATE]
    instance_id = path_id(request, "instance_id")
    return await _answer(lambda: actions(state).end_instance(_who(request), instance_id))


async def post_test_send(request: web.Request) -> web.Response:
    state = request.app[STATE]

    async def work() -> dict[str, Any]:
        return await actions(state).test_send(_who(request), parse_test_send(await _body(request)))

    return await _answer(work)


async def get_audit(request: web.Request) -> web.Response:
    """The audit log, newest first; `target`: a rule id, template name or instance id."""
    state = request.app[STATE]
    target = query_id(request.query, "target")
    limit = query_int(request.query, "limit", 100, 1, 1000)
    rows = await state.store.audit(target, limit)
    return web.json_response({"actions": [audit_json(r) for r in rows]})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/rules/{rule_id}/pause", pause_rule)
    router.add_post("/v1/rules/{rule_id}/resume", resume_rule)
    router.add_post("/v1/instances/{instance_id}/end", post_end_instance)
    router.add_post("/v1/test-sends", post_test_send)
    router.add_get("/v1/audit", get_audit)
