"""Rule and template validation (SPEC 4, 5): exact `path:line:col: message` snapshots.

Every case writes files under `tmp_path/rules` (beside a valid template `hello` with email
and sms blocks), loads the directory with the working directory at `tmp_path`, and compares
the problems line by line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _pytest.mark.structures import ParameterSet

from engine.errors import LoadError
from engine.lang.config import parse_config
from engine.lang.expressions import Expression
from engine.lang.ruleset import RuleSet, load_ruleset
from engine.lang.yamlfile import MAX_FILE_BYTES
from tests.helpers import RULES

HELLO = """\
template: hello
email: {subject: Hi, text: "Hello {{ user.user_id }}"}
sms: {text: Hello}
"""
HEAD = "rule: r\ntrigger: {event: cart.updated}\nsteps:\n"
SEND = "  - send: {template: hello, cascade: [email]}\n"
GOOD = HEAD + SEND
DURATION_LIMIT = "is over the limit of 10 years (3650d)"
DURATION_HELP = "expected a number with a unit (s m h d w), e.g. 15m, 1h, 1d12h"
CHANNEL_CHOICES = "mobile_push, webpush, email, sms, telegram, whatsapp, webhook"
NAMES = "available: event, now, trigger, user"
NOT_RULE = (
    "not a rule, a template or a segment: the top-level key must be 'rule', 'template' or 'segment'"
)


def write_rules(root: Path, files: dict[str, str]) -> Path:
    rules = root / "rules"
    (rules / "templates").mkdir(parents=True)
    (rules / "templates" / "hello.yaml").write_text(HELLO, encoding="utf-8")
    for name, text in files.items():
        path = rules / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return rules


Loader = Callable[[dict[str, str]], RuleSet]


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Loader:
    """Write files beside the `hello` template and load them from `tmp_path` as CWD."""
    monkeypatch.chdir(tmp_path)

    def go(files: dict[str, str]) -> RuleSet:
        return load_ruleset([write_rules(tmp_path, files)])

    return go


def case(
    case_id: str,
    files: str | dict[str, str],
    *expected: str,
    bug: str | None = None,
    files_extra: dict[str, str] | None = None,
) -> ParameterSet:
    """A rule text (written as rules/r.yaml) or several files, and the problems expected."""
    named = {"r.yaml": files} if isinstance(files, str) else files
    named = {**named, **(files_extra or {})}
    marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {bug}")] if bug else []
    return pytest.param(named, list(expected), id=case_id, marks=marks)


def expr_rule(expression: str, key: str = "if") -> str:
    return f"rule: r\ntrigger:\n  event: cart.updated\n  {key}: {expression}\nsteps:\n{SEND}"


CASES = [
    case("valid", GOOD),
    # -- YAML syntax ---------------------------------------------------------------------
    case(
        "tab",
        "rule: r\ntrigger:\n\tevent: cart.updated\n",
        "rules/r.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token",
    ),
    case(
        "unclosed-bracket",
        "rule: r\nsteps: [a, b\n",
        "rules/r.yaml:3:1: invalid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    case(
        "unclosed-brace",
        "rule: r\ntrigger: {event: cart.updated\nsteps: []\n",
        "rules/r.yaml:3:6: invalid YAML: expected ',' or '}', but got ':'",
    ),
    case(
        "duplicate-key",
        GOOD + "rule: q\n",
        "rules/r.yaml:5:1: invalid YAML: duplicate key 'rule'",
    ),
    case(
        "duplicate-nested-key",
        HEAD + "  - send:\n      template: hello\n      template: hello\n      cascade: [email]\n",
        "rules/r.yaml:6:7: invalid YAML: duplicate key 'template'",
    ),
    case(
        "two-documents",
        GOOD + "---\nrule: q\n",
        "rules/r.yaml:5:1: invalid YAML: but found another document",
    ),
    # control characters: the YAML reader refuses them before parsing (a NUL, a BEL, an ESC)
    case(
        "control-characters",
        {
            "a.yaml": "rule: a\ndescription: nul\x00here\n",
            "b.yaml": 'rule: b\ndescription: "bell \x07"\n',
            "c.yaml": "rule: c\n  \x1b[31m\n",
            "r.yaml": GOOD,
        },
        "rules/a.yaml:2:17: invalid YAML: unprintable character U+0000 is not allowed (remove "
        'it; inside a double-quoted string write it as the escape "\\x00")',
        "rules/b.yaml:2:20: invalid YAML: unprintable character U+0007 is not allowed (remove "
        'it; inside a double-quoted string write it as the escape "\\x07")',
        "rules/c.yaml:2:3: invalid YAML: unprintable character U+001B is not allowed (remove "
        'it; inside a double-quoted string write it as the escape "\\x1b")',
    ),
    # -- YAML that kaskad files do without (parsing stays linear in the text) ------------
    case(
        "yaml-anchor",
        "rule: r\nx: &a [1]\ny: *a\n",
        "rules/r.yaml:2:4: YAML anchors (&a) are not allowed: write the value out where it is used",
    ),
    case(
        "yaml-alias",
        "rule: r\ny: *a\n",
        "rules/r.yaml:2:4: YAML aliases (*a) are not allowed: write the value out",
    ),
    case(
        "yaml-merge-key",
        GOOD + "description: {<<: {a: 1}}\n",
        "rules/r.yaml:5:15: YAML merge keys (<<) are not allowed: write the keys out",
    ),
    case(
        "yaml-too-deep",
        "rule: r\nx: " + "[" * 70 + "]" * 70 + "\n",
        "rules/r.yaml:2:67: nested deeper than 64 levels",
    ),
    # -- text too deep for Jinja's parser and compiler (they recurse once a level) ---------
    case(
        "template-nested-too-deeply",
        {
            "templates/deep.yaml": "template: deep\nsms:\n  text: '{{ "
            + "(" * 300
            + "1"
            + ")" * 300
            + " }}'\n",
            "templates/ops.yaml": "template: ops\nsms:\n  text: '{{ 1" + " + 1" * 3000 + " }}'\n",
        },
        "rules/templates/deep.yaml:3:9: sms.text: invalid template: nested too deeply "
        "(brackets, operators or blocks): split it up, e.g. with {% set %}",
        "rules/templates/ops.yaml:3:9: sms.text: invalid template: nested too deeply "
        "(brackets, operators or blocks): split it up, e.g. with {% set %}",
    ),
    case(
        "expression-nested-too-deeply",
        expr_rule("'" + "not " * 2000 + "true'"),
        "rules/r.yaml:4:7: 'if': invalid expression: nested too deeply (brackets, operators "
        "or blocks): split it up, e.g. with {% set %}",
    ),
    # -- durations: at most 10 years (a longer one is a typo, and past what a calendar holds)
    case(
        "absurd-durations",
        HEAD.replace("steps:", "cooldown: 99999999999999999999999w\nsteps:")
        + "  - wait: 99999999d\n"
        + "  - wait: 1.0e+300\n"
        + "  - wait: .inf\n"
        + "  - wait: {for: 3651d, offset: -9999999d, until: '{{ now }}'}\n"
        + "  - wait_for: {event: order.created, timeout: 100000w}\n"
        + "    on_timeout: [{stop: true}]\n"
        + "  - send:\n      template: hello\n      cascade:\n"
        + "        - {channel: email, await: opened, within: 10000000d}\n"
        + "        - sms\n",
        "rules/r.yaml:3:11: cooldown: duration '99999999999999999999999w' " + DURATION_LIMIT,
        "rules/r.yaml:5:11: wait: duration '99999999d' " + DURATION_LIMIT,
        "rules/r.yaml:6:11: wait: duration '1e+300' " + DURATION_LIMIT,
        "rules/r.yaml:7:11: wait: duration 'inf' " + DURATION_LIMIT,
        "rules/r.yaml:8:17: wait.for: duration '3651d' " + DURATION_LIMIT,
        "rules/r.yaml:8:32: wait.offset: duration '-9999999d' " + DURATION_LIMIT,
        "rules/r.yaml:9:47: timeout: duration '100000w' " + DURATION_LIMIT,
        "rules/r.yaml:14:51: within: duration '10000000d' " + DURATION_LIMIT,
    ),
    case("ten-years-is-fine", HEAD + "  - wait: 3650d\n" + SEND),
    # -- keys ----------------------------------------------------------------------------
    case(
        "typos-at-the-top",
        "rule: r\ntigger: {event: cart.updated}\nstpes:\n  - wait: 1h\ncooldwon: 1d\n",
        "rules/r.yaml:1:1: rule missing required key 'steps'",
        "rules/r.yaml:1:1: rule missing required key 'trigger'",
        "rules/r.yaml:2:1: unknown key 'tigger' in rule (did you mean 'trigger'?)",
        "rules/r.yaml:3:1: unknown key 'stpes' in rule (did you mean 'steps'?)",
        "rules/r.yaml:5:1: unknown key 'cooldwon' in rule (did you mean 'cooldown'?)",
    ),
    case(
        "missing-required-keys",
        "description: no id\nrule: r\n",
        "rules/r.yaml:1:1: rule missing required key 'steps'",
        "rules/r.yaml:1:1: rule missing required key 'trigger'",
    ),
    case(
        "step-kind-typos",
        HEAD + "  - wiat: 1h\n  - sned: {template: hello, cascade: [email]}\n",
        "rules/r.yaml:4:5: unknown key 'wiat' in step (did you mean 'wait'?)",
        "rules/r.yaml:5:5: unknown key 'sned' in step (did you mean 'send'?)",
    ),
    case(
        "unknown-key-in-goal",
        GOOD + "goal: {event: order.created, when: x}\n",
        "rules/r.yaml:5:30: unknown key 'when' in goal",
    ),
    # -- types ---------------------------------------------------------------------------
    case(
        "wrong-types",
        "rule: 5\ntrigger: cart.updated\nsteps: {wait: 1h}\nmode: fast\ncategory: promo\n",
        "rules/r.yaml:1:7: rule must be a non-empty string, got a number (5)",
        "rules/r.yaml:2:10: trigger must be a mapping, got 'cart.updated'",
        "rules/r.yaml:3:8: steps must be a list, got a mapping",
        "rules/r.yaml:4:7: mode must be one of single, restart, parallel, got 'fast'",
        "rules/r.yaml:5:11: category must be one of marketing, transactional, got 'promo'",
    ),
    case(
        "mode-typo",
        GOOD + "mode: restrat\n",
        "rules/r.yaml:5:7: mode must be one of single, restart, parallel, "
        "got 'restrat' (did you mean 'restart'?)",
    ),
    case(
        "bad-ids",
        "rule: Cart Rule\ntrigger: {event: Cart.Updated}\nsteps:\n" + SEND,
        "rules/r.yaml:1:7: rule id 'Cart Rule' may use a-z, 0-9, _, - and .",
        "rules/r.yaml:2:18: trigger event 'Cart.Updated' is not an event type such as cart.updated",
    ),
    case(
        "ids-with-a-trailing-newline",
        'rule: "cart\\n"\ntrigger: {event: "cart.updated\\n"}\nsteps:\n' + SEND,
        "rules/r.yaml:1:7: rule id 'cart\n' may use a-z, 0-9, _, - and .",
        "rules/r.yaml:2:18: trigger event 'cart.updated\n' is not an event type such as "
        "cart.updated",
    ),
    case(
        "exit-on-entry-not-a-mapping",
        GOOD + "exit_on:\n  - cart.cleared\n",
        "rules/r.yaml:6:5: exit_on must be a mapping, got 'cart.cleared'",
    ),
    # -- durations -----------------------------------------------------------------------
    case(
        "cooldown-1x",
        GOOD + "cooldown: 1x\n",
        f"rules/r.yaml:5:11: cooldown: invalid duration '1x': {DURATION_HELP}",
    ),
    case(
        "bad-waits",
        HEAD + "  - wait: abc\n  - wait: -1h\n  - wait: {until: '2026-12-01', offset: 7q}\n",
        f"rules/r.yaml:4:11: wait: invalid duration 'abc': {DURATION_HELP}",
        "rules/r.yaml:5:11: wait must not be negative, got '-1h'",
        f"rules/r.yaml:6:41: wait.offset: invalid duration '7q': {DURATION_HELP}",
    ),
    case(
        "negative-cooldown",
        GOOD + "cooldown: -1d\n",
        "rules/r.yaml:5:11: cooldown must not be negative, got '-1d'",
    ),
    case(
        "negative-within",
        HEAD + "  - send:\n      template: hello\n      cascade:\n"
        "        - {channel: email, await: opened, within: -1h}\n",
        "rules/r.yaml:7:51: within must not be negative, got '-1h'",
    ),
    case(
        "boolean-wait",
        HEAD + "  - wait: true\n",
        "rules/r.yaml:4:11: wait: expected a duration such as 1h or 1d12h, got a boolean",
    ),
    case(
        "wait-mapping",
        HEAD + "  - wait: {for: 1d, at: '25:00'}\n  - wait: {}\n  - wait: {for: 1d, a: '10:00'}\n",
        "rules/r.yaml:4:25: wait.at: invalid time of day '25:00': expected HH:MM, e.g. 10:00",
        "rules/r.yaml:5:11: wait needs a duration, or 'until', 'for' and/or 'at'",
        "rules/r.yaml:6:21: unknown key 'a' in wait (did you mean 'at'?)",
    ),
    # -- schedule ------------------------------------------------------------------------
    case(
        "bad-cron-and-timezone",
        "rule: r\ntrigger: {schedule: '0 11 * *', timezone: Europe/Moskow}\nsteps:\n" + SEND,
        "rules/r.yaml:2:21: schedule: '0 11 * *' is not a 5-field cron string "
        "(minute hour day month weekday), e.g. '0 11 * * TUE'",
        "rules/r.yaml:2:43: timezone: unknown timezone 'Europe/Moskow' "
        "(expected an IANA name such as Europe/Moscow)",
    ),
    # zones of the tz database only: not the machine's own, not a file path (ZoneInfo reads
    # the file its key names), not a zone with no offset of its own
    case(
        "timezones-that-are-no-place",
        {
            "a.yaml": "rule: a\ntrigger: {schedule: '0 11 * * *', timezone: localtime}\nsteps:\n"
            + SEND,
            "b.yaml": "rule: b\ntrigger: {schedule: '0 11 * * *', timezone: ../../etc/passwd}\n"
            "steps:\n" + SEND,
            "c.yaml": "rule: c\ntrigger: {schedule: '0 11 * * *', timezone: Factory}\nsteps:\n"
            + SEND,
            "d.yaml": "rule: d\ntrigger: {schedule: '0 11 * * *', timezone: posix/Europe/Berlin}"
            "\nsteps:\n" + SEND,
            "e.yaml": "rule: e\ntrigger: {schedule: '0 11 * * *', timezone: EST5EDT}\nsteps:\n"
            + SEND,
        },
        "rules/a.yaml:2:45: timezone: timezone 'localtime' is not a place (the machine's own "
        "zone differs from machine to machine): name an IANA zone such as Europe/Berlin",
        "rules/b.yaml:2:45: timezone: unknown timezone '../../etc/passwd' (expected an IANA "
        "name such as Europe/Moscow)",
        "rules/c.yaml:2:45: timezone: timezone 'Factory' is not a place (the machine's own "
        "zone differs from machine to machine): name an IANA zone such as Europe/Berlin",
        "rules/d.yaml:2:45: timezone: unknown timezone 'posix/Europe/Berlin' (expected an IANA "
        "name such as Europe/Moscow)",
    ),
    case(
        "cron-hour-25",
        "rule: r\ntrigger: {schedule: '0 25 * * TUE'}\nsteps:\n" + SEND,
        "rules/r.yaml:2:21: schedule: invalid cron string '0 25 * * TUE': Error validating "
        "expression '25': the last value (25) is higher than the maximum value (23)",
    ),
    case(
        "schedule-with-if-and-fan-out",
        "rule: r\ntrigger: {schedule: '0 11 * * TUE', if: 'true', fan_out: [cart]}\nsteps:\n"
        + SEND,
        "rules/r.yaml:2:37: 'if' does not go with 'schedule'; "
        "use the rule's 'audience' to choose recipients",
        "rules/r.yaml:2:49: 'fan_out' does not go with 'schedule'; "
        "use the rule's 'audience' to choose recipients",
    ),
    case(
        "event-and-schedule",
        "rule: r\ntrigger: {schedule: '0 11 * * TUE', event: cart.updated}\nsteps:\n" + SEND,
        "rules/r.yaml:2:10: trigger needs exactly one of 'event' or 'schedule'",
    ),
    case(
        "timezone-without-schedule",
        "rule: r\ntrigger: {event: cart.updated, timezone: UTC}\nsteps:\n" + SEND,
        "rules/r.yaml:2:32: timezone goes with 'schedule'",
    ),
    # -- product events ------------------------------------------------------------------
    case(
        "product-event-without-fan-out",
        "rule: r\ntrigger: {event: product.price_dropped}\nsteps:\n" + SEND,
        "rules/r.yaml:2:18: product.price_dropped is a product event without a user: "
        "add fan_out: [price_drop, back_in_stock, favorite...]",
    ),
    case(
        "fan-out-on-a-user-event",
        "rule: r\ntrigger: {event: cart.updated, fan_out: [cart]}\nsteps:\n" + SEND,
        "rules/r.yaml:2:32: fan_out only goes with product events "
        "(product.back_in_stock, product.price_dropped)",
    ),
    case(
        "fan-out-kind-typo",
        "rule: r\ntrigger: {event: product.price_dropped, fan_out: [carts]}\nsteps:\n" + SEND,
        "rules/r.yaml:2:51: fan_out must be one of price_drop, back_in_stock, favorite, cart, "
        "viewed, got 'carts' (did you mean 'cart'?)",
    ),
    # -- cascades and templates ----------------------------------------------------------
    case(
        "channel-typo",
        HEAD + "  - send: {template: hello, cascade: [emial]}\n",
        f"rules/r.yaml:4:39: channel must be one of {CHANNEL_CHOICES}, "
        "got 'emial' (did you mean 'email'?)",
    ),
    case(
        "channel-typo-in-a-variant",
        HEAD + "  - send:\n      template: hello\n      cascade: [email]\n      variants:\n"
        "        - {name: A, weight: 1, cascade: [emial]}\n",
        f"rules/r.yaml:8:42: channel must be one of {CHANNEL_CHOICES}, "
        "got 'emial' (did you mean 'email'?)",
    ),
    case(
        "empty-cascade",
        HEAD + "  - send: {template: hello, cascade: []}\n",
        "rules/r.yaml:4:38: cascade needs at least one channel",
    ),
    case(
        "no-template-for-a-channel",
        HEAD + "  - send:\n      cascade: [email]\n",
        "rules/r.yaml:5:17: no template for channel 'email': "
        "set the send's 'template' or the entry's 'template'",
    ),
    case(
        "unknown-template",
        HEAD + "  - send: {template: helo, cascade: [email]}\n",
        "rules/r.yaml:4:22: unknown template 'helo' (did you mean 'hello'?)",
    ),
    case(
        "unknown-variant-template",
        HEAD + "  - send:\n      template: hello\n      cascade: [email]\n      variants:\n"
        "        - {name: A, weight: 1, template: helo}\n",
        "rules/r.yaml:8:42: unknown template 'helo' (did you mean 'hello'?)",
    ),
    case(
        "template-lacks-every-channel",
        HEAD + "  - send: {template: hello, cascade: [telegram, webpush]}\n",
        "rules/r.yaml:4:39: step 0: template 'hello' has no 'telegram' block (it has email, sms)",
        "rules/r.yaml:4:49: step 0: template 'hello' has no 'webpush' block (it has email, sms)",
    ),
    case(
        "template-lacks-one-channel-of-the-cascade",
        HEAD + "  - wait: 1h\n  - if: user.rfm == 'loyal'\n    then:\n"
        "      - send: {template: hello, cascade: [email, telegram, sms]}\n",
        "rules/r.yaml:7:50: step 1.then.0: template 'hello' has no 'telegram' block "
        "(it has email, sms)",
    ),
    case(
        "entry-template-lacks-its-channel",
        HEAD + "  - send:\n      template: hello\n      cascade:\n        - email\n"
        "        - {channel: sms, template: mail}\n",
        "rules/r.yaml:8:11: step 0: template 'mail' has no 'sms' block (it has email)",
        files_extra={"templates/mail.yaml": "template: mail\nemail: {subject: Hi, text: Hi}\n"},
    ),
    case(
        "variant-cascade-lacks-a-channel",
        HEAD + "  - send:\n      template: hello\n      cascade: [email]\n      variants:\n"
        "        - {name: A, weight: 1}\n        - {name: B, weight: 1, cascade: [telegram]}\n",
        "rules/r.yaml:9:42: step 0: template 'hello' has no 'telegram' block (it has email, sms)",
    ),
    case(
        # the variant's template replaces the step's on email only; sms keeps the step's,
        # reported once, not once per variant
        "variants-keep-the-steps-template-where-theirs-lacks-the-channel",
        HEAD + "  - send:\n      template: push\n      cascade: [email, sms]\n      variants:\n"
        "        - {name: A, weight: 1, template: mail}\n        - {name: B, weight: 1}\n",
        "rules/r.yaml:6:17: step 0: template 'push' has no 'email' block (it has mobile_push)",
        "rules/r.yaml:6:24: step 0: template 'push' has no 'sms' block (it has mobile_push)",
        files_extra={
            "templates/mail.yaml": "template: mail\nemail: {subject: Hi, text: Hi}\n",
            "templates/push.yaml": "template: push\nmobile_push: {body: Hi}\n",
        },
    ),
    case(
        "variant-template-alone-lacks-a-channel",
        HEAD + "  - send:\n      cascade: [email, sms]\n      variants:\n"
        "        - {name: A, weight: 1, template: mail}\n"
        "        - {name: B, weight: 1, template: hello}\n",
        "rules/r.yaml:5:24: step 0: variant 'A': template 'mail' has no 'sms' block, and the "
        "step names no other template for it",
        files_extra={"templates/mail.yaml": "template: mail\nemail: {subject: Hi, text: Hi}\n"},
    ),
    case(
        "unknown-templates-beside-other-errors",
        HEAD + "  - wiat: 1h\n  - send: {template: helo, cascade: [email]}\n"
        "  - send:\n      cascade: [{channel: emial, template: nope}]\n",
        "rules/r.yaml:4:5: unknown key 'wiat' in step (did you mean 'wait'?)",
        "rules/r.yaml:5:22: unknown template 'helo' (did you mean 'hello'?)",
        f"rules/r.yaml:7:17: channel must be one of {CHANNEL_CHOICES}, "
        "got 'emial' (did you mean 'email'?)",
        "rules/r.yaml:7:44: unknown template 'nope'",
    ),
    case(
        "template-that-did-not-load",
        HEAD + "  - send: {template: bad, cascade: [sms]}\n",
        "rules/r.yaml:4:22: template 'bad' did not load: rules/templates/bad.yaml has errors",
        "rules/templates/bad.yaml:2:13: sms.text: invalid template: unexpected '}'",
        files_extra={"templates/bad.yaml": "template: bad\nsms: {text: '{{ x }'}\n"},
    ),
    case(
        "await-and-within",
        HEAD + "  - send:\n      template: hello\n      cascade:\n"
        "        - {channel: email, await: opened}\n        - {channel: sms, within: 1h}\n",
        "rules/r.yaml:7:35: await needs 'within' "
        "(how long to wait for the reaction before the next channel)",
        "rules/r.yaml:8:26: within goes with 'await'",
    ),
    case(
        "await-kind",
        HEAD + "  - send:\n      template: hello\n      cascade:\n"
        "        - {channel: email, await: read, within: 1h}\n",
        "rules/r.yaml:7:35: await must be one of delivered, opened, clicked, got 'read'",
    ),
    case(
        "send-without-cascade",
        HEAD + "  - send: {template: hello}\n",
        "rules/r.yaml:4:11: send missing required key 'cascade'",
    ),
    case(
        "cascade-entry-without-channel",
        HEAD + "  - send: {cascade: [{template: hello}]}\n",
        "rules/r.yaml:4:22: cascade entry missing required key 'channel'",
    ),
    # -- variants ------------------------------------------------------------------------
    case(
        "variant-weights",
        HEAD + "  - send:\n      template: hello\n      cascade: [email]\n      variants:\n"
        "        - {name: A, weight: -1}\n        - {name: B, weight: ten}\n",
        "rules/r.yaml:8:29: weight must be a number >= 0",
        "rules/r.yaml:9:29: weight must be a number >= 0",
    ),
    case(
        "variant-weights-all-zero",
        HEAD + "  - send:\n      template: hello\n      cascade: [email]\n      variants:\n"
        "        - {name: A, weight: 0}\n        - {name: B, weight: 0}\n",
        "rules/r.yaml:8:9: variant weights must not all be 0",
    ),
    case(
        "variant-without-weight",
        HEAD + "  - send:\n      template: hello\n      cascade: [email]\n      variants:\n"
        "        - {name: A}\n",
        "rules/r.yaml:8:11: variant missing required key 'weight'",
    ),
    case(
        "duplicate-variant-names",
        HEAD + "  - send:\n      template: hello\n      cascade: [email]\n      variants:\n"
        "        - {name: A, weight: 50}\n        - {name: A, weight: 50}\n",
        "rules/r.yaml:9:18: duplicate variant name 'A'",
    ),
    # -- expressions ---------------------------------------------------------------------
    case(
        "expression-syntax",
        expr_rule("event.data.total > > 0"),
        "rules/r.yaml:4:7: 'if': invalid expression: unexpected '>'",
    ),
    case(
        "expression-unknown-name",
        expr_rule("evnt.data.total > 0"),
        f"rules/r.yaml:4:7: 'if': unknown name 'evnt' (did you mean 'event'?); {NAMES}",
    ),
    case(
        "expression-unknown-filter",
        expr_rule("event.data.total | cents > 0"),
        "rules/r.yaml:4:7: 'if': invalid expression: No filter named 'cents'.",
    ),
    case(
        "expression-unknown-test",
        expr_rule("event.data.total is positive"),
        "rules/r.yaml:4:7: 'if': invalid expression: No test named 'positive'.",
    ),
    case(
        "expression-empty",
        expr_rule("''"),
        "rules/r.yaml:4:7: 'if' must be an expression, e.g. event.data.total > 0",
    ),
    case(
        "audience-unknown-name-and-key-syntax",
        "rule: r\nkey: '{{ event.data.x '\naudience: usr.rfm\ntrigger: {event: cart.updated}\n"
        "steps:\n" + SEND,
        "rules/r.yaml:2:6: key: invalid template: unexpected end of template, "
        "expected 'end of print statement'.",
        f"rules/r.yaml:3:11: 'audience': unknown name 'usr' (did you mean 'user'?); {NAMES}",
    ),
    case(
        "number-field-ordered-against-a-string",
        expr_rule("\"event.data.total > '100'\""),
        "rules/r.yaml:4:7: 'if': event.data.total > '100' orders a number against a string, "
        "which fails whenever it runs (did you mean 100?)",
    ),
    case(
        "number-field-equal-to-a-string",
        expr_rule("\"event.data['price'] == '9.99' or trigger.data.amount != 'x'\""),
        "rules/r.yaml:4:7: 'if': event.data.price == '9.99' compares a number with a string: "
        "always false (did you mean 9.99?)",
        "rules/r.yaml:4:7: 'if': trigger.data.amount != 'x' compares a number with a string: "
        "always true",
    ),
    case(
        "string-field-ordered-against-a-number",
        GOOD + "audience: user.rfm >= 3 and 0 < user.points_balance\n",
        "rules/r.yaml:5:11: 'audience': user.rfm >= 3 orders a string against a number, "
        "which fails whenever it runs",
    ),
    case(
        "literals-and-chains",
        expr_rule("\"1 < event.data.total <= 'a' or -2 > 'b'\""),
        "rules/r.yaml:4:7: 'if': -2 > 'b' orders a number against a string, "
        "which fails whenever it runs",
        "rules/r.yaml:4:7: 'if': event.data.total <= 'a' orders a number against a string, "
        "which fails whenever it runs",
    ),
    case(
        "comparisons-that-may-work-are-left-alone",
        expr_rule(
            "\"event.data.qty > '3' or user.rfm == 3 or event.data.total == user.email "
            "or event.type in ['a'] or user.orders_count > 3\""
        ),
    ),
    case(
        "type-clash-in-a-template",
        {
            "templates/bad.yaml": "template: bad\n"
            "sms: {text: \"{% if user.orders_count > '5' %}vip{% endif %}\"}\n"
        },
        "rules/templates/bad.yaml:2:13: sms.text: user.orders_count > '5' orders a number "
        "against a string, which fails whenever it runs (did you mean 5?)",
    ),
    case(
        "exit-on-if-unknown-name",
        GOOD + "exit_on:\n  - {event: cart.cleared, if: 'evnt.x'}\n",
        f"rules/r.yaml:6:31: 'if': unknown name 'evnt' (did you mean 'event'?); {NAMES}",
    ),
    # -- steps ---------------------------------------------------------------------------
    case("stop-false", HEAD + "  - stop: false\n", "rules/r.yaml:4:11: stop takes the value true"),
    case(
        "two-kinds-in-a-step",
        HEAD + "  - wait: 1h\n    stop: true\n",
        "rules/r.yaml:4:5: a step needs exactly one of wait, send, wait_for, if, stop; "
        "found wait, stop",
    ),
    case(
        "no-kind-in-a-step",
        HEAD + "  - then: []\n",
        "rules/r.yaml:4:5: a step needs exactly one of wait, send, wait_for, if, stop; found none",
    ),
    case(
        "empty-steps",
        "rule: r\ntrigger: {event: cart.updated}\nsteps: []\n",
        "rules/r.yaml:3:8: steps must not be empty",
    ),
    case(
        "if-step",
        HEAD + "  - if: user.x\n  - if: user.rfm == 'a'\n    then: {stop: true}\n    els: []\n",
        "rules/r.yaml:4:5: 'if' step needs 'then' (and optionally 'else')",
        "rules/r.yaml:6:11: 'then' must be a list, got a mapping",
        "rules/r.yaml:7:5: unknown key 'els' in 'if' step (did you mean 'else'?)",
    ),
    case(
        "wait-for",
        HEAD + "  - wait_for: {event: order.created}\n    on_timeout: [{stop: true}]\n"
        "  - wait_for: {event: Order}\n",
        "rules/r.yaml:4:15: on_timeout needs a 'timeout'",
        "rules/r.yaml:6:23: wait_for event 'Order' is not an event type such as cart.updated",
    ),
    case(
        "wait-for-without-event",
        HEAD + "  - wait_for: {timeout: 1d}\n",
        "rules/r.yaml:4:15: wait_for missing required key 'event'",
    ),
    case(
        "nested-step-error",
        HEAD + "  - wait_for: {event: order.created, timeout: 1d}\n    on_timeout:\n"
        "      - if: user.x\n        then:\n          - wait: 1x\n",
        f"rules/r.yaml:8:19: wait: invalid duration '1x': {DURATION_HELP}",
    ),
    # -- templates -----------------------------------------------------------------------
    case(
        "template-jinja-syntax",
        {
            "templates/bad.yaml": "template: bad\nemail:\n  subject: 'Hi {{ user.name'\n"
            "  text: ok\nsms:\n  text: '{{ user.x | nosuch }}'\n"
        },
        "rules/templates/bad.yaml:3:12: email.subject: invalid template: unexpected end of "
        "template, expected 'end of print statement'.",
        "rules/templates/bad.yaml:6:9: sms.text: invalid template: No filter named 'nosuch'.",
    ),
    case(
        "template-html-file-jinja-syntax",
        {
            "templates/bad.yaml": "template: bad\nemail:\n  subject: Hi\n  html: bad.html\n",
            "templates/bad.html": "<p>ok</p>\n<p>{{ user.x }</p>\n",
        },
        "rules/templates/bad.html:2:1: invalid template (template line 2): unexpected '}'",
    ),
    case(
        "template-html-file-missing",
        {"templates/bad.yaml": "template: bad\nemail:\n  subject: Hi\n  html: nope.html\n"},
        "rules/templates/bad.yaml:4:9: email.html: file 'nope.html' not found beside the template",
    ),
    case(
        "template-keys",
        {
            "templates/bad.yaml": "template: bad\nemail:\n  text: hi\nwhatsapp: {name: x}\n"
            "smss: {text: hi}\nsms: {text: hi, txt: y}\n"
        },
        "rules/templates/bad.yaml:3:3: 'email' missing required key 'subject'",
        "rules/templates/bad.yaml:4:11: 'whatsapp' missing required key 'language'",
        "rules/templates/bad.yaml:5:1: unknown key 'smss' in template (did you mean 'sms'?)",
        "rules/templates/bad.yaml:6:17: unknown key 'txt' in 'sms' (did you mean 'text'?)",
    ),
    case(
        "template-unknown-name",
        {"templates/bad.yaml": "template: bad\nsms: {text: '{{ usr.name }}'}\n"},
        "rules/templates/bad.yaml:2:13: sms.text: unknown name 'usr' (did you mean 'user'?); "
        "available: event, message, now, rule, track, trigger, unsubscribe_url, user, variant",
    ),
    case(
        "template-without-channels",
        {"templates/bad.yaml": "template: bad\ndescription: nothing yet\n"},
        f"rules/templates/bad.yaml:1:1: template 'bad' has no channel block ({CHANNEL_CHOICES})",
    ),
    case(
        "template-field-checks",
        {
            "templates/bad.yaml": "template: bad\nemail: {subject: hi}\n"
            "telegram: {text: hi, parse_mode: html}\nwebhook: {body: hi}\n"
            "sms: {text: '" + "x" * 1600 + "'}\n"
        },
        "rules/templates/bad.yaml:2:8: email needs 'html' or 'text' (or both)",
        "rules/templates/bad.yaml:3:34: telegram.parse_mode must be one of HTML, MarkdownV2, "
        "Markdown, got 'html'",
        "rules/templates/bad.yaml:4:17: webhook.body must be a mapping",
        "rules/templates/bad.yaml:5:13: sms.text is 11 GSM-7 segments, over 10",
    ),
    case(
        "duplicate-template",
        {"templates/a_hello.yaml": "template: hello\nsms: {text: x}\n"},
        "rules/templates/hello.yaml:1:1: duplicate template 'hello' "
        "(first defined at rules/templates/a_hello.yaml:1)",
    ),
    # -- files ---------------------------------------------------------------------------
    case(
        "duplicate-rule-ids-across-files",
        {"a.yaml": GOOD, "sub/b.yaml": "# the same id again\n" + GOOD},
        "rules/sub/b.yaml:2:1: duplicate rule id 'r' (first defined at rules/a.yaml:1)",
    ),
    case(
        "neither-rule-nor-template",
        {"x.yaml": "name: foo\nsteps: []\n", "y.yaml": "- a\n- b\n", "z.yaml": "just text\n"},
        f"rules/x.yaml:1:1: {NOT_RULE}",
        f"rules/y.yaml:1:1: {NOT_RULE}",
        f"rules/z.yaml:1:1: {NOT_RULE}",
    ),
    case("empty-files", {"empty.yaml": "", "comment.yml": "# a rule being written\n"}),
    case(
        "yml-suffix-and-hidden-files",
        {"r.yml": GOOD.replace("rule: r", "rule: r2") + "mode: x\n", ".draft/r.yaml": "nope: 1\n"},
        "rules/r.yml:5:7: mode must be one of single, restart, parallel, got 'x'",
    ),
    # -- SPEC 12: segments, holdouts, groups, one-off broadcasts ---------------------------
    *(
        case(
            f"holdout-{n}",
            GOOD + f"holdout: {value}\n",
            f"rules/r.yaml:5:10: holdout must be a share from 0% to 50% with its percent "
            f"sign, e.g. 10%, got '{shown}'",
        )
        for n, (value, shown) in enumerate(
            [
                ("10", "10"),  # 10% or 0.1%? the sign says
                ("0.1", "0.1"),
                ('"10"', "10"),
                ("abc", "abc"),
                ("'1e1%'", "1e1%"),
                ("-5%", "-5%"),
                ("50.5%", "50.5%"),
                ("[10%]", "['10%']"),
                ("true", "True"),
            ]
        )
    ),
    case(
        "holdout-fine",
        {
            "a.yaml": GOOD + "holdout: 10.5%\n",
            "b.yaml": GOOD.replace("rule: r", "rule: b") + "holdout: 0\n",
        },
    ),
    case(
        "one-off-at-needs-an-offset",
        {
            f"{n}.yaml": f"rule: {n}\ntrigger: {{schedule: {{at: '{at}'}}}}\nsteps:\n{SEND}"
            for n, at in [
                ("a", "2026-12-24T10:00:00"),
                ("b", "2026-12-24"),
                ("c", "2026-12-24T10:00:00Z"),
                ("d", "2020-01-01T00:00:00+03:00"),
            ]
        },
        "rules/a.yaml:2:26: schedule.at: '2026-12-24T10:00:00' has no UTC offset: write the "
        "instant with one, e.g. 2026-12-24T10:00:00+03:00 or 2026-12-24T07:00:00Z",
        "rules/b.yaml:2:26: schedule.at: '2026-12-24' has no UTC offset: write the "
        "instant with one, e.g. 2026-12-24T10:00:00+03:00 or 2026-12-24T07:00:00Z",
    ),
    case(
        "group-and-priority",
        GOOD + "group: Cart Recovery\npriority: '10'\n",
        "rules/r.yaml:5:8: group id 'Cart Recovery' may use a-z, 0-9, _, - and .",
        "rules/r.yaml:6:11: priority must be a whole number, got '10'",
    ),
    case(
        "segment-conditions",
        {
            "segments/s.yaml": "segment: s\nany:\n"
            "  - {event: cart.updated, within: 401d}\n"
            "  - {event: cart.updated, within: 1d, at_least: 0}\n"
            "  - {event: cart.updated, within: 1d, at_least: 2.5}\n"
            "  - {event: cart.updated, within: 1d, at_least: 1001}\n"
            "  - {event: cart.updated, within: 1d, if: 'event.data.total >'}\n"
            "  - {profile: 'event.data.total > 0'}\n"
            "  - {event: cart.updated, within: 1d, every: 1d}\n"
            "  - {event: cart.add, within: 1d}\n",
            "segments/e.yaml": "segment: e\nany: []\n",
            "segments/b.yaml": "segment: b\nany: [{profile: 'true'}]\nall: [{profile: 'true'}]\n",
            "segments/r.yaml": "segment: r\nany: [{profile: 'true'}]\n",
            "r.yaml": GOOD,
        },
        "rules/r.yaml:1:7: rule id 'r' is also a segment (rules/segments/r.yaml:1): "
        "a rule and a segment need different ids",
        "rules/segments/b.yaml:1:1: a segment needs exactly one of 'any' or 'all' (a list)",
        "rules/segments/e.yaml:2:6: 'any' needs at least one condition",
        "rules/segments/s.yaml:3:35: any[0].within must be more than 0 and at most 400d, got "
        "'401d'",
        "rules/segments/s.yaml:4:49: any[1].at_least must be a whole number from 1 to 1000, "
        "got '0'",
        "rules/segments/s.yaml:5:49: any[2].at_least must be a whole number from 1 to 1000, "
        "got '2.5'",
        "rules/segments/s.yaml:6:49: any[3].at_least must be a whole number from 1 to 1000, "
        "got '1001'",
        "rules/segments/s.yaml:7:43: any[4].if: invalid expression: unexpected 'end of expression'",
        "rules/segments/s.yaml:8:15: any[5].profile: unknown name 'event'; available: now, user",
        "rules/segments/s.yaml:9:39: unknown key 'every' in any[6] (an event condition) "
        "(did you mean 'event'?)",
        "rules/segments/s.yaml:10:13: any[7].event: unknown event type 'cart.add' (kaskad's "
        "'cart.' events are cart.cleared, cart.updated)",
    ),
]


@pytest.mark.parametrize(("files", "expected"), CASES)
def test_problems(load: Loader, files: dict[str, str], expected: list[str]) -> None:
    ruleset = load(files)
    assert [str(p) for p in ruleset.problems] == expected


def test_a_valid_rule_loads_and_is_indexed(load: Loader) -> None:
    ruleset = load({"r.yaml": GOOD + "goal: {event: order.created}\n"})
    assert ruleset.problems == []
    assert set(ruleset.rules) == {"r"} and set(ruleset.templates) == {"hello"}
    rule = ruleset.rules["r"]
    assert (rule.path, rule.line, rule.mode, rule.category) == (
        "rules/r.yaml",
        1,
        "single",
        "marketing",
    )
    assert ruleset.by_event == {"cart.updated": [rule]}
    assert ruleset.watched == frozenset({"order.created"})


def test_tolerant_loading_leaves_out_only_the_bad_rule(load: Loader) -> None:
    ruleset = load(
        {
            "good.yaml": GOOD,
            "bad.yaml": "rule: bad\ntrigger: {event: cart.updated}\nsteps:\n  - wait: 1x\n",
            "broken.yaml": "rule: broken\ntrigger: [\n",
            "templates/bad_tpl.yaml": "template: bad_tpl\nsms: {text: '{{ x'}\n",
            "uses_bad_tpl.yaml": HEAD.replace("rule: r", "rule: uses")
            + "  - send: {template: bad_tpl, cascade: [sms]}\n",
        }
    )
    assert set(ruleset.rules) == {"r"}
    assert set(ruleset.templates) == {"hello"}
    assert sorted(ruleset.failed) == ["bad", "uses"]
    assert [p.path for p in ruleset.problems] == [
        "rules/bad.yaml",
        "rules/broken.yaml",
        "rules/templates/bad_tpl.yaml",
        "rules/uses_bad_tpl.yaml",
    ]
    assert str(ruleset.failed["bad"][0]).startswith("rules/bad.yaml:4:11: wait: invalid")


def test_a_rule_directory_given_relatively_names_files_relatively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_rules(
        tmp_path,
        {
            "templates/bad.yaml": "template: bad\nemail:\n  subject: Hi\n  html: bad.html\n",
            "templates/bad.html": "<p>ok</p>\n<p>ok</p>\n{% for x in y %}\n",
        },
    )
    monkeypatch.chdir(tmp_path)
    assert [str(p) for p in load_ruleset([Path("rules")]).problems] == [
        "rules/templates/bad.html:3:1: invalid template (template line 3): Unexpected end of "
        "template. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost "
        "block that needs to be closed is 'for'.",
    ]


def test_the_shipped_rules_load_with_zero_problems() -> None:
    ruleset = load_ruleset([RULES])
    assert ruleset.problems == []
    assert ruleset.failed == {}
    assert len(ruleset.rules) == len(list(RULES.glob("*.yaml")))
    assert len(ruleset.templates) == len(list((RULES / "templates").glob("*.yaml")))
    assert [r.id for r in ruleset.scheduled] == ["nutrilon_promo", "weekly_promo"]
    assert sorted(ruleset.segments) == ["baby_0_3"]
    assert sorted(ruleset.fan_out) == ["product.back_in_stock", "product.price_dropped"]


def test_every_problem_line_has_the_path_line_col_shape(load: Loader) -> None:
    ruleset = load({"r.yaml": "rule: r\ntigger: {}\n", "x.yaml": "- 1\n"})
    assert ruleset.problems
    for problem in ruleset.problems:
        path, line, col, message = str(problem).split(":", 3)
        assert path.startswith("rules/") and line.isdigit() and col.isdigit()
        assert message.startswith(" ") and message.strip()


# -- crashes and misleading messages (known bugs) ------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD + "cooldown:\n", "rules/r.yaml:5:"),
        (HEAD + "  - wait:\n", "rules/r.yaml:4:"),
        (HEAD + "  - wait: [1h]\n", "rules/r.yaml:4:"),
        (HEAD + "  - wait_for: {event: x, timeout: }\n", "rules/r.yaml:4:"),
        (HEAD + "  - wait: {for: }\n", "rules/r.yaml:4:"),
        (
            HEAD + "  - send:\n      template: hello\n      cascade:\n"
            "        - {channel: email, await: opened, within: }\n",
            "rules/r.yaml:7:",
        ),
    ],
    ids=["cooldown-null", "wait-null", "wait-list", "timeout-null", "for-null", "within-null"],
)
def test_an_empty_duration_is_a_problem_not_a_crash(load: Loader, text: str, where: str) -> None:
    ruleset = load({"r.yaml": text, "other.yaml": GOOD.replace("rule: r", "rule: other")})
    assert [str(p).startswith(where) for p in ruleset.problems] == [True]
    assert set(ruleset.rules) == {"other"}


def test_a_non_utf8_html_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    rules = write_rules(
        tmp_path, {"templates/t.yaml": "template: t\nemail:\n  subject: Hi\n  html: t.html\n"}
    )
    (rules / "templates" / "t.html").write_bytes("<p>Привет</p>\n".encode("cp1251"))
    ruleset = load_ruleset([rules])
    assert [p.line for p in ruleset.problems] == [1]
    assert ruleset.problems[0].path.endswith("t.html")


def test_entry_template_lacking_the_channel_is_named(load: Loader) -> None:
    text = HEAD + "  - send:\n      cascade:\n        - {channel: telegram, template: hello}\n"
    messages = [p.message for p in load({"r.yaml": text}).problems]
    assert len(messages) == 1
    assert "'hello'" in messages[0] and "None" not in messages[0]


@pytest.mark.parametrize(
    ("source", "must_not_contain"),
    [
        ("event.data.total >", "')'"),
        ("event.data.total > 0 and", "')'"),
        ("(event.data.total", "'}'"),
        ("user.rfm == 'a", "at 16"),  # the quote is at offset 12 of what the author wrote
    ],
)
def test_expression_syntax_errors_speak_of_what_was_written(
    source: str, must_not_contain: str
) -> None:
    with pytest.raises(ValueError) as info:
        Expression(source)
    assert must_not_contain not in str(info.value)


# -- limits of the loader ------------------------------------------------------------------

BOMB = """\
rule: bomb
trigger: {event: cart.updated}
steps: [{send: {template: hello, cascade: [email]}}]
description:
  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  - &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  - &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
