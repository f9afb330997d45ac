"""The rules engine: readings, closed windows and clock ticks in, alert transitions out.

Each rule keeps its state per series (site, device, quantity) and reports a
transition only: one ``firing`` when a condition starts (after its ``for``), one
``resolved`` when it ends. Time is the readings' own timestamps (and the tick's
``now`` for rules about silence), so replaying recorded data gives the same
events (``telemetry rules test``). Only ``N``-flagged values are judged by value
rules: a value measured during calibration neither fires nor resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from alerts.furnace_watch import FurnaceWatch
from alerts.kinds import KINDS, RuleState
from alerts.kinds.furnace import FurnaceState
from alerts.kinds.limits import LimitState
from alerts.rule_config import EvaluatedRule, LimitRule
from telemetry.calendar import HOUR_NS, NS
from telemetry.derive import measured_of
from telemetry.furnaces import FurnaceConfig
from telemetry.marks import STATE_KEY as FURNACES
from telemetry.marks import Marks, exempt_hour
from telemetry.model import Aggregate, AlertEvent, Reading
from telemetry.points import Points

STATUS_EVERY_NS = 60 * NS


@dataclass
class _Entry:
    rule: EvaluatedRule
    state: RuleState


class RulesEngine:
    def __init__(
        self,
        rules: Iterable[EvaluatedRule],
        zones: Mapping[str, str] | None = None,
        points: Points | None = None,
        furnaces: Iterable[FurnaceConfig] = (),
        day_min_valid_hours: int = 20,
    ) -> None:
        zones = dict(zones or {})
        self.points = points if points is not None else Points.from_config(zones, ())
        self._entries = [_Entry(rule, KINDS[rule.kind](rule, zones)) for rule in rules]
        # Furnaces: their marks (set by commands and status registers) and what is audited of them.
        self.marks = Marks(furnaces, zones)
        hourly = {
            (r.point, r.quantity): r.above
            for r in (e.rule for e in self._entries)
            if isinstance(r, LimitRule) and r.window == "1h" and r.point and r.above is not None
            if measured_of(r.quantity)
        }
        self.watch = FurnaceWatch(self.marks, hourly, zones) if self.marks else None
        # An hour of a stack its furnace's marks exempt from the daily judgement (within budget).
        self.exempt_hour = exempt_hour(self.marks)
        self._status_at = 0
        self._by_quantity: dict[str | None, list[_Entry]] = {}
        for entry in self._entries:
            entry.state.point_of = self._point_id
            entry.state.count_error = self._count_error
            if isinstance(entry.state, FurnaceState) and self.marks:
                entry.state.exempt = self._not_normal
            if isinstance(entry.state, LimitState) and self.marks:
                entry.state.exempt_hour = self.exempt_hour
                entry.state.day_min_valid_hours = day_min_valid_hours
            self._by_quantity.setdefault(getattr(entry.rule, "quantity", None), []).append(entry)
        self.evaluations = 0
        # Counts an error of a rule by (stage, error_type); the pipeline points it at its metrics.
        self.on_error: Callable[[str, str], None] = lambda stage, error_type: None

    def _not_normal(self, site: str, device: str, start: int, end: int) -> bool:
        """A furnace whose temperature is (site, device) marked out of normal operation."""
        return any(
            self.marks.not_normal(f.id, start, end)
            for f in self.marks.furnaces.values()
            if (f.site, f.device) == (site, device)
        )

    def _count_error(self, stage: str, error_type: str) -> None:
        self.on_error(stage, error_type)

    def _point_id(self, item: Reading | Aggregate) -> str:
        if isinstance(item, Aggregate):
            return item.point
        point = self.points.point_of(item.site, item.device, item.quantity)
        return point.id if point is not None else ""

    def counts(self) -> dict[tuple[str, str], int]:
        """What rules adjusted or ignored in the data, by (rule, reason), for the metrics."""
        return {(e.rule.name, why): n for e in self._entries for why, n in e.state.counts.items()}

    def _for(self, quantity: str) -> list[_Entry]:
        return self._by_quantity.get(quantity, []) + self._by_quantity.get(None, [])

    def feed(self, readings: Iterable[Reading]) -> list[AlertEvent]:
        if self.watch is None:
            return self._run(readings, lambda e, r: e.state.on_reading(r))
        readings = list(readings)
        events = [e for r in readings for e in self.watch.on_reading(r)]  # status registers set marks first
        return events + self._run(readings, lambda e, r: e.state.on_reading(r))

    def on_windows(self, windows: Iterable[Aggregate]) -> list[AlertEvent]:
        if self.watch is None:
            return self._run(windows, lambda e, w: e.state.on_window(w))
        windows = list(windows)
        events = self._run(windows, lambda e, w: e.state.on_window(w))
        return events + [e for w in windows for e in self.watch.on_window(w)]

    def _run(self, items: Iterable[Any], call: Callable[[_Entry, Any], list[AlertEvent]]) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for item in items:
            for entry in self._for(item.quantity):
                rule = entry.rule
                if rule.matches(item.site, item.device) and (rule.point is None or rule.point == self._point_id(item)):
                    self.evaluations += 1
                    events += call(entry, item)
        return events

    def tick(self, now_ns: int) -> list[AlertEvent]:
        """Rules about time passing: silence, maintenance, the end of a plant day."""
        events: list[AlertEvent] = self.watch.on_tick(now_ns) if self.watch is not None else []
        for entry in self._entries:
            events += entry.state.on_tick(now_ns)
        return events

    def status_readings(self, now_ns: int) -> list[Reading]:
        """Per furnace, once a minute: the exempt hours used this year (``exempt_hours_used``, h)
        and per furnace temperature series the events counted today (``furnace_events``), stored
        as readings of the furnace's device so that Grafana charts what the rules judged."""
        if not self.marks or now_ns - self._status_at < STATUS_EVERY_NS:
            return []
        self._status_at = now_ns
        out = [
            Reading(now_ns, f.site, f.device, "exempt_hours_used", self.marks.used(f.id, now_ns) / HOUR_NS, "h")
            for f in self.marks.furnaces.values()
        ]
        for entry in self._entries:
            if isinstance(entry.state, FurnaceState):
                for (site, device, _), n in entry.state.events_today(now_ns).items():
                    out.append(Reading(now_ns, site, device, "furnace_events", float(n), ""))
        return out

    def use_clock(self, now: Callable[[], int]) -> None:
        """Live: presence is judged on the daemon's clock (``RuleState.now``)."""
        for entry in self._entries:
            entry.state.now = now

    def clock_stepped(self, delta_ns: int) -> None:
        """The host clock stepped (``telemetry.clock``): every rule moves its timers with it."""
        for entry in self._entries:
            entry.state.shift(delta_ns)

    def snapshot(self) -> dict[str, Any]:
        """Per-rule state (firing, pending, running totals) to survive a restart; furnaces' marks."""
        out: dict[str, Any] = {e.rule.name: {"kind": e.rule.kind, "state": e.state.dump()} for e in self._entries}
        if self.watch is not None:
            out[FURNACES] = {"marks": self.marks.dump(), "watch": self.watch.dump()}
        return out

    def restore(self, data: Mapping[str, Any]) -> None:
        """Take back the state of rules that still exist with the same name and kind."""
        for entry in self._entries:
            saved = data.get(entry.rule.name)
            if saved and saved.get("kind") == entry.rule.kind:
                entry.state.load(saved["state"])
        furnaces = data.get(FURNACES)
        if furnaces and self.watch is not None:
            self.marks.load(furnaces.get("marks", {}))
            self.watch.load(furnaces.get("watch", {}))

    def firing(self) -> list[tuple[str, str]]:
        keys = [(e.rule.name, key) for e in self._entries for key in e.state.firing_keys()]
        return keys + [("furnaces", key) for key in (self.watch.firing_keys() if self.watch is not None else [])]
