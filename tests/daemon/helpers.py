"""What the in-process daemon tests share: a client for the daemon under test, its config,
the tokens and the start time. (The daemon fixtures are in conftest.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from engine.clock import VirtualClock, parse_time
from engine.daemon import Daemon
from engine.lang.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
START = parse_time("2026-11-23T10:00:00Z")
INGEST = {"Authorization": "Bearer ingest-token"}
ADMIN = {"Authorization": "Bearer admin-token"}


class Client:
    """A tiny HTTP client bound to the daemon under test."""

    def __init__(self, daemon: Daemon, session: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.session = session
        self.base = f"http://127.0.0.1:{daemon.port}"

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        async with self.session.request(
            method, self.base + path, headers=headers, **kwargs
        ) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = await resp.json() if "json" in ctype else await resp.text()
            return resp.status, body

    async def post_events(
        self, events: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        return await self.request(
            "POST", "/v1/events", json=events, headers=INGEST if headers is None else headers
        )

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.request(method, path, headers=ADMIN, **kwargs)

    async def advance(self, seconds: float) -> None:
        """Settle what is due now, then jump the clock and settle again."""
        clock = self.daemon.clock
        assert isinstance(clock, VirtualClock)
        await self.daemon.pump()
        clock.advance_to(clock.now() + seconds)
        await self.daemon.pump()


def make_config(
    tmp_path: Path,
    rules: Path,
    policies: str = "{quiet_hours: null, frequency_caps: []}",
    extra: str = "",
    storage_url: str | None = None,
) -> Any:
    return parse_config(f"""
server: {{host: 127.0.0.1, port: 0, max_batch_events: 50}}
storage: {{url: "{storage_url or f"sqlite:///{tmp_path}/kaskad.db"}"}}
rules: {{path: "{rules}", watch: false}}
auth: {{ingest_tokens: [ingest-token], ingest_hmac_secret: hmac-secret,
        admin_token: admin-token}}
policies: {policies}
{extra}
""")


# Public URL of the daemon (behind a proxy) and the receipt channels' credentials. Nothing is
# sent to these providers in the tests, so their base URLs lead nowhere.
TRACKING = 'tracking: {base_url: "https://kaskad.example/", secret: track-secret}'
RECEIPT_CHANNELS = """
channels:
  whatsapp: {provider: cloud_api, base_url: "http://127.0.0.1:9", phone_number_id: "1",
             access_token: t, app_secret: s3cret, verify_token: v3rify}
  sms: {provider: twilio, base_url: "http://127.0.0.1:9", account_sid: ACxx,
        auth_token: tw-token, from: "+15550001111"}
"""


def independent_cart_rules(rules_dir: Path) -> Path:
    """Take abandoned_cart_quick out of the group cart_recovery in a copy of the shipped
    rules, so both cart chains run for the same cart (as two shops' rules, or before the
    group existed): for tests about what two rules sending to the same users look like."""
    path = rules_dir / "abandoned_cart_quick.yaml"
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("group:")]
    assert len(lines) == len(text.splitlines()) - 1, "abandoned_cart_quick has no group"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rules_dir
