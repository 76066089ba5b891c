"""config.yaml (SPEC 6, 9): defaults, ${VAR} substitution, located errors with a did-you-mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.kinds import CHANNELS
from engine.errors import LoadError
from engine.lang.config import TOKEN_RULE, Config, load_config, parse_config
from tests.helpers import ROOT


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(LoadError) as info:
        parse_config(text, "config.yaml", env=env or {})
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_an_empty_config_is_all_defaults(text: str) -> None:
    config = parse_config(text, env={})
    assert config == Config()
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8080)
    assert config.server.max_event_bytes == 64 * 1024
    assert config.server.max_batch_events == 10_000
    assert config.server.max_body_bytes == 8 * 1024 * 1024
    assert config.auth.ingest_tokens == [] and config.auth.ingest_hmac_secret is None
    assert config.storage.url == "sqlite:///data/kaskad.db"
    assert config.storage.event_retention == "7d"
    assert (config.rules.path, config.rules.watch) == ("rules", True)
    assert config.mqtt.url is None and config.mqtt.topics == ["shop/events/#"]
    assert (config.mqtt.qos, config.mqtt.client_id) == (1, "kaskad-{host}-{pid}")
    # Each replica its own MQTT session: the id is the template with its host and pid.
    assert config.mqtt.resolved_client_id("shop-1", 4242) == "kaskad-shop-1-4242"
    assert config.mqtt.dead_letter_topic == "kaskad/dead-letter"
    assert set(config.channels) == set(CHANNELS)
    assert all(c.provider == "sandbox" for c in config.channels.values())
    policies = config.policies
    assert policies.quiet_hours is not None
    assert (policies.quiet_hours.start, policies.quiet_hours.end) == ("21:00", "09:00")
    assert [(c.per, c.max) for c in policies.frequency_caps] == [("1d", 2), ("7d", 6)]
    assert [c.per_s for c in policies.frequency_caps] == [86400, 7 * 86400]
    assert policies.max_lateness == "24h"
    assert (policies.attribution.window, policies.attribution.touch) == ("7d", "click")
    assert policies.consent_default == {} and policies.timezone == "UTC"
    assert config.tracking.base_url == "http://localhost:8080"
    assert (config.logging.format, config.logging.level) == ("auto", "info")


def test_a_section_holds_only_what_it_changes() -> None:
    config = parse_config("server: {port: 9090}\nchannels: {sms: {provider: twilio}}\n", env={})
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9090)
    assert config.channels["sms"].provider == "twilio"
    assert config.channels["email"].provider == "sandbox"  # the other channels stay
    assert config.channels["sms"].max_retries == 5  # common keys keep their defaults
    assert config.channels["sms"].retry_for_s == 24 * 3600
    assert config.server.drain_timeout_s == 10.0


def test_retry_for_and_the_drain_timeout() -> None:
    config = parse_config(
        "server: {drain_timeout_s: 2.5}\nchannels: {email: {retry_for: 1d12h}}\n", env={}
    )
    assert config.server.drain_timeout_s == 2.5
    assert config.channels["email"].retry_for_s == 36 * 3600


def test_env_substitution() -> None:
    text = """
storage: {url: "${DB_URL}"}
auth:
  admin_token: "${ADMIN:-fallback}"
  ingest_tokens: ["${TOKEN_A}", "${TOKEN_B:-b-default}", "pre-${MISSING}-post"]
