"""Wrong tokens are limited per client address as failed logins are: after 5 in a minute on
the admin API, the dashboard, /metrics or the login form, every token from that address
(the right one too) gets 429 with Retry-After until the oldest failure is a minute old.
Ingest tokens are not limited so (machine secrets: a stale sender must not stop the
others behind its address). On the virtual clock."""

from __future__ import annotations

import json
from typing import Any

from engine.api.ratelimit import Failures

from .helpers import ADMIN, Client


async def call(
    client: Client, method: str, path: str, headers: dict[str, str], **kwargs: Any
) -> tuple[int, str, str | None]:
    """(status, body, Retry-After)."""
    async with client.session.request(
        method, client.base + path, headers=headers, allow_redirects=False, **kwargs
    ) as resp:
        return resp.status, await resp.text(), resp.headers.get("Retry-After")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_wrong_bearer_tokens_are_limited_per_address_as_logins_are(client: Client) -> None:
    for n in range(3):
        assert (await call(client, "GET", "/", bearer(f"bad{n}")))[0] == 401
    for n in range(2):
        assert (await call(client, "GET", "/v1/rules", bearer(f"bad{n}")))[0] == 401
    # Five wrong: every token from here waits, the right one too (no answer may tell).
    status, page, retry = await call(client, "GET", "/", ADMIN)
    assert (status, retry) == (429, "60") and 'action="/ui/login"' in page
    assert "Too many failed logins; try again in 60 s." in page
    status, body, retry = await call(client, "GET", "/v1/rules", ADMIN)
    assert (status, retry) == (429, "60")
    assert json.loads(body)["error"]["code"] == "too_many_failures"
    assert (await call(client, "GET", "/metrics", ADMIN))[:3:2] == (429, "60")
    assert (await call(client, "GET", "/v1/rules", bearer("bad")))[0] == 429
    form = {"token": "admin-token", "next": "/"}
    assert (await call(client, "POST", "/ui/login", {}, data=form))[0] == 429
    # Without a token there is nothing to guess: the login form, the 401, as ever.
    assert (await call(client, "GET", "/", {}))[0] == 401
    assert (await call(client, "GET", "/v1/rules", {}))[0] == 401
    await client.advance(30)
    assert (await call(client, "GET", "/v1/rules", ADMIN))[2] == "30"
    await client.advance(31)
    assert (await call(client, "GET", "/v1/rules", ADMIN))[0] == 200
    assert (await call(client, "GET", "/", ADMIN))[0] == 200
    # Failed logins and wrong tokens add up: 3 + 2 is five.
    for _ in range(3):
        assert (await call(client, "POST", "/ui/login", {}, data={"token": "x"}))[0] == 401
    for _ in range(2):
        assert (await call(client, "GET", "/metrics", bearer("bad")))[0] == 401
    assert (await call(client, "GET", "/v1/rules", ADMIN))[0] == 429


async def test_ingest_tokens_are_not_limited_per_address(client: Client) -> None:
    """A sender with a stale token must not stop the others behind the same address."""
    event = [{"type": "cart.updated", "user_id": "u1", "data": {"total": 5}}]
    for n in range(10):
        assert (await client.post_events(event, bearer(f"bad{n}")))[0] == 401
    assert (await client.post_events(event))[0] == 202
    assert (await call(client, "GET", "/v1/rules", ADMIN))[0] == 200


def test_a_flood_of_addresses_keeps_the_table_bounded() -> None:
    failures = Failures(limit=2, window_s=60.0, max_keys=100)
    for n in range(1000):
        failures.failed([f"ip:{n}"], 100.0)
    assert len(failures) <= 100
    # The newest keys are kept: a fresh guesser is still counted.
    failures.failed(["ip:999"], 100.0)
    assert failures.retry_after(["ip:999"], 100.0) == 60.0
