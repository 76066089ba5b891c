"""JSON Schemas of the actions' bodies (issue 13): a rule's pause, an ended instance, a
test send, the audit log. Part of the OpenAPI components (schemas.SCHEMAS)."""

from __future__ import annotations

from engine.api.schemas import ID, NULLABLE_STR, TIME, Schema

_CONTROL: Schema = {
    "paused": {"type": "boolean"},
    "hold": {"type": "boolean", "description": "running instances are held too"},
    "by": {**NULLABLE_STR, "description": "the account that set it"},
    "at": TIME,
}

ACTION_SCHEMAS: dict[str, Schema] = {
    "PauseRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "hold": {
                "type": "boolean",
                "default": False,
                "description": "hold the running instances too: their timers and sends "
                "wait until the rule is resumed (timers that came due meanwhile fire then, "
                "the time held not counted toward policies.max_lateness)",
            }
        },
    },
    "RuleControl": {
        "type": "object",
        "required": ["rule", "state", "paused", "hold", "by", "at"],
        "properties": {
            "rule": {"type": "string"},
            "state": {"enum": ["paused", "active"]},
            **_CONTROL,
        },
    },
    "EndedInstance": {
        "type": "object",
        "required": ["id", "rule", "user_id", "status", "end_reason"],
        "properties": {
            "id": {"type": "string"},
            "rule": {"type": "string"},
            "user_id": {"type": "string"},
            "status": {"const": "stopped"},
            "end_reason": {"const": "ended_by_user"},
        },
    },
    "TestSendRequest": {
        "type": "object",
        "required": ["template", "channel", "address"],
        "additionalProperties": False,
        "properties": {
            "template": {"type": "string", "minLength": 1, "maxLength": 200},
            "channel": {"type": "string", "minLength": 1, "maxLength": 200},
            "address": {
                "description": "where to send: an e-mail address, a phone number, a chat id, "
                "a push token, or a web push subscription object",
                "anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}],
            },
            "user": {
                **NULLABLE_STR,
                "description": "render with this user's stored profile and their last event "
                "of the trigger's type (as the template page's preview does)",
            },
            "rule": {
                **NULLABLE_STR,
                "description": "the trigger of this rule sending the template",
            },
        },
    },
    "TestSend": {
        "type": "object",
        "required": ["id", "template", "channel", "address", "outcome", "provider_id", "detail"],
        "properties": {
            "id": {"type": "string"},
            "template": {"type": "string"},
            "channel": {"type": "string"},
            "address": {},
            "user": NULLABLE_STR,
            "rule": NULLABLE_STR,
            "outcome": {
                "enum": ["accepted", "retry", "reject_recipient", "reject_message", "config_error"]
            },
            "provider_id": NULLABLE_STR,
            "detail": {"type": "string"},
        },
    },
    "Audit": {
        "type": "object",
        "required": ["actions"],
        "properties": {
            "actions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "who", "action", "target", "detail"],
                    "properties": {
                        "at": TIME,
                        "who": {"type": "string"},
                        "action": {"enum": ["pause", "resume", "end_instance", "test_send"]},
                        "target": ID,
                        "detail": {},
                    },
                },
            }
        },
    },
}
