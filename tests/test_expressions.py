"""The compiled fast path of Expression against Jinja itself (the reference, `fast=False`)."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2 import UndefinedError

from engine.errors import ExpressionError
from engine.lang.expressions import Expression, TextTemplate
from engine.lang.fused import fuse_tests
from engine.lang.ruleset import load_ruleset
from tests.helpers import ev, profile, run_simulation

Outcome = tuple[str, Any]

EVENT_FULL = {
    "id": "e1",
    "type": "cart.updated",
    "user_id": "u1",
    "time": "2026-11-23T10:00:00Z",
    "data": {
        "total": 150.5,
        "items_count": 3,
        "category": "Phones",
        "currency": "EUR",
        "query": "iPhone 15",
        "results": 0,
        "count_str": "42",
        "ratio": "2.5",
        "flag": True,
        "note": None,
        "tags": ["a", "b", "c"],
        "items": [
            {"product_id": "p1", "price": 30, "qty": 1},
            {"product_id": "p2", "price": 12.5, "qty": 4},
        ],
        "expires_at": "2026-12-31T00:00:00Z",
        "license_id": "L-1",
        "nested": {"deep": {"value": 7}},
    },
}
CONTEXTS: dict[str, dict[str, Any]] = {
    "full": {
        "event": EVENT_FULL,
        "trigger": {"data": {"license_id": "L-1", "product_id": "p1"}},
        "user": {"rfm": "loyal", "points_balance": 120, "attributes": {"first_name": "Ann"}},
        "now": datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    },
    "empty": {"event": {"data": {}}, "trigger": {"data": {}}, "user": {}, "now": None},
    "nones": {
        "event": {"data": dict.fromkeys(EVENT_FULL["data"])},
        "trigger": {"data": {"license_id": None}},
        "user": {"rfm": None, "points_balance": None},
        "now": None,
    },
    "odd_types": {
        "event": {
            "data": {
                "total": "150",
                "items_count": [1, 2],
                "category": 5,
                "currency": {"code": "EUR"},
                "query": 12,
                "results": "0",
                "count_str": "x",
                "ratio": [],
                "flag": "",
                "note": 0,
                "tags": "abc",
                "items": {"0": "zero"},
                "expires_at": 20261231,
                "license_id": 7,
                "nested": [],
            }
        },
        "trigger": {"data": "not a mapping"},
        "user": [],
        "now": "2026-11-23",
    },
    # `user` and `now` missing from the context entirely: Jinja resolves them as undefined
    "no_user": {"event": {"data": {"total": 1}}, "trigger": {"data": {}}},
}

EXPRESSIONS = [
    # comparisons
    "event.data.total > 100",
    "event.data.total >= 150.5",
    "event.data.total < 0",
    "event.data.total <= 10",
    "event.data.total == 150.5",
    "event.data.total != 0",
    "1 < event.data.items_count < 5",
    "event.data.category == 'Phones'",
    "event.data.currency != 'USD'",
    "event.data.new_price < event.data.old_price",
    "event.data.product_id == trigger.data.product_id",
    # boolean logic, short-circuit
    "event.data.total > 100 and event.data.category == 'phones'",
    "event.data.total > 100 or event.data.missing",
    "false and event.data.missing",
    "event.data.missing and true",
    "not event.data.flag",
    "event.data.note or 'fallback'",
    "event.data.flag and event.data.items_count",
    # arithmetic and concatenation
    "event.data.total + 1",
    "event.data.total - event.data.items_count",
    "event.data.total * 2",
    "event.data.total / event.data.items_count",
    "event.data.total // 7",
    "event.data.items_count % 2",
    "-event.data.total",
    "+event.data.items_count",
    "event.data.total / event.data.results",
    "event.data.query ~ '-' ~ event.data.items_count",
    "'x' * 3 ~ event.data.missing",
    # membership
    "event.data.currency in ['EUR', 'USD']",
    "event.data.currency not in ('EUR',)",
    "'a' in event.data.tags",
    "'Pho' in event.data.category",
    "'total' in event.data",
    "user.rfm in ['champions', 'loyal']",
    "event.data.missing in [1, 2]",
    "event.data.missing in []",
    # missing keys, undefined, none
    "event.data.missing",
    "event.data.missing.deeper",
    "event.nope.total",
    "event.data.missing > 1",
    "event.data.missing == 1",
    "event.data.missing is defined",
    "event.data.missing is undefined",
    "event.data.expires_at is defined",
    "event.data.missing is none",
    "event.data.note is none",
    "event.data.note is not none",
    "event.data.missing is number",
    "event.data.missing is string",
    "event.data.missing | default(0) > 0",
    "event.data.results | default(0) > 0",
    "event.data.missing | default('x')",
    "event.data.note | default('x')",
    "event.data.note | default('x', true)",
    "event.data.note | default('x', boolean=true)",
    "event.data.license_id | default('') == trigger.data.license_id | default('')",
    "user.points_balance > 0",
    "user.attributes.first_name | default('friend')",
    # filters
    "event.data.tags | length",
    "event.data.items | length > 1",
    "event.data.missing | length",
    "event.data.query | lower",
    "event.data.query | upper",
    "event.data.query | lower == 'iphone 15'",
    "event.data.missing | lower",
    "event.data.count_str | int > 40",
    "event.data.count_str | int(5)",
    "event.data.missing | int",
    "event.data.total | int",
    "event.data.ratio | float",
    "event.data.total | round",
    "event.data.total | round(1, 'floor')",
    "event.data.tags | first",
    "event.data.tags | last",
    "event.data.tags | join(',')",
    "event.data.total | abs",
    "event.data.expires_at | as_datetime",
    "event.data.expires_at | days_until(now)",
    # tests
    "event.data.total is number",
    "event.data.query is string",
    "event.data.items_count is divisibleby 3",
    "event.data.items_count is divisibleby(2)",
    "event.data.tags is sequence",
    "event.data.nested is mapping",
    "event.data.currency is in ['EUR', 'GBP']",
    # indexing and slicing
    "event.data['total']",
    "event['data']['missing']",
    "event.data.items[0].price",
    "event.data.items[5]",
    "event.data.items[0]['qty'] * 2",
    "event.data.tags[-1]",
    "event.data.tags.0",
    "event.data.tags['count']",
    "event.data.expires_at[:10]",
    "event.data.tags[::-1]",
    "event.data.nested.deep.value >= 7",
    # literals and inline if
    "{'a': 1, 'b': event.data.total}",
    "[1, event.data.items_count]",
    "(event.data.total, 2)",
    "none",
    "true",
    "42",
    "[1, 2] | length",
    "'big' if event.data.total > 100 else 'small'",
    "'big' if event.data.missing else 'small'",
    # the clock
    "now.year > 2000",
    "now is none",
    "now.replace",
    # render limits (engine/lang/budget.py): the same refusal on both paths
    "event.data.query * 100000",
    "event.data.tags * 100000",
    "(event.data.query * 20000) ~ (event.data.query * 20000)",
    "[event.data.query * 20000, event.data.query * 20000]",
    "{'a': event.data.query * 20000, 'b': event.data.query * 20000}",
    "'%*d' % (event.data.items_count * 1000000, 1)",
    "'%s-%s' % (event.data.query, event.data.items_count)",
    "event.data.query | center(1000000)",
    "'%*d' | format(event.data.items_count * 1000000, 1)",
    "event.data.items_count ** 100000",
    "event.data.query.ljust(1000000)",
    "'{:>1000000}'.format(event.data.total)",
    "'{:>8}'.format(event.data.total)",
]

# Outside the compiled subset on purpose: these stay on the Jinja path.
FALLBACK = {
    "event.data.tags | first",  # pass_environment
    "event.data.tags | last",  # pass_environment
    "event.data.tags | join(',')",  # pass_eval_context
    "event.data.expires_at | days_until(now)",  # pass_context: it reads the context's `now`
    "event.data.items_count ** 100000",  # `**`
    "event.data.query.ljust(1000000)",  # calls
    "'{:>1000000}'.format(event.data.total)",
    "'{:>8}'.format(event.data.total)",
}


def outcome(expr: Expression, ctx: dict[str, Any]) -> Outcome:
    try:
        value = expr.evaluate(ctx)
    except ExpressionError as exc:
        return ("error", str(exc))
    # repr, not ==: a returned list may hold an Undefined, which refuses comparisons
    return ("value", (type(value), repr(value)))


def both(source: str, ctx: dict[str, Any]) -> tuple[Outcome, Outcome]:
    return outcome(Expression(source), ctx), outcome(Expression(source, fast=False), ctx)


def test_the_table_is_big_enough() -> None:
    assert len(EXPRESSIONS) >= 60
    assert len(set(EXPRESSIONS)) == len(EXPRESSIONS)


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_fast_path_equals_jinja(source: str) -> None:
    expr, ref = Expression(source), Expression(source, fast=False)
    assert expr.fast == (source not in FALLBACK)
    assert not ref.fast
    for name, ctx in CONTEXTS.items():
        snapshot = copy.deepcopy(ctx)
        assert outcome(expr, ctx) == outcome(ref, ctx), f"context {name!r}"
        assert ctx == snapshot, f"context {name!r} was modified"


def test_missing_key_names_the_attribute() -> None:
    expr = Expression("event.data.total > 0")
    assert expr.fast
    with pytest.raises(ExpressionError) as err:
        expr.test(CONTEXTS["empty"])
    assert str(err.value) == ("'dict object' has no attribute 'total' in 'event.data.total > 0'")


def test_undefined_is_only_consumed_by_default_and_tests() -> None:
    ctx = CONTEXTS["empty"]
    assert Expression("event.data.total | default(5) > 1").test(ctx)
    assert Expression("event.data.total is undefined").test(ctx)
    assert not Expression("event.data.total is defined").test(ctx)
    assert not Expression("event.data.total is none").test(ctx)
    for source in (
        "event.data.total > 1",
        "event.data.total == none",
        "event.data.total + 1",
        "not event.data.total",
        "event.data.total ~ ''",
        "event.data.total in [1]",
        "1 in event.data.total",
        "event.data.total.x",
        "event.data.total[0]",
        "event.data.total | lower",
    ):
        with pytest.raises(ExpressionError, match="'dict object' has no attribute 'total'"):
            Expression(source).evaluate(ctx)


def test_selectattr_and_rejectattr_treat_an_item_without_the_attribute_as_not_matching() -> None:
    # SPEC 12's segment example filters cart items of which some have no category.
    items = [{"category": "baby_food", "id": 1}, {"id": 2}, {"category": "toys", "id": 3}]
    ctx = {"event": {"data": {"items": items}}}

    def ids(source: str) -> list[int]:
        return [i["id"] for i in Expression(source).evaluate(ctx)]

    assert ids("event.data['items'] | selectattr('category', 'equalto', 'baby_food') | list") == [1]
    assert ids("event.data['items'] | rejectattr('category', 'equalto', 'baby_food') | list") == [
        2,
        3,
    ]
    assert ids("event.data['items'] | selectattr('category') | list") == [1, 3]
    assert ids("event.data['items'] | selectattr('category', 'defined') | list") == [1, 3]
    assert ids("event.data['items'] | selectattr('category', 'undefined') | list") == [2]
    assert Expression(
        "event.data['items'] | selectattr('category', 'equalto', 'baby_food') | list | length > 0"
    ).test(ctx)


def test_short_circuit_skips_the_missing_side() -> None:
    ctx = CONTEXTS["empty"]
    assert Expression("false and event.data.total > 1").evaluate(ctx) is False
    assert Expression("true or event.data.total > 1").evaluate(ctx) is True
    assert Expression("'a' if true else event.data.total > 1").evaluate(ctx) == "a"


def test_strings_reach_the_code_only_as_constants() -> None:
    key = "a'] + __import__('os').getcwd() + ['"
    source = "event.data['" + key.replace("'", "\\'") + "'] ~ 'x\\'); 1/0 #'"
    expr = Expression(source)
    assert expr.fast
    assert expr.evaluate({"event": {"data": {key: "v"}}}) == "vx'); 1/0 #"


# -- randomized equivalence ----------------------------------------------------------------

_FIELDS = ["total", "items_count", "category", "note", "tags", "missing", "nested", "flag"]
_LITERALS = ["0", "1", "-2", "2.5", "100", "'a'", "'Phones'", "''", "none", "true", "false"]
_LITERALS += ["[1, 2]", "['a', 'Phones']", "()"]
_OPS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
_VALUES: list[Any] = [0, 1, -2, 2.5, 100, 150.5, "a", "Phones", "", None, True, False]
_VALUES += [[1, 2], ["a", "b"], {"k": 1}, {"deep": {"value": 1}}]


def _operand(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.45:
        path = "event.data." + rng.choice(_FIELDS)
        if rng.random() < 0.15:
            path += "." + rng.choice(["deep", "value", "k", "missing"])
        if rng.random() < 0.2:
            path += f" | default({rng.choice(_LITERALS)})"
        elif rng.random() < 0.1:
            path += " | length"
        return path
    if roll < 0.55:
        return rng.choice(["trigger.data.total", "user.rfm", "user.points_balance"])
    return rng.choice(_LITERALS)


def _comparison(rng: random.Random) -> str:
    if rng.random() < 0.1:
        test = rng.choice(["defined", "undefined", "none", "number", "string", "not none"])
        return f"{_operand(rng)} is {test}"
    return f"{_operand(rng)} {rng.choice(_OPS)} {_operand(rng)}"


def _expression(rng: random.Random, depth: int = 0) -> str:
    if depth < 2 and rng.random() < 0.35:
        joiner = rng.choice([" and ", " or "])
        return "(" + _expression(rng, depth + 1) + joiner + _expression(rng, depth + 1) + ")"
    if rng.random() < 0.1:
        return "not " + _comparison(rng)
    return _comparison(rng)


def _context(rng: random.Random) -> dict[str, Any]:
    data = {f: rng.choice(_VALUES) for f in _FIELDS if f != "missing" and rng.random() < 0.8}
    user = {"rfm": rng.choice(["loyal", "champions", None]), "points_balance": rng.choice(_VALUES)}
    return {
        "event": {"data": data},
        "trigger": {"data": {"total": rng.choice(_VALUES)}},
        "user": user,
        "now": None,
    }


def test_randomized_comparisons_equal_jinja() -> None:
    rng = random.Random(20261123)
    contexts = [_context(rng) for _ in range(8)]
    compared = errors = 0
    for _ in range(400):
        source = _expression(rng)
        expr, ref = Expression(source), Expression(source, fast=False)
        assert expr.fast, source
        for ctx in contexts:
            got, want = outcome(expr, ctx), outcome(ref, ctx)
            assert got == want, (source, ctx)
            compared += 1
            errors += got[0] == "error"
    # both kinds of outcome are exercised, not only one
    assert compared == 3200 and 200 < errors < 3000


# -- names ---------------------------------------------------------------------------------


def test_unknown_names_are_load_errors_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match=r"unknown name 'evnt' \(did you mean 'event'\?\)"):
        Expression("evnt.data.total > 0")
    with pytest.raises(ValueError, match=r"unknown name 'usr' \(did you mean 'user'\?\)"):
        Expression("event.data.total > 0 and usr.rfm == 'loyal'")
    with pytest.raises(ValueError, match="unknown name 'message'"):
        Expression("message.id", allowed={"event"})
    assert Expression("message.id", allowed={"message"}).fast


def test_syntax_errors_stay_load_errors() -> None:
    for source in ("event.data.total >", "event.data.total | nosuchfilter", "1) or (2", "a, b"):
        with pytest.raises(ValueError, match="invalid expression"):
            Expression(source, allowed={"event", "a", "b"})


# -- sandbox -------------------------------------------------------------------------------

ESCAPES = [
    "event.__class__",
    "event.__class__.__mro__",
    "().__class__.__bases__",
    "().__class__.__bases__[0].__subclasses__()",
    "event.data.__init__.__globals__",
    "event.data.query.__class__",
    "event.data.pop('total')",
    "event.data.update({'total': 0})",
    "event.data.tags.append('x')",
    "event.data.clear()",
    "'{0.__class__}'.format(event)",
    "event.data.items().__iter__",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_refusals_are_the_same(source: str) -> None:
    ctx = copy.deepcopy(CONTEXTS["full"])
    expr = Expression(source)
    if "(" not in source:  # no call: the fast path must handle (and guard) it itself
        assert expr.fast
    got = outcome(expr, ctx)
    assert got == outcome(Expression(source, fast=False), ctx)
    assert got[0] == "error", got
    assert ctx == CONTEXTS["full"]  # nothing was mutated


def test_safe_method_calls_behave_like_the_sandbox() -> None:
    ctx = {"event": {"data": {"a": 1}}}
    expr = Expression("event.data.items()")
    assert not expr.fast  # calls are not compiled
    got = expr.evaluate(ctx)
    assert list(got) == [("a", 1)]
    # a key wins over the method of the same name, then calling it is a plain error
    with pytest.raises(ExpressionError, match="not callable"):
        Expression("event.data.items()").evaluate({"event": {"data": {"items": [1]}}})
    assert Expression("event.data.items").evaluate({"event": {"data": {"items": [1]}}}) == [1]


# -- templates -----------------------------------------------------------------------------

TEMPLATES = [
    "Hi {{ user.attributes.first_name | default('there') }}, total {{ trigger.data.total }}",
    "{{ trigger.data.expires_at[:10] }}",
    "{% for i in range(3) %}{{ i }}{% endfor %} {{ dict(a=1) }} {{ namespace }}",
    "{{ track('https://shop.example/?a=1&b=<2>') }} {{ unsubscribe_url }}",
    "{{ user.attributes.first_name }}",
    "{{ event.data.__class__ }}",
    "<p>{{ event.data.name }}</p>{{ '<b>' | safe }}",
]


@pytest.mark.parametrize("html", [False, True])
@pytest.mark.parametrize("source", TEMPLATES)
def test_text_template_renders_like_jinja(source: str, html: bool) -> None:
    ctx = {
        "event": {"data": {"name": "Kettle <Pro> & co"}},
        "trigger": {"data": {"total": 30, "expires_at": "2026-12-31T00:00:00Z"}},
        "user": {"attributes": {}},
        "now": None,
        "track": lambda url: "https://t.example/c?u=" + url,
        "unsubscribe_url": "https://t.example/u",
    }
    tpl = TextTemplate(source, html=html)

    def reference() -> Outcome:
        try:
            return ("value", tpl._template.render(ctx))
        except UndefinedError as exc:
            return ("error", str(exc))
        except Exception as exc:
            return ("error", f"{type(exc).__name__}: {exc}")

    def fast() -> Outcome:
        try:
            return ("value", tpl.render(ctx))
        except ExpressionError as exc:
            return ("error", str(exc))

    assert fast() == reference()


# -- fused tests (the matcher) -------------------------------------------------------------


def one_by_one(exprs: list[Expression | None], ctx: dict[str, Any]) -> list[Outcome]:
    """Each expression's Expression.test outcome, one by one: the reference for fusion."""
    out: list[Outcome] = []
    for expr in exprs:
        if expr is None:
            out.append(("value", True))
            continue
        try:
            out.append(("value", expr.test(ctx)))
        except ExpressionError as exc:
            out.append(("error", str(exc)))
    return out


