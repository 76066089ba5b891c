"""Profiles, the user timeline, rules, health and metrics (the delivery log: messages)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from engine.api.accounts import ACCOUNT_KEY, bearer_account, metrics_denied, needed_role, refused
from engine.api.errors import Handler, error, too_many
from engine.api.message_view import message_json
from engine.api.params import path_id, read_json
from engine.api.ratelimit import TooManyFailures
from engine.api.state import STATE
from engine.api.user_events import events_of
from engine.clock import iso
from engine.core.changes import Order
from engine.core.model import Instance, profile_context
from engine.errors import EventError
from engine.lang.events import parse_event
from engine.lang.policies_config import Attribution
from engine.store.base import Store

ADMIN_PREFIXES = (
    "/v1/profiles",
    "/v1/users",
    "/v1/messages",
    "/v1/rules",
    "/v1/stats",
    "/v1/rfm",
    "/v1/segments",
    "/v1/instances",
    "/v1/test-sends",
    "/v1/audit",
)


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admin endpoints: a token of a configured account whose role allows the request."""
    if request.path.startswith(ADMIN_PREFIXES):
        state = request.app[STATE]
        try:
            account = bearer_account(
                request, state.config.auth, state.auth_failures, state.clock.now()
            )
        except TooManyFailures as exc:
            return too_many(exc)
        if account is None:
            return error(
                401,
                "unauthorized",
                "admin endpoints need Authorization: Bearer <auth.admin_token or the token "
                "of an account in auth.users>",
            )
        why = refused(account, needed_role(request))
        if why is not None:
            return error(403, "forbidden", why)
        request[ACCOUNT_KEY] = account
    return await handler(request)


