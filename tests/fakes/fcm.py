"""A fake FCM HTTP v1 API and its OAuth token endpoint, scriptable per device token."""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ._server import FakeServer, response

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list: JSON; str/bytes: sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # the fake waits this long (or until it closes) before answering


def fcm_error(
    http: int,
    status: str,
    message: str = "",
    error_code: str | None = None,
    violations: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An error answer exactly as FCM HTTP v1 writes it."""
    details: list[dict[str, Any]] = []
    if error_code is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": error_code,
            }
        )
    if violations:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": f, "description": d} for f, d in violations],
            }
        )
    error: dict[str, Any] = {"code": http, "message": message, "status": status}
    if details:
        error["details"] = details
    return Reply(http, {"error": error}, headers or {})


@functools.cache
def service_account_key() -> rsa.RSAPrivateKey:
    """One RSA key per test run: generating 2048-bit keys is slow."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account(project_id: str, client_email: str, token_uri: str) -> dict[str, str]:
    """A service-account key file's content, signed by the test RSA key."""
    pem = service_account_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "key-1",
        "private_key": pem.decode(),
        "client_email": client_email,
        "token_uri": token_uri,
    }


class FakeFcm(FakeServer):
    def __init__(self, project_id: str = "shop-app") -> None:
        self.project_id = project_id
        self.client_email = f"kaskad@{project_id}.iam.gserviceaccount.com"
        self.private_key = service_account_key()
        self.expires_in: Any = 3600
        self.token_fetches = 0
        self.assertions: list[dict[str, Any]] = []  # verified claims, one per token fetch
        self.token_replies: list[Reply] = []  # scripted token endpoint answers, FIFO
        self.sends: list[dict[str, Any]] = []  # {"auth": bearer, "message": {...}}
        self._replies: dict[str, list[Reply]] = {}
        self._issued: set[str] = set()
        self._ids = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def service_account(self) -> dict[str, str]:
        return service_account(self.project_id, self.client_email, self.token_uri)

    def script(self, device_token: str, *replies: Reply) -> None:
        """Answers for the next sends to this device token; then success again."""
        self._replies.setdefault(device_token, []).extend(replies)

    def revoke_tokens(self) -> None:
        self._issued.clear()

    async def _answer(self, reply: Reply) -> web.Response:
        await self.hold(reply.delay_s)
        return response(reply.body, reply.status, reply.headers)

    async def _token(self, request: web.Request) -> web.Response:
        self.token_fetches += 1
        form = await request.post()
        if form.get("grant_type") != GRANT_TYPE:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = jwt.decode(
                str(form.get("assertion")),
                self.private_key.public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidTokenError as exc:
            return web.json_response(
                {"error": "invalid_grant", "error_description": str(exc)}, status=400
            )
        if claims["scope"] != SCOPE or claims["exp"] - claims["iat"] > 3600:
            return web.json_response({"error": "invalid_scope"}, status=400)
        self.assertions.append(claims)
        if self.token_replies:
            return await self._answer(self.token_replies.pop(0))
        token = f"ya29.fake-{self.token_fetches}"
        self._issued.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}
        )

    async def _send(self, request: web.Request) -> web.Response:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if bearer not in self._issued:
            return await self._answer(
                fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
            )
        if request.match_info["project"] != self.project_id:
            return await self._answer(fcm_error(404, "NOT_FOUND", "Requested entity not found."))
        try:
            message = (await request.json())["message"]
            problem = _problem(message)
        except (ValueError, KeyError, TypeError):
            problem = ("message", "Invalid JSON payload received.")
        if problem is not None:
            return await self._answer(
                fcm_error(400, "INVALID_ARGUMENT", problem[1], "INVALID_ARGUMENT", [problem])
            )
        self.sends.append({"auth": bearer, "message": message})
        queued = self._replies.get(message["token"])
        if queued:
            return await self._answer(queued.pop(0))
        name = f"projects/{self.project_id}/messages/0:{next(self._ids)}"
        return web.json_response({"name": name})


def _problem(message: dict[str, Any]) -> tuple[str, str] | None:
    """The field violation FCM would report, if any."""
    if not isinstance(message.get("token"), str):
        return ("message.token", "The registration token is not a valid FCM registration token")
    data = message.get("data", {})
    if not all(isinstance(v, str) for v in data.values()):
        return ("message.data", "Invalid value: data values must be strings")
    ttl = message.get("android", {}).get("ttl", "0s")
    if not (isinstance(ttl, str) and ttl.endswith("s") and ttl[:-1].isdigit()):
        return ("message.android.ttl", "Invalid duration")
    shown = {k: message[k] for k in ("notification", "data") if k in message}
    if len(json.dumps(shown, ensure_ascii=False, separators=(",", ":")).encode()) > 4096:
        return ("message", "Message is too big")
    return None
