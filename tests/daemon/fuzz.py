"""Schemathesis against a live daemon: every operation of the OpenAPI document, cases
generated from the document (positive and negative), sent over real HTTP signed with valid
credentials and with none; every answer is checked against the document.

Schemathesis sends with `requests` (blocking), so the cases run in a worker thread while
the daemon serves on the test's event loop; `pump` settles the engine after each case.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
Sign = Callable[[requests.PreparedRequest], None]


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: Any, value: Any) -> bytes:
    """NDJSON bodies: a generated string as it is, anything else one JSON line per item."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(v) + "\n" for v in items).encode()


@dataclass(frozen=True)
class Secrets:
    """What the daemon under test was configured with, to sign requests validly."""

    ingest_token: str
    admin_token: str
    ingest_hmac: str
    whatsapp_app_secret: str
    twilio_token: str
    public_url: str  # tracking.base_url: Twilio signs the URL it called
    now: Callable[[], float]


@dataclass
class Report:
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # the first of each kind

    def summary(self, statuses: bool = False) -> str:
        errors = sum(self.server_errors.values())
        lines = [f"{self.requests} requests, {errors} answered >= 500"]
        lines += [f"  {n} x {what}" for what, n in self.server_errors.most_common()]
        if statuses:
            lines += [f"  {what}: {n}" for what, n in sorted(self.statuses.items())]
        lines += [f"--- {kind}\n{text}" for kind, text in self.failures.items()]
        return "\n".join(lines)


def signer(operation: Any, secrets: Secrets) -> Sign:
    """Valid credentials for an operation, computed on the request as it will be sent."""
    security = {s for r in operation.definition.raw.get("security", []) for s in r}
    turn = [0]

    def sign(request: requests.PreparedRequest) -> None:
        body = _bytes(request.body)
        path = urlsplit(request.url or "").path
        if "ingestBearer" in security:
            turn[0] += 1
            if turn[0] % 2:  # every other request signed instead of a Bearer token
                stamp = str(int(secrets.now()))
                mac = hmac.new(secrets.ingest_hmac.encode(), f"{stamp}.".encode() + body, "sha256")
                request.headers["X-Kaskad-Timestamp"] = stamp
                request.headers["X-Kaskad-Signature"] = f"sha256={mac.hexdigest()}"
                request.headers.pop("Authorization", None)
            else:
                request.headers["Authorization"] = f"Bearer {secrets.ingest_token}"
        elif "adminBearer" in security:
            request.headers["Authorization"] = f"Bearer {secrets.admin_token}"
        elif path == "/v1/callbacks/whatsapp" and request.method == "POST":
            mac = hmac.new(secrets.whatsapp_app_secret.encode(), body, hashlib.sha256)
            request.headers["X-Hub-Signature-256"] = f"sha256={mac.hexdigest()}"
        elif path == "/v1/callbacks/sms" and request.method == "POST":
            raw = urlsplit(request.url or "")
            url = secrets.public_url.rstrip("/") + raw.path + (f"?{raw.query}" if raw.query else "")
            params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            data = url + "".join(k + params[k] for k in sorted(params))
            digest = hmac.new(secrets.twilio_token.encode(), data.encode(), hashlib.sha1).digest()
            request.headers["X-Twilio-Signature"] = base64.b64encode(digest).decode()

    return sign


