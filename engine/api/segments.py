"""GET /v1/segments and GET /v1/segments/{segment_id}/users (SPEC 12): the loaded segments
with their current sizes, and their members a page at a time, read from the store's
membership rows (never by scanning profiles)."""

from __future__ import annotations

from aiohttp import web

from engine.api.errors import error
from engine.api.params import path_id, query_id, query_int
from engine.api.state import STATE
from engine.clock import iso

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


async def get_segments(request: web.Request) -> web.Response:
    state = request.app[STATE]
    segments = state.rules.current.segments
    ids = sorted(segments)
    sizes = await state.store.segment_sizes(ids) if ids else {}
    return web.json_response(
        {
            "segments": [
                {
                    "id": seg_id,
                    "description": segments[seg_id].description,
                    "size": sizes.get(seg_id, 0),
                    "file": segments[seg_id].path,
                }
                for seg_id in ids
            ]
        }
    )


async def get_segment_users(request: web.Request) -> web.Response:
    state = request.app[STATE]
    seg_id = path_id(request, "segment_id")
    q = request.query
    limit = query_int(q, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    after = query_id(q, "after") or ""
    segments = state.rules.current.segments
    if seg_id not in segments:
        known = ", ".join(sorted(segments)) or "none are loaded"
        return error(404, "not_found", f"no segment '{seg_id}' (segments: {known})")
    rows = await state.store.segment_users(seg_id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return web.json_response(
        {
            "segment": seg_id,
            "users": [{"user_id": uid, "since": iso(since)} for uid, since in rows],
            "next_after": rows[-1][0] if more else None,
        }
    )
