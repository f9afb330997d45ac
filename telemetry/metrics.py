"""Every Prometheus metric of the daemon, on an injected registry.

Tests build ``Metrics(CollectorRegistry())`` and read values with
``registry.get_sample_value``; the daemon serves its registry over HTTP.
Error counters carry a bounded ``error_type`` (never a free-form message).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    pass


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.readings = Counter(
            "telemetry_readings_total",
            "Readings committed to the outbox",
            ["site", "device"],
            registry=registry,
        )
        self.rejected = Counter(
            "telemetry_readings_rejected_total",
            "Inputs that could not become readings (bad payload, bad value), by source and reason",
            ["device", "error_type"],
            registry=registry,
        )
        self.mqtt_rejected = Counter(
            "telemetry_mqtt_rejected_total",
            "MQTT messages rejected, by subscription (the configured filter, so cardinality stays bounded)",
            ["device", "subscription", "error_type"],
            registry=registry,
        )
        self.mqtt_last_message = Gauge(
            "telemetry_mqtt_last_message_timestamp_seconds",
            "When a subscription last received a message (Unix time; 0: never since start)",
            ["device", "subscription"],
            registry=registry,
        )
        self.mqtt_silent = Gauge(
            "telemetry_mqtt_subscription_silent",
            "1 while a subscription has received nothing for its silent_after (a typo'd topic, a dead publisher)",
            ["device", "subscription"],
            registry=registry,
        )
        self.errors = Counter(
            "telemetry_errors_total",
            "Errors by component, stage and bounded error type",
            ["component", "stage", "error_type"],
            registry=registry,
        )
        self.device_up = Gauge(
            "telemetry_device_up",
            "1 while the last poll or connection of a device succeeded",
            ["device"],
            registry=registry,
        )
        self.device_errors = Counter(
            "telemetry_device_errors_total",
            "Device read failures by bounded error type (timeout, connection, exception)",
            ["device", "error_type"],
            registry=registry,
        )
        self.poll_seconds = Histogram(
            "telemetry_device_poll_seconds",
            "Time to poll every register of a device once",
            ["device"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.commit_seconds = Histogram(
            "telemetry_outbox_commit_seconds",
            "Time to commit one batch to the outbox, fsync included",
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.sink_written = Counter(
            "telemetry_sink_points_written_total",
            "Points a sink's server accepted",
            ["sink"],
            registry=registry,
        )
        self.sink_errors = Counter(
            "telemetry_sink_write_errors_total",
            "Failed sink writes by bounded error type",
            ["sink", "error_type"],
            registry=registry,
        )
        self.sink_retries = Counter(
            "telemetry_sink_retries_total",
            "Failed writes that will be retried (the records stay in the outbox)",
            ["sink"],
            registry=registry,
        )
        self.sink_write_seconds = Histogram(
            "telemetry_sink_write_seconds",
            "Time for a sink's server to accept one batch",
            ["sink"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.outbox_dropped = Counter(
            "telemetry_outbox_dropped_total",
            "Records deleted by the disk budget before every sink took them",
            registry=registry,
        )
        self.sink_rejected = Counter(
            "telemetry_sink_points_rejected_total",
            "Points a sink's server refused as invalid (moved to quarantine)",
            ["sink"],
            registry=registry,
        )
        self.sink_last_success = Gauge(
            "telemetry_sink_last_success_timestamp_seconds",
            "Unix time of the last accepted write per sink",
            ["sink"],
            registry=registry,
        )
        self.clock_steps = Counter(
            "telemetry_clock_steps_total",
            "Steps of the host wall clock of a second or more (seen against the monotonic clock)",
            registry=registry,
        )
        self.alerts_firing = Gauge(
            "telemetry_alerts_firing",
            "Alerts currently firing",
            ["site", "rule"],
            registry=registry,
        )
        self.alert_events = Counter(
            "telemetry_alert_events_total",
            "Alert transitions",
            ["rule", "state"],
            registry=registry,
        )
        self.alerts_undelivered = Gauge(
            "telemetry_alerts_undelivered",
            "Alerts whose last notification attempt failed on at least one target",
            registry=registry,
        )
        self.hj212_packets = Counter(
            "telemetry_hj212_packets_total",
            "HJ 212 packets per platform and command by result (sent, resent, acked, unacked)",
            ["platform", "cn", "result"],
            registry=registry,
        )
        self.hj212_up = Gauge(
            "telemetry_hj212_up", "1 while connected to the platform", ["platform"], registry=registry
        )
        self.hj212_pending = Gauge(
            "telemetry_hj212_pending",
            "Periods waiting for the platform's acknowledgement",
            ["platform"],
            registry=registry,
        )
        self.hj212_pending_age = Gauge(
            "telemetry_hj212_pending_age_seconds",
            "Age of the oldest unacknowledged period",
            ["platform"],
            registry=registry,
        )
        self.hj212_frames = Counter(
            "telemetry_hj212_input_frames_total",
            "HJ 212 frames from stations (data acquisition units) by listener, command and result"
            " (acked, stored, refused, rejected, unsupported, notice)",
            ["device", "cn", "result"],
            registry=registry,
        )
        self.hj212_lenient = Counter(
            "telemetry_hj212_lenient_total",
            "HJ 212 frames decoded only by tolerating a deviation from the standard, by kind",
            ["device", "deviation"],
            registry=registry,
        )
        self.hj212_connections = Gauge(
            "telemetry_hj212_input_connections",
            "Stations connected to an HJ 212 listener",
            ["device"],
            registry=registry,
        )
        self.notifications = Counter(
            "telemetry_notifications_total",
            "Notification attempts per route by result (sent, failed)",
            ["route", "result"],
            registry=registry,
        )

    def watch_data(
        self, rule_counts: Callable[[], Mapping[tuple[str, str], int]], aggregation: Callable[[], Mapping[str, int]]
    ) -> None:
        """Report what rules and the aggregator adjusted or left out of the data, read at scrape time."""
        self.registry.register(_DataCollector(rule_counts, aggregation))

    def watch_side(self, deleted: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Report the side-table rows the outbox deleted, by table and reason, read at scrape time."""
        self.registry.register(_SideCollector(deleted))

    def watch_outbox(self, backlog: Callable[[], Mapping[str, int]], lag: Callable[[], Mapping[str, float]]) -> None:
        """Report each consumer's backlog (records) and lag (seconds), read at scrape time."""
        self.registry.register(_BacklogCollector(backlog, lag))


