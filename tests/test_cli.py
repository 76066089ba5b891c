"""The `kaskad` command line (SPEC 8): validate, simulate, preview, schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_validate import BOMB, BOMB_PROBLEM

from channels.kinds import kind_names, kinds
from engine.cli import main
from engine.lang.rules import RULE_KEYS
from engine.lang.ruleset import load_ruleset
from engine.lang.yamlfile import load_yaml
from engine.runtime.logs import configure
from tests.helpers import QUIET_CONFIG, ROOT, RULES, ev, profile

RECORD_KEYS = [
    "time",
    "rule",
    "user_id",
    "step",
    "channel",
    "template",
    "variant",
    "status",
    "reason",
]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
PROBLEM_LINE = re.compile(r"^[^:\n]+:\d+:\d+: \S.*$")
CART = {"items": [{"product_id": "p1", "name": "Kettle", "price": 30, "qty": 1}], "total": 30}

TEMPLATE_FILES = sorted((RULES / "templates").rglob("*.yaml"))
SEGMENT_FILES = sorted((RULES / "segments").rglob("*.yaml"))
RULE_FILES = sorted(set(RULES.rglob("*.yaml")) - set(TEMPLATE_FILES) - set(SEGMENT_FILES))
SHIPPED_SUMMARY = (
    f"{len(RULE_FILES)} rules, {len(SEGMENT_FILES)} segment, {len(TEMPLATE_FILES)} templates "
    "valid\n"
)

Result = tuple[int, str, str]
Cli = Callable[..., Result]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # `main` points structlog at the stderr of the moment (capsys's); point it back after.
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


@pytest.fixture
def quiet_config(tmp_path: Path) -> Path:
    path = tmp_path / "quiet.yaml"
    path.write_text(QUIET_CONFIG, encoding="utf-8")
    return path


def write_jsonl(path: Path, lines: list[dict[str, Any] | str]) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "events.jsonl",
        [
            profile("u1", "2026-11-23T09:00:00Z", email="u1@shop.test"),
            ev("cart.updated", "u1", "2026-11-23T10:00:00Z", CART),
            ev("bonus.credited", "u1", "2026-11-23T10:30:00Z", {"amount": 5, "balance": 10}),
        ],
    )


def simulate_args(events: Path, config: Path) -> list[str]:
    return ["simulate", "--events", str(events), "--rules", str(RULES), "--config", str(config)]


def record(
    time: str, rule: str, step: str, channel: str | None, template: str | None, **kw: Any
) -> dict[str, Any]:
    return {
        "time": time,
        "rule": rule,
        "user_id": "u1",
        "step": step,
        "channel": channel,
        "template": template,
        "variant": kw.get("variant"),
        "status": kw.get("status", "sent"),
        "reason": kw.get("reason"),
    }


# The two cart rules are in the group cart_recovery: abandoned_cart (priority 10) runs,
# abandoned_cart_quick is not started; the one-off nutrilon_promo finds u1 in neither of its
# variants' audiences.
EXPECTED_TIMELINE = [
    record(
        "2026-11-23T10:00:00Z",
        "abandoned_cart_quick",
        "trigger",
        None,
        None,
        status="skipped",
        reason="group_busy",
    ),
    record(
        "2026-11-23T10:30:00Z",
        "bonus_credited",
        "0",
        "sms",
        "bonus_credited",
        status="skipped",
        reason="no_address",
    ),
    record("2026-11-23T11:00:00Z", "abandoned_cart", "1", "email", "cart_reminder"),
    record("2026-11-26T11:00:00Z", "abandoned_cart", "3", "email", "cart_promo", variant="A"),
    record(
        "2026-11-27T11:00:00Z",
        "abandoned_cart",
        "3",
        "whatsapp",
        "cart_promo_whatsapp",
        variant="A",
        status="skipped",
        reason="no_address",
    ),
    record(
        "2026-12-24T07:00:00Z",
        "nutrilon_promo",
        "0",
        None,
        "nutrilon_promo",
        status="skipped",
        reason="no_variant",
    ),
]


# -- validate ------------------------------------------------------------------------------


def test_validate_the_shipped_rules(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = cli("validate", "rules/")
    assert code == 0
    assert out == SHIPPED_SUMMARY  # a success line is output, not an error
    assert err == ""


def test_validate_defaults_to_the_configured_rules_path(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli("validate")[0] == 0


def test_validate_a_broken_directory(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules"
    (rules / "templates").mkdir(parents=True)
    (rules / "templates" / "t.yaml").write_text(
        "template: t\nemail: {subject: Hi, text: hi}\n", encoding="utf-8"
    )
    (rules / "ok.yaml").write_text(
        "rule: ok\ntrigger: {event: a.b}\nsteps:\n  - send: {template: t, cascade: [email]}\n",
        encoding="utf-8",
    )
    (rules / "typo.yaml").write_text(
        "rule: typo\ntigger: {event: a.b}\nsteps:\n  - wait: 1x\n", encoding="utf-8"
    )
    (rules / "syntax.yaml").write_text("rule: s\nsteps: [\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("validate", "rules", "missing_dir")
    assert code == 1
    lines = out.splitlines()
    assert lines == [
        "missing_dir:1:1: no such file or directory",
        "rules/syntax.yaml:3:1: invalid YAML: expected the node content, but found '<stream end>'",
        "rules/typo.yaml:1:1: rule missing required key 'trigger'",
        "rules/typo.yaml:2:1: unknown key 'tigger' in rule (did you mean 'trigger'?)",
        "rules/typo.yaml:4:11: wait: invalid duration '1x': expected a number with a unit "
        "(s m h d w), e.g. 15m, 1h, 1d12h",
    ]
    assert all(PROBLEM_LINE.match(line) for line in lines)
    assert err == "1 rules, 1 templates, 5 problems\n"


def test_validate_answers_a_yaml_bomb_at_once(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bomb.yaml").write_text(BOMB, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    start = time.process_time()
    code, out, err = cli("validate", "rules")
    assert time.process_time() - start < 1.0
    assert (code, out, err) == (1, BOMB_PROBLEM + "\n", "0 rules, 0 templates, 1 problems\n")


def test_validate_names_a_control_character_instead_of_a_traceback(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rule: r\ndescription: x\x1b[0m\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("validate", "rules")
    assert (code, err) == (1, "0 rules, 0 templates, 1 problems\n")
    assert out.startswith("rules/r.yaml:2:15: invalid YAML: unprintable character U+001B ")
    assert PROBLEM_LINE.match(out.strip())


# -- simulate ------------------------------------------------------------------------------


def test_simulate_json_lines(cli: Cli, events_file: Path, quiet_config: Path) -> None:
    code, out, err = cli(*simulate_args(events_file, quiet_config), "--format", "json")
    assert code == 0 and err == ""
    lines = out.splitlines()
    parsed = [json.loads(line) for line in lines]
    for obj in parsed:
        assert list(obj) == RECORD_KEYS
        assert ISO_Z.match(obj["time"])
        assert obj["status"] in ("sent", "skipped")
        assert (obj["reason"] is None) == (obj["status"] == "sent")
    assert parsed == EXPECTED_TIMELINE
    assert out.endswith("\n") and "\n\n" not in out


def test_simulate_is_deterministic(cli: Cli, events_file: Path, quiet_config: Path) -> None:
    args = [*simulate_args(events_file, quiet_config), "--format", "json"]
    first, second = cli(*args), cli(*args)
    assert first[1] and first[1].encode() == second[1].encode()


def test_simulate_text_table(cli: Cli, events_file: Path, quiet_config: Path) -> None:
    code, out, _ = cli(*simulate_args(events_file, quiet_config), "--format", "text")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [k.upper() for k in RECORD_KEYS]
    rows = lines[1 : 1 + len(EXPECTED_TIMELINE)]
    assert [row.split() for row in rows] == [
        [str(v) if v is not None else "-" for v in r.values()] for r in EXPECTED_TIMELINE
    ]
    # Columns line up: every cell starts where its header does.
    starts = [lines[0].index(k.upper()) for k in RECORD_KEYS]
    for row in rows:
        assert all(row[s] != " " and (s == 0 or row[s - 2 : s] == "  ") for s in starts)
    assert lines[-2:] == ["", "2 sent, 4 skipped"]


@pytest.mark.parametrize(
    ("until", "count"),
    [
        ("+1h", 3),  # the last event is at 10:30: up to 11:30
        ("2026-11-26T11:00:00Z", 4),  # inclusive
        ("2026-11-26T10:59:59Z", 3),
    ],
)
def test_simulate_until_cuts_the_timeline(
    cli: Cli, events_file: Path, quiet_config: Path, until: str, count: int
) -> None:
    code, out, _ = cli(
        *simulate_args(events_file, quiet_config), "--format", "json", "--until", until
    )
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == EXPECTED_TIMELINE[:count]


def test_simulate_bad_until(cli: Cli, events_file: Path, quiet_config: Path) -> None:
    code, out, err = cli(*simulate_args(events_file, quiet_config), "--until", "+soon")
    assert code == 2 and out == ""
    assert err.startswith("--until: invalid duration 'soon'")


def test_simulate_reports_bad_event_lines_and_runs_the_rest(
    cli: Cli, tmp_path: Path, quiet_config: Path
) -> None:
    good = [
        profile("u1", "2026-11-23T09:00:00Z", email="u1@shop.test"),
        ev("cart.updated", "u1", "2026-11-23T10:00:00Z", CART),
        ev("bonus.credited", "u1", "2026-11-23T10:30:00Z", {"amount": 5, "balance": 10}),
    ]
    events = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            good[0],
            {"type": "cart.updated", "user_id": "u2", "data": {"items": "p1"}},
            "{not json",
            "",
            good[1],
            {"type": "cart.updated", "time": "2026-11-23T10:00:00Z"},
            {"type": "Cart", "user_id": "u3"},
            good[2],
        ],
    )
    code, out, err = cli(*simulate_args(events, quiet_config), "--format", "json")
    assert code == 0
    assert err.splitlines() == [
        f"warning: {events}:2: data.items: must be a list (event skipped)",
        f"warning: {events}:3: invalid JSON: Expecting property name enclosed in double quotes "
        "(event skipped)",
        f"warning: {events}:6: user_id: is required (event skipped)",
        f"warning: {events}:7: type: must match [a-z0-9_]+(.[a-z0-9_]+)*, e.g. cart.updated "
        "(event skipped)",
    ]
    assert [json.loads(line) for line in out.splitlines()] == EXPECTED_TIMELINE


def test_simulate_leaves_out_a_bad_rule_and_warns(
    cli: Cli, tmp_path: Path, events_file: Path, quiet_config: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "bonus_credited.yaml").write_text(
        "rule: bonus_credited\ntrigger: {event: bonus.credited}\nsteps: [{wait: 1x}]\n",
        encoding="utf-8",
    )
    code, out, err = cli(
        "simulate",
        "--events",
        str(events_file),
        "--rules",
        str(rules),
        "--config",
        str(quiet_config),
        "--format",
        "json",
    )
    assert code == 0
    assert err.startswith("warning: ") and err.rstrip().endswith("(rule left out)")
    assert len(err.splitlines()) == 1
    assert [json.loads(line) for line in out.splitlines()] == [
        r for r in EXPECTED_TIMELINE if r["rule"] != "bonus_credited"
    ]


def test_simulate_missing_events_file(cli: Cli, tmp_path: Path, quiet_config: Path) -> None:
    code, out, err = cli(*simulate_args(tmp_path / "nope.jsonl", quiet_config))
    assert code == 2 and out == ""
    assert err.startswith(f"{tmp_path / 'nope.jsonl'}: cannot read:")


def test_simulate_uses_the_config_policies(cli: Cli, tmp_path: Path, events_file: Path) -> None:
    config = tmp_path / "strict.yaml"
    config.write_text("policies: {quiet_hours: null, frequency_caps: [{per: 7d, max: 1}]}\n")
    code, out, _ = cli(*simulate_args(events_file, config), "--format", "json")
    assert code == 0
    first_week = [json.loads(line) for line in out.splitlines()][:4]
    assert [(r["rule"], r["status"], r["reason"]) for r in first_week] == [
        ("abandoned_cart_quick", "skipped", "group_busy"),
        ("bonus_credited", "skipped", "no_address"),
        ("abandoned_cart", "sent", None),
        ("abandoned_cart", "skipped", "frequency_cap"),
    ]


# -- preview -------------------------------------------------------------------------------


def sections(out: str) -> dict[str, str]:
    found = re.findall(r"^== (\w+) ==\n(.*?)(?=^== |\Z)", out, flags=re.S | re.M)
    return dict(found)


def test_preview_renders_every_channel_with_sample_data(cli: Cli) -> None:
    code, out, _ = cli("preview", "cart_reminder", "--rules", str(RULES))
    assert code == 0
    parts = sections(out)
    assert sorted(parts) == ["email", "mobile_push"]
    assert "subject: Ann, your cart is waiting\n" in parts["email"]  # the sample user
    assert "Kettle</a> &times; 2" in parts["email"]
    assert "\ntext:\nYour cart is waiting: 1 item(s), total 5980." in parts["email"]
    assert parts["mobile_push"].startswith(
        "title: Your cart is waiting\nbody: 1 item(s) for 5980\n"
    )
    assert "url: http://localhost:8080/t/c/" in parts["mobile_push"]
    assert "template_error" not in out


def test_preview_with_user_and_trigger_files(cli: Cli, tmp_path: Path) -> None:
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"user_id": "u7", "attributes": {"first_name": "Ann"}}))
    trigger = tmp_path / "trigger.json"
    trigger.write_text(
        json.dumps(
            ev(
                "cart.updated",
                "u7",
                "2026-11-23T10:00:00Z",
                {"items": [{"product_id": "p9", "name": "Mug <b>", "qty": 3}], "total": 99},
            )
        )
    )
    code, out, _ = cli(
        "preview",
        "cart_reminder",
        "--rules",
        str(RULES),
        "--user",
        str(user),
        "--trigger",
        str(trigger),
    )
    assert code == 0
    parts = sections(out)
    assert "subject: Ann, your cart is waiting\n" in parts["email"]
    assert "<p>Ann, you left these in your cart:</p>" in parts["email"]
    assert "Mug &lt;b&gt;</a> &times; 3" in parts["email"]  # the HTML body is autoescaped
    assert "body: 1 item(s) for 99\n" in parts["mobile_push"]


def test_preview_a_missing_variable_is_a_template_error(cli: Cli, tmp_path: Path) -> None:
    templates = tmp_path / "rules" / "templates"
    templates.mkdir(parents=True)
    (templates / "coupon.yaml").write_text(
        "template: coupon\n"
        "email: {subject: 'Your code', text: 'Code: {{ trigger.data.coupon }}'}\n"
        "sms: {text: 'Total {{ trigger.data.total }}'}\n",
        encoding="utf-8",
    )
    code, out, _ = cli("preview", "coupon", "--rules", str(tmp_path / "rules"))
    assert code == 1
    parts = sections(out)
    assert parts["email"].startswith("template_error: ")
    assert "email.text" in parts["email"] and "coupon" in parts["email"]
    assert "Code:" not in out  # nothing half-rendered
    assert parts["sms"].startswith("text: Total 5980\n")


def test_preview_an_unknown_template(cli: Cli) -> None:
    code, out, _ = cli("preview", "nope", "--rules", str(RULES))
    assert code == 1
    assert out == "unknown template 'nope'\n"


def test_preview_a_bad_user_file(cli: Cli, tmp_path: Path) -> None:
    user = tmp_path / "user.json"
    user.write_text("[1]")
    code, out, err = cli("preview", "cart_reminder", "--rules", str(RULES), "--user", str(user))
    assert (code, out, err) == (2, "", f"--user {user}: must be a JSON object\n")


SHIPPED_RULESET = load_ruleset([RULES])


@pytest.mark.parametrize("name", sorted(SHIPPED_RULESET.templates))
def test_preview_every_shipped_template_on_every_channel(cli: Cli, name: str) -> None:
    # Sample data fits the rule that sends it: points with expires_at, a price drop with
    # old and new price, a licence, a search, a broadcast... and a user with every address.
    code, out, err = cli("preview", name, "--rules", str(RULES))
    assert "template_error" not in out
    assert code == 0
    assert sorted(sections(out)) == sorted(SHIPPED_RULESET.templates[name].blocks)
    assert err.startswith("sample trigger: ")


def test_preview_takes_the_trigger_type_from_the_rule(cli: Cli) -> None:
    code, out, err = cli("preview", "points_expiry", "--rules", str(RULES))
    assert code == 0
    assert err.splitlines() == [
        "sample trigger: a points.accrued event (the trigger of rule points_expiry); "
        "--trigger replaces it",
        "sample user: an address on every channel; --user replaces it",
    ]
    assert sections(out)["sms"].startswith(
        "text: 500 bonus points expire on 2026-12-31. Spend them at shop.example\n"
    )
    code, out, err = cli("preview", "price_drop", "--rules", str(RULES))
    assert "body: Now 2490 instead of 2990\n" in sections(out)["mobile_push"]
    code, out, err = cli("preview", "weekly_promo", "--rules", str(RULES))
    assert "the broadcast trigger of rule weekly_promo" in err


def readme_json(name: str) -> dict[str, Any]:
    """The JSON block the README shows for `name` (e.g. user.json)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"`{re.escape(name)}`:\n\n```json\n(.*?)```", text, re.S)
    assert found, f"README shows no {name}"
    value = json.loads(found.group(1))
    assert isinstance(value, dict)
    return value


