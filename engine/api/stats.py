"""GET /v1/stats (as `kaskad stats --format json`) and POST /v1/rfm/recompute."""

from __future__ import annotations

from aiohttp import web

from engine.api.errors import error
from engine.api.params import query_id
from engine.api.state import STATE, AppState
from engine.measure.rfm import RfmJob, through
from engine.measure.stats import compute_stats, parse_bound


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    q = request.query
    now = state.clock.now()
    bounds: dict[str, float | None] = {}
    problems = []
    for name in ("since", "until"):
        text = q.get(name)
        try:
            bounds[name] = parse_bound(text, now, name) if text else None
        except ValueError as exc:
            problems.append({"field": name, "message": str(exc)})
        except OverflowError as exc:  # a duration longer than a float holds
            problems.append({"field": name, "message": f"{name}: {exc}"})
    since, until = bounds.get("since"), bounds.get("until")
    if not problems and since is not None and until is not None and until <= since:
        problems.append({"field": "until", "message": "until must be after since"})
    if problems:
        return error(400, "invalid_parameter", problems[0]["message"], problems)
    stats = await compute_stats(
        state.store,
        rules=state.rules.current,
        policies=state.config.policies,
        rule=query_id(q, "rule"),
        since=since,
        until=until,
        now=now,
    )
    return web.json_response(stats)


def rfm_job(state: AppState) -> RfmJob:
    """The daemon's job (one recompute at a time), made on first use otherwise."""
    if state.rfm is None:
        state.rfm = RfmJob(state.store, through(state.processor.call))
    return state.rfm


async def post_rfm_recompute(request: web.Request) -> web.Response:
    result = await rfm_job(request.app[STATE]).run()
    return web.json_response(result.json())