def fused_outcomes(exprs: list[Expression | None], ctx: dict[str, Any]) -> list[Outcome]:
    errors: dict[int, str] = {}
    hits = fuse_tests(exprs).test(ctx, lambda n, exc: errors.__setitem__(n, str(exc)))
    assert hits == sorted(hits)
    assert not set(hits) & set(errors)
    return [
        ("error", errors[n]) if n in errors else ("value", n in hits) for n in range(len(exprs))
    ]


@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_fused_tests_equal_one_by_one(context: str) -> None:
    """All of the corpus fused in one function (shared chains, Jinja fallbacks, conditions
    without an expression) gives each expression's own result or error, in order."""
    exprs: list[Expression | None] = [Expression(s) for s in EXPRESSIONS]
    exprs.insert(3, None)
    exprs.append(None)
    ctx = CONTEXTS[context]
    snapshot = copy.deepcopy(ctx)
    assert fused_outcomes(exprs, ctx) == one_by_one(exprs, ctx)
    assert ctx == snapshot
    # and against Jinja itself, the reference of the fast path
    reference = [None if e is None else Expression(e.source, fast=False) for e in exprs]
    assert fused_outcomes(exprs, ctx) == one_by_one(reference, ctx)


def test_fused_reports_names_fields_and_falls_back_per_expression() -> None:
    fast = [Expression("event.data.total > 1"), Expression("user.rfm == 'loyal'")]
    fused = fuse_tests(fast)
    assert fused.names == {"event", "user"}
    assert fused.fields == {"event": {"data"}, "user": {"rfm"}}
    # the object itself used: any field may be read, so none is listed
    fused = fuse_tests([Expression("event.time > '2026'"), Expression("'x' in trigger")])
    assert fused.names == {"event", "trigger"}
    assert fused.fields == {"event": {"time"}}
    jinja = Expression("event.data.tags | first == 'a'")
    fused = fuse_tests([*fast, jinja])
    assert fused.names is None  # a Jinja-evaluated condition may read any name
    assert fused.test(CONTEXTS["full"], lambda n, e: None) == [0, 1, 2]


