"""The actions' HTTP side (issue 13), shared by the API and the dashboard's forms: the
runtime service of a request, a test send's body decoded, answers as JSON, and each
ActionError's HTTP status."""

from __future__ import annotations

import json
from typing import Any

from engine.api.state import AppState
from engine.clock import iso
from engine.errors import EventError
from engine.lang.events import check_text
from engine.runtime.actions import ActionError, Actions, TestSend
from engine.store.controls import AuditRow, RuleControl

_MAX_ADDRESS = 2000
STATUS = {
    "invalid": 400,
    "not_found": 404,
    "not_running": 409,
    "channel_unavailable": 409,
    "template_error": 422,
}


def status_of(exc: ActionError) -> int:
    return STATUS.get(exc.code, 400)


def actions(state: AppState) -> Actions:
    return Actions(
        state.store,
        state.clock,
        state.config,
        state.processor,
        state.rules,
        state.dispatcher,
        state.tracker,
    )


def control_json(control: RuleControl | None) -> dict[str, Any]:
    if control is None:
        return {"paused": False, "hold": False, "by": None, "at": None}
    return {
        "paused": control.paused,
        "hold": control.hold,
        "by": control.by,
        "at": iso(control.at),
    }


def audit_json(row: AuditRow) -> dict[str, Any]:
    try:
        detail = json.loads(row.detail)
    except ValueError:
        detail = row.detail
    return {
        "at": iso(row.at),
        "who": row.who,
        "action": row.action,
        "target": row.target,
        "detail": detail,
    }


def parse_test_send(data: Any) -> TestSend:
    """The body of POST /v1/test-sends; ActionError `invalid` naming the field."""
    if not isinstance(data, dict):
        raise ActionError("invalid", "the body must be a JSON object")
    for key in ("template", "channel"):
        value = data.get(key)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise ActionError("invalid", f"{key}: must be a name (a non-empty string)")
    address = data.get("address")
    if isinstance(address, str):
        address = address.strip()
    if not address or not isinstance(address, str | dict):
        raise ActionError(
            "invalid",
            "address: must be the address to send to (a string, or a web push subscription object)",
        )
    if len(json.dumps(address)) > _MAX_ADDRESS:
        raise ActionError("invalid", f"address: longer than {_MAX_ADDRESS} characters")
    try:
        check_text(address, "address")
    except EventError as exc:
        raise ActionError("invalid", str(exc)) from None
    for key in ("user", "rule"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
            raise ActionError("invalid", f"{key}: must be an id (a non-empty string) or null")
    unknown = sorted(set(data) - {"template", "channel", "address", "user", "rule"})
    if unknown:
        raise ActionError("invalid", f"{unknown[0]}: unknown field")
    return TestSend(data["template"], data["channel"], address, data.get("user"), data.get("rule"))
