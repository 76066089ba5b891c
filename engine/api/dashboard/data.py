"""What the dashboard pages show: the stats of a window (`?since=`) and the rules table."""

from __future__ import annotations

import math
from typing import Any

import structlog

from engine.api.dashboard.filters import when
from engine.api.state import AppState
from engine.clock import parse_time
from engine.lang.durations import parse_duration
from engine.measure.stats import compute_stats

log = structlog.get_logger("kaskad.dashboard")

SINCE_CHOICES = ("24h", "7d", "30d", "90d")


def parse_since(text: str | None, now: float) -> tuple[float | None, str | None]:
    """(unix seconds or None for all time, error) from `?since=`: a duration back from now
    (24h, 7d) or an ISO date/time. Ranges past the epoch mean all time."""
    if not text or text == "all":
        return None, None
    try:
        since = now - parse_duration(text.lstrip("-"), capped=False)  # 7d and -7d: 7 days back
    except OverflowError:
        return None, None  # further back than a float reaches
    except ValueError:
        try:
            since = parse_time(text)
        except (ValueError, OverflowError):
            shown = text if len(text) <= 40 else text[:40] + "…"
            return None, (
                f"since={shown!r} is neither a duration (24h, 7d) nor an ISO date "
                "(2026-11-01): showing all time."
            )
    if not math.isfinite(since) or since <= 0:
        return None, None
    return since, None  # in the future: an empty window, which is what was asked


def since_context(raw: str | None, now: float) -> tuple[float | None, dict[str, Any]]:
    """The window `?since=` asks for, and what the page header shows of it."""
    since, problem = parse_since(raw, now)
    return since, {
        "since_param": raw or "all",
        "since_choices": [(c, c) for c in SINCE_CHOICES] + [("all", "all time")],
        "since_label": "all time" if since is None else f"since {when(since)}",
        "notice": problem,
    }


async def load_stats(
    state: AppState, *, rule: str | None = None, since: float | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The stats JSON (engine.stats) without the shop's order totals, or None and why not:
    a page shows what it has rather than fail because the numbers could not be computed."""
    try:
        stats = await compute_stats(
            state.store,
            rules=state.rules.current,
            policies=state.config.policies,
            rule=rule,
            since=since,
            until=None,
            now=state.clock.now(),
            orders=False,  # the shop's order totals are the overview's, from order_days
        )
    except Exception as exc:
        log.exception("dashboard.stats_failed", rule=rule)
        return None, f"Statistics could not be computed ({type(exc).__name__}); see the log."
    return stats, None


def merge_rules(described: dict[str, Any], stats: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rules table: loaded and broken rules (with errors) plus rules that are gone but
    still have data, each with its stats row when there is one."""
    rows: dict[str, dict[str, Any]] = {}
    for d in described.get("rules", []):
        rows[d["id"]] = {
            "id": d["id"],
            "name": d.get("description") or d["id"],
            "state": d.get("state", "active"),
            "errors": d.get("errors", []),
            "path": d.get("path"),
            "stats": None,
        }
    for s in (stats or {}).get("rules", []):
        row = rows.setdefault(
            s["rule"],
            {
                "id": s["rule"],
                "name": s.get("name") or s["rule"],
                "state": s.get("state", "deleted"),
                "errors": [],
                "path": None,
                "stats": None,
            },
        )
        row["stats"] = s
    return sorted(rows.values(), key=lambda r: r["id"])
