"""Alerts between the rules and the supervisors' phones: who is told what, and when.

The rules engine reports transitions (firing, resolved). Here each alert (rule +
labels) gets an id and a life: it is notified per route after ``group_wait``
together with the other alerts of its group (by site by default), later changes
of the group go out at most every ``group_interval``, a firing alert is repeated
every ``repeat_interval``, and resolved alerts get one resolve message where
their firing was sent. Silences (config or CLI) and inhibitions hold messages
back; an alert still firing unacknowledged after a route's ``escalate_after`` is
sent to its ``escalate_to`` route once. A send counts only once it succeeded
(``record``); a failed one is offered again after a back-off. Time is injected
(``now``), so tests need no sleeping, and the whole state is plain data
(``snapshot``/``restore``) for restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from telemetry.config import Matchers, Notify, Route
from telemetry.model import AlertEvent, AlertState

NS = 1_000_000_000
RETRY_AFTER_FAILURE_S = 60.0
_NOT_ID = ("unit", "point")


def alert_id(event: AlertEvent) -> str:
    """Stable per rule and series. ``point`` follows from site, device and quantity and is left out,
    so an alert that fired before points existed resolves under the same id after an upgrade."""
    parts = [event.rule, event.site, *(f"{k}={v}" for k, v in sorted(event.labels.items()) if k not in _NOT_ID)]
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


def _matches(m: Matchers, alert: Alert) -> bool:
    return all(
        getattr(m, name) is None or alert.label(name) == getattr(m, name)
        for name in ("site", "device", "rule", "severity")
    )


class AlertManager:
    def __init__(self, notify: Notify, parse_time: Any = None) -> None:
        self.routes = {r.name: r for r in notify.routes}
        self.inhibit = list(notify.inhibit)
        self.alerts: dict[str, Alert] = {}
        self.silences: dict[str, Silence] = {}
        self._group_sent: dict[str, int] = {}  # route|group -> last message time
        self._group_first: dict[str, int] = {}  # route|group -> when the group first had news
        if parse_time is not None:
            for i, s in enumerate(notify.silences):
                matchers = s.matchers.model_dump(exclude_none=True)
                self.silences[f"config-{i}"] = Silence(
                    f"config-{i}", matchers, parse_time(s.start), parse_time(s.end), s.reason, "config"
                )

    # -- input ---------------------------------------------------------------------------------

    def ingest(self, events: Iterable[AlertEvent]) -> bool:
        """Take rule transitions; True if anything changed."""
        changed = False
        for event in events:
            if event.state is AlertState.INSUFFICIENT:
                continue
            aid = alert_id(event)
            alert = self.alerts.get(aid)
            if event.state is AlertState.FIRING:
                if alert is None or alert.state == "resolved":
                    labels = {k: v for k, v in event.labels.items() if v}
                    self.alerts[aid] = Alert(
                        aid,
                        event.rule,
                        event.site,
                        event.severity,
                        labels,
                        "firing",
                        event.ts,
                        event.value,
                        event.limit,
                        event.message,
                        measure=event.measure,
                        templated=event.templated,
                    )
                    changed = True
            elif alert is not None and alert.state == "firing":
                alert.state = "resolved"
                alert.resolved_ns = event.ts
                alert.value = event.value
                alert.message = event.message
                changed = True
        return changed

    def ack(self, aid: str, by: str, now: int) -> bool:
        alert = self.alerts.get(aid)
        if alert is None or alert.state != "firing":
            return False
        alert.acked_by, alert.acked_ns = by, now
        return True

    def add_silence(self, silence: Silence) -> None:
        self.silences[silence.id] = silence

    def expire_silence(self, sid: str, now: int) -> bool:
        silence = self.silences.get(sid)
        if silence is None:
            return False
        silence.ends_ns = min(silence.ends_ns, now)
        return True

    # -- what to send --------------------------------------------------------------------------

    def silenced(self, alert: Alert, now: int) -> bool:
        return any(s.active(now) and s.covers(alert) for s in self.silences.values())

    def inhibited(self, alert: Alert) -> bool:
        for rule in self.inhibit:
            if not _matches(rule.target, alert):
                continue
            for source in self.alerts.values():
                if (
                    source.state == "firing"
                    and source.id != alert.id
                    and _matches(rule.source, source)
                    and all(source.label(k) == alert.label(k) for k in rule.equal)
                ):
                    return True
        return False

    def _routes_for(self, alert: Alert) -> list[Route]:
        return [
            r
            for r in self.routes.values()
            if (not r.sites or alert.site in r.sites)
            and (not r.severities or alert.severity in r.severities)
            and (not r.rules or alert.rule in r.rules)
        ]

    def due(self, now: int) -> list[Message]:
        """Messages to send now (nothing is marked sent until ``record``)."""
        groups: dict[str, tuple[Route, str, list[Alert], list[Alert], bool]] = {}
        for alert in self.alerts.values():
            quiet = self.silenced(alert, now) or self.inhibited(alert)
            for route in self._routes_for(alert):
                for index in range(len(route.urls)):
                    channel = f"{route.name}#{index}"
                    news, repeat = self._news(route, channel, alert, now, quiet)
                    if news is None:
                        continue
                    group = "/".join(str(alert.label(g)) for g in route.group_by)
                    key = f"{channel}|{group}"
                    _, _, firing, resolved, fresh = groups.get(key, (route, group, [], [], False))
                    (firing if news == "firing" else resolved).append(alert)
                    groups[key] = (route, group, firing, resolved, fresh or not repeat)
                    if not repeat:
                        self._group_first.setdefault(key, now)
        messages = []
        for key, (route, group, firing, resolved, fresh) in groups.items():
            last = self._group_sent.get(key)
            if last is None:
                ready = now - self._group_first.get(key, now) >= route.group_wait * NS
            else:
                ready = now - last >= route.group_interval * NS
            if ready or not fresh:  # repeats alone go out on their own schedule
                messages.append(Message(key.split("|", 1)[0], group, firing, resolved))
        return messages + self._escalations(now)

    def _news(self, route: Route, channel: str, alert: Alert, now: int, quiet: bool) -> tuple[str | None, bool]:
        """('firing'|'resolved'|None, is_repeat) for one alert on one target of a route."""
        failed = alert.failed.get(channel)
        if failed is not None and now - failed < RETRY_AFTER_FAILURE_S * NS:
            return None, False
        if alert.state == "resolved":
            tell = route.send_resolved and channel in alert.sent_firing and channel not in alert.sent_resolved
            return ("resolved" if tell else None), False
        last = alert.sent_firing.get(channel)
        if quiet or (last is not None and (alert.acked_by is not None or now - last < route.repeat_interval * NS)):
            return None, False
        return "firing", last is not None

    def _escalations(self, now: int) -> list[Message]:
        out = []
        for alert in self.alerts.values():
            if alert.state != "firing" or alert.acked_by or self.silenced(alert, now):
                continue
            for route in self._routes_for(alert):
                if route.escalate_after is None or route.escalate_to not in self.routes:
                    continue
                if now - alert.started_ns < route.escalate_after * NS:
                    continue
                target = self.routes[route.escalate_to or ""]
                for index in range(len(target.urls)):
                    channel = f"{target.name}#{index}"
                    failed = alert.failed.get(channel)
                    retry_wait = failed is not None and now - failed < RETRY_AFTER_FAILURE_S * NS
                    if channel not in alert.escalated and not retry_wait:
                        out.append(Message(channel, alert.site, [alert], [], escalation=True))
        return out

    # -- after sending ---------------------------------------------------------------------------

    def record(self, message: Message, ok: bool, now: int) -> None:
        """A send's outcome: success marks the alerts told; failure retries after a back-off."""
        for alert in message.firing + message.resolved:
            if not ok:
                alert.failed[message.channel] = now
                continue
            alert.failed.pop(message.channel, None)
            if message.escalation:
                if message.channel not in alert.escalated:
                    alert.escalated.append(message.channel)
            elif alert in message.firing:
                alert.sent_firing[message.channel] = now
            elif message.channel not in alert.sent_resolved:
                alert.sent_resolved.append(message.channel)
        if ok and not message.escalation:
            gkey = f"{message.channel}|{message.group}"
            self._group_sent[gkey] = now
            self._group_first.pop(gkey, None)

    def clock_stepped(self, delta_ns: int) -> None:
        """The host clock stepped: move the times group_wait, group_interval, repeat, retry
        and escalation count from, so a step forward does not make them all due at once and
        a step back does not hold them. Silences keep the wall-clock times people gave."""

        def moved(times: dict[str, int]) -> dict[str, int]:
            return {k: t + delta_ns for k, t in times.items()}

        self._group_sent = moved(self._group_sent)
        self._group_first = moved(self._group_first)
        for alert in self.alerts.values():
            alert.started_ns += delta_ns
            if alert.resolved_ns is not None:
                alert.resolved_ns += delta_ns
            alert.sent_firing = moved(alert.sent_firing)
            alert.failed = moved(alert.failed)

    def prune(self, now: int, keep_resolved_s: float = 86400.0) -> None:
        """Forget resolved alerts whose resolve was sent (or never needed) a while ago."""
        for aid, alert in list(self.alerts.items()):
            if alert.state == "resolved" and alert.resolved_ns and now - alert.resolved_ns > keep_resolved_s * NS:
                del self.alerts[aid]
        for sid, silence in list(self.silences.items()):
            if silence.ends_ns < now - int(keep_resolved_s * NS):
                del self.silences[sid]

    def undelivered(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.failed]

    # -- persistence -----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "alerts": [asdict(a) for a in self.alerts.values()],
            "silences": [asdict(s) for s in self.silences.values() if not s.id.startswith("config-")],
            "group_sent": self._group_sent,
            "group_first": self._group_first,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        self.alerts = {a["id"]: Alert(**a) for a in data.get("alerts", [])}
        for s in data.get("silences", []):
            self.silences[s["id"]] = Silence(**s)
        self._group_sent = {k: int(v) for k, v in data.get("group_sent", {}).items()}
        self._group_first = {k: int(v) for k, v in data.get("group_first", {}).items()}