BOMB_PROBLEM = (
    "rules/bomb.yaml:5:5: YAML anchors (&a) are not allowed: write the value out where it is used"
)


def test_a_yaml_bomb_is_refused_before_it_expands(load: Loader) -> None:
    start = time.process_time()
    ruleset = load({"bomb.yaml": BOMB, "r.yaml": GOOD})
    assert time.process_time() - start < 1.0
    assert [str(p) for p in ruleset.problems] == [BOMB_PROBLEM]
    assert set(ruleset.rules) == {"r"}


def test_a_file_over_the_size_limit_is_not_read(load: Loader) -> None:
    big = "# padding\n" * (MAX_FILE_BYTES // 10) + GOOD
    ruleset = load({"big.yaml": big, "r.yaml": GOOD})
    size = len(big.encode())
    assert [str(p) for p in ruleset.problems] == [
        f"rules/big.yaml:1:1: file is {size} bytes, over the 1024 KiB limit"
    ]


def test_config_yaml_refuses_aliases_too() -> None:
    with pytest.raises(LoadError) as info:
        parse_config("server: &s {port: 1}\nmetrics: *s\n", "config.yaml")
    assert [str(p) for p in info.value.problems] == [
        "config.yaml:1:9: YAML anchors (&s) are not allowed: write the value out where it is used"
    ]


# -- template files stay inside the rules directory ----------------------------------------


def html_template(html: str) -> dict[str, str]:
    return {"templates/t.yaml": f"template: t\nemail:\n  subject: Hi\n  html: {html}\n"}


@pytest.mark.parametrize(
    "html", ["../../secret.html", "../../rules/../secret.html", "SECRET", "link.html"]
)
def test_a_template_file_outside_the_rules_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, html: str
) -> None:
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "secret.html"
    secret.write_text("<p>{{ 'the secret' }}</p>\n")
    html = str(secret) if html == "SECRET" else html
    rules = write_rules(tmp_path, html_template(html))
    (rules / "templates" / "link.html").symlink_to(secret)
    ruleset = load_ruleset([rules])
    assert [str(p) for p in ruleset.problems] == [
        f"rules/templates/t.yaml:4:9: email.html: file '{html}' is outside the rules directory"
    ]
    assert "t" not in ruleset.templates


def test_a_template_file_anywhere_inside_the_rules_directory_is_fine(load: Loader) -> None:
    ruleset = load({**html_template("../shared/t.html"), "shared/t.html": "<p>Hi</p>\n"})
    assert ruleset.problems == []
    assert ruleset.templates["t"].render("email", {})["html"] == "<p>Hi</p>\n"


def test_a_single_file_given_confines_its_templates_to_its_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.html").write_text("<p>secret</p>\n")
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "t.yaml").write_text(
        "template: t\nemail:\n  subject: Hi\n  html: ../secret.html\n", encoding="utf-8"
    )
    problems = load_ruleset([folder / "t.yaml"]).problems
    assert [p.message for p in problems] == [
        "email.html: file '../secret.html' is outside the rules directory"
    ]
