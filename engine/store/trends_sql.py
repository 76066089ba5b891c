"""The pre-aggregated rows behind the dashboard's trends and overview, in both SQL
dialects, per hour and per UTC day (`*_hours`, `*_days`; `start` is the bucket's first
second): `stats_*` (messages by the time they were created, per rule, channel and
variant: what stats_messages counts) and `order_*` (orders by the time they were placed:
all of them under touch 'all', and each one attributed to its last click, open and send
under that touch, within the attribution window in `stats_settings`: what
stats_attributed counts). NULL channel/variant/currency are stored as '' (keys).

SQLite keeps them up to date with triggers that add to the rows in the writing
transaction. PostgreSQL's triggers append signed rows to `*_delta` tables (no row is
updated by two writers, so no lock waits or deadlocks between them) and a read folds the
deltas in first (FOLD_*), under an advisory lock.

A read of whole days takes the days' rows and the hours' rows of the partial days at
either end (`spans`), so it is exact to the hour and reads few rows for a long range.
"""

from __future__ import annotations

import math

WINDOW_SETTING = "attribution_window_s"
DEFAULT_WINDOW_S = 7 * 86400  # PoliciesConfig's default (7d); a read with another rebuilds
MESSAGE_COUNTS = ("messages", "sends", "skipped", "failed", "delivered", "opened", "clicked")
TOUCH_KINDS = ("click", "open", "send")
HOUR, DAY = 3600, 86400
GRAINS = {"hours": HOUR, "days": DAY}
_WINDOW = f"(SELECT value FROM stats_settings WHERE name = '{WINDOW_SETTING}')"


def start_of(column: str, size: int, dialect: str) -> str:
    if dialect == "sqlite":
        return f"(CAST({column} / {size} AS INTEGER) * {size})"
    return f"(floor({column} / {size})::bigint * {size})"


def spans(since: int, until: int) -> list[tuple[str, int, int]]:
    """[since, until) (whole hours) as (grain, from, to) reads: the hours of a partial day
    at either end, the days between."""
    first = math.ceil(since / DAY) * DAY
    last = math.floor(until / DAY) * DAY
    if first >= last:
        return [("hours", since, until)]
    out = [("hours", since, first)] if since < first else []
    out.append(("days", first, last))
    if last < until:
        out.append(("hours", last, until))
    return out


def _message_values(row: str, sign: int, dialect: str, size: int) -> str:
    """The counts one message row adds (sign 1) or takes away (-1), as a VALUES list."""
    cast = "" if dialect == "sqlite" else "::int"
    counts = ["1"] + [
        f"({e}){cast}"
        for e in (
            f"{row}.sent_at IS NOT NULL",
            f"{row}.status = 'skipped'",
            f"{row}.status = 'failed'",
            f"{row}.delivered_at IS NOT NULL",
            f"{row}.opened_at IS NOT NULL",
            f"{row}.clicked_at IS NOT NULL",
        )
    ]
    signed = counts if sign > 0 else [f"-{c}" for c in counts]
    return (
        f"{start_of(f'{row}.created_at', size, dialect)}, {row}.rule_id, "
        f"coalesce({row}.channel, ''), coalesce({row}.variant, ''), {', '.join(signed)}"
    )


MESSAGE_CHANGED = (
    "OLD.status IS DISTINCT FROM NEW.status "
    "OR (OLD.sent_at IS NULL) <> (NEW.sent_at IS NULL) "
    "OR (OLD.delivered_at IS NULL) <> (NEW.delivered_at IS NULL) "
    "OR (OLD.opened_at IS NULL) <> (NEW.opened_at IS NULL) "
    "OR (OLD.clicked_at IS NULL) <> (NEW.clicked_at IS NULL) "
    "OR OLD.created_at <> NEW.created_at OR OLD.rule_id <> NEW.rule_id "
    "OR OLD.channel IS DISTINCT FROM NEW.channel OR OLD.variant IS DISTINCT FROM NEW.variant"
)


def _upsert_messages(table: str) -> str:
    add = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in MESSAGE_COUNTS)
    return f"ON CONFLICT (start, rule_id, channel, variant) DO UPDATE SET {add}"


def _upsert_orders(table: str) -> str:
    return (
        "ON CONFLICT (start, touch, rule_id, channel, variant, currency) DO UPDATE SET "
        f"orders = {table}.orders + excluded.orders, "
        f"revenue = {table}.revenue + excluded.revenue"
    )


