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

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from alerts.alert import NOT_ID, NS, Alert, Message, Silence, alert_id
from alerts.config import Notify
from alerts.stages import GroupStage, build_pipeline
from telemetry.model import AlertEvent, AlertState


class AlertManager:
    def __init__(self, notify: Notify, parse_time: Any = None) -> None:
        self.routes = {r.name: r for r in notify.routes}
        self.inhibit = list(notify.inhibit)
        self.alerts: dict[str, Alert] = {}
        self.silences: dict[str, Silence] = {}
        self._groups = GroupStage()  # when each target's group was last told, and first had news
        self._pipeline = build_pipeline(self.routes, self.inhibit, self.silences, self._groups)
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
            else:
                for firing in [alert] if alert is not None else self._older_identities(event):
                    if firing.state == "firing":
                        firing.state = "resolved"
                        firing.resolved_ns = event.ts
                        firing.value = event.value
                        firing.message = event.message
                        changed = True
        return changed

    def _older_identities(self, event: AlertEvent) -> list[Alert]:
        """Firing alerts a resolve with an unknown id ends: the same rule and site, labelled with
        more than the rule's key says today (a device-wide rule's alert restored from a version
        that labelled it with a quantity), so an upgrade leaves no alert firing for ever."""
        wanted = {k: v for k, v in event.labels.items() if v and k not in NOT_ID}
        return [
            a
            for a in self.alerts.values()
            if a.state == "firing"
            and (a.rule, a.site) == (event.rule, event.site)
            and all(a.labels.get(k) == v for k, v in wanted.items())
            and len(a.labels) > len(wanted)
        ]

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

    def due(self, now: int) -> list[Message]:
        """Messages to send now, through the stages of ``alerts.stages`` (nothing is marked
        sent until ``record``)."""
        return self._pipeline(self.alerts, now)

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
            self._groups.sent[gkey] = now
            self._groups.first.pop(gkey, None)

    def clock_stepped(self, delta_ns: int) -> None:
        """The host clock stepped: move the times group_wait, group_interval, repeat, retry
        and escalation count from, so a step forward does not make them all due at once and
        a step back does not hold them. Silences keep the wall-clock times people gave."""

        def moved(times: dict[str, int]) -> dict[str, int]:
            return {k: t + delta_ns for k, t in times.items()}

        self._groups.sent = moved(self._groups.sent)
        self._groups.first = moved(self._groups.first)
        for alert in self.alerts.values():
            alert.started_ns += delta_ns
            if alert.audible_ns is not None:
                alert.audible_ns += delta_ns
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
            "group_sent": self._groups.sent,
            "group_first": self._groups.first,
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        # State from before audible_ns: escalation counts from the start, as it did then.
        self.alerts = {a["id"]: Alert(**({"audible_ns": a["started_ns"]} | a)) for a in data.get("alerts", [])}
        for s in data.get("silences", []):
            self.silences[s["id"]] = Silence(**s)
        self._groups.sent = {k: int(v) for k, v in data.get("group_sent", {}).items()}
        self._groups.first = {k: int(v) for k, v in data.get("group_first", {}).items()}
