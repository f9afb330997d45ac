"""Limits: a value, a rolling mean or a closed window's mean against its bounds (the discharge
standards expand into these)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from alerts.kinds.state import RuleState, key_of, unit_of
from alerts.rule_config import LimitRule
from telemetry.calendar import HOUR_NS, NS
from telemetry.marks import judged_day
from telemetry.model import Aggregate, AlertEvent, AlertState, Flag, Measure, Reading

WINDOW_WORDS = {"1m": "minute mean", "1h": "hourly mean", "1d": "daily mean"}


class LimitState(RuleState):
    rule: LimitRule

    def __init__(self, rule: LimitRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._recent: dict[str, deque[tuple[int, float]]] = {}
        # Whether an hour of a point is exempt from the daily judgement (a furnace's marks within
        # its budget: ``telemetry.marks``); set by the engine where furnaces are configured.
        self.exempt_hour: Callable[[str, int, int], bool] | None = None
        self._hours: dict[str, list[list[Any]]] = {}  # series -> [start, end, avg, valid] of its recent hours
        self.day_min_valid_hours = 20  # the aggregation's, for the share of the hours left (set by the engine)

    def _breach(self, value: float, firing: bool = False) -> float | None:
        """The limit ``value`` breaks; while firing, judged against the clear thresholds."""
        above = self.rule.clear_above if firing and self.rule.clear_above is not None else self.rule.above
        below = self.rule.clear_below if firing and self.rule.clear_below is not None else self.rule.below
        if above is not None and value > above:
            return self.rule.above
        if below is not None and value < below:
            return self.rule.below
        return None

    def _nearest(self, value: float) -> float:
        bounds = [b for b in (self.rule.above, self.rule.below) if b is not None]
        return min(bounds, key=lambda b: abs(value - b))

    def _verdict(self, key: str, value: float, ts: int, item: Reading | Aggregate, what: str) -> list[AlertEvent]:
        limit = self._breach(value, key in self._firing)
        unit = unit_of(item)
        where = f"at {item.site}/{item.device}"

        def event(state: AlertState) -> AlertEvent:
            bound = limit if limit is not None else self._nearest(value)
            if state is AlertState.FIRING:
                side = "above" if self.rule.above is not None and value > self.rule.above else "below"
                text = f"{item.quantity} {what}{value:g}{unit} {side} limit {bound:g}{unit} {where}"
            else:
                text = f"{item.quantity} {what}back to {value:g}{unit} (limit {bound:g}{unit}) {where}"
            return self._event(state, ts, item, value, bound, text, Measure.READING)

        return self._judge(key, limit is not None, ts, self.rule.for_, event)

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "recent": {k: list(v) for k, v in self._recent.items()}, "hours": self._hours}

    def load(self, data: Mapping[str, Any]) -> None:
        super().load(data)
        self._recent = {k: deque((int(t), float(v)) for t, v in d) for k, d in data.get("recent", {}).items()}
        self._hours = {k: [list(h) for h in hours] for k, hours in data.get("hours", {}).items()}

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        if self.rule.window == "instant":
            return self._verdict(key_of(r), r.value, r.ts, r, "")
        span = self.rule.rolling_s
        if span is None:
            return []
        recent = self._recent.setdefault(key_of(r), deque())
        recent.append((r.ts, r.value))
        while recent and recent[0][0] <= r.ts - span * NS:
            recent.popleft()
        mean = sum(v for _, v in recent) / len(recent)
        return self._verdict(key_of(r), mean, r.ts, r, f"{self.rule.window} mean ")

    def on_window(self, w: Aggregate) -> list[AlertEvent]:
        if w.window == "1h" and self.rule.window == "1d" and self.rule.each_window and self.exempt_hour is not None:
            hours = self._hours.setdefault(key_of(w), [])
            hours.append([w.ts, w.ts + HOUR_NS, w.avg, w.valid and w.avg is not None])
            hours[:] = [h for h in hours if h[0] >= w.ts - 2 * 86400 * NS]
        if w.window != self.rule.window:
            return []
        if self.rule.each_window:
            return self._each_window(w)
        if not w.valid or w.avg is None:
            return [self._insufficient(w)]
        return self._verdict(key_of(w), w.avg, w.ts, w, WINDOW_WORDS[w.window] + " ")

    def _insufficient(self, w: Aggregate) -> AlertEvent:
        bound = self._nearest(w.avg if w.avg is not None else 0.0)
        text = (
            f"{w.quantity} {WINDOW_WORDS[w.window]}: insufficient valid data "
            f"({w.valid_count} of {w.count} values valid, window flag {w.flag.value}); not judged"
        )
        return self._event(AlertState.INSUFFICIENT, w.ts, w, w.avg or 0.0, bound, text, Measure.READING)

    def _without_exempt_hours(self, day: Aggregate) -> tuple[Aggregate, int]:
        """The day as judged without the hours a furnace's marks exempt within its yearly budget
        (``telemetry.marks.judged_day``); a stack's day is the arithmetic mean of its hours."""
        if self.exempt_hour is None or day.window != "1d":
            return day, 0
        end = self.calendar(day.site).end("1d", day.ts)
        hours = [h for h in self._hours.get(key_of(day), []) if day.ts <= h[0] < end]
        marked = [(h[2], h[3], self.exempt_hour(day.point, h[0], h[1])) for h in hours]
        if not any(is_exempt for _, _, is_exempt in marked):
            return day, 0
        day_hours = round((end - day.ts) / HOUR_NS)
        mean, enough, kept, exempt = judged_day(marked, day_hours, self.day_min_valid_hours)
        return replace(day, avg=mean, valid=day.valid and enough, valid_count=kept), exempt

    def _each_window(self, w: Aggregate) -> list[AlertEvent]:
        """A breach of this window is its own alert, keyed and labelled by the window's local
        start; the series' earlier windows' alerts resolve as this one is judged (a violation
        is a fact about its day, not a condition that persists into the next)."""
        series = key_of(w) + "@"
        start = self.calendar(w.site).local(w.ts)
        label = start.date().isoformat() if w.window == "1d" else start.isoformat(timespec="minutes")
        events = [
            replace(
                self._firing.pop(key),
                ts=w.ts,
                state=AlertState.RESOLVED,
                message=f"{w.quantity} {WINDOW_WORDS[w.window]}: {key[len(series) :]} closed (next window {label})",
            )
            for key in [k for k in self._firing if k.startswith(series)]
        ]
        w, exempted = self._without_exempt_hours(w)
        if not w.valid or w.avg is None:
            return [*events, self._insufficient(w)]
        limit = self._breach(w.avg)
        if limit is None:
            return events
        unit = unit_of(w)
        side = "above" if self.rule.above is not None and w.avg > self.rule.above else "below"
        text = (
            f"{w.quantity} {WINDOW_WORDS[w.window]} {label}: {w.avg:g}{unit} {side} limit {limit:g}{unit}"
            f" at {w.site}/{w.device}" + (f" ({exempted} marked hours exempt)" if exempted else "")
        )
        fired = self._event(AlertState.FIRING, w.ts, w, w.avg, limit, text, Measure.READING, window=label)
        self._firing[series + label] = fired
        return [*events, fired]