def messages_rollup(source: str, dialect: str, size: int) -> str:
    """SELECT of stats_* rows from the messages (backfill) or a delta table (hourly)."""
    if source == "messages":
        counts = (
            "count(*), count(sent_at), "
            "count(CASE WHEN status = 'skipped' THEN 1 END), "
            "count(CASE WHEN status = 'failed' THEN 1 END), "
            "count(delivered_at), count(opened_at), count(clicked_at)"
        )
        keys = (
            f"{start_of('created_at', size, dialect)}, rule_id, coalesce(channel, ''), "
            "coalesce(variant, '')"
        )
    else:
        counts = ", ".join(f"sum({c})" for c in MESSAGE_COUNTS)
        keys = f"start / {size} * {size}, rule_id, channel, variant"
    return f"SELECT {keys}, {counts} FROM {source} GROUP BY 1, 2, 3, 4"


def orders_rollup(source: str, sign: str, dialect: str, size: int) -> str:
    """SELECT of order_* rows from orders-shaped rows (`sign` 1, or a column of them),
    attributed within the window in stats_settings."""
    start = start_of("at", size, dialect)
    parts = [
        f"SELECT {start} AS s, 'all' AS touch, '' AS rule, '' AS chan, '' AS var, "
        f"coalesce(currency, '') AS cur, {sign} AS n, {sign} * coalesce(total, 0.0) AS rev "
        f"FROM {source}"
    ]
    for k in TOUCH_KINDS:
        parts.append(
            f"SELECT {start}, '{k}', {k}_rule, coalesce({k}_channel, ''), "
            f"coalesce({k}_variant, ''), coalesce(currency, ''), {sign}, "
            f"{sign} * coalesce(total, 0.0) FROM {source} "
            f"WHERE {k}_id IS NOT NULL AND at - {k}_at <= {_WINDOW}"
        )
    union = " UNION ALL ".join(parts)
    return (
        f"SELECT s, touch, rule, chan, var, cur, sum(n), sum(rev) FROM ({union}) AS x "
        "GROUP BY s, touch, rule, chan, var, cur"
    )


_TABLES = """
    CREATE TABLE stats_{g} (
        start {int} NOT NULL,
        rule_id TEXT{c} NOT NULL,
        channel TEXT{c} NOT NULL,
        variant TEXT{c} NOT NULL,
        messages {int} NOT NULL,
        sends {int} NOT NULL,
        skipped {int} NOT NULL,
        failed {int} NOT NULL,
        delivered {int} NOT NULL,
        opened {int} NOT NULL,
        clicked {int} NOT NULL,
        PRIMARY KEY (start, rule_id, channel, variant)
    ){wr};
    CREATE INDEX stats_{g}_rule ON stats_{g} (rule_id, start);
    CREATE TABLE order_{g} (
        start {int} NOT NULL,
        touch TEXT{c} NOT NULL,
        rule_id TEXT{c} NOT NULL,
        channel TEXT{c} NOT NULL,
        variant TEXT{c} NOT NULL,
        currency TEXT{c} NOT NULL,
        orders {int} NOT NULL,
        revenue {real} NOT NULL,
        PRIMARY KEY (start, touch, rule_id, channel, variant, currency)
    ){wr};
    CREATE INDEX order_{g}_rule ON order_{g} (rule_id, touch, start);
"""


def _tables(dialect: str) -> str:
    sqlite = dialect == "sqlite"
    kinds = {
        "int": "INTEGER" if sqlite else "BIGINT",
        "real": "REAL" if sqlite else "DOUBLE PRECISION",
        "c": "" if sqlite else ' COLLATE "C"',
        "wr": " WITHOUT ROWID" if sqlite else "",
    }
    text = "".join(_TABLES.format(g=g, **kinds) for g in GRAINS)
    text += f"""
    CREATE TABLE stats_settings (name TEXT PRIMARY KEY, value {kinds["real"]} NOT NULL);
    CREATE INDEX instances_errors ON instances (started_at, rule_id) WHERE status = 'error';
    INSERT INTO stats_settings VALUES ('{WINDOW_SETTING}', {DEFAULT_WINDOW_S});
    """
    for g, size in GRAINS.items():
        text += f"INSERT INTO stats_{g} {messages_rollup('messages', dialect, size)};\n"
        text += f"INSERT INTO order_{g} {orders_rollup('orders', '1', dialect, size)};\n"
    return text


def _sqlite_message_statements(row: str, sign: int) -> str:
    return " ".join(
        f"INSERT INTO stats_{g} VALUES ({_message_values(row, sign, 'sqlite', size)}) "
        f"{_upsert_messages(f'stats_{g}')};"
        for g, size in GRAINS.items()
    )


