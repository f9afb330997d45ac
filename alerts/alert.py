"""An alert and the records around it: its identity, silences, the messages about it.

Plain data (``snapshot``/``restore`` of the manager write them as dicts), shared by the
manager (``alerts.lifecycle``), the stages that decide what to send (``alerts.stages``) and
the sender (``alerts.notify``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from alerts.config import Matchers
from telemetry.model import AlertEvent

NS = 1_000_000_000
RETRY_AFTER_FAILURE_S = 60.0
NOT_ID = ("unit", "point")  # labels that describe an alert but do not tell two apart


def alert_id(event: AlertEvent) -> str:
    """Stable per rule and series. ``point`` follows from site, device and quantity and is left out,
    so an alert that fired before points existed resolves under the same id after an upgrade."""
    parts = [event.rule, event.site, *(f"{k}={v}" for k, v in sorted(event.labels.items()) if k not in NOT_ID)]
    return hashlib.sha1("|".join(parts).encode(), usedforsecurity=False).hexdigest()[:10]


@dataclass
class Alert:
    id: str
    rule: str
    site: str
    severity: str
    labels: dict[str, str]
    state: str
    started_ns: int
    value: float
    limit: float
    message: str
    resolved_ns: int | None = None
    acked_by: str | None = None
    acked_ns: int | None = None
    sent_firing: dict[str, int] = field(default_factory=dict)  # route -> last firing message sent
    sent_resolved: list[str] = field(default_factory=list)  # routes told it resolved
    escalated: list[str] = field(default_factory=list)  # channels told of the escalation
    failed: dict[str, int] = field(default_factory=dict)  # route -> time of the last failed send
    # the first time it got past inhibition and silences: escalation counts from here, so an
    # alert held by a maintenance silence is not escalated the moment it is first told
    audible_ns: int | None = None
    measure: str = ""  # how value and limit read (telemetry.model.Measure); "" in state from earlier versions
    templated: bool = False  # message is the rule's own template, not the kind's English text

    def label(self, name: str) -> str | None:
        if name in ("site", "rule", "severity"):
            return str(getattr(self, name))
        return self.labels.get(name)


@dataclass
class Silence:
    id: str
    matchers: dict[str, str]
    starts_ns: int
    ends_ns: int
    reason: str = ""
    created_by: str = ""

    def active(self, now: int) -> bool:
        return self.starts_ns <= now < self.ends_ns

    def covers(self, alert: Alert) -> bool:
        return all(alert.label(k) == v for k, v in self.matchers.items())


@dataclass
class Message:
    """One notification to one target of a route ("channel" ROUTE#INDEX): its group and
    the alerts that changed (or repeat). Each target keeps its own record, so a failing
    e-mail server never makes the DingTalk robot repeat itself."""

    channel: str
    group: str
    firing: list[Alert]
    resolved: list[Alert]
    escalation: bool = False

    @property
    def route(self) -> str:
        return self.channel.rsplit("#", 1)[0]

    @property
    def target(self) -> int:
        return int(self.channel.rsplit("#", 1)[1])

    @property
    def key(self) -> str:
        return f"{self.channel}|{self.group}|{'e' if self.escalation else ''}"


def matches(m: Matchers, alert: Alert) -> bool:
    """Whether a silence's or an inhibition's matchers (unset keys match anything) cover an alert."""
    return all(
        getattr(m, name) is None or alert.label(name) == getattr(m, name)
        for name in ("site", "device", "rule", "severity")
    )
