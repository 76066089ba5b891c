"""Importing this module registers every real provider in channels.registry."""

from __future__ import annotations

from . import email, push, sms, telegram, webhook, webpush, whatsapp
from .registry import register

register("smtp", email.build)
register("twilio", sms.build)
register("fcm", push.build)
register("vapid", webpush.build)
register("bot_api", telegram.build)
register("cloud_api", whatsapp.build)
register("webhook", webhook.build)
