"""`kaskad schema`: a JSON Schema of rule and template files for editor completion.

Built from the same key tables the validator uses (the rules' here, the channel kinds'
from channels/kinds, read when it is built), so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from channels.kinds import Field, kind_names, kinds
from engine.lang.program import AWAIT_KINDS
from engine.lang.rules import CATEGORIES, FAN_OUT_KINDS, MODES
from engine.lang.segments import MAX_AT_LEAST
from engine.lang.stepnames import NAME_MAX

_DURATION = {
    "type": "string",
    "pattern": r"^-?(\d+[smhdw])+$",
    "description": "units s m h d w, combinable: 1d12h",
}
_EXPR = {"type": "string", "description": "Jinja2 expression over event, trigger, user, now"}
_EVENT_TYPE = {"type": "string", "pattern": r"^[a-z0-9_]+(\.[a-z0-9_]+)*$"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _match() -> dict[str, Any]:
    return _obj({"event": _EVENT_TYPE, "if": _EXPR}, ["event"])


def _cascade() -> dict[str, Any]:
    channels = list(kind_names())
    entry = _obj(
        {
            "channel": {"enum": channels},
            "template": {"type": "string"},
            "await": {"enum": list(AWAIT_KINDS)},
            "within": _DURATION,
        },
        ["channel"],
    )
    return {"type": "array", "minItems": 1, "items": {"anyOf": [{"enum": channels}, entry]}}


def rule_schema() -> dict[str, Any]:
    steps = {"type": "array", "items": {"$ref": "#/$defs/step"}}
    wait = {
        "anyOf": [
            _DURATION,
            _obj(
                {
                    "until": {"type": "string"},
                    "offset": _DURATION,
                    "for": _DURATION,
                    "at": {"type": "string", "pattern": r"^\d{1,2}:\d{2}$"},
                }
            ),
        ]
    }
    send = _obj(
        {
            "template": {"type": "string"},
            "cascade": _cascade(),
            "variants": {
                "type": "array",
                "items": _obj(
                    {
                        "name": {"type": "string"},
                        "weight": {"type": "number", "minimum": 0},
                        "template": {"type": "string"},
                        "cascade": _cascade(),
                        "audience": _EXPR,
                    },
                    ["name"],
                ),
            },
        },
        ["cascade"],
    )
    wait_for = _obj(
        {
            "event": _EVENT_TYPE,
            "if": _EXPR,
            "timeout": _DURATION,
            "on_event": steps,
            "on_timeout": steps,
        },
        ["event"],
    )
    # every step may carry a readable name, unique in its rule (engine/lang/stepnames.py)
    name = {"name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX}}
    step = {
        "oneOf": [
            _obj({"wait": wait, **name}, ["wait"]),
            _obj({"send": send, **name}, ["send"]),
            _obj(
                {"wait_for": wait_for, "on_event": steps, "on_timeout": steps, **name},
                ["wait_for"],
            ),
            _obj({"if": _EXPR, "then": steps, "else": steps, **name}, ["if", "then"]),
            _obj({"stop": {"const": True}, **name}, ["stop"]),
        ]
    }
    trigger = {
        "oneOf": [
            _obj(
                {
                    "event": _EVENT_TYPE,
                    "if": _EXPR,
                    "fan_out": {"type": "array", "items": {"enum": list(FAN_OUT_KINDS)}},
                },
                ["event"],
            ),
            _obj(
                {
                    "schedule": {
                        "anyOf": [
                            {"type": "string", "description": "5-field cron, e.g. 0 11 * * TUE"},
                            _obj(
                                {
                                    "at": {
                                        "type": "string",
                                        "description": "once, at this ISO 8601 time",
                                    }
                                },
                                ["at"],
                            ),
                        ]
                    },
                    "timezone": {"type": "string"},
                },
                ["schedule"],
            ),
        ]
    }
    return {
        **_obj(
            {
                "rule": {"type": "string"},
                "description": {"type": "string"},
                "category": {"enum": list(CATEGORIES)},
                "trigger": trigger,
                "key": {"type": "string"},
                "mode": {"enum": list(MODES)},
                "cooldown": _DURATION,
                "audience": _EXPR,
                "goal": {"anyOf": [_match(), {"type": "array", "items": _match()}]},
                "exit_on": {"anyOf": [_match(), {"type": "array", "items": _match()}]},
                "holdout": {
                    "anyOf": [
                        {"const": 0},
                        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
                    ]
                },
                "group": {"type": "string"},
                "priority": {"type": "integer"},
                "steps": {**steps, "minItems": 1},
            },
            ["rule", "trigger", "steps"],
        ),
        "$defs": {"step": step},
    }


def _field(spec: Field) -> dict[str, Any]:
    if spec.kind == "choice":
        return {"enum": list(spec.choices)}
    return dict(_FIELD_TYPES[spec.kind])


_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "text": {"type": "string"},
    "html": {"type": "string"},
    "mapping": {"type": "object"},
    "text_list": {"type": "array", "items": {"type": "string"}},
    "flag": {"type": "boolean"},
}


def template_schema() -> dict[str, Any]:
    props: dict[str, Any] = {"template": {"type": "string"}, "description": {"type": "string"}}
    for kind in kinds():
        fields = {key: _field(kind.fields[key]) for key in sorted(kind.fields)}
        props[kind.name] = _obj(fields, sorted(kind.required))
    return _obj(props, ["template"])


def segment_schema() -> dict[str, Any]:
    event = _obj(
        {
            "event": _EVENT_TYPE,
            "if": _EXPR,
            "within": _DURATION,
            "at_least": {"type": "integer", "minimum": 1, "maximum": MAX_AT_LEAST},
        },
        ["event", "within"],
    )
    conditions = {
        "type": "array",
        "minItems": 1,
        "items": {"oneOf": [event, _obj({"profile": _EXPR}, ["profile"])]},
    }
    base = {"segment": {"type": "string"}, "description": {"type": "string"}}
    return {
        "oneOf": [
            _obj({**base, "any": conditions}, ["segment", "any"]),
            _obj({**base, "all": conditions}, ["segment", "all"]),
        ]
    }


def schema() -> dict[str, Any]:
    rule = rule_schema()
    defs = rule.pop("$defs")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kaskad.dev/schema/rules.json",
        "title": "kaskad rule, template or segment file",
        "oneOf": [
            {"$ref": "#/$defs/rule"},
            {"$ref": "#/$defs/template"},
            {"$ref": "#/$defs/segment"},
        ],
        "$defs": {"rule": rule, "template": template_schema(), "segment": segment_schema(), **defs},
    }
