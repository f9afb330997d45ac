"""The notification path as stages, in Alertmanager's order: inhibit → silence → route →
deduplicate → group → send (``alerts.notify``), with repeat and escalation.

Each stage is a small class with one job and its own tests (tests/test_alert_stages.py);
``build_pipeline`` puts them together for ``AlertManager.due``. An alert that the inhibit
or silence stage holds back is held back from everything after it: it is neither sent,
nor repeated, nor escalated (escalation used to look at silences only, so an inhibited
alert went to the escalation route after two hours). A resolved alert passes both: its
resolve goes where its firing went, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from alerts.alert import NS, RETRY_AFTER_FAILURE_S, Alert, Message, Silence, matches
from alerts.config import Inhibit, Route


@dataclass
class Candidate:
    """An alert that may have something to tell one target of one route."""

    alert: Alert
    route: Route
    channel: str  # ROUTE#INDEX: each target of a route keeps its own record
    news: str = ""  # "firing" or "resolved" once the deduplicate stage has looked
    repeat: bool = False


class InhibitStage:
    """While an alert matching a rule's ``source`` fires, firing alerts matching its ``target``
    with the same ``equal`` labels are held back (a lost connection inhibits that analyzer's limits)."""

    def __init__(self, rules: Iterable[Inhibit]) -> None:
        self.rules = list(rules)

    def __call__(self, alerts: list[Alert], everything: Iterable[Alert]) -> list[Alert]:
        firing = [a for a in everything if a.state == "firing"]
        return [a for a in alerts if a.state != "firing" or not self.inhibited(a, firing)]

    def inhibited(self, alert: Alert, firing: Iterable[Alert]) -> bool:
        for rule in self.rules:
            if not matches(rule.target, alert):
                continue
            for source in firing:
                if (
                    source.id != alert.id
                    and matches(rule.source, source)
                    and all(source.label(k) == alert.label(k) for k in rule.equal)
                ):
                    return True
        return False


class SilenceStage:
    """Firing alerts a silence (a maintenance window) covers now are held back."""

    def __init__(self, silences: Mapping[str, Silence]) -> None:
        self.silences = silences

    def __call__(self, alerts: list[Alert], now: int) -> list[Alert]:
        return [a for a in alerts if a.state != "firing" or not self.silenced(a, now)]

    def silenced(self, alert: Alert, now: int) -> bool:
        return any(s.active(now) and s.covers(alert) for s in self.silences.values())


class RouteStage:
    """Each alert onto every target of every route whose filters it passes."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)

    def __call__(self, alerts: Iterable[Alert]) -> list[Candidate]:
        return [
            Candidate(alert, route, f"{route.name}#{index}")
            for alert in alerts
            for route in self.for_alert(alert)
            for index in range(len(route.urls))
        ]

    def for_alert(self, alert: Alert) -> list[Route]:
        return [r for r in self.routes if r.passes(alert.site, alert.severity, alert.rule)]


class DedupStage:
    """What each target has not been told yet: a firing it was never sent (or whose repeat is
    due, unless acknowledged), a resolve where the firing went. A target whose last send
    failed is offered again after ``RETRY_AFTER_FAILURE_S``."""

    def __call__(self, candidates: Iterable[Candidate], now: int) -> list[Candidate]:
        out = []
        for c in candidates:
            alert, channel = c.alert, c.channel
            failed = alert.failed.get(channel)
            if failed is not None and now - failed < RETRY_AFTER_FAILURE_S * NS:
                continue
            if alert.state == "resolved":
                if c.route.send_resolved and channel in alert.sent_firing and channel not in alert.sent_resolved:
                    c.news = "resolved"
                    out.append(c)
                continue
            last = alert.sent_firing.get(channel)
            if last is not None and (alert.acked_by is not None or now - last < c.route.repeat_interval * NS):
                continue
            c.news, c.repeat = "firing", last is not None
            out.append(c)
        return out


@dataclass
class GroupStage:
    """Alerts of one group (``group_by``, the site by default) on one target go out together:
    the first news after ``group_wait``, later news at most every ``group_interval``; repeats
    alone go out on their own schedule. The times live in the manager's state (restarts)."""

    sent: dict[str, int] = field(default_factory=dict)  # channel|group -> last message
    first: dict[str, int] = field(default_factory=dict)  # channel|group -> first unsent news

    def __call__(self, candidates: Iterable[Candidate], now: int) -> list[Message]:
        groups: dict[str, tuple[Route, str, list[Alert], list[Alert], bool]] = {}
        for c in candidates:
            group = "/".join(str(c.alert.label(g)) for g in c.route.group_by)
            key = f"{c.channel}|{group}"
            _, _, firing, resolved, fresh = groups.get(key, (c.route, group, [], [], False))
            (firing if c.news == "firing" else resolved).append(c.alert)
            groups[key] = (c.route, group, firing, resolved, fresh or not c.repeat)
            if not c.repeat:
                self.first.setdefault(key, now)
        messages = []
        for key, (route, group, firing, resolved, fresh) in groups.items():
            last = self.sent.get(key)
            if last is None:
                ready = now - self.first.get(key, now) >= route.group_wait * NS
            else:
                ready = now - last >= route.group_interval * NS
            if ready or not fresh:
                messages.append(Message(key.split("|", 1)[0], group, firing, resolved))
        return messages


class EscalateStage:
    """A firing alert nobody acknowledged within a route's ``escalate_after`` of becoming
    audible (past inhibition and silences) goes to its ``escalate_to`` route once, per target;
    the alerts of one site due at once go in one message. Only alerts the inhibit and silence
    stages let through get here."""

    def __init__(self, routes: Mapping[str, Route], routing: RouteStage) -> None:
        self.routes = routes
        self.routing = routing

    def __call__(self, alerts: Iterable[Alert], now: int) -> list[Message]:
        due: dict[tuple[str, str], list[Alert]] = {}
        for alert in alerts:
            if alert.audible_ns is None:
                alert.audible_ns = now
            if alert.state != "firing" or alert.acked_by:
                continue
            for route in self.routing.for_alert(alert):
                target = self.routes.get(route.escalate_to or "")
                if route.escalate_after is None or target is None:
                    continue
                if now - alert.audible_ns < route.escalate_after * NS:
                    continue
                for index in range(len(target.urls)):
                    channel = f"{target.name}#{index}"
                    failed = alert.failed.get(channel)
                    retry_wait = failed is not None and now - failed < RETRY_AFTER_FAILURE_S * NS
                    if channel not in alert.escalated and not retry_wait:
                        due.setdefault((channel, alert.site), []).append(alert)
        return [Message(channel, site, firing, [], escalation=True) for (channel, site), firing in due.items()]


@dataclass
class Pipeline:
    inhibit: InhibitStage
    silence: SilenceStage
    route: RouteStage
    dedup: DedupStage
    group: GroupStage
    escalate: EscalateStage

    def __call__(self, alerts: Mapping[str, Alert], now: int) -> list[Message]:
        """The messages due now; nothing is marked sent until ``AlertManager.record``."""
        everything = list(alerts.values())
        audible = self.silence(self.inhibit(everything, everything), now)
        return self.group(self.dedup(self.route(audible), now), now) + self.escalate(audible, now)


def build_pipeline(
    routes: Mapping[str, Route], inhibit: Iterable[Inhibit], silences: Mapping[str, Silence], group: GroupStage
) -> Pipeline:
    routing = RouteStage(routes.values())
    return Pipeline(
        InhibitStage(inhibit),
        SilenceStage(silences),
        routing,
        DedupStage(),
        group,
        EscalateStage(routes, routing),
    )
