"""Row <-> model conversion shared by the SQL stores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..model import Instance, Message

INSTANCE_COLUMNS = (
    "id",
    "rule_id",
    "rule_version",
    "user_id",
    "key",
    "status",
    "pc",
    "state",
    "trigger",
    "variant",
    "started_at",
    "ended_at",
    "end_reason",
    "due_at",
)
MESSAGE_COLUMNS = (
    "id",
    "instance_id",
    "rule_id",
    "user_id",
    "step",
    "channel",
    "template",
    "variant",
    "category",
    "status",
    "reason",
    "created_at",
    "sent_at",
    "provider_id",
    "payload",
    "detail",
    "delivered_at",
    "opened_at",
    "clicked_at",
)
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str | None:
    return None if value is None else _JSON(value)


def instance_row(i: Instance) -> tuple[Any, ...]:
    return (
        i.id,
        i.rule_id,
        i.rule_version,
        i.user_id,
        i.key,
        i.status,
        i.pc,
        dumps(i.state),
        _JSON(i.trigger),
        i.variant,
        i.started_at,
        i.ended_at,
        i.end_reason,
        i.due_at,
    )


def instance_from(row: Sequence[Any]) -> Instance:
    return Instance(
        id=row[0],
        rule_id=row[1],
        rule_version=row[2],
        user_id=row[3],
        key=row[4],
        status=row[5],
        pc=row[6],
        state=json.loads(row[7]) if row[7] else None,
        trigger=json.loads(row[8]),
        variant=row[9],
        started_at=row[10],
        ended_at=row[11],
        end_reason=row[12],
        due_at=row[13],
    )


def message_row(m: Message) -> tuple[Any, ...]:
    return (
        m.id,
        m.instance_id,
        m.rule_id,
        m.user_id,
        m.step,
        m.channel,
        m.template,
        m.variant,
        m.category,
        m.status,
        m.reason,
        m.created_at,
        m.sent_at,
        m.provider_id,
        dumps(m.payload),
        m.detail,
        m.delivered_at,
        m.opened_at,
        m.clicked_at,
    )


def message_from(row: Sequence[Any]) -> Message:
    return Message(
        id=row[0],
        instance_id=row[1],
        rule_id=row[2],
        user_id=row[3],
        step=row[4],
        channel=row[5],
        template=row[6],
        variant=row[7],
        category=row[8],
        status=row[9],
        reason=row[10],
        created_at=row[11],
        sent_at=row[12],
        provider_id=row[13],
        payload=json.loads(row[14]) if row[14] else None,
        detail=row[15],
        delivered_at=row[16],
        opened_at=row[17],
        clicked_at=row[18],
    )
