"""A new kind of channel is a ChannelKind and a provider, registered; nothing in engine/
changes. Here a test-only `pigeon` kind (its address a profile attribute, a block of one
short note, a marketing hook) and a `carrier` provider that posts to a fake loft. Rules,
templates, `kaskad schema`, config.yaml, simulate and the real in-process daemon all take it
from the registry, and forget it once it is unregistered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from channels.base import Channel, Limits, OutboundMessage, Outcome
from channels.kinds import CHANNELS, ChannelKind, MarketingLinks, kind_names
from channels.kinds.base import text
from channels.registry import register, register_kind, unregister, unregister_kind
from engine.cli import main
from engine.clock import VirtualClock, parse_time
from engine.daemon import Daemon
from engine.errors import LoadError
from engine.lang.config import parse_config
from engine.lang.events import parse_event
from engine.lang.ruleset import load_ruleset
from engine.runtime.logs import configure
from engine.simulate import Simulation, record_json

NOTE_MAX_CHARS = 40
START = parse_time("2026-11-23T10:00:00Z")
QUIET = "policies: {quiet_hours: null, frequency_caps: []}"


class Pigeon(ChannelKind):
    name = "pigeon"
    address_from = ("attributes.pigeon_loft",)
    fields = {"note": text(required=True)}
    # A homing pigeon carries one slip of paper: 40 characters fit on it.
    text_chars = {"note": (1, NOTE_MAX_CHARS)}

    def marketing(self, payload: dict[str, Any], links: MarketingLinks) -> dict[str, str]:
        return {"X-Loft-Unsubscribe": links.unsubscribe_url}


class CarrierChannel:
    """The `carrier` provider: one JSON POST per message to the loft service at base_url."""

    provider = "carrier"

    def __init__(
        self, name: str, keys: dict[str, Any], limits: Limits, session: aiohttp.ClientSession
    ) -> None:
        for key in keys:
            if key != "base_url":
                raise ValueError(f"channels.{name}.{key}: unknown key")
        base_url = keys.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith("http"):
            raise ValueError(f"channels.{name}.base_url: expected an http(s) URL")
        self.name, self.limits, self._session = name, limits, session
        self._url = base_url.rstrip("/") + "/release"

    async def send(self, message: OutboundMessage) -> Outcome:
        body = {"id": message.id, "lofts": message.addresses, **message.payload}
        async with self._session.post(self._url, json=body, headers=message.headers) as resp:
            if resp.status == 201:
                return Outcome.accepted(str((await resp.json())["flight"]))
            return Outcome.retry(detail=f"HTTP {resp.status}")

    async def close(self) -> None:
        return None  # the session is the daemon's


def build_carrier(name: str, keys: dict[str, Any], limits: Limits, session: Any) -> Channel:
    return CarrierChannel(name, keys, limits, session)


@dataclass
class FakeLoft:
    """The loft service: takes every release with 201 and a flight id."""

    base_url: str = ""
    releases: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)

    async def release(self, request: web.Request) -> web.Response:
        self.releases.append((await request.json(), dict(request.headers)))
        return web.json_response({"flight": f"flight-{len(self.releases)}"}, status=201)


@pytest.fixture
def pigeon() -> Iterator[None]:
    """The pigeon kind and the carrier provider, for one test only."""
    register_kind(Pigeon())
    register("carrier", build_carrier)
    try:
        yield
    finally:
        unregister_kind("pigeon")
        unregister("carrier")
    assert "pigeon" not in kind_names() and "pigeon" not in CHANNELS


RULE = """\
rule: coo
trigger: {event: cart.updated}
steps:
  - send: {template: coo, cascade: [pigeon]}
"""
TEMPLATE = """\
template: coo
pigeon: {note: "{{ trigger.data.note }}"}
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    (target / "templates").mkdir(parents=True)
    (target / "coo.yaml").write_text(RULE)
    (target / "templates" / "coo.yaml").write_text(TEMPLATE)
    return target


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(list(argv))
    finally:
        configure(level="warning", fmt="console")  # main points structlog at capsys's stderr
    return code, capsys.readouterr().out


