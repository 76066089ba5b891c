"""The OpenAPI 3.1 document of the HTTP API (SPEC 8), served at GET /openapi.json.

Kept as data next to the handlers; tests/daemon/test_openapi.py checks that every route of
the app is documented and every documented path exists, and fuzzes every operation
against this document (status codes, content types and JSON bodies must conform).
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from engine.api.schemas import ID, SCHEMAS, Schema, ref
from engine.api.schemas_actions import ACTION_SCHEMAS
from engine.lang.events import MAX_ID_CHARS, MAX_NESTING


def _json(schema: Schema, description: str, headers: Schema | None = None) -> Schema:
    out: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _error(description: str, retry: bool = False) -> Schema:
    headers = {"Retry-After": {"schema": {"type": "string"}, "required": True}} if retry else None
    return _json(ref("Error"), description, headers)


def _html(description: str) -> Schema:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _redirect(description: str) -> Schema:
    return {
        "description": description,
        "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
    }


def _query(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _path(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


USER_ID = _path(
    "user_id",
    f"the shop's user id: 1-{MAX_ID_CHARS} characters, no NUL",
    ID,
)

# -- operations ----------------------------------------------------------------------------

INGEST: list[Schema] = [{"ingestBearer": []}, {"ingestSignature": [], "ingestTimestamp": []}]
ADMIN: list[Schema] = [{"adminBearer": []}]
METRICS: list[Schema] = [{"metricsBearer": []}, {"adminBearer": []}]
DASHBOARD: list[Schema] = [{"adminBearer": []}, {"dashboardSession": []}]
PUBLIC: list[Schema] = []

_UNAUTHORIZED = _error("missing or wrong credentials")
_FORBIDDEN = _error("the account's role may not do this: the message names the role needed")
_INVALID = _error("a parameter is invalid: the message and details name it")
_HTML_401 = _html("the login form")
# A wrong token (or failed login) counts against the client's address: over the limit,
# every token from it, the right one too, waits (api/ratelimit.py).
_TOO_MANY = _error("too many failed authentications from this address; retry", retry=True)
_HTML_429: Schema = {
    **_html("the login form: too many failed logins from this address"),
    "headers": {"Retry-After": {"schema": {"type": "string"}, "required": True}},
}
_SINCE = _query("since", "a duration back from now (24h, 7d), an ISO date, or `all` (the default)")
_STATUS = _query("status", "only messages with this status (queued, sent, skipped, ...)")
_RULE = _query("rule", "only this rule's data")
_CHANNEL = _query("channel", "only messages of this channel (email, sms, ...)")
_REASON = _query("reason", "only messages with this skip or failure reason (no_consent, ...)")
_FROM = _query("from", "created at or after: an ISO 8601 date or time")
_TO = _query("to", "created before: an ISO 8601 time, or a date (up to its end)")
_CURSOR = _query("cursor", "next_cursor of the previous page")
_MESSAGE_FILTERS = [_RULE, _STATUS, _CHANNEL, _REASON, _FROM, _TO]
_MESSAGE_ID = _path("message_id", "a message id (GET /v1/messages)", ID)


def _op(
    summary: str,
    security: list[Schema],
    responses: dict[str, Schema],
    *,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    tags: tuple[str, ...] = (),
) -> Schema:
    op: Schema = {"summary": summary, "security": security, "responses": responses}
    if tags:
        op["tags"] = list(tags)
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    return op


def _admin(
    summary: str,
    ok: Schema,
    parameters: list[Schema] | None = None,
    *,
    body: Schema | None = None,
    extra: dict[str, Schema] | None = None,
) -> Schema:
    """An admin operation: 200 `ok`, 400 for a bad parameter, 401 without a token, 403 for
    a role that may not (reads: viewer; actions: marketer; other writes: admin)."""
    responses = {
        "200": ok,
        "400": _INVALID,
        "401": _UNAUTHORIZED,
        "403": _FORBIDDEN,
        "429": _TOO_MANY,
        **(extra or {}),
    }
    return _op(summary, ADMIN, responses, parameters=parameters, body=body, tags=("admin",))


_PAGE_ANSWERS = {"400": _html("what was wrong with the request"), "404": _html("not found")}


def _page(summary: str, *codes: str, parameters: list[Schema] | None = None) -> Schema:
    """A dashboard page: HTML, the login form (401) without the token or a session."""
    responses = {"200": _html("the page"), "401": _HTML_401, "429": _HTML_429}
    responses.update((code, _PAGE_ANSWERS[code]) for code in codes)
    return _op(summary, DASHBOARD, responses, parameters=parameters, tags=("dashboard",))


def _action(summary: str, *, hold: bool = False, test: bool = False) -> Schema:
    """A dashboard form (role marketer; with a session cookie its CSRF token): back to the
    page (303), or a page saying why not."""
    fields: dict[str, Schema] = {"csrf": {"type": "string"}}
    if hold:
        fields["hold"] = {"type": "string"}
    if test:
        fields.update(channel={"type": "string"}, address={"type": "string"})
    responses: dict[str, Schema] = {
        "401": _HTML_401,
        "429": _HTML_429,
        "400": _html("what was wrong with the form"),
        "403": _html("the role may not, or the form did not come from this dashboard"),
        "404": _html("no such rule, instance or template"),
        "409": _html("not possible now (an instance that has ended, a channel not set up)"),
    }
    if test:
        responses.update(
            {
                "200": _html("the test was sent"),
                "422": _html("the template does not render"),
                "502": _html("the provider did not accept it"),
            }
        )
    else:
        responses["303"] = _redirect("back to the page")
    return _op(summary, DASHBOARD, responses, body=_form(fields), tags=("dashboard",))


def _form(properties: dict[str, Schema]) -> Schema:
    return {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": properties}
            }
        },
    }


_EVENTS_BODY: Schema = {
    "required": True,
    "description": "one event, a JSON array of events, or NDJSON (one event per line)",
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    ref("Event"),
                    {"type": "array", "items": ref("Event"), "minItems": 1},
                ]
            }
        },
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}

_TOKEN = _path("token", "a signed tracking token (base64url payload.mac)")
_CHANNEL = _path(
    "channel",
    "whatsapp (GET: subscription check; POST: statuses) or sms (POST); others 404",
    {"enum": ["whatsapp", "sms"]},
)
_PIXEL = {"description": "a 1x1 GIF, also for a bad token", "content": {"image/gif": {}}}

PATHS: dict[str, dict[str, Any]] = {
    "/v1/events": {
        "post": _op(
            "Ingest events; 202 only after they are durably stored",
            INGEST,
            {
                "202": _json(ref("Accepted"), "stored (duplicates: ids or a signature seen)"),
                "400": _error("malformed or invalid: each problem by index and field"),
                "401": _UNAUTHORIZED,
                "413": _error("body, batch or nesting over the limits"),
                "415": _error("not JSON or NDJSON"),
                "429": _error("too many events waiting; retry", retry=True),
                "503": _error("the store is unavailable; retry", retry=True),
            },
            body=_EVENTS_BODY,
            tags=("ingest",),
        )
    },
    "/v1/profiles/{user_id}": {
        "parameters": [USER_ID],
        "get": _admin(
            "A profile", _json(ref("Profile"), "the profile"), extra={"404": _error("unknown")}
        ),
        "put": _admin(
            "Merge into a profile (as profile.updated)",
            _json(ref("Profile"), "the merged profile"),
            body={
                "required": True,
                "content": {"application/json": {"schema": ref("ProfileData")}},
            },
            extra={"413": _error("body over the limit")},
        ),
        "delete": _admin(
            "Erase a user's personal data",
            _json(
                {"type": "object", "required": ["erased"], "properties": {"erased": {}}},
                "erased",
            ),
        ),
    },
    "/v1/users/{user_id}/timeline": {
        "parameters": [USER_ID],
        "get": _admin(
            "What kaskad did for a user, and the user's own events, newest first",
            _json(ref("Timeline"), "ok"),
        ),
    },
    "/v1/messages": {
        "get": _admin(
            "The delivery log, newest first",
            _json(ref("Messages"), "a page of messages"),
            [
                _query("user_id", "only this user's messages", ID),
                *_MESSAGE_FILTERS,
                _query(
                    "limit",
                    "page size",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                ),
                _CURSOR,
            ],
        )
    },
    "/v1/messages/{message_id}": {
        "parameters": [_MESSAGE_ID],
        "get": _admin(
            "One message: its content as sent, tracking links, history",
            _json(ref("MessageDetail"), "the message"),
            extra={"404": _error("no such message")},
        ),
    },
    "/v1/rules": {
        "get": _admin("Loaded rules, their state and errors", _json(ref("Rules"), "the rules"))
    },
    "/v1/rules/reload": {
        "post": _admin("Reload the rule files", _json(ref("Rules"), "the rules now"))
    },
    "/v1/rules/{rule_id}/pause": {
        "parameters": [_path("rule_id", "a rule id", ID)],
        "post": _admin(
            "Pause a rule: it starts no instance (role marketer)",
            _json(ref("RuleControl"), "paused"),
            body={
                "required": False,
                "content": {"application/json": {"schema": ref("PauseRequest")}},
            },
            extra={"404": _error("no such rule"), "413": _error("body over the limit")},
        ),
    },
    "/v1/rules/{rule_id}/resume": {
        "parameters": [_path("rule_id", "a rule id", ID)],
        "post": _admin(
            "Resume a paused rule (role marketer)",
            _json(ref("RuleControl"), "resumed"),
            extra={"404": _error("no such rule"), "413": _error("body over the limit")},
        ),
    },
    "/v1/instances/{instance_id}/end": {
        "parameters": [_path("instance_id", "an instance id (timeline)", ID)],
        "post": _admin(
            "End a running instance: its timer and unsent messages are cancelled (role marketer)",
            _json(ref("EndedInstance"), "ended"),
            extra={
                "404": _error("no such instance"),
                "409": _error("the instance has ended already"),
                "413": _error("body over the limit"),
            },
        ),
    },
    "/v1/test-sends": {
        "post": _admin(
            "Send a test of a template to an address, rendered with sample data or a user's "
            "(`user`), marked [Test]; counted in no stats (role marketer)",
            _json(ref("TestSend"), "the provider's answer"),
            body={
                "required": True,
                "content": {"application/json": {"schema": ref("TestSendRequest")}},
            },
            extra={
                "404": _error("no such template, or no such user"),
                "409": _error("the channel is not configured"),
                "413": _error("body over the limit"),
                "422": _error("the template does not render"),
            },
        )
    },
    "/v1/audit": {
        "get": _admin(
            "Actions taken by hand, newest first: who, what, when",
            _json(ref("Audit"), "the actions"),
            [
                _query("target", "only actions on this rule, template or instance", ID),
                _query(
                    "limit",
                    "how many",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                ),
            ],
        )
    },
    "/v1/stats": {
        "get": _admin(
            "Funnels, attribution, A/B, holdouts",
            _json(ref("Stats"), "ok"),
            [
                _RULE,
                _query("since", "ISO 8601 time or a duration before now (-7d)"),
                _query("until", "ISO 8601 time or a duration before now (-1d)"),
            ],
        )
    },
    "/v1/segments": {
        "get": _admin(
            "Segments with their current sizes", _json(ref("Segments"), "the loaded segments")
        )
    },
    "/v1/segments/{segment_id}/users": {
        "parameters": [_path("segment_id", "a segment id (GET /v1/segments)", ID)],
        "get": _admin(
            "A segment's members, by user id",
            _json(ref("SegmentUsers"), "a page of members"),
            [
                _query(
                    "limit",
                    "page size",
                    {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                ),
                _query("after", "next_after of the previous page: members after this user id"),
            ],
            extra={"404": _error("no such segment is loaded")},
        ),
    },
    "/v1/rfm/recompute": {"post": _admin("RFM segments now", _json(ref("Rfm"), "ok"))},
    "/v1/callbacks/{channel}": {
        "parameters": [_CHANNEL],
        "get": _op(
            "WhatsApp webhook subscription check",
            PUBLIC,
            {
                "200": {
                    "description": "hub.challenge echoed",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "403": _error("hub.mode or hub.verify_token wrong"),
                "404": _error("no such callback, or the channel is not set up for it"),
            },
            parameters=[
                _query("hub.mode", "subscribe"),
                _query("hub.verify_token", "channels.whatsapp.verify_token"),
                _query("hub.challenge", "echoed back"),
            ],
            tags=("callbacks",),
        ),
        "post": _op(
            "Provider receipts; each provider's signature is the auth",
            PUBLIC,
            {
                "200": {
                    "description": "recorded (receipts of unknown messages are dropped); "
                    "WhatsApp gets {ok: true}, Twilio an empty text",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/plain": {"schema": {"type": "string", "maxLength": 0}},
                    },
                },
                "400": _error("malformed body"),
                "401": _error("X-Hub-Signature-256 missing or wrong"),
                "403": _error("X-Twilio-Signature missing or wrong"),
                "404": _error("no such callback, or the channel is not set up for it"),
                "413": _error("body over the limit"),
                "503": _error("the store is unavailable; retry", retry=True),
            },
            parameters=[
                {
                    "name": "X-Hub-Signature-256",
                    "in": "header",
                    "required": False,
                    "description": "WhatsApp: sha256=<hex HMAC of the body with the app secret>",
                    "schema": {"type": "string"},
                },
                {
                    "name": "X-Twilio-Signature",
                    "in": "header",
                    "required": False,
                    "description": "Twilio: base64 HMAC-SHA1 of the URL and sorted form",
                    "schema": {"type": "string"},
                },
            ],
            body={
                "required": False,
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "MessageSid": {"type": "string"},
                                "MessageStatus": {"type": "string"},
                                "ErrorCode": {"type": "string"},
                            },
                        }
                    },
                },
            },
            tags=("callbacks",),
        ),
    },
    "/t/o/{token}": {
        "parameters": [_TOKEN],
        "get": _op("Open pixel", PUBLIC, {"200": _PIXEL}, tags=("tracking",)),
    },
    "/t/c/{token}": {
        "parameters": [_TOKEN],
        "get": _op(
            "Click: redirect to the signed URL",
            PUBLIC,
            {"302": _redirect("to the URL signed into the token"), "404": _error("bad token")},
            tags=("tracking",),
        ),
    },
    "/t/u/{token}": {
        "parameters": [_TOKEN],
        "get": _op(
            "The unsubscribe page (changes nothing)",
            PUBLIC,
            {"200": _html("the page with its form"), "404": _error("bad token")},
            tags=("tracking",),
        ),
        "post": _op(
            "One-click unsubscribe (RFC 8058)",
            PUBLIC,
            {
                "200": _html("unsubscribed"),
                "404": _error("bad token, or the message is gone"),
                "413": _error("body over the limit"),
                "503": _error("the store is unavailable; retry", retry=True),
            },
            body=_form({"List-Unsubscribe": {"const": "One-Click"}}),
            tags=("tracking",),
        ),
    },
    "/healthz": {
        "get": _op(
            "Liveness",
            PUBLIC,
            {"200": _json({"type": "object", "required": ["status"]}, "alive")},
            tags=("operations",),
        )
    },
    "/readyz": {
        "get": _op(
            "Readiness: store, rules, broker",
            PUBLIC,
            {
                "200": _json(ref("Ready"), "ready"),
                "503": _json(ref("Ready"), "not ready: the checks say why"),
            },
            tags=("operations",),
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics (open only when neither token is configured)",
            METRICS,
            {
                "200": {"description": "text exposition format", "content": {"text/plain": {}}},
                "401": _UNAUTHORIZED,
                "429": _TOO_MANY,
            },
            tags=("operations",),
        )
    },
    "/openapi.json": {
        "get": _op(
            "This document",
            PUBLIC,
            {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            tags=("operations",),
        )
    },
    "/": {"get": _page("Dashboard: rules and their funnels", "400", parameters=[_SINCE])},
    "/ui/login": {
        "post": _op(
            "Log in with an account's token: a session cookie",
            PUBLIC,
            {
                "303": _redirect("to `next` (a path on this site)"),
                "401": _HTML_401,
                "403": _html("the form came from another site (its Origin)"),
                "429": {
                    **_html("too many failed logins from this address or for this name"),
                    "headers": {"Retry-After": {"schema": {"type": "string"}, "required": True}},
                },
            },
            body=_form(
                {
                    "token": {"type": "string"},
                    "name": {"type": "string"},
                    "next": {"type": "string"},
                }
            ),
            tags=("dashboard",),
        )
    },
    "/ui/logout": {
        "post": _op(
            "Log out: the session ends on every replica",
            PUBLIC,
            {
                "303": _redirect("to the dashboard"),
                "403": _html("the form came from another site (its Origin)"),
            },
            tags=("dashboard",),
        )
    },
    "/ui/rules/{rule}": {
        "parameters": [_path("rule", "a rule id")],
        "get": _page("A rule: funnel, outcomes, A/B", "400", "404", parameters=[_SINCE]),
    },
    "/ui/rules/{rule}/pause": {
        "parameters": [_path("rule", "a rule id")],
        "post": _action("Pause the rule (form: hold=on to hold running instances)", hold=True),
    },
    "/ui/rules/{rule}/resume": {
        "parameters": [_path("rule", "a rule id")],
        "post": _action("Resume the rule"),
    },
    "/ui/instances/{instance}/end": {
        "parameters": [_path("instance", "an instance id")],
        "post": _action("End the instance"),
    },
    "/ui/templates/{name}/test-send": {
        "parameters": [_path("name", "a template name")],
        "post": _action("Send a test of the template (form: channel, address)", test=True),
    },
    "/ui/messages": {
        "get": _page(
            "The delivery log, newest first",
            "400",
            parameters=[_query("user_id", "only this user's messages"), *_MESSAGE_FILTERS, _CURSOR],
        )
    },
    "/ui/messages/{message_id}": {
        "parameters": [_path("message_id", "a message id")],
        "get": _page("One message: what was sent, its links and history", "400", "404"),
    },
    "/ui/users": {
        "get": _page(
            "Find a user; their profile card, chains and timeline",
            "400",
            parameters=[_query("q", "a user id or its start, an email or a phone number")],
        )
    },
    "/ui/templates": {"get": _page("Templates and the rules using them")},
    "/ui/templates/{name}": {
        "parameters": [_path("name", "a template name")],
        "get": _page(
            "A template rendered for every channel",
            "404",
            parameters=[
                _query("rule", "a rule sending it: sample data fits its trigger"),
                _query("user", "a user id: render with their profile and last trigger event"),
            ],
        ),
    },
}

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "kaskad",
        "version": "0.1.0",
        "description": (
            "Trigger-chain automation daemon. Errors are "
            '{"error": {"code", "message", "details"}}. Bad input gets a 4xx naming the '
            f"problem: ids are 1-{MAX_ID_CHARS} characters; no string may hold NUL or a lone "
            f"surrogate; JSON nests at most {MAX_NESTING} levels per event."
        ),
    },
    "paths": PATHS,
    "components": {
        "schemas": {**SCHEMAS, **ACTION_SCHEMAS},
        "securitySchemes": {
            "ingestBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "one of auth.ingest_tokens",
            },
            "ingestSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Kaskad-Signature",
                "description": (
                    "sha256=<hex HMAC-SHA256 of `timestamp.body` with auth.ingest_hmac_secret>; "
                    "a signature is accepted once (a replay answers accepted 0)"
                ),
            },
            "ingestTimestamp": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Kaskad-Timestamp",
                "description": "unix seconds: at most 5 minutes old, 30 seconds ahead",
            },
            "adminBearer": {"type": "http", "scheme": "bearer", "description": "auth.admin_token"},
            "metricsBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "auth.metrics_token (any account's token works too)",
            },
            "dashboardSession": {
                "type": "apiKey",
                "in": "cookie",
                "name": "kaskad_session",
                "description": "set by POST /ui/login",
            },
        },
    },
}


def document() -> Schema:
    """A copy of the document (callers may change theirs)."""
    return copy.deepcopy(DOCUMENT)


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