def _t(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def _profile_json(profile: dict[str, Any]) -> dict[str, Any]:
    out = profile_context(profile)
    for key in ("created_at", "updated_at"):
        if isinstance(out.get(key), int | float):
            out[key] = iso(out[key])
    return out


async def get_profile(request: web.Request) -> web.Response:
    state = request.app[STATE]
    uid = path_id(request)
    users = await state.store.load_users([uid], messages_since=0, starts_since=0)
    st = users[uid]
    if st.profile_dirty:  # no row: never seen
        return error(404, "not_found", f"no profile for user '{uid}'")
    return web.json_response(_profile_json(st.profile))


async def put_profile(request: web.Request) -> web.Response:
    state = request.app[STATE]
    uid = path_id(request)
    try:
        data = read_json(await request.read())
    except ValueError as exc:
        return error(400, "malformed", str(exc))
    try:
        event = parse_event(
            {"type": "profile.updated", "user_id": uid, "data": data},
            received_at=state.clock.now(),
            deep=True,
        )
    except EventError as exc:
        return error(
            400, "invalid_profile", exc.message, [{"field": exc.field, "message": exc.message}]
        )
    profile = await state.processor.apply_event(event)
    return web.json_response(_profile_json(profile))


async def delete_profile(request: web.Request) -> web.Response:
    state = request.app[STATE]
    uid = path_id(request)
    await state.processor.erase(uid)
    return web.json_response({"erased": uid})


def _instance_json(i: Instance) -> dict[str, Any]:
    return {
        "id": i.id,
        "rule": i.rule_id,
        "version": i.rule_version,
        "key": i.key,
        "status": i.status,
        "started_at": _t(i.started_at),
        "ended_at": _t(i.ended_at),
        "end_reason": i.end_reason,
        "position": i.pc,
        "waiting": None if i.state is None else i.state.kind,
        "next_at": _t(i.due_at),
        "variant": i.variant,
        "trigger": {k: i.trigger.get(k) for k in ("type", "time", "id")},
    }


async def get_timeline(request: web.Request) -> web.Response:
    """Everything kaskad did for one user, newest first: "why wasn't it sent?"."""
    state = request.app[STATE]
    return web.json_response(
        await timeline(state.store, path_id(request), state.config.policies.attribution)
    )


def _order_json(order: Order, policy: Attribution) -> dict[str, Any]:
    """An order and the message it is attributed to under `policy` (None: unattributed)."""
    touch = order.touches.get(policy.touch)
    attributed = touch is not None and order.at - touch.at <= policy.window_s
    return {
        "order_id": order.order_id,
        "at": _t(order.at),
        "total": order.total,
        "currency": order.currency,
        "source": order.source,
        "event_id": order.event_id,
        "attributed": None
        if touch is None or not attributed
        else {
            "message_id": touch.message_id,
            "rule": touch.rule,
            "step": touch.step,
            "channel": touch.channel,
            "variant": touch.variant,
            "touch": policy.touch,
            "touch_at": _t(touch.at),
        },
    }


async def timeline(
    store: Store, uid: str, attribution: Attribution | None = None
) -> dict[str, Any]:
    """The user's instances and orders and, newest first, their starts, ends, sends, skips
    and orders (each with the message it is attributed to, per `attribution`), and their own
    events (the event log: the newest 200 within storage.event_retention)."""
    policy = attribution or Attribution()
    instances = await store.instances_of(uid)
    messages = await store.messages(user_id=uid, limit=500)
    orders = [_order_json(o, policy) for o in await store.orders_of(uid)]
    items: list[dict[str, Any]] = [
        {
            "time": o["at"],
            "kind": "order.created",
            "rule": o["attributed"]["rule"] if o["attributed"] else None,
            **o,
        }
        for o in orders
    ]
    for inst in instances:
        items.append(
            {"time": _t(inst.started_at), "kind": "instance.started", **_instance_json(inst)}
        )
        if inst.ended_at is not None:
            items.append(
                {
                    "time": _t(inst.ended_at),
                    "kind": f"instance.{inst.status}",
                    "rule": inst.rule_id,
                    "instance": inst.id,
                    "reason": inst.end_reason,
                }
            )
    for m in messages:
        items.append(
            {
                "time": _t(m.sent_at or m.created_at),
                "kind": f"message.{m.status}",
                **message_json(m),
            }
        )
    items.sort(key=lambda x: (x["time"] or "", x["kind"]), reverse=True)
    return {
        "user_id": uid,
        "instances": [_instance_json(i) for i in instances],
        "orders": orders,
        "timeline": items,
        "events": await events_of(store, uid),
    }


def _rules_json(described: dict[str, Any]) -> dict[str, Any]:
    """The rule manager's description with its time as ISO 8601 UTC, as every API time."""
    loaded_at = described.get("loaded_at")
    return {**described, "loaded_at": _t(loaded_at) if loaded_at else None}


async def get_rules(request: web.Request) -> web.Response:
    return web.json_response(_rules_json(request.app[STATE].rules.describe()))


async def reload_rules(request: web.Request) -> web.Response:
    state = request.app[STATE]
    await state.rules.load()
    return web.json_response(_rules_json(state.rules.describe()))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    checks: dict[str, Any] = {}
    store = state.store
    try:
        if store.write_error is not None:
            # The last write failed: ready again only once a write goes through.
            await store.write_probe()
        else:
            await store.ping()
        checks["store"] = "ok"
    except Exception as exc:
        failed = store.write_error
        checks["store"] = f"error: writes fail: {failed}" if failed else f"error: {exc}"
    rules = state.rules.current
    checks["rules"] = "ok" if rules.rules or not rules.problems else "error: no valid rules"
    if state.broker.ok is not None:
        checks["broker"] = "ok" if state.broker.ok else f"error: {state.broker.error}"
    paused = state.dispatcher.paused() if state.dispatcher else {}
    checks["channels"] = {name: f"paused: {why}" for name, why in paused.items()} or "ok"
    ready = all(v == "ok" for k, v in checks.items() if k != "channels")
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        denied = metrics_denied(request, state.config.auth, state.auth_failures, state.clock.now())
    except TooManyFailures as exc:
        return too_many(exc)
    if denied:
        return error(
            401,
            "unauthorized",
            "/metrics needs Authorization: Bearer <auth.metrics_token, or an account's token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    m = state.metrics
    try:
        counts = await state.store.counts()
        m.active_instances.set(counts["active_instances"])
        m.pending_timers.set(counts["pending_timers"])
        m.queued_messages.set(counts["queued_messages"])
        m.inbox.set(counts["inbox"])
    except Exception:
        pass  # the scrape still answers; readiness reports the store
    m.rule_errors.set(len(state.rules.current.problems))
    m.rules_loaded.set(len(state.rules.current.rules))
    if state.dispatcher:
        for name in state.dispatcher.channels:
            m.channel_paused.labels(name).set(1 if name in state.dispatcher.paused() else 0)
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
