"""`kaskad preview` and the dashboard's template pages: a template rendered for every
channel it has, with sample data that fits the rules that send it.

The sample trigger is an event of the type that starts the first rule (by id) using the
template, with the data fields SPEC 2 gives that type (a broadcast gets the trigger the
scheduler makes); the sample user has an address on every channel. `--user` and
`--trigger` files replace them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from engine.clock import parse_time
from engine.core.facts import merge_profile
from engine.core.model import new_profile, profile_context
from engine.core.tracking import Tracker
from engine.errors import EventError, ExpressionError
from engine.lang.config import Config
from engine.lang.events import MESSAGE_EVENTS, PRODUCT_EVENTS, parse_event
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.lang.templates import Template

SAMPLE_TIME = "2026-11-23T10:00:00Z"
SAMPLE_USER_ID = "preview-user"
_URL = "https://shop.example/p/p1"
_ITEM = {"product_id": "p1", "name": "Kettle", "url": _URL, "price": 2990, "qty": 2}
_EXPIRES = "2026-12-31T00:00:00Z"  # five weeks after the sample time: a week-before wait fits

# A profile as `profile.updated` data plus user_id: an address on every channel.
SAMPLE_USER: dict[str, Any] = {
    "user_id": SAMPLE_USER_ID,
    "email": "ann@example.com",
    "phone": "+15550001234",
    "whatsapp": "+15550001234",
    "telegram_chat_id": "123456789",
    "push_tokens": ["fcm-preview-token"],
    "webpush": [
        {
            "endpoint": "https://push.example/send/preview",
            "keys": {"p256dh": "BPreviewP256dhKey", "auth": "preview-auth"},
        }
    ],
    "timezone": "Europe/Berlin",
    "locale": "en",
    "consent": {},
    "attributes": {"first_name": "Ann"},
}
# What kaskad derives from a user's events, so templates reading them render too.
SAMPLE_FACTS: dict[str, Any] = {
    "orders_count": 3,
    "revenue": 14970,
    "last_order_at": "2026-10-02T14:05:00Z",
    "points_balance": 1500,
    "rfm": "loyal",
    "rfm_scores": {"r": 4, "f": 4, "m": 4},
}

# The data of a sample event per type: SPEC 2's standard types with their fields, and the
# custom types the shipped rules use.
SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "profile.updated": {k: v for k, v in SAMPLE_USER.items() if k != "user_id"},
    "product.viewed": {
        "product_id": "p1",
        "name": "Kettle",
        "url": _URL,
        "price": 2990,
        "category": "kitchen",
    },
    "search.performed": {"query": "electric kettle", "results": 12},
    "cart.updated": {"items": [_ITEM], "total": 5980},
    "cart.cleared": {},
    "favorite.added": {"product_id": "p1", "name": "Kettle", "url": _URL},
    "favorite.removed": {"product_id": "p1", "name": "Kettle", "url": _URL},
    "product.subscribed": {"product_id": "p1", "kind": "price_drop"},
    "product.unsubscribed": {"product_id": "p1", "kind": "price_drop"},
    "product.price_dropped": {
        "product_id": "p1",
        "name": "Kettle",
        "url": _URL,
        "old_price": 2990,
        "new_price": 2490,
    },
    "product.back_in_stock": {"product_id": "p1", "name": "Kettle", "url": _URL},
    "order.created": {"order_id": "o-1001", "total": 5980, "items": [_ITEM], "source": "online"},
    "points.accrued": {"amount": 500, "balance": 1500, "expires_at": _EXPIRES},
    "points.expiring": {"amount": 500, "balance": 1500, "expires_at": _EXPIRES},
    "bonus.credited": {"amount": 100, "balance": 350},
    **{
        kind: {"message_id": "m-1001", "rule": "abandoned_cart", "channel": "email"}
        for kind in sorted(MESSAGE_EVENTS)
    },
    "segment.entered": {"segment": "baby_0_3"},
    "segment.left": {"segment": "baby_0_3"},
    "license.issued": {"license_id": "LIC-1001", "product": "Shop Pro", "expires_at": _EXPIRES},
    "license.renewed": {"license_id": "LIC-1001", "product": "Shop Pro", "expires_at": _EXPIRES},
}


def _any_type_data() -> dict[str, Any]:
    """For a custom type without a sample of its own: every sample field at once."""
    merged: dict[str, Any] = {}
    for kind in ("cart.updated", "order.created", "points.accrued", "product.price_dropped"):
        merged.update(SAMPLE_DATA[kind])
    return merged


@dataclass
class Sample:
    """The trigger a template is previewed with, and where it comes from (for people)."""

    trigger: dict[str, Any]
    origin: str


def sample_event(event_type: str, user_id: str = SAMPLE_USER_ID) -> dict[str, Any]:
    """An envelope of `event_type` with its sample data (product events have no user)."""
    data = SAMPLE_DATA.get(event_type)
    return {
        "id": "evt-preview",
        "type": event_type,
        "user_id": None if event_type in PRODUCT_EVENTS else user_id,
        "time": SAMPLE_TIME,
        "data": copy.deepcopy(data if data is not None else _any_type_data()),
    }


def rules_sending(ruleset: RuleSet, template: str) -> list[str]:
    """The ids of the rules that send `template`, in order."""
    return sorted(r.id for r in ruleset.rules.values() if template in r.templates)


def sample_trigger(
    ruleset: RuleSet, template: str, user_id: str = SAMPLE_USER_ID, rule_id: str | None = None
) -> Sample:
    """A trigger fitting the rule `rule_id` if it sends `template`, else the first rule (by
    id) that sends it."""
    users = sorted((r for r in ruleset.rules.values() if template in r.templates), key=_rule_id)
    if not users:
        return Sample(
            sample_event("cart.updated", user_id), "a cart.updated event (no rule uses it)"
        )
    rule = next((r for r in users if r.id == rule_id), users[0])
    event_type = rule.trigger.event
    if event_type is None:  # a broadcast: the trigger the scheduler gives each user
        trigger = {
            "id": None,
            "type": "schedule",
            "user_id": user_id,
            "time": SAMPLE_TIME,
            "data": {"rule": rule.id},
        }
        return Sample(trigger, f"the broadcast trigger of rule {rule.id}")
    return Sample(
        sample_event(event_type, user_id), f"a {event_type} event (the trigger of rule {rule.id})"
    )


def _rule_id(rule: Any) -> str:
    return str(rule.id)


def user_from_file(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """A `--user` object (profile.updated data plus user_id), checked as that event is."""
    uid = obj.get("user_id", SAMPLE_USER_ID)
    data = {k: v for k, v in obj.items() if k != "user_id"}
    try:
        parse_event(
            {"type": "profile.updated", "user_id": uid, "data": data},
            received_at=parse_time(SAMPLE_TIME),
        )
    except EventError as exc:
        field = "user_id" if exc.field == "user_id" else exc.field.removeprefix("data.")
        raise ValueError(f"{where}: {field}: {exc.message}") from None
    return {"user_id": uid, **data}


def trigger_from_file(obj: dict[str, Any], user_id: str, where: str) -> dict[str, Any]:
    """A `--trigger` event envelope, checked as POST /v1/events checks it; `user_id` (the
    previewed user's) and `time` (the sample time) when it has none."""
    envelope = dict(obj)
    if envelope.get("type") not in PRODUCT_EVENTS:
        envelope.setdefault("user_id", user_id)
    envelope.setdefault("time", SAMPLE_TIME)
    try:
        event = parse_event(envelope, received_at=parse_time(SAMPLE_TIME))
    except EventError as exc:
        raise ValueError(f"{where}: {exc.field}: {exc.message}") from None
    return event.context


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
    facts: dict[str, Any] | None = None,
    *,
    profile: dict[str, Any] | None = None,
    message_id: str = "m-preview",
    tracker: Tracker | None = None,
) -> list[Rendered]:
    """Every channel block of the template, rendered as a send would render it, for the
    profile `user` (profile.updated data plus user_id) makes, with derived `facts` on it;
    or for a stored `profile` as it is (the dashboard's preview of a real user). Links are
    signed for `message_id` by `tracker` (a test send's are the daemon's own, so they
    work); by default with the configured secret or a stand-in (a preview's)."""
    if profile is not None:
        profile = copy.deepcopy(profile)
    else:
        profile = new_profile(str(user.get("user_id", SAMPLE_USER_ID)), parse_time(SAMPLE_TIME))
        merge_profile(profile, {k: v for k, v in user.items() if k != "user_id"})
        profile.update(copy.deepcopy(facts or {}))
    event = trigger
    now = parse_time(event["time"]) if isinstance(event.get("time"), str) else 0.0
    links = tracker or Tracker(config.tracking.base_url, config.tracking.secret or "preview")
    out = []
    for channel in template.blocks:
        ctx = {
            "event": event,
            "trigger": event,
            "user": profile_context(profile),
            "now": datetime.fromtimestamp(now, UTC),
            "message": {"id": message_id, "channel": channel, "rule": "preview"},
            "track": lambda url: links.click_url(message_id, str(url)),
            "unsubscribe_url": links.unsubscribe_url(message_id, channel),
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
    user: dict[str, Any] | None,
    trigger: dict[str, Any] | None,
    config: Config,
    out: TextIO,
    err: TextIO,
) -> int:
    """Print the template rendered for every channel; 1 on an unknown template or a
    template_error. `user`/`trigger` None: the samples (which ones is said on `err`)."""
    ruleset = load_ruleset([rules_path])
    template = ruleset.templates.get(name)
    if template is None:
        for problem in ruleset.problems:
            out.write(f"{problem}\n")
        out.write(f"unknown template '{name}'\n")
        return 1
    the_user = SAMPLE_USER if user is None else user
    if trigger is None:
        sample = sample_trigger(ruleset, name, str(the_user.get("user_id", SAMPLE_USER_ID)))
        trigger = sample.trigger
        err.write(f"sample trigger: {sample.origin}; --trigger replaces it\n")
    if user is None:
        err.write("sample user: an address on every channel; --user replaces it\n")
    failed = 0
    facts = SAMPLE_FACTS if user is None else None
    for item in render_channels(template, the_user, trigger, config, facts):
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