def _sqlite_order_statements(row: str, sign: int) -> str:
    body = []
    rev = f"{sign} * coalesce({row}.total, 0.0)"
    cur = f"coalesce({row}.currency, '')"
    for g, size in GRAINS.items():
        start = start_of(f"{row}.at", size, "sqlite")
        upsert = _upsert_orders(f"order_{g}")
        body.append(
            f"INSERT INTO order_{g} VALUES ({start}, 'all', '', '', '', {cur}, {sign}, {rev}) "
            f"{upsert};"
        )
        for k in TOUCH_KINDS:
            body.append(
                f"INSERT INTO order_{g} SELECT {start}, '{k}', {row}.{k}_rule, "
                f"coalesce({row}.{k}_channel, ''), coalesce({row}.{k}_variant, ''), {cur}, "
                f"{sign}, {rev} WHERE {row}.{k}_id IS NOT NULL AND "
                f"{row}.at - {row}.{k}_at <= {_WINDOW} {upsert};"
            )
    return " ".join(body)


def sqlite_migration() -> str:
    changed = MESSAGE_CHANGED.replace("IS DISTINCT FROM", "IS NOT")
    return (
        _tables("sqlite")
        + "CREATE TRIGGER messages_trend_insert AFTER INSERT ON messages BEGIN "
        + f"{_sqlite_message_statements('NEW', 1)} END;\n"
        + "CREATE TRIGGER messages_trend_delete AFTER DELETE ON messages BEGIN "
        + f"{_sqlite_message_statements('OLD', -1)} END;\n"
        + f"CREATE TRIGGER messages_trend_update AFTER UPDATE ON messages WHEN {changed} "
        + f"BEGIN {_sqlite_message_statements('OLD', -1)} "
        + f"{_sqlite_message_statements('NEW', 1)} END;\n"
        + "CREATE TRIGGER orders_trend_insert AFTER INSERT ON orders BEGIN "
        + f"{_sqlite_order_statements('NEW', 1)} END;\n"
        + "CREATE TRIGGER orders_trend_delete AFTER DELETE ON orders BEGIN "
        + f"{_sqlite_order_statements('OLD', -1)} END;\n"
    )


def _touch_columns(row: str) -> str:
    return ", ".join(
        f"{row}.{k}_{f}" for k in TOUCH_KINDS for f in ("id", "at", "rule", "channel", "variant")
    )


def postgres_migration() -> str:
    c = ' COLLATE "C"'
    touch_columns = ", ".join(
        f"{k}_id TEXT, {k}_at DOUBLE PRECISION, {k}_rule TEXT{c}, {k}_channel TEXT{c}, "
        f"{k}_variant TEXT{c}"
        for k in TOUCH_KINDS
    )
    return (
        _tables("postgres")
        + f"""
    CREATE TABLE stats_delta (
        start BIGINT NOT NULL, rule_id TEXT{c} NOT NULL, channel TEXT{c} NOT NULL,
        variant TEXT{c} NOT NULL, messages INTEGER NOT NULL, sends INTEGER NOT NULL,
        skipped INTEGER NOT NULL, failed INTEGER NOT NULL, delivered INTEGER NOT NULL,
        opened INTEGER NOT NULL, clicked INTEGER NOT NULL);
    CREATE TABLE order_delta (
        sign INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL, total DOUBLE PRECISION,
        currency TEXT{c}, {touch_columns});
    CREATE FUNCTION kaskad_message_trend() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO stats_delta VALUES ({_message_values("OLD", -1, "postgres", HOUR)});
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO stats_delta VALUES ({_message_values("NEW", 1, "postgres", HOUR)});
        END IF;
        RETURN NULL;
    END $f$;
    CREATE TRIGGER messages_trend AFTER INSERT OR DELETE ON messages
        FOR EACH ROW EXECUTE FUNCTION kaskad_message_trend();
    CREATE TRIGGER messages_trend_update AFTER UPDATE ON messages
        FOR EACH ROW WHEN ({MESSAGE_CHANGED}) EXECUTE FUNCTION kaskad_message_trend();
    CREATE FUNCTION kaskad_order_trend() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO order_delta VALUES (-1, OLD.at, OLD.total, OLD.currency,
                {_touch_columns("OLD")});
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO order_delta VALUES (1, NEW.at, NEW.total, NEW.currency,
                {_touch_columns("NEW")});
        END IF;
        RETURN NULL;
    END $f$;
    CREATE TRIGGER orders_trend AFTER INSERT OR DELETE OR UPDATE ON orders
        FOR EACH ROW EXECUTE FUNCTION kaskad_order_trend();
    """
    )


