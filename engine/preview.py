"""`kaskad preview`: render a template for every channel it has, with sample data."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from .clock import parse_time
from .config import Config
from .errors import ExpressionError
from .facts import _merge_profile
from .model import new_profile, profile_context
from .ruleset import load_ruleset
from .tracking import Tracker

SAMPLE_TRIGGER: dict[str, Any] = {
    "id": "evt-preview",
    "type": "cart.updated",
    "user_id": "preview-user",
    "time": "2026-11-23T10:00:00Z",
    "data": {
        "items": [
            {
                "product_id": "p1",
                "name": "Kettle",
                "url": "https://shop.example/p/p1",
                "price": 2990,
                "qty": 2,
            }
        ],
        "total": 5980,
    },
}


def preview(
    rules_path: Path,
    name: str,
    user: dict[str, Any],
    trigger: dict[str, Any],
    config: Config,
    out: TextIO,
) -> int:
    ruleset = load_ruleset([rules_path])
    template = ruleset.templates.get(name)
    if template is None:
        for problem in ruleset.problems:
            out.write(f"{problem}\n")
        out.write(f"unknown template '{name}'\n")
        return 1
    uid = str(user.get("user_id", "preview-user"))
    profile = new_profile(uid, 0.0)
    _merge_profile(profile, {k: v for k, v in user.items() if k != "user_id"})
    event = trigger or SAMPLE_TRIGGER
    now = parse_time(event["time"]) if isinstance(event.get("time"), str) else 0.0
    tracker = Tracker(config.tracking.base_url, config.tracking.secret or "preview")
    failed = 0
    for channel in template.blocks:
        ctx = {
            "event": event,
            "trigger": event,
            "user": profile_context(profile),
            "now": datetime.fromtimestamp(now, UTC),
            "message": {"id": "m-preview", "channel": channel, "rule": "preview"},
            "track": lambda url: tracker.click_url("m-preview", str(url)),
            "unsubscribe_url": tracker.unsubscribe_url("m-preview", channel),
            "variant": None,
            "rule": {"id": "preview"},
        }
        out.write(f"== {channel} ==\n")
        try:
            rendered = template.render(channel, ctx)
        except ExpressionError as exc:
            failed += 1
            out.write(f"template_error: {exc}\n\n")
            continue
        for key, value in rendered.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out.write(f"{key}: {text}\n" if "\n" not in text else f"{key}:\n{text}\n")
        out.write("\n")
    return 1 if failed else 0
