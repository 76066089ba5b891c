"""The pre-aggregated hourly rows behind the dashboard's trends and overview, in both SQL
dialects: `stats_hours` (messages by the hour they were created, per rule, channel and
variant: what stats_messages counts) and `order_hours` (orders by the hour they were
placed: all of them under touch 'all', and each one attributed to its last click, open and
send under that touch, within the attribution window in `stats_settings`: what
stats_attributed counts). NULL channel/variant/currency are stored as '' (keys).

SQLite keeps them up to date with triggers that add to the rows in the writing
transaction. PostgreSQL's triggers append signed rows to `*_delta` tables (no row is
updated by two writers, so no lock waits or deadlocks between them) and a read folds the
deltas in first (`fold`), under an advisory lock.
"""

from __future__ import annotations

WINDOW_SETTING = "attribution_window_s"
DEFAULT_WINDOW_S = 7 * 86400  # PoliciesConfig's default (7d); a read with another rebuilds
MESSAGE_COUNTS = ("messages", "sends", "skipped", "failed", "delivered", "opened", "clicked")
TOUCH_KINDS = ("click", "open", "send")


def hour_of(column: str, dialect: str) -> str:
    if dialect == "sqlite":
        return f"(CAST({column} / 3600 AS INTEGER) * 3600)"
    return f"(floor({column} / 3600)::bigint * 3600)"


