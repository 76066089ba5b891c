"""The channel kinds kaskad knows: what a rule's cascade and a template's blocks may name."""

from __future__ import annotations

CHANNELS = ("mobile_push", "webpush", "email", "sms", "telegram", "whatsapp", "webhook")
