"""A daemon that cannot start says every reason at once and leaves nothing open."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.clock import VirtualClock
from engine.daemon import Daemon, StartError
from engine.lang.config import parse_config

from .helpers import START


async def test_bad_channels_are_all_named_before_the_store_is_opened(tmp_path: Path) -> None:
    config = parse_config(f"""
server: {{host: 127.0.0.1, port: 0}}
storage: {{url: "sqlite:///{tmp_path}/kaskad.db"}}
rules: {{path: "{tmp_path}", watch: false}}
channels:
  email: {{provider: smtp, host: smtp.example.com, username: news, from: "S <a@shop.example>"}}
  telegram: {{provider: bot_api, bot_tokn: "1:a"}}
  sms: {{provider: twillio}}
""")
    threads = threading.active_count()
    daemon = Daemon(config, VirtualClock(START), background=False)
    with pytest.raises(StartError) as info:
        await daemon.start()
    await daemon.abort()
    assert info.value.lines == [
        "config: channels.email.password: required when username is set",
        "config: channels.sms.provider: unknown provider 'twillio' (did you mean 'twilio'?); "
        "known: bot_api, cloud_api, fcm, sandbox, smtp, twilio, vapid, webhook",
        "config: channels.telegram.bot_tokn: unknown key; did you mean 'bot_token'?",
    ]
    assert not (tmp_path / "kaskad.db").exists()  # failed before opening anything
    assert threading.active_count() == threads
