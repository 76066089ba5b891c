"""The aiohttp application: routes and middlewares."""

from __future__ import annotations

from aiohttp import web

from engine.api import (
    act,
    admin,
    callbacks,
    dashboard,
    ingest,
    messages,
    openapi,
    segments,
    stats,
    tracking,
)
from engine.api.body import read_body
from engine.api.errors import json_errors
from engine.api.state import STATE, AppState


def make_app(state: AppState) -> web.Application:
    app = web.Application(
        middlewares=[json_errors, admin.admin_auth, read_body],
        # The body limit is checked by the ingest handler with a clear 413 message.
        client_max_size=state.config.server.max_body_bytes + 1024,
    )
    app[STATE] = state
    r = app.router
    r.add_post("/v1/events", ingest.post_events)
    r.add_get("/v1/profiles/{user_id}", admin.get_profile)
    r.add_put("/v1/profiles/{user_id}", admin.put_profile)
    r.add_delete("/v1/profiles/{user_id}", admin.delete_profile)
    r.add_get("/v1/users/{user_id}/timeline", admin.get_timeline)
    r.add_get("/v1/messages", messages.get_messages)
    r.add_get("/v1/messages/{message_id}", messages.get_message)
    r.add_get("/v1/rules", admin.get_rules)
    r.add_post("/v1/rules/reload", admin.reload_rules)
    act.add_routes(r)  # pause, resume, end an instance, test sends, the audit log
    r.add_get("/v1/segments", segments.get_segments)
    r.add_get("/v1/segments/{segment_id}/users", segments.get_segment_users)
    r.add_get("/v1/stats", stats.get_stats)
    r.add_post("/v1/rfm/recompute", stats.post_rfm_recompute)
    r.add_get("/v1/callbacks/{channel}", callbacks.get_callback)
    r.add_post("/v1/callbacks/{channel}", callbacks.post_callback)
    r.add_get("/t/o/{token}", tracking.open_pixel)
    r.add_get("/t/c/{token}", tracking.click)
    r.add_get("/t/u/{token}", tracking.unsubscribe_page)
    r.add_post("/t/u/{token}", tracking.unsubscribe)
    r.add_get("/healthz", admin.healthz)
    r.add_get("/readyz", admin.readyz)
    r.add_get("/metrics", admin.metrics)
    r.add_get("/openapi.json", openapi.get_openapi)  # this API's OpenAPI 3.1 document
    dashboard.add_routes(r)  # the marketers' dashboard: `/` and /ui/...
    return app
