"""JSON Schemas of the HTTP API's bodies: the components of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from engine.lang.events import MAX_ID_CHARS, PRODUCT_EVENTS

Schema = dict[str, Any]

NULLABLE_STR: Schema = {"type": ["string", "null"]}
TIME: Schema = {"type": ["string", "null"], "description": "ISO 8601, UTC with Z"}


def ref(name: str) -> Schema:
    return {"$ref": "#/components/schemas/" + name}


NO_NUL = "^[^\\u0000]*$"  # a pattern (ECMA 262 regex) for text without NUL
ID: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": NO_NUL}

_NUMBER_OR_NULL: Schema = {"type": ["number", "null"]}
_GROUP: Schema = {
    "type": "object",
    "required": ["users", "converted", "rate", "revenue", "revenue_per_user"],
    "properties": {
        "users": {"type": "integer", "description": "users who started the rule in range"},
        "converted": {"type": "integer", "description": "of them, users who converted"},
        "rate": {"type": "number", "description": "converted / users"},
        "revenue": {
            "type": "number",
            "description": "their orders within the attribution window after a start",
        },
        "revenue_per_user": {"type": "number"},
    },
}
# A control group against the users who got the messages (SPEC 12).
_HOLDOUT: Schema = {
    "type": "object",
    "required": [
        "share",
        "converted_by",
        "min_sample",
        "treatment",
        "holdout",
        "lift_abs",
        "lift_rel",
        "p_value",
        "ci95",
        "incremental_conversions",
        "incremental_revenue",
        "verdict",
    ],
    "properties": {
        "share": {**_NUMBER_OR_NULL, "description": "the holdout in percent (null: rule gone)"},
        "converted_by": {
            "enum": ["goal", "order"],
            "description": "goal: the rule's goal ended the instance; order: an order within "
            "policies.attribution.window of the start",
        },
        "min_sample": {"type": "integer", "description": "policies.ab.min_sample"},
        "treatment": _GROUP,
        "holdout": _GROUP,
        "lift_abs": {"type": "number", "description": "treatment rate - holdout rate"},
        "lift_rel": {**_NUMBER_OR_NULL, "description": "lift_abs / holdout rate"},
        "p_value": {**_NUMBER_OR_NULL, "description": "two-proportion z-test, two-sided"},
        "ci95": {
            "description": "95% confidence interval of lift_abs",
            "anyOf": [
                {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                {"type": "null"},
            ],
        },
        "incremental_conversions": {
            **_NUMBER_OR_NULL,
            "description": "lift_abs * treatment users",
        },
        "incremental_revenue": {
            **_NUMBER_OR_NULL,
            "description": "(revenue per treatment user - per holdout user) * treatment users",
        },
        "verdict": {"type": "string"},
    },
}

_MESSAGE: Schema = {
    "type": "object",
    "required": ["id", "rule", "user_id", "channel", "status", "created_at", "sent_at"],
    "properties": {
        "id": {"type": "string"},
        "rule": {"type": "string"},
        "user_id": {"type": "string"},
        "step": {"type": "string"},
        "channel": NULLABLE_STR,
        "template": NULLABLE_STR,
        "variant": NULLABLE_STR,
        "status": {"type": "string"},
        "reason": NULLABLE_STR,
        "detail": NULLABLE_STR,
        "created_at": TIME,
        "sent_at": TIME,
        "delivered_at": TIME,
        "opened_at": TIME,
        "clicked_at": TIME,
        "provider_id": NULLABLE_STR,
        "attempts": {"type": "integer"},
    },
}

_MESSAGE_DETAIL: Schema = {
    "type": "object",
    "required": [*_MESSAGE["required"], "content", "links", "history", "history_source"],
    "properties": {
        **_MESSAGE["properties"],
        "instance_id": NULLABLE_STR,
        "category": {"type": "string"},
        "recipient": {"type": ["array", "null"], "description": "the addresses sent to"},
        "next_attempt_at": TIME,
        "content": {"type": "object", "description": "the rendered fields, as sent"},
        "headers": {"type": "object"},
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["url", "kind", "destination", "verified", "field"],
                "properties": {
                    "url": {"type": "string"},
                    "kind": {"enum": ["click", "open", "unsubscribe"]},
                    "destination": NULLABLE_STR,
                    "verified": {"type": "boolean"},
                    "field": {"type": "string"},
                },
            },
        },
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at", "status", "detail"],
                "properties": {"at": TIME, "status": {"type": "string"}, "detail": NULLABLE_STR},
            },
        },
        "history_source": {"enum": ["recorded", "implied"]},
    },
}

_INSTANCE: Schema = {
    "type": "object",
    "required": ["id", "rule", "status", "started_at"],
    "properties": {
        "id": {"type": "string"},
        "rule": {"type": "string"},
        "version": {"type": "string"},
        "key": NULLABLE_STR,
        "status": {"type": "string"},
        "started_at": TIME,
        "ended_at": TIME,
        "end_reason": NULLABLE_STR,
        "waiting": NULLABLE_STR,
        "next_at": TIME,
        "variant": NULLABLE_STR,
        "trigger": {"type": "object"},
    },
}

_EVENT: Schema = {
    "type": "object",
    "description": "SPEC 2; at most 64 KiB and 64 levels of nesting per event",
    "required": ["type"],
    "additionalProperties": False,
    "properties": {
        "id": {**ID, "description": "repeats of an accepted id are acknowledged and ignored"},
        "type": {"type": "string", "pattern": "^[a-z0-9_]+(\\.[a-z0-9_]+)*$"},
        "user_id": {
            "type": ["string", "integer"],
            "minLength": 1,
            "maxLength": MAX_ID_CHARS,
            "pattern": NO_NUL,
            "description": "required, except for product events, which have none",
        },
        "time": {"type": "string", "format": "date-time"},
        "data": {"type": ["object", "null"]},
    },
    "if": {"required": ["type"], "properties": {"type": {"enum": sorted(PRODUCT_EVENTS)}}},
    "then": {
        "not": {"required": ["user_id"]},
        "required": ["data"],
        "properties": {
            "data": {
                "type": "object",
                "required": ["product_id"],
                "properties": {"product_id": {"type": ["string", "integer"], "minLength": 1}},
            }
        },
    },
    "else": {"required": ["user_id"]},
}

_PROFILE_DATA: Schema = {
    "type": "object",
    "description": "merged into the profile as a profile.updated event's data",
    "properties": {
        "email": NULLABLE_STR,
        "phone": NULLABLE_STR,
        "whatsapp": NULLABLE_STR,
        "telegram_chat_id": {"type": ["string", "integer", "null"]},
        "push_tokens": {"type": "array", "items": {"type": "string"}},
        "webpush": {"type": "array", "items": {"type": "object"}},
        "timezone": NULLABLE_STR,
        "locale": NULLABLE_STR,
        "consent": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "attributes": {"type": "object"},
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"description": "what and where, e.g. [{index, field, message}]"},
                },
            }
        },
    },
    "Event": _EVENT,
    "Accepted": {
        "type": "object",
        "required": ["accepted", "duplicates"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
        },
    },
    "ProfileData": _PROFILE_DATA,
    "Profile": {"type": "object", "description": "every standard field, then the shop's own"},
    "Message": _MESSAGE,
    "MessageDetail": _MESSAGE_DETAIL,
    "Messages": {
        "type": "object",
        "required": ["messages", "next_cursor"],
        "properties": {
            "messages": {"type": "array", "items": ref("Message")},
            "next_cursor": NULLABLE_STR,
        },
    },
    "Instance": _INSTANCE,
    "Timeline": {
        "type": "object",
        "required": ["user_id", "instances", "orders", "timeline"],
        "properties": {
            "user_id": {"type": "string"},
            "instances": {"type": "array", "items": ref("Instance")},
            "orders": {"type": "array", "items": {"type": "object"}},
            "timeline": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["time", "kind"],
                    "properties": {"time": TIME, "kind": {"type": "string"}},
                },
            },
            "events": {
                "type": "array",
                "description": (
                    "the user's own events, newest first: the newest 200 within "
                    "storage.event_retention (data is null when it was too big to keep)"
                ),
                "items": {
                    "type": "object",
                    "required": ["time", "type", "event_id", "summary", "data"],
                    "properties": {
                        "time": TIME,
                        "type": {"type": "string"},
                        "event_id": NULLABLE_STR,
                        "summary": {"type": "string"},
                        "data": {"type": ["object", "null"]},
                    },
                },
            },
        },
    },
    "Rules": {
        "type": "object",
        "required": ["rules", "templates", "problems", "loaded_at"],
        "properties": {
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "path", "state", "errors"],
                    "properties": {
                        "id": {"type": "string"},
                        "path": {"type": "string"},
                        "state": {"enum": ["active", "stale", "invalid", "deleted", "paused"]},
                        "paused": {
                            "description": "paused by hand: held running instances too, "
                            "by whom, since when",
                            "anyOf": [{"type": "object"}, {"type": "null"}],
                        },
                        "errors": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
            "templates": {"type": "array", "items": {"type": "string"}},
            "problems": {"type": "array", "items": {"type": "string"}},
            "loaded_at": {"anyOf": [TIME, {"type": "null"}]},
        },
    },
    "Stats": {
        "type": "object",
        "description": "as `kaskad stats --format json`",
        "required": [
            "generated_at",
            "since",
            "until",
            "attribution",
            "orders",
            "rules",
            "global_holdout",
        ],
        "properties": {
            "generated_at": {"type": "string"},
            "since": TIME,
            "until": TIME,
            "attribution": {"type": "object"},
            "orders": {"type": "object"},
            "rules": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["rule", "holdout"],
                    "properties": {
                        "rule": {"type": "string"},
                        "holdout": {
                            "description": "the rule's holdout measured; null without one",
                            "anyOf": [ref("Holdout"), {"type": "null"}],
                        },
                        "journey": {
                            "description": "per step in program order (step '' is the "
                            "trigger): instances that reached it in the range's hours, the "
                            "ways they went (then/else, event/timeout) and how they ended "
                            "while at it (converted: the goal)",
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["step", "name", "reached", "edges", "ended"],
                                "properties": {
                                    "step": {"type": "string"},
                                    "name": {"type": "string"},
                                    "reached": {"type": "integer"},
                                    "edges": {"type": "object"},
                                    "ended": {"type": "object"},
                                },
                            },
                        },
                    },
                },
            },
            "global_holdout": {
                "description": "everyone else (treatment) against policies.global_holdout "
                "(holdout) over the marketing rules; null when none is configured",
                "anyOf": [ref("Holdout"), {"type": "null"}],
            },
        },
    },
    "Holdout": _HOLDOUT,
    "Segments": {
        "type": "object",
        "required": ["segments"],
        "properties": {
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "description", "size", "file"],
                    "properties": {
                        "id": {"type": "string"},
                        "description": {"type": "string"},
                        "size": {"type": "integer", "minimum": 0},
                        "file": {"type": "string"},
                    },
                },
            }
        },
    },
    "SegmentUsers": {
        "type": "object",
        "required": ["segment", "users", "next_after"],
        "properties": {
            "segment": {"type": "string"},
            "users": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["user_id", "since"],
                    "properties": {"user_id": {"type": "string"}, "since": TIME},
                },
            },
            "next_after": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    },
    "Rfm": {
        "type": "object",
        "required": ["customers", "changed", "segments"],
        "properties": {
            "customers": {"type": "integer"},
            "changed": {"type": "integer"},
            "segments": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "Ready": {
        "type": "object",
        "required": ["ready", "checks"],
        "properties": {"ready": {"type": "boolean"}, "checks": {"type": "object"}},
    },
}