# -- hostile mutations ------------------------------------------------------------------
# Schemathesis draws valid text only (no lone surrogate can be encoded for the wire), so some
# cases are made hostile on top: what JSON can spell but a store cannot keep, nesting past
# any parser's reach, header bytes that are not ASCII, and query values out of range. Body,
# path and query are changed before the request is signed, headers after.
_DEEP = 3000
_QUERIES = [
    ("limit", "-1"),
    ("limit", "1" + "0" * 30),
    ("limit", "1e3"),
    ("cursor", "!!not-base64"),
    ("cursor", "W10"),  # base64url of "[]"
    ("cursor", "WzEsMiwzXQ"),  # [1,2,3]
    ("cursor", "WyJuYW4iLCJ4Il0"),  # ["nan","x"]
    ("since", "-" + "9" * 400 + "d"),
    ("until", "9" * 400 + "w"),
    ("since", "nan"),
    ("user_id", "\x00"),
    ("user_id", "u" * 500),
    ("rule", "\x00"),
    ("status", "\x00"),
    ("q", "\x00"),
    ("q", "u" * 500),
    ("hub.challenge", "\x00"),
]
_HEADERS = [
    ("Authorization", "Bearer \xff\xfe"),  # latin-1 bytes: not UTF-8
    ("Authorization", "Bearer " + "é".encode().decode("latin-1")),  # UTF-8 é
    ("X-Kaskad-Signature", "sha256=\xe9"),
    ("X-Kaskad-Timestamp", "nan"),
    ("X-Kaskad-Timestamp", "\xb2"),  # ², a digit to str.isdigit
    ("X-Twilio-Signature", "\xff"),
    ("X-Hub-Signature-256", "sha256=\xff"),
    ("Cookie", "kaskad_session=\xb2.x"),
    ("Cookie", "kaskad_session=" + "9" * 5000 + ".x"),
    ("Cookie", "kaskad_session=99999999999.\xe9"),
]
_JSON_BODY = ["surrogate", "surrogate_key", "nul", "nul_key", "deep"]


def _has_input(document: dict[str, Any], operation: Any) -> bool:
    raw = operation.definition.raw
    return bool(
        raw.get("parameters")
        or raw.get("requestBody")
        or document["paths"][operation.path].get("parameters")
    )


def hostile_for(document: dict[str, Any], operation: Any) -> list[str]:
    """The mutations that can reach this operation's handler."""
    raw = operation.definition.raw
    params = [*raw.get("parameters", []), *document["paths"][operation.path].get("parameters", [])]
    names = {p.get("name") for p in params}
    found = [f"header:{i}" for i in range(len(_HEADERS))]
    found += [f"query:{i}" for i, (name, _) in enumerate(_QUERIES) if name in names]
    if any(p.get("in") == "path" for p in params):
        found += ["path_nul", "path_long"]
    if "application/json" in raw.get("requestBody", {}).get("content", {}):
        found += _JSON_BODY
    return found


