"""The dashboard's action forms (issue 13): pause or resume a rule, end an instance, send
a test of a template. Each is a POST form guarded by auth.action (role and CSRF token)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from engine.api.accounts import ACCOUNT_KEY, Account
from engine.api.actions import actions, audit_json, parse_test_send, status_of
from engine.api.body import read_form
from engine.api.dashboard.auth import action
from engine.api.dashboard.render import HEADERS, html
from engine.api.params import path_id
from engine.api.state import STATE
from engine.lang.accounts import role_at_least
from engine.runtime.actions import ActionError, TestSend


def _who(request: web.Request) -> str:
    account: Account = request[ACCOUNT_KEY]
    return account.name


def _back(path: str) -> web.Response:
    return web.Response(status=303, headers={"Location": path, **HEADERS})


def _failed(request: web.Request, exc: ActionError) -> web.Response:
    return html(request, "error.html", status_of(exc), title="Not done", message=exc.message)


@action("marketer")
async def pause_form(request: web.Request) -> web.Response:
    rule_id = path_id(request, "rule")
    form = await read_form(request)
    try:
        await actions(request.app[STATE]).set_paused(
            _who(request), rule_id, paused=True, hold=form.get("hold") == "on"
        )
    except ActionError as exc:
        return _failed(request, exc)
    return _back(f"/ui/rules/{quote(rule_id, safe='')}")


@action("marketer")
async def resume_form(request: web.Request) -> web.Response:
    rule_id = path_id(request, "rule")
    try:
        await actions(request.app[STATE]).set_paused(_who(request), rule_id, paused=False)
    except ActionError as exc:
        return _failed(request, exc)
    return _back(f"/ui/rules/{quote(rule_id, safe='')}")


@action("marketer")
async def end_form(request: web.Request) -> web.Response:
    instance_id = path_id(request, "instance")
    try:
        ended = await actions(request.app[STATE]).end_instance(_who(request), instance_id)
    except ActionError as exc:
        return _failed(request, exc)
    return _back(f"/ui/users?q={quote(ended['user_id'], safe='')}")


@action("marketer")
async def test_send_form(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    form = await read_form(request)
    try:
        req: TestSend = parse_test_send(
            {
                "template": name,
                "channel": str(form.get("channel", "")),
                "address": str(form.get("address", "")),
                # What the page previewed: that user's data, that rule's trigger.
                **{k: str(form[k]) for k in ("user", "rule") if form.get(k)},
            }
        )
        result = await actions(request.app[STATE]).test_send(_who(request), req)
    except ActionError as exc:
        return _failed(request, exc)
    sent = result["outcome"] == "accepted"
    return html(
        request,
        "error.html",
        200 if sent else 502,
        title="Test sent" if sent else "Test not sent",
        message=(
            f"{result['channel']} test of '{name}' to {result['address']}: {result['outcome']}"
            + (f" (provider id {result['provider_id']})" if result["provider_id"] else "")
            + (f": {result['detail']}" if result["detail"] else "")
        ),
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/ui/rules/{rule}/pause", pause_form)
    router.add_post("/ui/rules/{rule}/resume", resume_form)
    router.add_post("/ui/instances/{instance}/end", end_form)
    router.add_post("/ui/templates/{name}/test-send", test_send_form)


async def rule_actions(request: web.Request, rule_id: str) -> dict[str, Any]:
    """What the rule page's Actions section shows (_rule_actions.html): the rule's pause,
    its latest actions, and whether this account may pause or resume it."""
    state = request.app[STATE]
    account: Account | None = request.get(ACCOUNT_KEY)
    return {
        "control": state.processor.controls.get(rule_id),
        "actions": [audit_json(r) for r in await state.store.audit(rule_id, 50)],
        "can_act": account is not None and role_at_least(account.role, "marketer"),
    }
