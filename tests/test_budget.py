"""Render limits (engine/lang/budget.py): whatever a template says, it loads and renders in
well under a second, or fails with an ExpressionError that names the limit.

Times are CPU times (time.process_time): what the limits bound, whatever else the machine
runs meanwhile."""

from __future__ import annotations

import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ExpressionError
from engine.lang import budget
from engine.lang.expressions import Expression, TextTemplate
from engine.lang.ruleset import load_ruleset
from tests.helpers import brief, ev, profile, run_simulation

LOOPS = "render limit: over 100000 loop iterations in one render"
VALUE = "render limit: a value of over 262144 characters or items"
OUTPUT = "render limit: output over 262144 characters"
BUILT = "render limit: over 16777216 characters built in one render"
TIME = "render limit: rendering took over 0.25 s of CPU"
BITS = "render limit: a number of over 65536 bits"


def width(n: int) -> str:
    return f"render limit: a width or count of {n}, over 262144"


CASES = [
    # loops: nested, over data, recursive
    ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", LOOPS),
    ("{% for i in user.big %}{% for j in user.big %}{% endfor %}{% endfor %}", LOOPS),
    (
        "{% for x in [range(400)] * 400 recursive %}{% if x is iterable %}{{ loop(x) }}"
        "{% endif %}{% endfor %}",
        LOOPS,
    ),
    # operators Jinja would otherwise fold at load, or compute at render
    ("{{ 'x' * 10**9 }}", VALUE),
    ("{{ [1, 2] * 10**8 }}", VALUE),
    ("{{ 9 ** 100000 }}", BITS),
    ("{% set n = 2 ** 60000 %}{{ n * n }}", BITS),
    ("{{ '%*d' % (10**9, 1) }}", width(10**9)),
    ("{{ '%1000000000d' % 1 }}", width(10**9)),
    ("{{ '%.1000000000f' | format(1.0) }}", width(10**9)),
    ("{{ '%s' * 100 % (('x' * 200000,) * 100) }}", VALUE),
    # string methods and str.format
    ("{{ 'x'.ljust(10**9) }}", width(10**9)),
    ("{{ 'x'.center(10**9) }}", width(10**9)),
    ("{{ '1'.zfill(10**9) }}", width(10**9)),
    ("{{ ('\t' * 1000).expandtabs(10**6) }}", VALUE),
    ("{{ ('x' * 1000).replace('', 'y' * 1000) }}", VALUE),
    ("{{ ('y' * 1000).join(range(1000)) }}", VALUE),
    ("{{ '{:>1000000000}'.format(1) }}", width(10**9)),
    ("{{ '{:>{}}'.format(1, 10**9) }}", width(10**9)),
    ("{{ '{:.1000000000f}'.format(1.0) }}", width(10**9)),
    ("{{ '{0}{0}{0}{0}{0}{0}'.format('x' * 200000) }}", VALUE),
    # filters that take a size
    ("{{ 'x' | center(1000000000) }}", width(10**9)),
    ("{{ ('x\n' * 1000) | indent(10**6) }}", width(10**6)),
    ("{{ [0] | batch(10**9, 'x') | list }}", width(10**9)),
    ("{{ range(10) | join('x' * 100000) }}", VALUE),
    ("{{ ('x' * 1000) | replace('', 'y' * 1000) }}", VALUE),
    ("{{ ([0] * 100000) | map('default', 'x' * 1000, true) | list }}", VALUE),
    ("{{ [1] | slice(10**9) | list }}", width(10**9)),
    ("{{ [1] | slice(100000, 'x' * 100000) | list }}", VALUE),
    # filters that make a few times what they are given, chained: each link is counted (and
    # Jinja, folding the constant ones at load, stops at the first one over the limit)
    ("{{ 'a\\\\b'" + " | pprint" * 30 + " }}", VALUE),
    ("{{ ['a\\\\b']" + " | string | pprint" * 30 + " }}", VALUE),
    ("{{ ('x' * 250000) | list | string }}", VALUE),
    # strings and structures that double
    (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        VALUE,
    ),
    (
        "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = [ns.l, ns.l] %}"
        "{% endfor %}{{ ns.l }}",
        VALUE,
    ),
    # output, all the built strings, time
    ("{% for i in range(100) %}{{ 'x' * 10000 }}{% endfor %}", OUTPUT),
    (
        "{% set x %}{% for i in range(100000) %}{{ 'y'.center(200000) }}{% endfor %}{% endset %}"
        "{{ x | length }}",
        BUILT,
    ),
    (
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
        TIME,
    ),
]