def _strings(value: Any, out: list[tuple[Any, Any]]) -> None:
    """(container, key) of every string in a JSON value, and of every object itself."""
    if isinstance(value, dict):
        out.append((value, None))
        for key, item in value.items():
            if isinstance(item, str):
                out.append((value, key))
            _strings(item, out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append((value, i))
            _strings(item, out)


def _mutate_json(request: requests.PreparedRequest, how: str, pick: int) -> None:
    if "json" not in request.headers.get("Content-Type", "") or not request.body:
        return
    try:
        body = json.loads(_bytes(request.body))
    except ValueError:  # NDJSON, or not JSON at all
        return
    places: list[tuple[Any, Any]] = []
    _strings(body, places)
    objects = [c for c, k in places if k is None]
    strings = [(c, k) for c, k in places if k is not None]
    bad = "\ud800" if how.startswith("surrogate") else "\x00"
    if how == "deep":  # a value nested far deeper than json.dumps could write
        marker = "\u2603deep"
        if objects:
            objects[pick % len(objects)]["deep"] = marker
        else:
            body = [body, marker]
        deep = "[" * _DEEP + "1" + "]" * _DEEP
        text = json.dumps(body).replace(json.dumps(marker), deep)
        request.prepare_body(data=text.encode(), files=None)
        return
    if how.endswith("_key") and objects:
        objects[pick % len(objects)]["k" + bad] = 1
    elif strings:
        container, key = strings[pick % len(strings)]
        container[key] += bad
    else:
        return
    request.prepare_body(data=json.dumps(body).encode(), files=None)


def mutate_before(request: requests.PreparedRequest, hostile: str | None, pick: int) -> None:
    if hostile is None or hostile.startswith("header:"):
        return
    if hostile.startswith("query:"):
        name, value = _QUERIES[int(hostile.removeprefix("query:"))]
        request.prepare_url(request.url, [(name, value)])
    elif not hostile.startswith("path_"):  # those change the case (mutate_case)
        _mutate_json(request, hostile, pick)


def mutate_case(case: Any, hostile: str | None) -> None:
    """A NUL or 500 characters more in each path parameter (schemathesis quotes them)."""
    if hostile in ("path_nul", "path_long") and case.path_parameters:
        tail = "\x00" if hostile == "path_nul" else "u" * 500
        for name, value in case.path_parameters.items():
            case.path_parameters[name] = f"{value}{tail}"


def mutate_after(request: requests.PreparedRequest, hostile: str | None) -> None:
    if hostile is not None and hostile.startswith("header:"):
        name, value = _HEADERS[int(hostile.removeprefix("header:"))]
        request.headers[name] = value


def _bytes(body: Any) -> bytes:
    if body is None:
        return b""
    return body if isinstance(body, bytes) else str(body).encode()


def run(
    document: dict[str, Any],
    base_url: str,
    secrets: Secrets,
    *,
    pump: Callable[[], None],
    examples: int,
) -> Report:
    """Fuzz every operation: positive and negative cases with valid credentials, positive
    ones without (schemathesis then sends what it makes of the security schemes)."""
    schema = schemathesis.openapi.from_dict(document)
    report = Report()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        sign = signer(operation, secrets)
        mutations = hostile_for(document, operation)
        # Without parameters or a body, only the headers vary: a few cases will do.
        count = examples if _has_input(document, operation) else 4
        # Unsigned, an admin or ingest request is answered 401 before its input is read (and
        # a public one is as signed): positive cases, hostile headers among them, will do.
        for mode, how in (
            (GenerationMode.POSITIVE, sign),
            (GenerationMode.NEGATIVE, sign),
            (GenerationMode.POSITIVE, None),
        ):
            _fuzz(operation, mode, how, mutations, base_url, session, pump, count, report)
    return report


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    sign: Sign | None,
    mutations: list[str],
    base_url: str,
    session: requests.Session,
    pump: Callable[[], None],
    examples: int,
    report: Report,
) -> None:
    kind = f"{operation.label} [{mode.value}, {'signed' if sign else 'as generated'}]"

    @given(
        case=operation.as_strategy(generation_mode=mode),
        hostile=st.sampled_from([None, *mutations]),
        pick=st.integers(0, 1000),
    )
    @settings(
        max_examples=examples,
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # failures are collected, not shrunk
        suppress_health_check=list(HealthCheck),
    )
    def one(case: Any, hostile: str | None, pick: int) -> None:
        mutate_case(case, hostile)
        kwargs = case.as_transport_kwargs(base_url=base_url)
        request = session.prepare_request(requests.Request(**kwargs))
        mutate_before(request, hostile, pick)
        if sign is not None:
            sign(request)
        mutate_after(request, hostile)
        response = session.send(request, timeout=30, allow_redirects=False)
        report.requests += 1
        report.statuses[f"{kind} {response.status_code}"] += 1
        pump()
        if response.status_code >= 500:
            report.server_errors[f"{operation.label} -> {response.status_code}"] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseExceptionGroup as group:  # schemathesis's FailureGroup: each failed check
            for failure in group.exceptions:
                title = getattr(failure, "title", type(failure).__name__)
                report.failures.setdefault(f"{kind}: {title}", str(group)[:3000])

    try:
        one()
    except Unsatisfiable:  # nothing in the operation can be made invalid
        assert mode is GenerationMode.NEGATIVE, operation.label
