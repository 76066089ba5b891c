"""`kaskad preview`: render a template for every channel it has, with sample data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from engine.clock import parse_time
from engine.core.facts import _merge_profile
from engine.core.model import new_profile, profile_context
from engine.core.tracking import Tracker
from engine.errors import ExpressionError
from engine.lang.config import Config
from engine.lang.ruleset import load_ruleset
from engine.lang.templates import Template

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


@dataclass
class Rendered:
    """One channel of a template rendered with sample data: its fields, or the error."""

    channel: str
    fields: dict[str, Any] | None
    error: str | None = None


def render_channels(
    template: Template,
    user: dict[str, Any],
    trigger: dict[str, Any],
    config: Config,
) -> list[Rendered]:
    """Every channel block of the template, rendered as a send would render it."""
    uid = str(user.get("user_id", "preview-user"))
    profile = new_profile(uid, 0.0)
    _merge_profile(profile, {k: v for k, v in user.items() if k != "user_id"})
    event = trigger or SAMPLE_TRIGGER
    now = parse_time(event["time"]) if isinstance(event.get("time"), str) else 0.0
    tracker = Tracker(config.tracking.base_url, config.tracking.secret or "preview")
    out = []
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
        try:
            out.append(Rendered(channel, template.render(channel, ctx)))
        except ExpressionError as exc:
            out.append(Rendered(channel, None, str(exc)))
    return out


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
    failed = 0
    for item in render_channels(template, user, trigger, config):
        out.write(f"== {item.channel} ==\n")
        if item.fields is None:
            failed += 1
            out.write(f"template_error: {item.error}\n\n")
            continue
        for key, value in item.fields.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out.write(f"{key}: {text}\n" if "\n" not in text else f"{key}:\n{text}\n")
        out.write("\n")
    return 1 if failed else 0