def test_a_rule_and_template_for_the_new_kind_validate(
    pigeon: None, rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli(capsys, "validate", str(rules))
    assert (code, out) == (0, "1 rules, 1 templates valid\n")
    ruleset = load_ruleset([rules])
    assert ruleset.rules["coo"].channels == frozenset({"pigeon"})
    assert ruleset.templates["coo"].channels == frozenset({"pigeon"})


def test_the_new_kinds_block_is_checked_by_its_declared_fields(pigeon: None, rules: Path) -> None:
    (rules / "templates" / "coo.yaml").write_text("template: coo\npigeon: {notes: hi}\n")
    problems = [p.message for p in load_ruleset([rules]).problems]
    assert "unknown key 'notes' in 'pigeon' (did you mean 'note'?)" in problems
    assert "'pigeon' missing required key 'note'" in problems


def test_without_the_registration_the_kind_is_unknown(rules: Path) -> None:
    problems = [p.message for p in load_ruleset([rules]).problems]
    assert any(
        "channel must be one of mobile_push, " in m and "got 'pigeon'" in m for m in problems
    )
    assert any("unknown key 'pigeon' in template" in m for m in problems)
    with pytest.raises(LoadError, match=r"channels: unknown channel 'pigeon'$"):
        parse_config("channels: {pigeon: {provider: sandbox}}")


def test_kaskad_schema_lists_the_new_kind(pigeon: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    block = schema["$defs"]["template"]["properties"]["pigeon"]
    assert block["properties"] == {"note": {"type": "string"}}
    assert block["required"] == ["note"]
    cascade = schema["$defs"]["step"]["oneOf"][1]["properties"]["send"]["properties"]["cascade"]
    assert "pigeon" in cascade["items"]["anyOf"][0]["enum"]


def test_the_config_takes_the_new_channel_and_its_providers_keys(
    pigeon: None, tmp_path: Path, rules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = parse_config('channels: {pigeon: {provider: carrier, base_url: "http://loft"}}')
    assert config.channels["pigeon"].provider == "carrier"
    assert parse_config("").channels["pigeon"].provider == "sandbox"  # every kind has one
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels:\n  pigeon: {provider: carrier, base_url: ftp://loft}\n")
    code, out = cli(capsys, "validate", "--config", str(bad), str(rules))
    assert code == 1
    assert out == f"{bad}:2:31: channels.pigeon.base_url: expected an http(s) URL\n"


def simulate(events: list[dict[str, Any]], rules: Path) -> tuple[Simulation, list[Any]]:
    ruleset = load_ruleset([rules])
    assert not ruleset.problems, ruleset.problems
    parsed = [parse_event({**e, "time": "2026-11-23T10:00:00Z"}, received_at=0.0) for e in events]

    async def go() -> tuple[Simulation, list[Any]]:
        sim = await Simulation.create(ruleset, parse_config(QUIET))
        try:
            return sim, [record_json(r) for r in await sim.run(parsed)]
        finally:
            await sim.close()

    return asyncio.run(go())


def loft_of(user: str, loft: str | None) -> dict[str, Any]:
    attributes = {} if loft is None else {"pigeon_loft": loft}
    return {"type": "profile.updated", "user_id": user, "data": {"attributes": attributes}}


def cart(user: str, note: str) -> dict[str, Any]:
    return {"type": "cart.updated", "user_id": user, "data": {"note": note}}


def test_simulate_sends_through_the_new_kind_and_a_long_note_is_a_template_error(
    pigeon: None, rules: Path
) -> None:
    events = [
        loft_of("u1", "loft-7"),
        loft_of("u2", "loft-8"),
        loft_of("u3", None),
        cart("u1", "Your kettle waits"),
        cart("u2", "x" * (NOTE_MAX_CHARS + 1)),
        cart("u3", "No loft, no pigeon"),
    ]
    sim, records = simulate(events, rules)
    outcome = {r["user_id"]: (r["channel"], r["status"], r["reason"]) for r in records}
    assert outcome == {
        "u1": ("pigeon", "sent", None),
        "u2": ("pigeon", "skipped", "template_error"),
        "u3": ("pigeon", "skipped", "no_address"),
    }
    [sent] = sim.sandbox["pigeon"].sent
    assert (sent.addresses, sent.payload) == (["loft-7"], {"note": "Your kettle waits"})
    assert sent.headers["X-Loft-Unsubscribe"].startswith("http://localhost:8080/t/u/")
    [failure] = [f for f in sim.failures if f.kind == "template_error"]
    assert failure.message.endswith(
        f"pigeon.note must be 1-{NOTE_MAX_CHARS} characters, rendered {NOTE_MAX_CHARS + 1}"
    )


@pytest.fixture
async def loft() -> AsyncIterator[FakeLoft]:
    fake = FakeLoft()
    app = web.Application()
    app.router.add_post("/release", fake.release)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.base_url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


async def test_the_daemon_sends_through_the_new_provider(
    pigeon: None, loft: FakeLoft, tmp_path: Path, rules: Path
) -> None:
    config = parse_config(f"""
server: {{host: 127.0.0.1, port: 0}}
storage: {{url: "sqlite:///{tmp_path}/kaskad.db"}}
rules: {{path: "{rules}", watch: false}}
auth: {{ingest_tokens: [ingest-token], admin_token: admin-token}}
channels: {{pigeon: {{provider: carrier, base_url: "{loft.base_url}"}}}}
{QUIET}
""")
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{daemon.port}") as session:
            events = [loft_of("u1", "loft-7"), cart("u1", "Coo")]
            ingest = {"Authorization": "Bearer ingest-token"}
            async with session.post("/v1/events", json=events, headers=ingest) as resp:
                assert resp.status == 202, await resp.text()
            await daemon.pump()
            admin = {"Authorization": "Bearer admin-token"}
            async with session.get("/v1/messages?rule=coo", headers=admin) as resp:
                assert resp.status == 200
                body = await resp.json()
    finally:
        await daemon.stop()
    [(release, headers)] = loft.releases
    assert release["lofts"] == ["loft-7"] and release["note"] == "Coo"
    assert "/t/u/" in headers["X-Loft-Unsubscribe"]
    [message] = body["messages"]
    assert (message["channel"], message["status"]) == ("pigeon", "sent")
    assert message["provider_id"] == "flight-1"


class Drone(ChannelKind):
    """A kind whose addresses are a top-level list of the profile (like push tokens)."""

    name = "drone"
    address_from = ("drone_pads",)
    many = True
    list_of = "landing pads"
    fields = {"note": text(required=True)}

    def check_one(self, address: Any) -> str | None:
        return None if isinstance(address, str) and address.startswith("pad-") else "not a pad"


@pytest.fixture
def drone() -> Iterator[None]:
    register_kind(Drone())
    try:
        yield
    finally:
        unregister_kind("drone")


def _profile_event(data: dict[str, Any]) -> Any:
    return parse_event(
        {"type": "profile.updated", "user_id": "u1", "data": data}, received_at=START
    )


def test_a_new_kinds_address_fields_are_checked_at_ingest_and_kept_on_the_profile(
    drone: None,
) -> None:
    from engine.core.facts import merge_profile
    from engine.errors import EventError

    with pytest.raises(EventError) as wrong:
        _profile_event({"drone_pads": "pad-1"})
    assert (wrong.value.field, wrong.value.message) == (
        "data.drone_pads",
        "must be a list of landing pads",
    )
    with pytest.raises(EventError) as entry:
        _profile_event({"drone_pads": ["pad-1", "roof"]})
    assert (entry.value.field, entry.value.message) == ("data.drone_pads[1]", "not a pad")
    profile: dict[str, Any] = {}
    merge_profile(profile, _profile_event({"drone_pads": ["pad-1", "pad-2"]}).data)
    merge_profile(profile, _profile_event({"drone_pads": ["pad-2", "pad-3"]}).data)
    # A list of addresses gains new entries (as push tokens do), top-level, not an attribute.
    assert profile == {"drone_pads": ["pad-1", "pad-2", "pad-3"]}


def test_without_the_kind_the_same_key_is_the_shops_own_attribute() -> None:
    from engine.core.facts import merge_profile

    profile: dict[str, Any] = {}
    merge_profile(profile, _profile_event({"drone_pads": "anything"}).data)
    assert profile == {"attributes": {"drone_pads": "anything"}}
