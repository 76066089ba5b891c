"""The command line fails loudly and early: a bad config, a store or port that cannot be
had, a closed pipe; `kaskad validate --config`; help on every option."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channels import email, push, sms, telegram, webhook, webpush, whatsapp
from channels.kinds import CHANNELS
from engine.cli import build_parser, main
from engine.lang.config import Config
from engine.runtime.logs import configure
from engine.store import open_store
from tests.helpers import ROOT, RULES

Result = tuple[int, str, str]
Cli = Callable[..., Result]
PROBLEM_LINE = re.compile(r"^[^:\n]+:\d+:\d+: \S.*$")
# A config with a problem in the model and one in each of several channel adapters.
BAD_CONFIG = """\
server: {host: 127.0.0.1, port: abc}
storage: {url: "sqlite:///STORE"}
channels:
  email: {provider: smtp, host: smtp.example.com, username: news, from: "Shop <a@shop.example>"}
  telegram:
    provider: bot_api
    bot_tokn: "123:abc"
  sms: {provider: twillio}
  webhook: {provider: webhook, url: "https://crm.example/hook"}
"""


def bad_config_problems(path: Path) -> list[str]:
    return [
        f"{path}:1:27: server.port: Input should be a valid integer, unable to parse string "
        "as an integer",
        f"{path}:4:3: channels.email.password: required when username is set",
        f"{path}:7:5: channels.telegram.bot_tokn: unknown key; did you mean 'bot_token'?",
        f"{path}:8:9: channels.sms.provider: unknown provider 'twillio' (did you mean "
        "'twilio'?); known: bot_api, cloud_api, fcm, sandbox, smtp, twilio, vapid, webhook",
        f"{path}:9:3: channels.webhook.secret: required",
    ]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure(level="warning", fmt="console")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def kaskad_command() -> list[str]:
    script = ROOT / ".venv" / "bin" / "kaskad"
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine"]


def kaskad(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The console script as a real process (a hang fails on the timeout)."""
    return subprocess.run(
        [*kaskad_command(), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG.replace("STORE", str(tmp_path / "k.db")), encoding="utf-8")
    return path


# -- a bad config ---------------------------------------------------------------------------


def test_run_with_a_bad_config_exits_at_once_with_every_problem(bad_config: Path) -> None:
    # Before: the first channel error was printed and the process hung without listening.
    done = kaskad("run", "--config", str(bad_config))
    assert done.returncode == 2
    assert done.stderr.splitlines() == bad_config_problems(bad_config)
    assert done.stdout == ""


def test_run_refuses_tokens_a_header_cannot_carry_and_topics_no_message_can_go_to(
    tmp_path: Path,
) -> None:
    """Before: a wildcard dead-letter topic was found only when the first bad payload came
    (its dead letter could not be published), a non-ASCII admin token on the first request
    (a 500)."""
    path = tmp_path / "k.yaml"
    path.write_text(
        f'storage: {{url: "sqlite:///{tmp_path}/k.db"}}\n'
        'auth: {admin_token: "s\u00e9same"}\n'
        "mqtt: {url: 'mqtt://127.0.0.1:9', dead_letter_topic: 'kaskad/dead/#'}\n",
        encoding="utf-8",
    )
    done = kaskad("run", "--config", str(path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"{path}:2:8: auth.admin_token: must be printable ASCII without spaces (a token "
        "travels in an HTTP header), e.g. from `openssl rand -hex 32`",
        f"{path}:3:35: mqtt.dead_letter_topic: 'kaskad/dead/#' holds a wildcard ('+' or "
        "'#'): no message can be published to it",
    ]


def test_validate_config_lists_every_problem(cli: Cli, bad_config: Path) -> None:
    code, out, err = cli("validate", "--config", str(bad_config))
    assert code == 1
    assert out.splitlines() == bad_config_problems(bad_config)
    assert all(PROBLEM_LINE.match(line) for line in out.splitlines())
    assert err == f"{bad_config}, 5 problems\n"


def test_validate_config_a_yaml_error_and_a_missing_file(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: {port: 8080\n", encoding="utf-8")
    code, out, _ = cli("validate", "--config", str(broken))
    assert code == 1
    assert out.startswith(f"{broken}:2:1: invalid YAML: ")
    code, out, _ = cli("validate", "--config", str(tmp_path / "none.yaml"))
    assert code == 1
    assert out.startswith(f"{tmp_path / 'none.yaml'}:1:1: cannot read config: ")


def test_validate_config_with_real_providers_connects_nowhere(cli: Cli, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    # Nothing listens on these (nor resolves, for the SMTP host): a check that connected
    # would fail or hang; the keys are right, so it says valid.
    config = tmp_path / "real.yaml"
    config.write_text(
        f"""
rules: {{path: "{rules}"}}
channels:
  email: {{provider: smtp, host: smtp.invalid, username: u, password: p,
          from: "Shop <news@shop.example>"}}
  telegram: {{provider: bot_api, base_url: "http://127.0.0.1:9", bot_token: "123:abc"}}
  webhook: {{provider: webhook, url: "http://127.0.0.1:9/hook", secret: "whsec_c2VjcmV0"}}
""",
        encoding="utf-8",
    )
    code, out, err = cli("validate", "--config", str(config))
    assert (code, out, err) == (0, f"{config}, 0 rules, 0 templates valid\n", "")


def test_validate_the_shipped_config_and_rules(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = cli("validate", "--config", "config.yaml")
    segments = len(list((RULES / "segments").rglob("*.yaml")))
    templates = len(list((RULES / "templates").rglob("*.yaml")))
    rules = len(list(RULES.rglob("*.yaml"))) - templates - segments
    assert (code, err) == (0, "")
    assert out == f"config.yaml, {rules} rules, {segments} segment, {templates} templates valid\n"


# -- the store and the port -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "stats", "rfm"])
def test_an_unreachable_postgres_is_one_line_and_exit_2(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "pg.yaml"
    config.write_text(
        f'storage: {{url: "postgresql://kaskad:s3cret@127.0.0.1:{port}/kaskad"}}\n'
        f'server: {{host: 127.0.0.1, port: {free_port()}}}\nrules: {{path: "{RULES}"}}\n',
        encoding="utf-8",
    )
    code, out, err = cli(command, "--config", str(config))
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if not line.startswith("{")]  # run's JSON logs
    assert len(lines) == 1
    assert lines[0].startswith(
        f"storage.url postgresql://kaskad:***@127.0.0.1:{port}/kaskad: cannot connect: "
    )
    assert "s3cret" not in err and "Traceback" not in err


def test_run_exits_when_the_port_is_taken(tmp_path: Path) -> None:
    # The store is open by then: a start that fails must close it, or its thread keeps
    # the process alive.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(
            f'storage: {{url: "sqlite:///{tmp_path}/k.db"}}\n'
            f"server: {{host: 127.0.0.1, port: {port}}}\n"
            f'rules: {{path: "{RULES}", watch: false}}\n',
            encoding="utf-8",
        )
        done = kaskad("run", "--config", str(config))
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"server 127.0.0.1:{port}: cannot listen: ")
    assert "Traceback" not in done.stderr


def test_run_exits_when_the_store_is_not_a_database(tmp_path: Path) -> None:
    # Opening fails half-way, after the SQLite connection's thread has started.
    store = tmp_path / "k.db"
    store.write_text("not a database, only text long enough to be read as a header\n" * 4)
    config = tmp_path / "c.yaml"
    config.write_text(
        f'storage: {{url: "sqlite:///{store}"}}\nserver: {{host: 127.0.0.1, port: {free_port()}}}\n'
        f'rules: {{path: "{RULES}", watch: false}}\n',
        encoding="utf-8",
    )
    done = kaskad("run", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"storage.url sqlite:///{store}: file is not a database"


# -- output -----------------------------------------------------------------------------------


def test_simulate_into_a_closed_pipe_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already read its lines
    try:
        done = subprocess.run(
            [*kaskad_command(), "simulate", "--events", "tests/data/otto_events.jsonl"],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""  # no traceback, no "Exception ignored" at exit
    assert done.returncode == 141  # as a process killed by SIGPIPE: what `grep | head` gives


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_option_of_every_command_has_help() -> None:
    commands = subparsers(build_parser())
    assert set(commands) >= {"run", "validate", "simulate", "preview", "stats", "rfm", "schema"}
    for name, parser in commands.items():
        for action in parser._actions:
            assert action.help, f"kaskad {name} {'/'.join(action.option_strings) or action.dest}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--since", "-7d"],
        ["--since=-7d"],
        ["--until", "-1d"],
        ["--since", "-30d", "--until", "-1d"],
    ],
)
def test_stats_takes_negative_durations_as_the_readme_writes_them(
    cli: Cli, tmp_path: Path, argv: list[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f'storage: {{url: "sqlite:///{tmp_path}/k.db"}}\n', encoding="utf-8")

    async def create() -> None:
        await (await open_store(f"sqlite:///{tmp_path}/k.db")).close()

    asyncio.run(create())
    code, out, err = cli("stats", "--config", str(config), "--format", "json", *argv)
    assert (code, err) == (0, "")
    stats = json.loads(out)
    assert stats["until"] is not None if "--until" in " ".join(argv) else stats["until"] is None


# -- config.yaml documents every key ---------------------------------------------------------

PROVIDER_KEYS = {
    "email": ("smtp", email._KEYS),
    "sms": ("twilio", sms._KEYS),
    "mobile_push": ("fcm", push._KEYS),
    "webpush": ("vapid", webpush._KEYS),
    "telegram": ("bot_api", telegram._KEYS),
    "whatsapp": ("cloud_api", whatsapp._KEYS),
    "webhook": ("webhook", webhook._KEYS),
}


def provider_blocks(text: str) -> dict[str, dict[str, Any]]:
    """The commented `  # NAME:` blocks of config.yaml's channels section, parsed."""
    blocks: dict[str, dict[str, Any]] = {}
    lines = text.splitlines()
    for n, line in enumerate(lines):
        found = re.fullmatch(r"  # (\w+):\s*", line)
        if not found or found[1] not in CHANNELS:
            continue
        body = [found[1] + ":"]
        for more in lines[n + 1 :]:
            if not more.startswith("  #   "):
                break
            body.append(more.removeprefix("  # "))
        blocks[found[1]] = yaml.safe_load("\n".join(body))[found[1]]
    return blocks


def model_keys(model: Any, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        keys.append(prefix + key)
        inner = field.annotation
        for arg in (inner, *getattr(inner, "__args__", ())):
            if hasattr(arg, "model_fields") and name != "channels":
                keys += model_keys(arg, f"{prefix}{key}.")
    return keys


def test_the_shipped_config_names_every_key_and_every_provider_key() -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    shipped = yaml.safe_load(text)
    for dotted in model_keys(Config):
        node: Any = shipped
        for part in dotted.split("."):
            if node == []:  # empty by default (auth.users): a commented example has the keys
                assert re.search(rf"#.*[{{ ]{part}:", text), f"config.yaml lacks {dotted}"
                break
            if isinstance(node, list):  # a list of sections: its first item has the keys
                node = node[0]
            assert isinstance(node, dict) and part in node, f"config.yaml lacks {dotted}"
            node = node[part]
    for common in ("timeout_s", "rate_per_s", "concurrency", "max_retries"):
        assert common in text.partition("channels:")[0].rpartition("\n\n")[2]
    blocks = provider_blocks(text)
    assert set(blocks) == set(CHANNELS)
    for channel, (provider, keys) in PROVIDER_KEYS.items():
        assert blocks[channel]["provider"] == provider
        assert set(blocks[channel]) - {"provider"} == set(keys), channel


def test_the_shipped_provider_blocks_validate_when_uncommented(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / "config.yaml").read_text(encoding="utf-8")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    for var in ("SMTP_PASSWORD", "TWILIO_TOKEN", "TG_TOKEN", "WA_TOKEN", "WA_APP_SECRET"):
        monkeypatch.setenv(var, "x")
    monkeypatch.setenv("WA_VERIFY_TOKEN", "x")
    monkeypatch.setenv("TG_TOKEN", "123456:ABC-def")
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_c2VjcmV0")
    monkeypatch.setenv("VAPID_PRIVATE_KEY", pem)
    blocks = provider_blocks(text)
    del blocks["mobile_push"]  # its service-account file is the deployment's own
    config = tmp_path / "providers.yaml"
    (tmp_path / "rules").mkdir()
    config.write_text(
        json.dumps({"rules": {"path": str(tmp_path / "rules")}, "channels": blocks}),
        encoding="utf-8",
    )
    code, out, _ = cli("validate", "--config", str(config))
    assert (code, out) == (0, f"{config}, 0 rules, 0 templates valid\n")
