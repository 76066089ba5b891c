"""The shop's policies (config.yaml `policies`) as the runner applies them to one user:
reachability and consent, quiet hours, frequency caps, the user's timezone."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from engine.core.model import UserState
from engine.core.reach import consent_reason, valid_addresses
from engine.core.workspace import Workspace
from engine.lang.config import Config
from engine.lang.durations import parse_duration
from engine.lang.localtime import parse_time_of_day, quiet_until, zone


class Policies:
    def __init__(self, config: Config) -> None:
        policies = config.policies
        self._config = policies
        self.max_lateness_s = parse_duration(policies.max_lateness)
        self.caps = [(c.per_s, c.max) for c in policies.frequency_caps]
        quiet = policies.quiet_hours
        self.quiet = (
            None
            if quiet is None
            else (parse_time_of_day(quiet.start), parse_time_of_day(quiet.end))
        )

    def zone(self, st: UserState, ws: Workspace | None = None) -> ZoneInfo:
        """The user's timezone, else the shop's (policies.timezone). A profile's timezone
        that is no IANA name (any value at all: profiles are the shop's data) is ignored for
        the shop's, and counted in `ws.zones_ignored` (the metric
        kaskad_profile_timezones_ignored_total)."""
        name = st.profile.get("timezone")
        if name is None or name == "":
            return zone(self._config.timezone)
        if isinstance(name, str):
            try:
                return zone(name)
            except ValueError:
                pass
        if ws is not None:
            ws.zones_ignored += 1
        return zone(self._config.timezone)

    def reach(
        self, st: UserState, channel: str, *, marketing: bool
    ) -> tuple[list[Any], str | None]:
        """(the addresses to send to, None) or ([], why not: no_address, address_invalid,
        no_consent)."""
        addresses, reason = valid_addresses(st.profile, channel)
        reason = reason or consent_reason(
            st.profile, channel, marketing=marketing, opt_in=self._config.opt_in(channel)
        )
        return ([], reason) if reason else (addresses, None)

    def quiet_until(self, st: UserState, ws: Workspace) -> float | None:
        """The end of the user's quiet hours when `ws.now` falls inside them, else None."""
        if self.quiet is None:
            return None
        return quiet_until(ws.now, self.quiet[0], self.quiet[1], self.zone(st, ws))

    def capped(self, st: UserState, now: float) -> bool:
        """Whether one more marketing message would break a frequency cap."""
        for per_s, limit in self.caps:
            since = now - per_s
            count = sum(
                1
                for m in st.messages
                if m.category == "marketing" and m.sent_at is not None and m.sent_at > since
            )
            if count >= limit:
                return True
        return False
