"""Prometheus metrics on a registry of our own (several apps may live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "kaskad_events_accepted", "Events stored for processing", registry=r
        )
        self.duplicates = Counter(
            "kaskad_events_duplicate", "Events ignored as duplicates", registry=r
        )
        self.rejected = Counter(
            "kaskad_events_rejected", "Events refused at ingest", ["reason"], registry=r
        )
        self.processed = Counter(
            "kaskad_events_processed", "Events the engine processed", registry=r
        )
        self.inbox_unreadable = Counter(
            "kaskad_inbox_unreadable",
            "Stored events the engine could not read back (logged as inbox.unreadable, skipped)",
            registry=r,
        )
        self.timers_fired = Counter("kaskad_timers_fired", "Timers fired", registry=r)
        self.timer_lateness = Histogram(
            "kaskad_timer_lateness_seconds",
            "How late timers fired",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 30, 60, 300, 3600),
            registry=r,
        )
        self.sends = Counter(
            "kaskad_sends", "Send outcomes by channel", ["channel", "outcome"], registry=r
        )
        self.skips = Counter(
            "kaskad_skips", "Skipped sends by reason", ["rule", "reason"], registry=r
        )
        self.instances_started = Counter(
            "kaskad_instances_started", "Instances started", ["rule"], registry=r
        )
        self.instances_ended = Counter(
            "kaskad_instances_ended", "Instances ended", ["rule", "status"], registry=r
        )
        self.instance_errors = Counter(
            "kaskad_instance_errors",
            "Instances stopped by bad data (a wait.until that is not a time...)",
            ["rule", "reason"],
            registry=r,
        )
        self.expression_errors = Counter(
            "kaskad_expression_errors",
            "Conditions and templates that failed on a user's data (taken as false / skipped)",
            ["rule", "reason"],
            registry=r,
        )
        self.profile_timezones_ignored = Counter(
            "kaskad_profile_timezones_ignored",
            "Profile timezones that are no IANA zone, passed over for policies.timezone",
            registry=r,
        )
        self.active_instances = Gauge("kaskad_instances_active", "Active instances", registry=r)
        self.pending_timers = Gauge("kaskad_timers_pending", "Pending timers", registry=r)
        self.queued_messages = Gauge(
            "kaskad_messages_queued", "Messages waiting to be sent", registry=r
        )
        self.inbox = Gauge(
            "kaskad_inbox_events", "Events acknowledged, not yet processed", registry=r
        )
        self.rule_errors = Gauge(
            "kaskad_rule_errors", "Problems in the rules directory", registry=r
        )
        self.rules_loaded = Gauge("kaskad_rules_loaded", "Rules running", registry=r)
        self.channel_paused = Gauge(
            "kaskad_channel_paused", "1 when a channel is paused", ["channel"], registry=r
        )
        self.dead_letters = Counter("kaskad_mqtt_dead_letters", "Invalid MQTT payloads", registry=r)