def test_fused_chain_failure_is_each_users_error() -> None:
    """A shared chain that fails (`event.data.nested.missing.x`) fails every condition that
    uses it, with its own message, and no other."""
    sources = [
        "event.data.nested.missing.x == 1",
        "event.data.total > 100",
        "event.data.nested.missing.x is defined",
        "event.data.nested.missing is undefined",
    ]
    exprs: list[Expression | None] = [Expression(s) for s in sources]
    ctx = CONTEXTS["full"]
    got = fused_outcomes(exprs, ctx)
    assert got == one_by_one(exprs, ctx)
    assert [kind for kind, _ in got] == ["error", "value", "error", "value"]


def test_fused_undefined_value_has_the_tests_message() -> None:
    exprs: list[Expression | None] = [Expression("event.data.nested.deep.nothing")]
    got = fused_outcomes(exprs, CONTEXTS["full"])
    assert got == [("error", "undefined value in 'event.data.nested.deep.nothing'")]
    assert got == one_by_one(exprs, CONTEXTS["full"])


# -- the clock: `now` of the context, never the wall clock -----------------------------------


def test_days_until_counts_from_the_contexts_now() -> None:
    for fast in (True, False):
        expr = Expression("event.data.expires_at | days_until", fast=fast)
        for now, days in (
            (datetime(2026, 11, 23, 10, tzinfo=UTC), 37),
            (datetime(2027, 1, 2, tzinfo=UTC), -2),
        ):
            ctx = {"event": {"data": {"expires_at": "2026-12-31T00:00:00Z"}}, "now": now}
            assert expr.evaluate(ctx) == days
        with pytest.raises(ExpressionError, match="days_until needs 'now'"):
            expr.evaluate({"event": {"data": {"expires_at": "2026-12-31T00:00:00Z"}}})
    # an explicit start still wins
    ctx = {
        "event": {"data": {"expires_at": "2026-12-31T00:00:00Z", "from": "2026-12-01"}},
        "now": None,
    }
    assert Expression("event.data.expires_at | days_until(event.data.from)").evaluate(ctx) == 30


