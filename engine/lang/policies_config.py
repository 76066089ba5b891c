"""config.yaml's `policies` section: quiet hours, frequency caps, attribution, A/B, RFM,
holdouts, consent defaults and the default timezone."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from channels.kinds import kind_names
from engine.errors import did_you_mean
from engine.lang.durations import parse_duration
from engine.lang.localtime import parse_time_of_day, zone
from engine.lang.sections import Section


class QuietHours(Section):
    start: str = Field("21:00", alias="from")
    end: str = Field("09:00", alias="to")

    @field_validator("start", "end")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time_of_day(value)
        return value


class FrequencyCap(Section):
    per: str
    max: int = Field(ge=0)

    @field_validator("per")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be a positive duration")
        return value

    @property
    def per_s(self) -> float:
        return parse_duration(self.per)


class Attribution(Section):
    window: str = "7d"
    touch: Literal["click", "open", "send"] = "click"

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        # The daemon keeps a user's last 30 days of messages at hand, so the touch an order
        # is attributed to is found within 30 days.
        if not 0 < parse_duration(value) <= 30 * 86400:
            raise ValueError("must be a duration from 1s to 30d")
        return value

    @property
    def window_s(self) -> float:
        return parse_duration(self.window)


class AbConfig(Section):
    # A/B verdicts: no winner is called while a variant has fewer users than this.
    min_sample: int = Field(default=100, ge=1)


class RfmConfig(Section):
    # The nightly RFM recompute, at this time of day in policies.timezone.
    at: str = "03:30"

    @field_validator("at")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_time_of_day(value)
        return value


def _default_caps() -> list[FrequencyCap]:
    return [FrequencyCap(per="1d", max=2), FrequencyCap(per="7d", max=6)]


_SHARE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*")


def share_pct(value: object) -> float:
    """A share of users, `10%` or `10.5%` -> 10.0, from 0% to 50%; ValueError otherwise.
    A bare number other than 0 is refused: `0.1` may mean 10% or 0.1%."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    found = _SHARE.fullmatch(value) if isinstance(value, str) else None
    if found is None or float(found.group(1)) > 50:
        raise ValueError(
            f"must be a share from 0% to 50% with its percent sign, e.g. 10%, got '{value}'"
        )
    return float(found.group(1))


class PoliciesConfig(Section):
    quiet_hours: QuietHours | None = Field(default_factory=lambda: QuietHours.model_validate({}))
    frequency_caps: list[FrequencyCap] = Field(default_factory=_default_caps)
    max_lateness: str = "24h"
    attribution: Attribution = Field(default_factory=Attribution)
    consent_default: dict[str, Literal["opt_in", "opt_out"]] = Field(default_factory=dict)
    timezone: str = "UTC"  # for users whose profile has none
    ab: AbConfig = Field(default_factory=AbConfig)
    rfm: RfmConfig | None = Field(default_factory=RfmConfig)  # None: no nightly recompute
    # A stable share of all users kept out of every marketing message (a control group
    # measured across rules), "5%" or 5; 0 to 50.
    global_holdout: str | float = 0

    @field_validator("global_holdout", mode="before")
    @classmethod
    def _share(cls, value: object) -> object:
        share_pct(value)
        return value

    @property
    def global_holdout_pct(self) -> float:
        return share_pct(self.global_holdout)

    @field_validator("consent_default")
    @classmethod
    def _channels(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in kind_names():
                raise ValueError(f"unknown channel '{name}'{did_you_mean(name, kind_names())}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("max_lateness")
    @classmethod
    def _lateness(cls, value: str) -> str:
        parse_duration(value)
        return value

    def opt_in(self, channel: str) -> bool:
        return self.consent_default.get(channel) == "opt_in"
