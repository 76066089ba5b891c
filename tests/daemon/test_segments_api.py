"""GET /v1/segments and GET /v1/segments/{id}/users against an in-process daemon with the
shipped rules (rules/segments/baby_0_3.yaml): sizes and pages follow the engine's entries,
leaves (a window running out) and erasures."""

from __future__ import annotations

from typing import Any

from .helpers import Client


def view(user: str, category: str = "baby_food") -> dict[str, Any]:
    return {
        "type": "product.viewed",
        "user_id": user,
        "data": {"product_id": "p1", "category": category},
    }


def crm(user: str, child_age: int) -> dict[str, Any]:
    return {
        "type": "profile.updated",
        "user_id": user,
        "data": {"attributes": {"child_age": child_age}},
    }


async def size(client: Client, seg: str = "baby_0_3") -> int:
    status, body = await client.admin("GET", "/v1/segments")
    assert status == 200, body
    return {s["id"]: s["size"] for s in body["segments"]}[seg]


async def test_segments_list_sizes_and_pages_of_members(client: Client) -> None:
    status, body = await client.admin("GET", "/v1/segments")
    assert status == 200
    [seg] = body["segments"]
    assert seg["id"] == "baby_0_3" and seg["size"] == 0
    assert seg["description"] == "Showed interest in products for children under 3"
    assert seg["file"].endswith("segments/baby_0_3.yaml")

    # two views of baby food (behaviour), a CRM child under 3 (profile), one view only (no)
    events = [view("u1"), view("u1"), crm("u2", 1), view("u3"), crm("u4", 5)]
    events += [crm(f"p{n:02}", 2) for n in range(5)]
    assert (await client.post_events(events))[0] == 202
    await client.daemon.pump()
    assert await size(client) == 7

    status, page = await client.admin("GET", "/v1/segments/baby_0_3/users?limit=3")
    assert status == 200
    assert [u["user_id"] for u in page["users"]] == ["p00", "p01", "p02"]
    assert page["segment"] == "baby_0_3" and page["next_after"] == "p02"
    assert page["users"][0]["since"] == "2026-11-23T10:00:00Z"
    status, page = await client.admin(
        "GET", f"/v1/segments/baby_0_3/users?limit=3&after={page['next_after']}"
    )
    assert [u["user_id"] for u in page["users"]] == ["p03", "p04", "u1"]
    status, page = await client.admin(
        "GET", f"/v1/segments/baby_0_3/users?after={page['next_after']}"
    )
    assert ([u["user_id"] for u in page["users"]], page["next_after"]) == (["u2"], None)

    # erasing a user takes them out of every segment
    assert (await client.admin("DELETE", "/v1/profiles/p00"))[0] == 200
    assert await size(client) == 6
    # the CRM field changes: the user leaves
    assert (await client.post_events([crm("p01", 4)]))[0] == 202
    await client.daemon.pump()
    assert await size(client) == 5
    # 30 days on, u1's views are out of the window: u1 leaves on the window's timer
    await client.advance(31 * 86400)
    assert await size(client) == 4
    status, page = await client.admin("GET", "/v1/segments/baby_0_3/users")
    assert [u["user_id"] for u in page["users"]] == ["p02", "p03", "p04", "u2"]


async def test_segment_users_errors(client: Client) -> None:
    status, body = await client.admin("GET", "/v1/segments/nope/users")
    assert status == 404
    assert body["error"]["code"] == "not_found"
    assert "no segment 'nope'" in body["error"]["message"]
    assert "baby_0_3" in body["error"]["message"]
    for bad in ("0", "1001", "x", "-1"):
        status, body = await client.admin("GET", f"/v1/segments/baby_0_3/users?limit={bad}")
        assert status == 400, bad
        assert "limit" in body["error"]["message"] or body["error"]["details"]
    for path in ("/v1/segments", "/v1/segments/baby_0_3/users"):
        status, body = await client.request("GET", path)
        assert status == 401