def test_preview_with_the_readme_files(cli: Cli, tmp_path: Path) -> None:
    user, cart = tmp_path / "user.json", tmp_path / "cart.json"
    user.write_text(json.dumps(readme_json("user.json")))
    cart.write_text(json.dumps(readme_json("cart.json")))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "kaskad preview cart_reminder --user user.json --trigger cart.json" in readme
    argv = ["preview", "cart_reminder", "--rules", str(RULES)]
    code, out, err = cli(*argv, "--user", str(user), "--trigger", str(cart))
    assert (code, err) == (0, "")
    assert "subject: Ann, your cart is waiting\n" in sections(out)["email"]
    assert "body: 1 item(s) for 5980\n" in sections(out)["mobile_push"]


@pytest.mark.parametrize(
    ("option", "content", "message"),
    [
        (
            "--trigger",
            {"type": "cart.updated", "data": {"items": "p1"}},
            "data.items: must be a list",
        ),
        ("--trigger", {"data": {}}, "type: is required"),
        ("--user", {"email": 42}, "email: must be a string or null"),
    ],
)
def test_preview_checks_its_files_as_events(
    cli: Cli, tmp_path: Path, option: str, content: dict[str, Any], message: str
) -> None:
    path = tmp_path / "f.json"
    path.write_text(json.dumps(content))
    code, out, err = cli("preview", "cart_reminder", "--rules", str(RULES), option, str(path))
    assert (code, out, err) == (2, "", f"{option} {path}: {message}\n")