def message_values(row: str, sign: int, dialect: str) -> str:
    """The counts one message row adds (sign 1) or takes away (-1), as a VALUES list."""
    cast = "" if dialect == "sqlite" else "::int"

    def as_int(expr: str) -> str:
        return f"({expr}){cast}"

    counts = [
        "1",
        as_int(f"{row}.sent_at IS NOT NULL"),
        as_int(f"{row}.status = 'skipped'"),
        as_int(f"{row}.status = 'failed'"),
        as_int(f"{row}.delivered_at IS NOT NULL"),
        as_int(f"{row}.opened_at IS NOT NULL"),
        as_int(f"{row}.clicked_at IS NOT NULL"),
    ]
    signed = counts if sign > 0 else [f"-{c}" for c in counts]
    return (
        f"{hour_of(f'{row}.created_at', dialect)}, {row}.rule_id, coalesce({row}.channel, ''), "
        f"coalesce({row}.variant, ''), {', '.join(signed)}"
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

_ADD_MESSAGES = ", ".join(f"{c} = stats_hours.{c} + excluded.{c}" for c in MESSAGE_COUNTS)
UPSERT_MESSAGES = "ON CONFLICT (hour, rule_id, channel, variant) DO UPDATE SET " + _ADD_MESSAGES
UPSERT_ORDERS = (
    "ON CONFLICT (hour, touch, rule_id, channel, variant, currency) DO UPDATE SET "
    "orders = order_hours.orders + excluded.orders, "
    "revenue = order_hours.revenue + excluded.revenue"
)


def messages_rollup(source: str, dialect: str) -> str:
    """SELECT of stats_hours rows from a messages table (backfill) or delta table."""
    if source == "messages":
        counts = (
            "count(*), count(sent_at), "
            "count(CASE WHEN status = 'skipped' THEN 1 END), "
            "count(CASE WHEN status = 'failed' THEN 1 END), "
            "count(delivered_at), count(opened_at), count(clicked_at)"
        )
        keys = (
            f"{hour_of('created_at', dialect)}, rule_id, coalesce(channel, ''), "
            "coalesce(variant, '')"
        )
    else:
        counts = ", ".join(f"sum({c})" for c in MESSAGE_COUNTS)
        keys = "hour, rule_id, channel, variant"
    return f"SELECT {keys}, {counts} FROM {source} GROUP BY 1, 2, 3, 4"


def orders_rollup(source: str, sign: str, dialect: str) -> str:
    """SELECT of order_hours rows from orders-shaped rows (`sign` 1, or a column of them),
    attributed within the window in stats_settings."""
    window = f"(SELECT value FROM stats_settings WHERE name = '{WINDOW_SETTING}')"
    hour = hour_of("at", dialect)
    parts = [
        f"SELECT {hour} AS h, 'all' AS touch, '' AS rule, '' AS chan, '' AS var, "
        f"coalesce(currency, '') AS cur, {sign} AS n, {sign} * coalesce(total, 0.0) AS rev "
        f"FROM {source}"
    ]
    for k in TOUCH_KINDS:
        parts.append(
            f"SELECT {hour}, '{k}', {k}_rule, coalesce({k}_channel, ''), "
            f"coalesce({k}_variant, ''), coalesce(currency, ''), {sign}, "
            f"{sign} * coalesce(total, 0.0) FROM {source} "
            f"WHERE {k}_id IS NOT NULL AND at - {k}_at <= {window}"
        )
    union = " UNION ALL ".join(parts)
    return (
        f"SELECT h, touch, rule, chan, var, cur, sum(n), sum(rev) FROM ({union}) AS x "
        "GROUP BY h, touch, rule, chan, var, cur"
    )


TABLES = """
    CREATE TABLE stats_hours (
        hour {int} NOT NULL,
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
        PRIMARY KEY (hour, rule_id, channel, variant)
    ){wr};
    CREATE INDEX stats_hours_rule ON stats_hours (rule_id, hour);
    CREATE TABLE order_hours (
        hour {int} NOT NULL,
        touch TEXT{c} NOT NULL,
        rule_id TEXT{c} NOT NULL,
        channel TEXT{c} NOT NULL,
        variant TEXT{c} NOT NULL,
        currency TEXT{c} NOT NULL,
        orders {int} NOT NULL,
        revenue {real} NOT NULL,
        PRIMARY KEY (hour, touch, rule_id, channel, variant, currency)
    ){wr};
    CREATE INDEX order_hours_rule ON order_hours (rule_id, touch, hour);
    CREATE TABLE stats_settings (name TEXT PRIMARY KEY, value {real} NOT NULL);
    CREATE INDEX instances_errors ON instances (started_at, rule_id) WHERE status = 'error';
"""


def _touch_columns(row: str) -> str:
    return ", ".join(
        f"{row}.{k}_{f}" for k in TOUCH_KINDS for f in ("id", "at", "rule", "channel", "variant")
    )


def _sqlite_order_trigger(name: str, event: str, row: str, sign: int) -> str:
    window = f"(SELECT value FROM stats_settings WHERE name = '{WINDOW_SETTING}')"
    hour = hour_of(f"{row}.at", "sqlite")
    rev = f"{sign} * coalesce({row}.total, 0.0)"
    cur = f"coalesce({row}.currency, '')"
    body = [
        f"INSERT INTO order_hours VALUES ({hour}, 'all', '', '', '', {cur}, {sign}, {rev}) "
        f"{UPSERT_ORDERS};"
    ]
    for k in TOUCH_KINDS:
        body.append(
            f"INSERT INTO order_hours SELECT {hour}, '{k}', {row}.{k}_rule, "
            f"coalesce({row}.{k}_channel, ''), coalesce({row}.{k}_variant, ''), {cur}, "
            f"{sign}, {rev} WHERE {row}.{k}_id IS NOT NULL AND "
            f"{row}.at - {row}.{k}_at <= {window} {UPSERT_ORDERS};"
        )
    return f"CREATE TRIGGER {name} AFTER {event} ON orders BEGIN {' '.join(body)} END;"


def sqlite_migration() -> str:
    add_new = f"INSERT INTO stats_hours VALUES ({message_values('NEW', 1, 'sqlite')}) "
    take_old = f"INSERT INTO stats_hours VALUES ({message_values('OLD', -1, 'sqlite')}) "
    changed = MESSAGE_CHANGED.replace("IS DISTINCT FROM", "IS NOT")
    return (
        TABLES.format(int="INTEGER", real="REAL", c="", wr=" WITHOUT ROWID")
        + f"INSERT INTO stats_settings VALUES ('{WINDOW_SETTING}', {DEFAULT_WINDOW_S});\n"
        + f"INSERT INTO stats_hours {messages_rollup('messages', 'sqlite')};\n"
        + f"INSERT INTO order_hours {orders_rollup('orders', '1', 'sqlite')};\n"
        + "CREATE TRIGGER messages_hours_insert AFTER INSERT ON messages BEGIN "
        + f"{add_new}{UPSERT_MESSAGES}; END;\n"
        + "CREATE TRIGGER messages_hours_delete AFTER DELETE ON messages BEGIN "
        + f"{take_old}{UPSERT_MESSAGES}; END;\n"
        + f"CREATE TRIGGER messages_hours_update AFTER UPDATE ON messages WHEN {changed} BEGIN "
        + f"{take_old}{UPSERT_MESSAGES}; {add_new}{UPSERT_MESSAGES}; END;\n"
        + _sqlite_order_trigger("orders_hours_insert", "INSERT", "NEW", 1)
        + "\n"
        + _sqlite_order_trigger("orders_hours_delete", "DELETE", "OLD", -1)
        + "\n"
    )


def postgres_migration() -> str:
    c = ' COLLATE "C"'
    return (
        TABLES.format(int="BIGINT", real="DOUBLE PRECISION", c=c, wr="")
        + f"""
    CREATE TABLE stats_hours_delta (
        hour BIGINT NOT NULL, rule_id TEXT{c} NOT NULL, channel TEXT{c} NOT NULL,
        variant TEXT{c} NOT NULL, messages INTEGER NOT NULL, sends INTEGER NOT NULL,
        skipped INTEGER NOT NULL, failed INTEGER NOT NULL, delivered INTEGER NOT NULL,
        opened INTEGER NOT NULL, clicked INTEGER NOT NULL);
    CREATE TABLE order_hours_delta (
        sign INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL, total DOUBLE PRECISION,
        currency TEXT{c},
        click_id TEXT, click_at DOUBLE PRECISION, click_rule TEXT{c}, click_channel TEXT{c},
        click_variant TEXT{c},
        open_id TEXT, open_at DOUBLE PRECISION, open_rule TEXT{c}, open_channel TEXT{c},
        open_variant TEXT{c},
        send_id TEXT, send_at DOUBLE PRECISION, send_rule TEXT{c}, send_channel TEXT{c},
        send_variant TEXT{c});
    INSERT INTO stats_settings VALUES ('{WINDOW_SETTING}', {DEFAULT_WINDOW_S});
    INSERT INTO stats_hours {messages_rollup("messages", "postgres")};
    INSERT INTO order_hours {orders_rollup("orders", "1", "postgres")};
    CREATE FUNCTION kaskad_message_hours() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO stats_hours_delta VALUES ({message_values("OLD", -1, "postgres")});
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO stats_hours_delta VALUES ({message_values("NEW", 1, "postgres")});
        END IF;
        RETURN NULL;
    END $f$;
    CREATE TRIGGER messages_hours AFTER INSERT OR DELETE ON messages
        FOR EACH ROW EXECUTE FUNCTION kaskad_message_hours();
    CREATE TRIGGER messages_hours_update AFTER UPDATE ON messages
        FOR EACH ROW WHEN ({MESSAGE_CHANGED}) EXECUTE FUNCTION kaskad_message_hours();
    CREATE FUNCTION kaskad_order_hours() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO order_hours_delta VALUES (-1, OLD.at, OLD.total, OLD.currency,
                {_touch_columns("OLD")});
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO order_hours_delta VALUES (1, NEW.at, NEW.total, NEW.currency,
                {_touch_columns("NEW")});
        END IF;
        RETURN NULL;
    END $f$;
    CREATE TRIGGER orders_hours AFTER INSERT OR DELETE OR UPDATE ON orders
        FOR EACH ROW EXECUTE FUNCTION kaskad_order_hours();
    """
    )


# PostgreSQL: fold the deltas into the rows (one folder at a time: an advisory lock).
FOLD_MESSAGES = (
    "WITH d AS (DELETE FROM stats_hours_delta RETURNING *) "
    f"INSERT INTO stats_hours {messages_rollup('d', 'postgres')} {UPSERT_MESSAGES}"
)
FOLD_ORDERS = (
    "WITH d AS (DELETE FROM order_hours_delta RETURNING *) "
    f"INSERT INTO order_hours {orders_rollup('d', 'sign', 'postgres')} {UPSERT_ORDERS}"
)


def read_messages(bucket: int, rule: bool, dialect: str) -> str:
    """(bucket start, rule, channel, variant, *MESSAGE_COUNTS) of [since, until)."""
    p = ("?", "?", "?") if dialect == "sqlite" else ("$1", "$2", "$3")
    where = f"hour >= {p[0]} AND hour < {p[1]}" + (f" AND rule_id = {p[2]}" if rule else "")
    sums = ", ".join(f"sum({c})" for c in MESSAGE_COUNTS)
    return (
        f"SELECT hour / {bucket} * {bucket} AS b, rule_id, channel, variant, {sums} "
        f"FROM stats_hours WHERE {where} GROUP BY b, rule_id, channel, variant"
    )


def read_errors(dialect: str) -> str:
    """(rule, instances stopped by bad data) of those started in [since, until)."""
    p = ("?", "?") if dialect == "sqlite" else ("$1", "$2")
    return (
        "SELECT rule_id, count(*) FROM instances WHERE status = 'error' "
        f"AND started_at >= {p[0]} AND started_at < {p[1]} GROUP BY rule_id"
    )


def read_orders(bucket: int, rule: bool, dialect: str) -> str:
    """(bucket start, touch, rule, channel, variant, currency, orders, revenue): the touch
    asked for and 'all'."""
    p = ("?", "?", "?", "?") if dialect == "sqlite" else ("$1", "$2", "$3", "$4")
    where = f"hour >= {p[0]} AND hour < {p[1]} AND touch IN ({p[2]}, 'all')"
    if rule:
        where += f" AND rule_id = {p[3]}"
    return (
        f"SELECT hour / {bucket} * {bucket} AS b, touch, rule_id, channel, variant, currency, "
        f"sum(orders), sum(revenue) FROM order_hours WHERE {where} "
        "GROUP BY b, touch, rule_id, channel, variant, currency"
    )
