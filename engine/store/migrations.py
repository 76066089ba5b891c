"""Versioned schema: each entry runs once, in order, inside a transaction."""

from __future__ import annotations

SQLITE_MIGRATIONS: list[str] = [
    # 1: the initial schema. Times are unix seconds (REAL), JSON as TEXT.
    """
    CREATE TABLE events_seen (
        id TEXT PRIMARY KEY,
        seen_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX events_seen_at ON events_seen (seen_at);

    CREATE TABLE profiles (
        user_id TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL
    );

    CREATE TABLE interests (
        product_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        user_id TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (product_id, kind, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX interests_user ON interests (user_id, kind);

    CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        rule_id TEXT NOT NULL,
        rule_version TEXT NOT NULL,
        user_id TEXT NOT NULL,
        key TEXT NOT NULL,
        status TEXT NOT NULL,
        pc INTEGER NOT NULL,
        state TEXT,
        trigger TEXT NOT NULL,
        variant TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,
        end_reason TEXT,
        due_at REAL
    );
    CREATE INDEX instances_due ON instances (due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX instances_user ON instances (user_id, status);
    CREATE INDEX instances_starts ON instances (user_id, rule_id, key, started_at);

    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        instance_id TEXT NOT NULL,
        rule_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        step TEXT NOT NULL,
        channel TEXT,
        template TEXT,
        variant TEXT,
        category TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        created_at REAL NOT NULL,
        sent_at REAL,
        provider_id TEXT,
        payload TEXT,
        detail TEXT,
        delivered_at REAL,
        opened_at REAL,
        clicked_at REAL
    );
    CREATE INDEX messages_user ON messages (user_id, created_at);
    CREATE INDEX messages_created ON messages (created_at, id);
    CREATE INDEX messages_rule ON messages (rule_id, created_at);
    CREATE INDEX messages_provider ON messages (provider_id) WHERE provider_id IS NOT NULL;
    """,
]

SQLITE_MIGRATIONS.append(
    # 2: the daemon. The inbox holds acknowledged events until their effects are committed
    # (the row is deleted in the same transaction); messages carry their recipient and retry
    # state; rule sources are kept so instances finish on their version after a restart.
    """
    CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        body TEXT NOT NULL,
        received_at REAL NOT NULL,
        cursor TEXT
    );
    ALTER TABLE messages ADD COLUMN recipient TEXT;
    ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN next_attempt_at REAL;
    CREATE INDEX messages_queue ON messages (next_attempt_at) WHERE status = 'queued';
    CREATE UNIQUE INDEX messages_once ON messages (instance_id, step, channel);
    CREATE TABLE rule_versions (
        version TEXT PRIMARY KEY,
        rule_id TEXT NOT NULL,
        path TEXT NOT NULL,
        source TEXT NOT NULL,
        loaded_at REAL NOT NULL
    );
    """
)

SQLITE_MIGRATIONS.append(
    # 3: a provider's answer is stored the moment it arrives (status 'answered'), so a restart
    # hands it to the engine instead of calling the provider again.
    """
    ALTER TABLE messages ADD COLUMN outcome TEXT;
    CREATE INDEX messages_answered ON messages (id) WHERE status = 'answered';
    """
)