def test_the_readme_counts_the_shipped_rules() -> None:
    words = {10: "ten", 11: "eleven", 12: "twelve", 13: "thirteen", 14: "fourteen"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"The {words[len(RULE_FILES)]} shipped rules" in readme
    assert readme.index("make run") < readme.index("make test") < readme.index("\n## ")


# -- schema --------------------------------------------------------------------------------


def schema_of(cli: Cli) -> dict[str, Any]:
    code, out, _ = cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert isinstance(schema, dict)
    return schema


def test_schema_is_json_built_from_the_key_tables(cli: Cli) -> None:
    schema = schema_of(cli)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    rule = schema["$defs"]["rule"]
    assert set(rule["properties"]) == set(RULE_KEYS)
    assert rule["required"] == ["rule", "trigger", "steps"]
    assert rule["additionalProperties"] is False
    template = schema["$defs"]["template"]
    assert set(template["properties"]) == {"template", "description", *kind_names()}
    for kind in kinds():
        assert set(template["properties"][kind.name]["properties"]) == kind.keys
        assert template["properties"][kind.name].get("required", []) == sorted(kind.required)


class SchemaChecker:
    """Just enough JSON Schema (2020-12) for the schema kaskad prints."""

    KEYWORDS = frozenset(
        {
            "$schema",
            "$id",
            "minLength",
            "maxLength",
            "$ref",
            "$defs",
            "title",
            "description",
            "type",
            "properties",
            "additionalProperties",
            "required",
            "enum",
            "const",
            "pattern",
            "anyOf",
            "oneOf",
            "items",
            "minItems",
            "minimum",
            "maximum",
        }
    )
    TYPES: dict[str, Callable[[Any], bool]] = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def keywords(self, node: Any) -> set[str]:
        """Every keyword the schema uses (property names and $defs names excluded)."""
        found: set[str] = set()
        if isinstance(node, dict):
            for key, value in node.items():
                found.add(key)
                if key in ("properties", "$defs"):
                    for sub in value.values():
                        found |= self.keywords(sub)
                else:
                    found |= self.keywords(value)
        elif isinstance(node, list):
            for item in node:
                found |= self.keywords(item)
        return found

    def errors(self, value: Any, schema: dict[str, Any], at: str = "") -> list[str]:
        out: list[str] = []
        if "$ref" in schema:
            target: Any = self.root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            out += self.errors(value, target, at)
        if "type" in schema and not self.TYPES[schema["type"]](value):
            return [*out, f"{at}: not {schema['type']}"]
        if "enum" in schema and value not in schema["enum"]:
            out.append(f"{at}: {value!r} not in enum")
        if "const" in schema and value != schema["const"]:
            out.append(f"{at}: {value!r} != {schema['const']!r}")
        if (
            "pattern" in schema
            and isinstance(value, str)
            and not re.search(schema["pattern"], value)
        ):
            out.append(f"{at}: {value!r} does not match {schema['pattern']}")
        if isinstance(value, str) and not (
            schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
        ):
            out.append(
                f"{at}: {value!r} is not {schema.get('minLength')}..{schema.get('maxLength')} long"
            )
        if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
            out.append(f"{at}: {value} < {schema['minimum']}")
        if "maximum" in schema and isinstance(value, int | float) and value > schema["maximum"]:
            out.append(f"{at}: {value} > {schema['maximum']}")
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for key in schema.get("required", []):
                if key not in value:
                    out.append(f"{at}: missing {key}")
            for key, item in value.items():
                if key in props:
                    out += self.errors(item, props[key], f"{at}.{key}")
                elif schema.get("additionalProperties") is False:
                    out.append(f"{at}: unexpected {key}")
        if isinstance(value, list):
            if len(value) < schema.get("minItems", 0):
                out.append(f"{at}: fewer than {schema['minItems']} items")
            if "items" in schema:
                for i, item in enumerate(value):
                    out += self.errors(item, schema["items"], f"{at}[{i}]")
        if "anyOf" in schema and all(self.errors(value, sub, at) for sub in schema["anyOf"]):
            out.append(f"{at}: matches none of anyOf")
        if "oneOf" in schema:
            matches = sum(not self.errors(value, sub, at) for sub in schema["oneOf"])
            if matches != 1:
                out.append(f"{at}: matches {matches} of oneOf")
        return out


def test_every_shipped_file_validates_against_the_schema(cli: Cli) -> None:
    schema = schema_of(cli)
    checker = SchemaChecker(schema)
    assert checker.keywords(schema) <= SchemaChecker.KEYWORDS  # nothing silently ignored
    assert len(RULE_FILES) >= 11 and len(TEMPLATE_FILES) >= 17
    for path in RULE_FILES + TEMPLATE_FILES:
        doc = load_yaml(path.read_text(encoding="utf-8"), str(path))
        assert checker.errors(doc, schema) == [], path


@pytest.mark.parametrize(
    "text",
    [
        "rule: r\ntrigger: {event: a}\nstpes: [{wait: 1h}]\n",
        "rule: r\ntrigger: {event: a}\nsteps: []\n",
        "rule: r\ntrigger: {event: a}\nsteps: [{wait: 1x}]\n",
        "rule: r\ntrigger: {event: a}\nsteps: [{wait: 1h, stop: true}]\n",
        "rule: r\ntrigger: {event: a}\nsteps: [{send: {cascade: [emial]}}]\n",
        "rule: r\ntrigger: {event: a}\nsteps: [{stop: false}]\n",
        "rule: r\ntrigger: {event: a}\nmode: fast\nsteps: [{stop: true}]\n",
        "template: t\nsms: {txt: hi}\n",
        "name: neither\n",
    ],
)
def test_the_schema_rejects_what_the_validator_rejects(cli: Cli, text: str) -> None:
    schema = schema_of(cli)
    assert SchemaChecker(schema).errors(load_yaml(text), schema)


def test_shipped_files_validate_with_jsonschema_when_installed(cli: Cli) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = schema_of(cli)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in RULE_FILES + TEMPLATE_FILES:
        validator.validate(json.loads(json.dumps(load_yaml(path.read_text(encoding="utf-8")))))


# -- the console script --------------------------------------------------------------------


def test_the_console_script_is_installed_and_works() -> None:
    script = ROOT / ".venv" / "bin" / "kaskad"
    if not script.exists():
        pytest.skip(f"{script} is not installed")
    done = subprocess.run(
        [str(script), "validate", "rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, SHIPPED_SUMMARY)