class _FarAwayDatetime(datetime):
    """datetime whose now() is 2031: what the wall clock would say on another day."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return datetime(2031, 6, 1, tzinfo=tz)


def test_a_simulation_with_days_until_is_the_same_on_any_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("early", "late"):
        (rules / f"{name}.yaml").write_text(f"template: {name}\nsms: {{text: {name}}}\n")
    (rules / "r.yaml").write_text(
        "rule: r\ncategory: transactional\ntrigger: {event: license.expiring}\nsteps:\n"
        "  - if: trigger.data.expires_at | days_until > 5\n"
        "    then: [{send: {template: early, cascade: [sms]}}]\n"
        "    else: [{send: {template: late, cascade: [sms]}}]\n"
    )
    ruleset = load_ruleset([rules])
    assert ruleset.problems == []
    t0 = "2026-11-23T09:00:00Z"
    events = [
        profile("u1", t0, phone="+15550001111"),
        ev("license.expiring", "u1", t0, {"expires_at": "2026-12-31T00:00:00Z"}),
    ]
    today = run_simulation(ruleset, events)
    for module in ("engine.lang.expressions", "engine.lang.sandbox"):
        monkeypatch.setattr(f"{module}.datetime", _FarAwayDatetime, raising=False)
    assert run_simulation(ruleset, events) == today
    assert [(r["template"], r["status"]) for r in today] == [("early", "sent")]
