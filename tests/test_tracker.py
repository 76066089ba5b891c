"""Tracking keys: no key is a constant in the source, so nobody can sign a link of ours."""

from __future__ import annotations

from engine.core.runner import Engine
from engine.core.tracking import Tracker
from engine.lang.config import parse_config
from engine.lang.ruleset import RuleSet


def test_an_engine_without_a_tracking_secret_signs_with_a_key_of_its_own() -> None:
    config = parse_config("", env={})
    one, two = (Engine(RuleSet(), config, lambda m: None).tracker for _ in range(2))
    payload = {"m": "m1", "u": "https://evil.example/"}
    link = one.token("click", payload)
    assert one.verify("click", link) is not None
    assert two.verify("click", link) is None  # another process's key
    dev = Tracker(config.tracking.base_url, "kaskad-dev-secret")  # what main once used
    assert one.verify("click", dev.token("click", payload)) is None


def test_an_engine_uses_the_configured_secret() -> None:
    config = parse_config("tracking: {secret: s3cret}", env={})
    tracker = Engine(RuleSet(), config, lambda m: None).tracker
    assert tracker.token("open", {"m": "m1"}) == Tracker("", "s3cret").token("open", {"m": "m1"})


def test_simulate_links_are_unsigned_but_as_long_as_signed_ones() -> None:
    """simulate builds links (payload sizes as in the daemon) without an HMAC per link;
    nobody can follow them, here or in a daemon."""
    from engine.core.tracking import Tracker, UnsignedTracker

    signed, unsigned = (
        Tracker("https://t.example/", "k" * 32),
        UnsignedTracker("https://t.example/"),
    )
    for make in (
        lambda t: t.click_url("m1", "https://shop.example/p?q=1"),
        lambda t: t.open_url("m1"),
        lambda t: t.unsubscribe_url("m1", "email"),
    ):
        assert len(make(unsigned)) == len(make(signed))
        assert make(unsigned) != make(signed)
    token = unsigned.token("open", {"m": "m1"})
    assert unsigned.verify("open", token) is None
    assert signed.verify("open", token) is None