# PostgreSQL: fold the deltas into the rows of both grains (one folder at a time).
FOLD_MESSAGES = (
    "WITH d AS (DELETE FROM stats_delta RETURNING *), "
    f"h AS (INSERT INTO stats_hours {messages_rollup('d', 'postgres', HOUR)} "
    f"{_upsert_messages('stats_hours')}) "
    f"INSERT INTO stats_days {messages_rollup('d', 'postgres', DAY)} "
    f"{_upsert_messages('stats_days')}"
)
FOLD_ORDERS = (
    "WITH d AS (DELETE FROM order_delta RETURNING *), "
    f"h AS (INSERT INTO order_hours {orders_rollup('d', 'sign', 'postgres', HOUR)} "
    f"{_upsert_orders('order_hours')}) "
    f"INSERT INTO order_days {orders_rollup('d', 'sign', 'postgres', DAY)} "
    f"{_upsert_orders('order_days')}"
)


def rebuild_orders(dialect: str) -> list[str]:
    """order_* again from the orders (after the window in stats_settings changed)."""
    out = []
    for g, size in GRAINS.items():
        out.append(f"DELETE FROM order_{g}")
        out.append(f"INSERT INTO order_{g} {orders_rollup('orders', '1', dialect, size)}")
    return out


def _keys(detail: bool) -> tuple[str, str]:
    """The channel and variant columns, and the GROUP BY of a read (without detail: per
    rule only, channel and variant '')."""
    if detail:
        return "channel, variant", "b, rule_id, channel, variant"
    return "'' AS channel, '' AS variant", "b, rule_id"


def read_messages(grain: str, bucket: int, rule: bool, dialect: str, detail: bool = True) -> str:
    """(bucket start, rule, channel, variant, *MESSAGE_COUNTS) of [from, to)."""
    p = ("?", "?", "?") if dialect == "sqlite" else ("$1", "$2", "$3")
    where = f"start >= {p[0]} AND start < {p[1]}" + (f" AND rule_id = {p[2]}" if rule else "")
    sums = ", ".join(f"sum({c})" for c in MESSAGE_COUNTS)
    columns, group = _keys(detail)
    return (
        f"SELECT start / {bucket} * {bucket} AS b, rule_id, {columns}, {sums} "
        f"FROM stats_{grain} WHERE {where} GROUP BY {group}"
    )


def read_orders(grain: str, bucket: int, rule: bool, dialect: str, detail: bool = True) -> str:
    """(bucket start, touch, rule, channel, variant, currency, orders, revenue): the touch
    asked for and 'all'."""
    p = ("?", "?", "?", "?") if dialect == "sqlite" else ("$1", "$2", "$3", "$4")
    where = f"start >= {p[0]} AND start < {p[1]} AND touch IN ({p[2]}, 'all')"
    if rule:
        where += f" AND rule_id = {p[3]}"
    columns, group = _keys(detail)
    return (
        f"SELECT start / {bucket} * {bucket} AS b, touch, rule_id, {columns}, "
        f"currency, sum(orders), sum(revenue) FROM order_{grain} WHERE {where} "
        f"GROUP BY {group}, touch, currency"
    )


def read_errors(dialect: str) -> str:
    """(rule, instances stopped by bad data) of those started in [since, until)."""
    p = ("?", "?") if dialect == "sqlite" else ("$1", "$2")
    return (
        "SELECT rule_id, count(*) FROM instances WHERE status = 'error' "
        f"AND started_at >= {p[0]} AND started_at < {p[1]} GROUP BY rule_id"
    )


# Every rule id with an instance, in id order: a loose index scan (one probe of an index
# that starts with rule_id per rule), not a read of every instance.
RULE_IDS = (
    "WITH RECURSIVE r(id) AS (SELECT min(rule_id) FROM instances UNION ALL "
    "SELECT (SELECT min(rule_id) FROM instances WHERE rule_id > r.id) FROM r "
    "WHERE r.id IS NOT NULL) SELECT id FROM r WHERE id IS NOT NULL"
)


def hour_range(since: float, until: float) -> tuple[int, int]:
    """[since, until) widened to whole hours, as the rows' keys."""
    low = max(since, -(2**52))
    high = min(until, 2**52)
    return math.floor(low / HOUR) * HOUR, math.ceil(high / HOUR) * HOUR
