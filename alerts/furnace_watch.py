"""What the regulator audits of a furnace beyond its rules: its marks against process data.

Built-in for every configured furnace (``furnaces:``), whatever the rules say
(DOMAIN-incinerator.md A2 cases 1-3, rules 5-7):
- ``furnace_mark`` (info): a mark was set (firing) or ended (resolved), so the supervisors
  and the Grafana annotations (the ``alerts`` measurement) see every declaration;
- ``furnace_feed_below_850`` (critical): waste fed (``feeding``) while the furnace is below
  ``min_temperature`` and either the feeding began below it or a not-normal mark (drying,
  start-up ...) is set: whatever the mark says, the message names it. A dip below 850 while
  feeding in normal operation, after the furnace had reached it, is the 5-minute rule's;
- ``furnace_episode_too_long``: a mark longer than its ``max_episode_hours`` (fault,
  accident: critical; start-up not stable within 4 h: warning), resolved when it ends;
- ``furnace_exempt_budget``: ``budget_warn`` of the year's exempt hours used (warning), all
  of them used (critical: further marked hours are judged as normal operation);
- ``furnace_false_marking`` (critical): an hour marked fault or accident in which the
  stack's analyzers read normally (flag N, a valid hour) above the hourly limit while
  the furnace burned normally (its hourly mean temperature at or above ``min_temperature``).
A Modbus status register (``status``) sets and ends marks as its value changes; it changes only
the marks it set, never one an operator entered.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from telemetry.calendar import HOUR_NS, NS, calendar
from telemetry.derive import measured_of
from telemetry.furnaces import FURNACE_TEMP, FurnaceConfig
from telemetry.marks import Mark, Marks
from telemetry.model import Aggregate, AlertEvent, AlertState, Flag, Measure, Reading

log = logging.getLogger(__name__)

_EPISODE_SEVERITY = {"fault": "critical", "accident": "critical"}  # others: warning


class FurnaceWatch:
    def __init__(self, marks: Marks, hourly_limits: Mapping[tuple[str, str], float], zones: Mapping[str, str]) -> None:
        self.marks = marks
        self.hourly_limits = dict(hourly_limits)  # (point, converted quantity) -> the 1-hour limit
        self._zones = dict(zones)
        self._roles: dict[tuple[str, str, str], list[tuple[str, FurnaceConfig]]] = {}
        for f in marks.furnaces.values():
            self._roles.setdefault((f.site, f.device, FURNACE_TEMP), []).append(("temp", f))
            if f.feeding is not None:
                self._roles.setdefault((f.site, f.feeding.device, f.feeding.quantity), []).append(("feeding", f))
            if f.status is not None:
                self._roles.setdefault((f.site, f.status.device, f.status.quantity), []).append(("status", f))
        self._by_point: dict[str, list[FurnaceConfig]] = {}
        for f in marks.furnaces.values():
            if f.point:
                self._by_point.setdefault(f.point, []).append(f)
        self._temp: dict[str, Reading] = {}  # furnace -> newest furnace temperature
        self._feeding: dict[str, Reading] = {}  # furnace -> newest feeding signal
        self._fed_hot: set[str] = set()  # furnaces being fed since they were at or above 850
        self._hour_temp: dict[str, dict[int, float]] = {}  # furnace -> hour start -> mean temperature
        self._suspect: dict[tuple[str, int], list[Aggregate]] = {}  # (furnace, hour) -> hours above the limit
        self._firing: dict[str, AlertEvent] = {}
        self.counts: dict[str, int] = {}

    def firing_keys(self) -> list[str]:
        return list(self._firing)

    # -- readings ----------------------------------------------------------------------------------

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        roles = self._roles.get((r.site, r.device, r.quantity))
        if not roles:
            return []
        events: list[AlertEvent] = []
        for role, furnace in roles:
            if role == "status":
                self._status(furnace, r)
                continue
            store = self._temp if role == "temp" else self._feeding
            held = store.get(furnace.id)
            if held is None or r.ts >= held.ts:
                store[furnace.id] = r
            events += self._feed_check(furnace, r.ts)
        return events

    def _status(self, furnace: FurnaceConfig, r: Reading) -> None:
        assert furnace.status is not None
        if r.flag is not Flag.N:
            return
        kind = furnace.status.values.get(round(r.value))
        current = self.marks.open(furnace.id)
        if current is not None and (r.ts < current.start or current.by != "register"):
            # an old reading, or a mark an operator set: the register changes only its own marks
            self.counts["status_ignored"] = self.counts.get("status_ignored", 0) + 1
            return
        if kind is not None and (current is None or current.kind != kind):
            self.marks.add(furnace.id, kind, r.ts, by="register")
        elif kind is None and current is not None and current.by == "register":
            self.marks.end(furnace.id, r.ts)

    def _feed_check(self, furnace: FurnaceConfig, ts: int) -> list[AlertEvent]:
        temp, feed = self._temp.get(furnace.id), self._feeding.get(furnace.id)
        if feed is None or temp is None or furnace.feeding is None:
            return []
        fresh = abs(feed.ts - temp.ts) <= 2 * furnace.max_age * NS
        feeding = feed.flag is Flag.N and feed.value > furnace.feeding.above
        cold = fresh and temp.flag is Flag.N and temp.value < furnace.min_temperature
        if not feeding:
            self._fed_hot.discard(furnace.id)
        elif fresh and temp.flag is Flag.N and not cold:
            self._fed_hot.add(furnace.id)
        mark = self.marks.at(furnace.id, ts)
        # Feeding that began below 850, or goes on below it while the furnace is marked out of normal
        # operation (the MEE cases: "drying" marked while waste went in). A dip while feeding in normal
        # operation, once the furnace had reached 850, is the 5-minute rule's to count.
        unmarked_dip = furnace.id in self._fed_hot and (mark is None or mark.kind not in furnace.not_normal)
        key = f"feed/{furnace.id}"
        if feeding and cold and not unmarked_dip and key not in self._firing:
            marked = f" while marked {mark.label()}" if mark is not None else ""
            text = (
                f"furnace {furnace.id}: waste fed at {temp.value:.1f} {temp.unit}, below {furnace.min_temperature:g}"
                f"{marked}"
            )
            return [self._fire(key, furnace, "furnace_feed_below_850", "critical", ts, text, temp.value)]
        if key in self._firing and not (feeding and cold and not unmarked_dip):
            return [self._resolve(key, ts, f"furnace {furnace.id}: no waste fed below {furnace.min_temperature:g}")]
        return []

    # -- windows -----------------------------------------------------------------------------------

    def on_window(self, w: Aggregate) -> list[AlertEvent]:
        if w.window != "1h":
            return []
        events: list[AlertEvent] = []
        for role, furnace in self._roles.get((w.site, w.device, w.quantity), []):
            if role == "temp" and w.valid and w.avg is not None:
                hours = self._hour_temp.setdefault(furnace.id, {})
                hours[w.ts] = w.avg
                for old in [h for h in hours if h < w.ts - 2 * HOUR_NS]:
                    del hours[old]
                events += self._judge_marking(furnace, w.ts)
        limit = self.hourly_limits.get((w.point, w.quantity))
        for stale in [k for k in self._suspect if k[1] < w.ts - 2 * HOUR_NS]:
            del self._suspect[stale]  # hours the furnace's temperature never came for
        if limit is not None and measured_of(w.quantity) and w.valid and w.flag is Flag.N and (w.avg or 0) > limit:
            for furnace in self._by_point.get(w.point, []):
                self._suspect.setdefault((furnace.id, w.ts), []).append(w)
                events += self._judge_marking(furnace, w.ts)
        return events

    def _judge_marking(self, furnace: FurnaceConfig, hour: int) -> list[AlertEvent]:
        """An hour above the limit, marked fault or accident, while the furnace burned normally."""
        suspects = self._suspect.get((furnace.id, hour))
        temp = self._hour_temp.get(furnace.id, {}).get(hour)
        if not suspects or temp is None:
            return []
        del self._suspect[(furnace.id, hour)]
        covered = self.marks.covered(furnace.id, hour, hour + HOUR_NS, ("fault", "accident"))
        mark = self.marks.at(furnace.id, hour + HOUR_NS // 2) or self.marks.at(furnace.id, hour)
        if covered < furnace.exempt_fraction * HOUR_NS or temp < furnace.min_temperature or mark is None:
            return []
        key = f"false/{mark.id}"
        if key in self._firing:
            return []
        worst = max(suspects, key=lambda w: (w.avg or 0) / self.hourly_limits[(w.point, w.quantity)])
        limit = self.hourly_limits[(worst.point, worst.quantity)]
        at = calendar(self._zones.get(furnace.site, "Asia/Shanghai")).local(hour).strftime("%Y-%m-%d %H:00")
        text = (
            f"furnace {furnace.id}: possible false marking: {at} marked {mark.label()} while the analyzers read"
            f" normally, {worst.quantity} hourly mean {worst.avg:g} {worst.unit} above {limit:g}, and the furnace"
            f" burned at {temp:.0f} degC"
        )
        return [self._fire(key, furnace, "furnace_false_marking", "critical", hour, text, worst.avg or 0.0, limit)]

    # -- time --------------------------------------------------------------------------------------

    def on_tick(self, now: int) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        changed, self.marks.changed = self.marks.changed, []
        for mark, ended in changed:
            events += self._announce(mark, ended)
        for furnace in self.marks.furnaces.values():
            current = self.marks.open(furnace.id)
            if current is not None:
                events += self._episode(furnace, current, now)
            events += self._budget(furnace, now)
        return events

    def _announce(self, mark: Mark, ended: bool) -> list[AlertEvent]:
        furnace = self.marks.furnaces[mark.furnace]
        key = f"mark/{mark.id}"
        if not ended:
            by = f" by {mark.by}" if mark.by else ""
            note = f": {mark.note}" if mark.note else ""
            text = f"furnace {furnace.id} marked {mark.label()}{by}{note}"
            return [self._fire(key, furnace, "furnace_mark", "info", mark.start, text, 0.0, mark=mark.kind)]
        assert mark.end is not None
        events = self._episode(furnace, mark, mark.end)  # a mark entered afterwards may have been too long
        hours = (mark.end - mark.start) / HOUR_NS
        lasted = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"
        text = f"furnace {furnace.id}: mark {mark.label()} ended after {lasted}"
        for prefix in ("mark/", "episode/", "false/"):
            if prefix + mark.id in self._firing:
                events.append(self._resolve(prefix + mark.id, mark.end, text))
        return events

    def _episode(self, furnace: FurnaceConfig, mark: Mark, now: int) -> list[AlertEvent]:
        limit = furnace.max_episode_hours.get(mark.kind)  # type: ignore[call-overload]
        key = f"episode/{mark.id}"
        if limit is None or key in self._firing or now - mark.start <= limit * HOUR_NS:
            return []
        ts = mark.start + int(limit * HOUR_NS)
        text = f"furnace {furnace.id}: {mark.label()} longer than {limit:g} h (since its start)"
        severity = _EPISODE_SEVERITY.get(mark.kind, "warning")
        return [
            self._fire(key, furnace, "furnace_episode_too_long", severity, ts, text, (now - mark.start) / NS, limit)
        ]

    def _budget(self, furnace: FurnaceConfig, now: int) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        first, _ = self.marks.year(furnace.id, now)
        for key in [k for k in self._firing if k.startswith(f"budget/{furnace.id}/") and int(k.split("/")[2]) < first]:
            events.append(self._resolve(key, first, f"furnace {furnace.id}: a new year's budget of exempt hours"))
        used_h = self.marks.used(furnace.id, now) / HOUR_NS
        budget = furnace.budget_hours
        for level, share, severity in (("warn", furnace.budget_warn, "warning"), ("spent", 1.0, "critical")):
            key = f"budget/{furnace.id}/{first}/{level}"
            if used_h >= share * budget and key not in self._firing:
                after = " further marked hours are judged as normal operation" if level == "spent" else ""
                text = f"furnace {furnace.id}: {used_h:.1f} h of {budget:g} h exempt hours used this year{after}"
                event = self._fire(key, furnace, "furnace_exempt_budget", severity, now, text, used_h * 3600)
                events.append(replace(event, limit=share * budget * 3600, measure=Measure.FLAGGED))
                self._firing[key] = events[-1]
        return events

    # -- events ------------------------------------------------------------------------------------

    def _fire(
        self,
        key: str,
        furnace: FurnaceConfig,
        rule: str,
        severity: str,
        ts: int,
        text: str,
        value: float,
        limit: float = 0.0,
        **labels: str,
    ) -> AlertEvent:
        event = AlertEvent(
            ts=ts,
            site=furnace.site,
            rule=rule,
            severity=severity,
            state=AlertState.FIRING,
            message=text,
            value=value,
            limit=limit,
            labels={"furnace": furnace.id, **({"point": furnace.point} if furnace.point else {}), "key": key, **labels},
            measure=Measure.STATE,
        )
        self._firing[key] = event
        return event

    def _resolve(self, key: str, ts: int, text: str) -> AlertEvent:
        return replace(self._firing.pop(key), ts=ts, state=AlertState.RESOLVED, message=text)

    # -- state -------------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "firing": {k: e.to_dict() for k, e in self._firing.items()},
            "temp": {k: r.to_dict() for k, r in self._temp.items()},
            "feeding": {k: r.to_dict() for k, r in self._feeding.items()},
            "fed_hot": sorted(self._fed_hot),
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._firing = {k: AlertEvent.from_dict(e) for k, e in data.get("firing", {}).items()}
        self._temp = {k: Reading.from_dict(r) for k, r in data.get("temp", {}).items()}
        self._feeding = {k: Reading.from_dict(r) for k, r in data.get("feeding", {}).items()}
        self._fed_hot = set(data.get("fed_hot", []))