class _BacklogCollector(Collector):
    def __init__(self, backlog: Callable[[], Mapping[str, int]], lag: Callable[[], Mapping[str, float]]) -> None:
        self._backlog = backlog
        self._lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "telemetry_outbox_backlog",
            "Records committed to the outbox that a consumer has not yet taken",
            labels=["consumer"],
        )
        for consumer, count in sorted(self._backlog().items()):
            family.add_metric([consumer], count)
        yield family
        lag = GaugeMetricFamily(
            "telemetry_outbox_lag_seconds",
            "How long the oldest record a consumer has not yet taken has waited since its commit"
            " (the daemon's clock, not the reading's timestamp; 0 when caught up)",
            labels=["consumer"],
        )
        for consumer, seconds in sorted(self._lag().items()):
            lag.add_metric([consumer], seconds)
        yield lag


class _DataCollector(Collector):
    def __init__(
        self, rule_counts: Callable[[], Mapping[tuple[str, str], int]], aggregation: Callable[[], Mapping[str, int]]
    ) -> None:
        self._rules = rule_counts
        self._aggregation = aggregation

    def collect(self) -> Iterator[CounterMetricFamily]:
        steps = CounterMetricFamily(
            "telemetry_totalizer_steps",
            "Totalizer readings lower than the one before, per capacity rule, by what they were taken for"
            " (jitter: ignored; reset; rollover; rebase: a replaced or re-set meter)",
            labels=["rule", "step"],
        )
        for (rule, step), count in sorted(self._rules().items()):
            steps.add_metric([rule, step], count)
        yield steps
        left = CounterMetricFamily(
            "telemetry_aggregation_readings_skipped",
            "Readings not aggregated: late (their window had closed) or held (a cyclic analyzer's result"
            " read again before its next measurement)",
            labels=["reason"],
        )
        for reason, count in sorted(self._aggregation().items()):
            left.add_metric([reason], count)
        yield left


class _SideCollector(Collector):
    def __init__(self, deleted: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._deleted = deleted

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "telemetry_outbox_side_deleted",
            "Rows of the outbox's side tables deleted, by table and reason (retention: their age or row cap;"
            " budget: the disk budget took them before any record a sink had not taken)",
            labels=["table", "reason"],
        )
        for (table, reason), count in sorted(dict(self._deleted()).items()):
            family.add_metric([table, reason], count)
        yield family