tracking: {base_url: "${PUBLIC_URL:-http://localhost:9}/kaskad", secret: "${SECRET:-}"}
server: {port: "${PORT:-9000}"}
"""
    config = parse_config(text, env={"DB_URL": "postgresql://db/kaskad", "TOKEN_A": "tok-a"})
    assert config.storage.url == "postgresql://db/kaskad"
    assert config.auth.admin_token == "fallback"
    assert config.auth.ingest_tokens == ["tok-a", "b-default", "pre--post"]
    assert config.tracking.base_url == "http://localhost:9/kaskad"
    assert config.tracking.secret == ""
    assert config.server.port == 9000


def test_a_set_variable_wins_over_the_default() -> None:
    config = parse_config('auth: {admin_token: "${ADMIN:-fallback}"}', env={"ADMIN": "s3cret"})
    assert config.auth.admin_token == "s3cret"


def test_an_empty_variable_takes_the_default() -> None:
    config = parse_config('auth: {admin_token: "${ADMIN:-fallback}"}', env={"ADMIN": ""})
    assert config.auth.admin_token == "fallback"


def test_an_unset_ingest_token_means_no_token() -> None:
    config = parse_config('auth: {ingest_tokens: ["${KASKAD_INGEST_TOKEN}"]}', env={})
    assert config.auth.ingest_tokens == []


def test_substitution_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KASKAD_TEST_PORT", "7001")
    assert parse_config('server: {port: "${KASKAD_TEST_PORT}"}').server.port == 7001


def test_policies_can_be_turned_off() -> None:
    config = parse_config("policies: {quiet_hours: null, frequency_caps: []}", env={})
    assert config.policies.quiet_hours is None
    assert config.policies.frequency_caps == []


def test_quiet_hours_keep_the_other_bound_and_read_unquoted_times() -> None:
    config = parse_config("policies:\n  quiet_hours: {from: 22:30}\n", env={})
    assert config.policies.quiet_hours is not None
    assert (config.policies.quiet_hours.start, config.policies.quiet_hours.end) == (
        "22:30",
        "09:00",
    )


def test_consent_default() -> None:
    config = parse_config("policies: {consent_default: {sms: opt_in, email: opt_out}}", env={})
    assert config.policies.opt_in("sms")
    assert not config.policies.opt_in("email")
    assert not config.policies.opt_in("whatsapp")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server: {prot: 1}\n",
            ["config.yaml:1:10: server.prot: unknown key in server (did you mean 'port'?)"],
        ),
        (
            "servre:\n  port: 1\n",
            ["config.yaml:1:1: servre: unknown key in config (did you mean 'server'?)"],
        ),
        (
            "polices: {}\n",
            ["config.yaml:1:1: polices: unknown key in config (did you mean 'policies'?)"],
        ),
        (
            "policies:\n  quiet_hours: {form: '21:00'}\n",
            [
                "config.yaml:2:17: policies.quiet_hours.form: unknown key in "
                "policies.quiet_hours (did you mean 'from'?)"
            ],
        ),
        (
            "policies:\n  attribution: {touch: view, windw: 1d}\n",
            [
                "config.yaml:2:17: policies.attribution.touch: "
                "Input should be 'click', 'open' or 'send'",
                "config.yaml:2:30: policies.attribution.windw: unknown key in "
                "policies.attribution (did you mean 'window'?)",
            ],
        ),
        (
            "storage:\n  url: sqlite:///x.db\n  retention: 7d\n",
            [
                "config.yaml:3:3: storage.retention: unknown key in storage "
                "(did you mean 'event_retention'?)"
            ],
        ),
        (
            "logging: {level: info, colour: true}\n",
            ["config.yaml:1:24: logging.colour: unknown key in logging"],
        ),
        (
            "policies:\n  quiet_hours: {from: '25:00', to: nine}\n",
            [
                "config.yaml:2:17: policies.quiet_hours.from: "
                "invalid time of day '25:00': expected HH:MM, e.g. 10:00",
                "config.yaml:2:32: policies.quiet_hours.to: "
                "invalid time of day 'nine': expected HH:MM, e.g. 10:00",
            ],
        ),
        (
            "policies:\n  consent_default: {emial: opt_in}\n",
            [
                "config.yaml:2:3: policies.consent_default: "
                "unknown channel 'emial' (did you mean 'email'?)"
            ],
        ),
        (
            "policies:\n  consent_default: {sms: optin}\n",
            [
                "config.yaml:2:21: policies.consent_default.sms: "
                "Input should be 'opt_in' or 'opt_out'"
            ],
        ),
        (
            "policies:\n  frequency_caps: [{per: 0s, max: 1}, {per: 1x, max: -1}]\n",
            [
                "config.yaml:2:21: policies.frequency_caps.0.per: must be a positive duration",
                "config.yaml:2:40: policies.frequency_caps.1.per: invalid duration '1x': "
                "expected a number with a unit (s m h d w), e.g. 15m, 1h, 1d12h",
                "config.yaml:2:49: policies.frequency_caps.1.max: "
                "Input should be greater than or equal to 0",
            ],
        ),
        (
            "policies:\n  max_lateness: soon\n  timezone: Mars/Base\n",
            [
                "config.yaml:2:3: policies.max_lateness: invalid duration 'soon': "
                "expected a number with a unit (s m h d w), e.g. 15m, 1h, 1d12h",
                "config.yaml:3:3: policies.timezone: unknown timezone 'Mars/Base' "
                "(expected an IANA name such as Europe/Moscow)",
            ],
        ),
        (
            "policies:\n  timezone: localtime\n",
            [
                "config.yaml:2:3: policies.timezone: timezone 'localtime' is not a place (the "
                "machine's own zone differs from machine to machine): name an IANA zone such "
                "as Europe/Berlin"
            ],
        ),
        (
            "channels:\n  emial: {provider: smtp}\n",
            ["config.yaml:1:1: channels: unknown channel 'emial' (did you mean 'email'?)"],
        ),
        (
            "mqtt: {qos: 3}\nlogging: {format: xml}\n",
            [
                "config.yaml:1:8: mqtt.qos: Input should be 0, 1 or 2",
                "config.yaml:2:11: logging.format: Input should be 'auto', 'json' or 'console'",
            ],
        ),
        (
            "channels:\n  sms: {retry_for: forever}\n  email: {retry_for: 0s}\n"
            "server: {drain_timeout_s: -1}\n",
            [
                "config.yaml:2:9: channels.sms.retry_for: invalid duration 'forever': "
                "expected a number with a unit (s m h d w), e.g. 15m, 1h, 1d12h",
                "config.yaml:3:11: channels.email.retry_for: must be a positive duration",
                "config.yaml:4:10: server.drain_timeout_s: "
                "Input should be greater than or equal to 0",
            ],
        ),
        # issue 9: what a header cannot carry, topics no message can go to, a deadline of 0
        (
            "auth:\n  admin_token: tökén\n  metrics_token: 'a b'\n"
            '  ingest_tokens: [ok, "x\\u00e9"]\n',
            [
                f"config.yaml:2:3: auth.admin_token: {TOKEN_RULE}",
                f"config.yaml:3:3: auth.metrics_token: {TOKEN_RULE}",
                f"config.yaml:4:3: auth.ingest_tokens: token 2: {TOKEN_RULE}",
            ],
        ),
        (
            "mqtt:\n  dead_letter_topic: kaskad/dead/#\n",
            [
                "config.yaml:2:3: mqtt.dead_letter_topic: 'kaskad/dead/#' holds a wildcard "
                "('+' or '#'): no message can be published to it"
            ],
        ),
        (
            "mqtt:\n  dead_letter_topic: shop/+/dead\n",
            [
                "config.yaml:2:3: mqtt.dead_letter_topic: 'shop/+/dead' holds a wildcard "
                "('+' or '#'): no message can be published to it"
            ],
        ),
        (
            "mqtt:\n  dead_letter_topic: ''\n",
            ["config.yaml:2:3: mqtt.dead_letter_topic: '' is empty"],
        ),
        (
            "mqtt:\n  topics: [shop/events/#, 'shop/#/x']\n  shared_group: a/b\n",
            [
                "config.yaml:2:3: mqtt.topics: topic 2 'shop/#/x' has '#' other than as its "
                "whole last level, e.g. shop/events/#",
                "config.yaml:3:3: mqtt.shared_group: 'a/b' must be a name without '/', '+', "
                "'#' or NUL",
            ],
        ),
        (
            "mqtt:\n  topics: ['shop/events+']\n",
            [
                "config.yaml:2:3: mqtt.topics: topic 1 'shop/events+' has '+' other than as a "
                "whole level, e.g. shop/+/events"
            ],
        ),
        (
            "server: {read_timeout_s: 0}\n",
            ["config.yaml:1:10: server.read_timeout_s: Input should be greater than 0"],
        ),
        ("- server\n", ["config.yaml:1:1: config must be a mapping of sections"]),
        (
            "server: {port: [1}\n",
            ["config.yaml:1:18: invalid YAML: expected ',' or ']', but got '}'"],
        ),
        (
            "server:\n  port: 1\n  port: 2\n",
            ["config.yaml:3:3: invalid YAML: duplicate key 'port'"],
        ),
        (
            'server: {port: "${PORT:-eighty}"}\n',
            [
                "config.yaml:1:10: server.port: "
                "Input should be a valid integer, unable to parse string as an integer"
            ],
        ),
    ],
)
def test_errors_are_located(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_unknown_key_in_a_list_item_has_a_did_you_mean() -> None:
    assert problems("policies:\n  frequency_caps:\n    - {per: 1d, max: 2, pre: 1}\n") == [
        "config.yaml:3:25: policies.frequency_caps.0.pre: unknown key in "
        "policies.frequency_caps.0 (did you mean 'per'?)"
    ]


def test_the_shipped_config_parses() -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    config = parse_config(text, str(ROOT / "config.yaml"), env={})
    assert config.auth.ingest_tokens == []  # ${KASKAD_INGEST_TOKEN:-} unset
    assert config.storage.url == "sqlite:///data/kaskad.db"
    assert config.mqtt.url is None
    assert config.policies.quiet_hours is not None
    assert [c.per for c in config.policies.frequency_caps] == ["1d", "7d"]
    assert all(c.provider == "sandbox" for c in config.channels.values())
    # Everything it sets is a default: the shipped file documents, it does not change; except
    # the host: `make run` listens on loopback, where no token is required.
    assert config.policies == Config().policies
    assert config.server == Config().server.model_copy(update={"host": "127.0.0.1"})
    assert config.auth == Config().auth.model_copy(update={"admin_token": "", "metrics_token": ""})


def test_the_shipped_config_takes_the_environment() -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    env = {
        "KASKAD_INGEST_TOKEN": "ingest",
        "KASKAD_STORAGE_URL": "sqlite:////var/lib/kaskad/kaskad.db",
        "KASKAD_PUBLIC_URL": "https://kaskad.shop.example",
    }
    config = parse_config(text, env=env)
    assert config.auth.ingest_tokens == ["ingest"]
    assert config.storage.url == "sqlite:////var/lib/kaskad/kaskad.db"
    assert config.tracking.base_url == "https://kaskad.shop.example"


def test_load_config_reads_kaskad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.yaml"
    path.write_text("server: {port: 1234}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KASKAD_CONFIG", str(path))
    assert load_config().server.port == 1234
    monkeypatch.delenv("KASKAD_CONFIG")
    assert load_config() == Config()  # no ./config.yaml either


def test_mqtt_client_id_is_a_template_of_host_and_pid() -> None:
    config = parse_config('mqtt: {client_id: "k-{pid}"}\n', env={})
    assert config.mqtt.resolved_client_id("h", 7) == "k-7"
    assert (
        parse_config("mqtt: {client_id: kaskad-a}\n", env={}).mqtt.resolved_client_id("h", 7)
        == "kaskad-a"
    )
    [problem] = problems('mqtt: {client_id: "k-{zone}"}\n')
    assert "mqtt.client_id" in problem and "{host} and {pid} only" in problem


def test_tokens_topics_and_the_read_timeout_that_are_fine() -> None:
    config = parse_config(
        "auth: {admin_token: 'A-z_0.9~+/=!', ingest_tokens: ['', t1], metrics_token: ''}\n"
        "mqtt: {topics: ['#', 'shop/+/events', '$share/x/a/#'], dead_letter_topic: a/b,"
        " shared_group: ''}\n"
        "server: {read_timeout_s: 2.5}\n",
        env={},
    )
    assert config.auth.ingest_tokens == ["t1"]
    assert config.mqtt.shared_group is None
    assert config.server.read_timeout_s == 2.5
    assert Config().server.read_timeout_s == 30.0
