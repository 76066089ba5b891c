"""Provider receipts (SPEC 7, PROVIDERS.md): WhatsApp status webhooks, Twilio status callbacks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from engine.core.model import Message
from engine.store.sqlite import SqliteStore

from .helpers import START, Client

CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}
WA_SECRET = b"s3cret"
PUBLIC_SMS_URL = "https://kaskad.example/v1/callbacks/sms"


async def sent_with_provider_ids(c: Client, provider_ids: dict[str, str]) -> dict[str, str]:
    """Run a cart reminder e-mail for each user and give it a provider id; user -> message."""
    events: list[dict[str, Any]] = []
    for user in provider_ids:
        events.append({"type": "profile.updated", "user_id": user, "data": {"email": f"{user}@x"}})
        events.append({"type": "cart.updated", "user_id": user, "data": CART})
    await c.post_events(events)
    await c.advance(3600)
    store = c.daemon.store
    assert isinstance(store, SqliteStore)
    out: dict[str, str] = {}
    for user, pid in provider_ids.items():
        (message,) = await store.messages(user_id=user, rule="abandoned_cart")
        assert message.status == "sent"
        await store.db.execute(
            "UPDATE messages SET provider_id = ? WHERE id = ?", (pid, message.id)
        )
        out[user] = message.id
    return out


async def message(c: Client, message_id: str) -> Message:
    found = await c.daemon.store.message(message_id)
    assert found is not None
    return found


def statuses(*items: tuple[str, str]) -> bytes:
    """A Cloud API webhook body with these (wamid, status) receipts."""
    values = []
    for wamid, status in items:
        value: dict[str, Any] = {
            "id": wamid,
            "status": status,
            # when the provider saw it: the minute after the sends of these tests
            "timestamp": str(int(START) + 3660),
            "recipient_id": "79990001122",
        }
        if status == "failed":
            value["errors"] = [{"code": 131026, "title": "Message undeliverable"}]
        values.append(value)
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"phone_number_id": "1"},
                            "statuses": values,
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(body).encode()


def hub_signature(body: bytes, secret: bytes = WA_SECRET) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


async def post_statuses(c: Client, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await c.request(
        "POST",
        "/v1/callbacks/whatsapp",
        data=body,
        headers=hub_signature(body) if headers is None else headers,
    )


def twilio_signature(url: str, params: dict[str, str], token: str = "tw-token") -> str:
    """PROVIDERS.md: base64(HMAC-SHA1(auth token, URL + every param sorted, name+value))."""
    data = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


async def post_twilio(c: Client, params: dict[str, str], signature: str | None) -> Any:
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    return await c.request("POST", "/v1/callbacks/sms", data=params, headers=headers)


def twilio_params(sid: str, status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": "ACxx",
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "To": "+79990001122",
        "From": "+15550001111",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def test_whatsapp_verification_handshake(receipts: Client) -> None:
    query = "hub.mode=subscribe&hub.verify_token=v3rify&hub.challenge=1158201444"
    status, body = await receipts.request("GET", f"/v1/callbacks/whatsapp?{query}")
    assert (status, body) == (200, "1158201444")
    for bad in (
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=v3rify&hub.challenge=1",
        "hub.verify_token=v3rify&hub.challenge=1",
    ):
        status, body = await receipts.request("GET", f"/v1/callbacks/whatsapp?{bad}")
        assert status == 403 and body["error"]["code"] == "forbidden", bad


async def test_delivered_then_read_then_duplicates(receipts: Client) -> None:
    ids = await sent_with_provider_ids(receipts, {"u1": "wamid.A1"})
    assert await post_statuses(receipts, statuses(("wamid.A1", "sent"))) == (200, {"ok": True})
    assert await receipts.daemon.store.inbox_size() == 0  # "sent" adds nothing
    assert await post_statuses(receipts, statuses(("wamid.A1", "delivered"))) == (
        200,
        {"ok": True},
    )
    await receipts.advance(60)
    delivered = await message(receipts, ids["u1"])
    assert (delivered.status, delivered.delivered_at, delivered.opened_at) == (
        "delivered",
        START + 3600,
        None,
    )
    # WhatsApp retries until it gets a 200: the same receipts again count once.
    body = statuses(("wamid.A1", "delivered"), ("wamid.A1", "read"), ("wamid.A1", "read"))
    assert await post_statuses(receipts, body) == (200, {"ok": True})
    assert await receipts.daemon.store.inbox_size() == 1
    await receipts.daemon.pump()
    read = await message(receipts, ids["u1"])
    assert (read.status, read.delivered_at, read.opened_at) == (
        "opened",
        START + 3600,
        START + 3660,
    )


async def test_read_before_delivered(receipts: Client) -> None:
    ids = await sent_with_provider_ids(receipts, {"u1": "wamid.B1"})
    await post_statuses(receipts, statuses(("wamid.B1", "read")))
    await receipts.advance(60)
    await post_statuses(receipts, statuses(("wamid.B1", "delivered")))
    await receipts.daemon.pump()
    read = await message(receipts, ids["u1"])
    # The read implied the delivery; the late "delivered" changes nothing.
    assert (read.status, read.delivered_at, read.opened_at) == (
        "opened",
        START + 3600,
        START + 3600,
    )


async def test_failed_and_unknown_wamids(receipts: Client) -> None:
    ids = await sent_with_provider_ids(receipts, {"u1": "wamid.C1", "u2": "wamid.C2"})
    body = statuses(
        ("wamid.nobody", "delivered"), ("wamid.C1", "failed"), ("wamid.C2", "delivered")
    )
    assert await post_statuses(receipts, body) == (200, {"ok": True})
    await receipts.daemon.pump()
    failed = await message(receipts, ids["u1"])
    assert (failed.status, failed.reason) == ("failed", "provider_rejected")
    assert (await message(receipts, ids["u2"])).status == "delivered"
    _, log = await receipts.admin("GET", "/v1/messages?status=failed")
    assert [m["id"] for m in log["messages"]] == [ids["u1"]]
    # The bounce is the last of the message's status changes.
    _, detail = await receipts.admin("GET", f"/v1/messages/{ids['u1']}")
    assert [h["status"] for h in detail["history"]][-1] == "failed"
    assert detail["history"][-1]["detail"] == (
        "provider_rejected: failed by the provider's receipt"
    )


async def test_erased_users_receipts_are_dropped(receipts: Client) -> None:
    await sent_with_provider_ids(receipts, {"u1": "wamid.D1"})
    assert (await receipts.admin("DELETE", "/v1/profiles/u1"))[0] == 200
    assert await post_statuses(receipts, statuses(("wamid.D1", "read"))) == (200, {"ok": True})
    assert await receipts.daemon.store.inbox_size() == 0
    await receipts.daemon.pump()
    assert (await receipts.admin("GET", "/v1/profiles/u1"))[0] == 404


async def test_bad_signatures_and_bodies(receipts: Client) -> None:
    ids = await sent_with_provider_ids(receipts, {"u1": "wamid.E1"})
    body = statuses(("wamid.E1", "read"))
    for headers in (
        {},
        hub_signature(body, b"other-secret"),
        hub_signature(body + b" "),
        {"X-Hub-Signature-256": hub_signature(body)["X-Hub-Signature-256"][7:]},  # no sha256=
    ):
        status, answer = await post_statuses(receipts, body, headers)
        assert status == 401 and answer["error"]["code"] == "unauthorized"
    status, answer = await post_statuses(receipts, b'{"entry": [')
    assert status == 400 and answer["error"]["code"] == "malformed"
    # Well-formed JSON that is not a status webhook: nothing to do, and said so quickly.
    assert await post_statuses(receipts, b'{"entry": [{"changes": "x"}]}') == (200, {"ok": True})
    await receipts.daemon.pump()
    assert (await message(receipts, ids["u1"])).status == "sent"


async def test_twilio_status_callbacks(receipts: Client) -> None:
    sid1, sid2 = "SM" + "1" * 32, "SM" + "2" * 32
    ids = await sent_with_provider_ids(receipts, {"u1": sid1, "u2": sid2})
    params = twilio_params(sid1, "delivered")
    # Signed over the public URL (tracking.base_url), not the one the daemon listens on.
    status, body = await post_twilio(receipts, params, twilio_signature(PUBLIC_SMS_URL, params))
    assert (status, body) == (200, "")
    failed = twilio_params(sid2, "undelivered", ErrorCode="30003")
    assert (await post_twilio(receipts, failed, twilio_signature(PUBLIC_SMS_URL, failed)))[0] == 200
    for ignored in ("queued", "sent"):
        later = twilio_params(sid1, ignored)
        signature = twilio_signature(PUBLIC_SMS_URL, later)
        assert (await post_twilio(receipts, later, signature))[0] == 200
    await receipts.daemon.pump()
    assert (await message(receipts, ids["u1"])).status == "delivered"
    assert (await message(receipts, ids["u2"])).status == "failed"
    unknown = twilio_params("SM" + "9" * 32, "delivered")
    status, _ = await post_twilio(receipts, unknown, twilio_signature(PUBLIC_SMS_URL, unknown))
    assert status == 200
    assert await receipts.daemon.store.inbox_size() == 0


async def test_twilio_bad_signatures(receipts: Client) -> None:
    sid = "SM" + "3" * 32
    ids = await sent_with_provider_ids(receipts, {"u1": sid})
    params = twilio_params(sid, "delivered")
    for signature in (
        None,
        "",
        twilio_signature(PUBLIC_SMS_URL, params, token="other-token"),
        twilio_signature(PUBLIC_SMS_URL, {**params, "MessageStatus": "failed"}),
        twilio_signature(f"{receipts.base}/v1/callbacks/sms", params),  # the internal URL
    ):
        status, body = await post_twilio(receipts, params, signature)
        assert status == 403 and body["error"]["code"] == "forbidden", signature
    await receipts.daemon.pump()
    assert (await message(receipts, ids["u1"])).status == "sent"


async def test_unknown_channels_and_no_auth_needed(receipts: Client) -> None:
    for method, path in (
        ("POST", "/v1/callbacks/email"),
        ("POST", "/v1/callbacks/nonsense"),
        ("GET", "/v1/callbacks/sms"),
    ):
        status, body = await receipts.request(method, path)
        assert status == 404 and body["error"]["code"] == "not_found", path
    assert body["error"]["details"] == {"channels": ["whatsapp"]}


async def test_sandbox_channels_take_no_callbacks(client: Client) -> None:
    for method, path in (
        ("GET", "/v1/callbacks/whatsapp?hub.mode=subscribe&hub.verify_token=&hub.challenge=1"),
        ("POST", "/v1/callbacks/whatsapp"),
        ("POST", "/v1/callbacks/sms"),
    ):
        status, body = await client.request(method, path, data=b"{}")
        assert status == 404 and body["error"]["code"] == "not_configured", path