@pytest.mark.parametrize(("source", "message"), CASES)
def test_a_template_over_a_limit_fails_fast_naming_the_limit(
    source: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if message != TIME:  # the limit the case is about, not time (on a loaded machine) trips
        monkeypatch.setattr(budget, "MAX_RENDER_S", 30.0)
    context = {"user": {"big": list(range(50_000))}}
    start = time.process_time()
    template = TextTemplate(source)  # nothing huge is folded at load
    loaded = time.process_time() - start
    with pytest.raises(ExpressionError) as info:
        template.render(context)
    assert str(info.value) == message
    assert loaded < 0.1
    assert time.process_time() - start < 1.0


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% for i in range(100000) %}{% endfor %}{{ ('x' * 262144) | length }}", "262144"),
        (
            "{{ '{:>8}'.format(1) }}|{{ '%5.1f' % 2.25 }}|{{ 'a' | center(5) }}",
            "       1|  2.2|  a  ",
        ),
        (
            "{{ [1, 2] | join(', ') }}; {{ 'ab' * 3 }}; {{ 2 ** 10 }}; {{ 'a' + 'b' }}",
            "1, 2; ababab; 1024; ab",
        ),
        (
            "{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}"
            "{% endfor %}{{ ns.n }}",
            "10",
        ),
        (
            "{% for x in [1, [2, [3]]] recursive %}{{ loop(x) if x is iterable else x }}"
            "{% endfor %}",
            "123",
        ),
    ],
)
def test_ordinary_templates_are_untouched(source: str, expected: str) -> None:
    assert TextTemplate(source).render({}) == expected


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x'.encode() * 10**9 }}",
        "{{ ('x' * 1000).encode().ljust(10**9) }}",
        "{{ (5).to_bytes(10**9, 'big') | length }}",
    ],
)
def test_a_template_gets_no_bytes(source: str) -> None:
    """bytes repeat as str does (`*`, ljust, zfill, join ...), and none of that is sized:
    a template has no use for them, so neither str.encode nor int.to_bytes is reachable."""
    start = time.process_time()
    with pytest.raises(ExpressionError, match=r"SecurityError: access to attribute '\w+' of"):
        TextTemplate(source).render({})
    assert time.process_time() - start < 0.5
    for fast in (True, False):
        with pytest.raises(ExpressionError, match="SecurityError"):
            Expression(source[3:-3], fast=fast).evaluate({})


@pytest.mark.parametrize("kind", ["template", "expression"])
def test_constant_folding_at_load_builds_one_value_at_most(kind: str) -> None:
    """Jinja folds constant filter calls when it compiles: 400 of them, each just under the
    value limit, were 100 MB at load. All the folds of one compile share one value's worth;
    the rest is left to render time, where the render's limits refuse it."""
    parts = ["('a' | center(262000))"] * 400
    source = "{{ " + " ~ ".join(parts) + " }}" if kind == "template" else " ~ ".join(parts)
    tracemalloc.start()
    try:
        compiled = TextTemplate(source) if kind == "template" else Expression(source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    with pytest.raises(ExpressionError, match="render limit: "):
        compiled.render({}) if isinstance(compiled, TextTemplate) else compiled.evaluate({})


def test_a_long_chain_of_filters_loads_at_once() -> None:
    """Jinja's optimizer, run by its code generator at every level, folds the levels below
    again: a chain of 180 filters took seconds to load (cubic in its length)."""
    source = "user.email" + " | trim" * 180
    start = time.process_time()
    TextTemplate("{{ " + source + " }}")
    Expression(source)
    assert time.process_time() - start < 1.5


def test_ordinary_constant_filters_still_fold_at_load() -> None:
    assert TextTemplate("{{ 'abc' | upper ~ ('x' | center(3)) }}").render({}) == "ABC x "
    assert Expression("'ab' | upper ~ 'c'").folded == "ABc"


def test_lipsum_is_not_a_name() -> None:
    """lipsum(10**6) takes minutes, and lorem ipsum has no place in a message."""
    with pytest.raises(ValueError, match="unknown name 'lipsum'"):
        TextTemplate("{{ lipsum(3) }}")


def test_a_namespace_prints_without_its_contents() -> None:
    """A namespace may change after a list took it: a list of it must print small."""
    source = (
        "{% set ns = namespace(x=1) %}{% set l = [ns] * 1000 %}{% set ns.x = 'y' * 200000 %}{{ l }}"
    )
    assert TextTemplate(source).render({}).startswith("[<Namespace>, <Namespace>")


def test_the_limits_hold_for_expressions_on_both_paths() -> None:
    ctx: dict[str, Any] = {"event": {"data": {"q": "abc", "n": 3}}}
    for source in (
        "event.data.q * 1000000",
        "event.data.n ** 1000000",
        "range(10**5) | list | length + 1",
    ):
        for fast in (True, False):
            expr = Expression(source, fast=fast)
            try:
                expr.evaluate(ctx)
            except ExpressionError as exc:
                assert str(exc).startswith("render limit: ")
            else:
                assert source.startswith("range")


def test_one_budget_for_all_the_fields_of_a_message(tmp_path: Path) -> None:
    """Each field renders within the output limit; the loop budget is the message's."""
    rules = tmp_path / "rules"
    rules.mkdir()
    loop = "{% for i in range(60000) %}{% endfor %}"
    (rules / "t.yaml").write_text(
        f"template: t\nemail: {{subject: '{loop}s', text: '{loop}t'}}\n", encoding="utf-8"
    )
    ruleset = load_ruleset([rules])
    assert ruleset.problems == []
    template = ruleset.templates["t"]
    with pytest.raises(ExpressionError) as info:
        template.render("email", {})
    assert str(info.value) == f"{template.path}: email.text: {LOOPS}"
    assert budget.current() is None  # no budget left behind


def test_a_template_over_budget_is_a_template_error_in_the_chain(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "slow.yaml").write_text(
        textwrap.dedent(
            """\
            template: slow
            sms:
              text: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}\\
                {% endfor %}"
            """
        )
    )
    (rules / "fine.yaml").write_text("template: fine\nsms: {text: Hello}\n")
    (rules / "r.yaml").write_text(
        textwrap.dedent(
            """\
            rule: r
            category: transactional
            trigger: {event: order.created}
            steps:
              - send: {cascade: [{channel: sms, template: slow}]}
              - send: {template: fine, cascade: [sms]}
            """
        )
    )
    ruleset = load_ruleset([rules])
    assert ruleset.problems == []
    t0 = "2026-11-23T09:00:00Z"
    start = time.process_time()
    records = run_simulation(
        ruleset, [profile("u1", t0, phone="+15550001111"), ev("order.created", "u1", t0)]
    )
    assert time.process_time() - start < 5
    assert [(r[3], r[5], r[6]) for r in brief(records)] == [
        ("0", "skipped", "template_error"),
        ("1", "sent", None),
    ]
