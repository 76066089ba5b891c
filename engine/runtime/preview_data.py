"""What a template is rendered with outside a chain: the dashboard's preview and a test
send (issue 13) take the same inputs, so a test sends what the page shows.

Sample data fitting the trigger of a rule sending the template (`rule_id`), or a real
user's stored profile and their last event of that trigger's type from the event log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.clock import Clock, iso
from engine.core.preview import SAMPLE_FACTS, SAMPLE_USER, Rendered, render_channels, sample_trigger
from engine.core.tracking import Tracker
from engine.lang.config import Config
from engine.lang.ruleset import RuleSet
from engine.lang.templates import Template
from engine.store.base import Store


@dataclass(frozen=True, slots=True)
class PreviewInput:
    trigger: dict[str, Any]
    profile: dict[str, Any] | None  # a stored profile, or None for the sample user
    origin: str  # where the data comes from, for people
    notice: str | None = None  # what the page should say about it

    def render(
        self,
        template: Template,
        config: Config,
        *,
        message_id: str = "m-preview",
        tracker: Tracker | None = None,
    ) -> list[Rendered]:
        if self.profile is not None:
            return render_channels(
                template,
                {},
                self.trigger,
                config,
                profile=self.profile,
                message_id=message_id,
                tracker=tracker,
            )
        return render_channels(
            template,
            SAMPLE_USER,
            self.trigger,
            config,
            SAMPLE_FACTS,
            message_id=message_id,
            tracker=tracker,
        )


async def load_profile(store: Store, clock: Clock, user_id: str) -> dict[str, Any] | None:
    """The user's stored profile, None when there is none (no events seen)."""
    users = await store.load_users([user_id], messages_since=clock.now(), starts_since=math.inf)
    st = users[user_id]
    return None if st.profile_dirty else st.profile


def sample_input(ruleset: RuleSet, template: str, rule_id: str | None = None) -> PreviewInput:
    sample = sample_trigger(ruleset, template, rule_id=rule_id)
    return PreviewInput(sample.trigger, None, sample.origin)


async def user_input(
    store: Store,
    clock: Clock,
    ruleset: RuleSet,
    template: str,
    user_id: str,
    rule_id: str | None = None,
) -> PreviewInput | None:
    """The user's profile and their last event of the trigger's type (the sample event
    when the log has none, said in `notice`); None when no profile is stored."""
    profile = await load_profile(store, clock, user_id)
    if profile is None:
        return None
    sample = sample_trigger(ruleset, template, user_id, rule_id)
    etype = sample.trigger.get("type")
    if etype == "schedule" or not isinstance(etype, str):
        origin = f"{sample.origin} (a broadcast has no event of the user's)"
        return PreviewInput(sample.trigger, profile, origin)
    last = await store.user_events(user_id, types=[etype], limit=1)
    if last and last[0].data is not None:
        e = last[0]
        trigger = {
            "id": e.event_id,
            "type": e.type,
            "user_id": user_id,
            "time": iso(e.at),
            "data": e.data,
        }
        return PreviewInput(trigger, profile, f"the user's last {etype} event ({iso(e.at)})")
    notice = (
        f"User {user_id} has no {etype} event in the event log (the newest 200 within "
        "the event retention): the sample event is used with their profile."
    )
    return PreviewInput(sample.trigger, profile, f"sample data: {sample.origin}", notice)
