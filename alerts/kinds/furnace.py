"""The furnace temperature rule: clock-aligned window means below 850 degC, counted per
natural day (DOMAIN-incinerator.md A1, A2; rule ``incin.furnace_temp_5min``).

Each window (``5m``: hh:00, hh:05, ... on the site's clock) holds the mean of the valid
representative temperatures sampled in it; a window without one is not judged (silence is
``nodata``'s). A window whose mean is below ``min`` while the furnace is not marked as
starting up, shutting down or stopped (``exempt``) is one event. Per series and local
day: the first event fires ``first`` (warning), the ``max_events_per_day``-th fires
``last_allowed`` (warning), the one after fires ``violation`` (critical). Each is one alert
of that day, resolved once the day has ended; the count starts again at midnight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from alerts.kinds.state import RuleState, key_of
from alerts.rule_config import FurnaceTemperatureRule
from telemetry.calendar import NS
from telemetry.model import AlertEvent, AlertState, Flag, Measure, Reading


def _never_exempt(site: str, device: str, start: int, end: int) -> bool:
    return False


class FurnaceState(RuleState):
    rule: FurnaceTemperatureRule

    def __init__(self, rule: FurnaceTemperatureRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._open: dict[str, list[Any]] = {}  # series -> [start, end, total, count, reading dict]
        self._days: dict[str, list[Any]] = {}  # series -> [local day, events, day end (ns)]
        self._judged: dict[str, int] = {}  # series -> end of its last judged window (event time: not shifted)
        # Whether a furnace's marks exempt (site, device) from start to end (``telemetry.marks``).
        self.exempt: Callable[[str, str, int, int], bool] = _never_exempt

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        key = key_of(r)
        events: list[AlertEvent] = []
        current = self._open.get(key)
        if current is not None and r.ts >= current[1]:
            events += self._close(key, self._open.pop(key))
            current = None
        if r.flag is not Flag.N:
            return events
        if r.ts < self._judged.get(key, 0) or (current is not None and r.ts < current[0]):
            self.counts["late"] += 1  # its window was judged already: never judged (counted) twice
            return events
        if current is None:
            cal = self.calendar(r.site)
            start = cal.start(self.rule.window, r.ts)
            current = self._open[key] = [start, cal.end(self.rule.window, start), 0.0, 0, r.to_dict()]
        current[2] += r.value
        current[3] += 1
        current[4] = r.to_dict()
        return events

    def on_tick(self, now_ns: int) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        grace = int(self.rule.grace * NS)
        for key in [k for k, w in self._open.items() if w[1] + grace <= now_ns]:
            events += self._close(key, self._open.pop(key))
        for key in [k for k, d in self._days.items() if d[2] + grace <= now_ns]:
            events += self._end_day(key, now_ns)
        return events

    def _close(self, key: str, window: list[Any]) -> list[AlertEvent]:
        start, end, total, count, last = window
        self._judged[key] = max(end, self._judged.get(key, 0))
        item = Reading.from_dict(last)
        mean = total / count
        cal = self.calendar(item.site)
        day = cal.local(start).date().isoformat()
        events: list[AlertEvent] = []
        if key in self._days and self._days[key][0] != day:
            events += self._end_day(key, start)
        if mean >= self.rule.min or self.exempt(item.site, item.device, start, end):
            return events
        record = self._days.setdefault(key, [day, 0, cal.end("1d", cal.start("1d", start))])
        record[1] += 1
        n = record[1]
        allowed = self.rule.max_events_per_day
        at = cal.local(start).strftime("%H:%M")
        text = (
            f"{item.quantity} {self.rule.window} mean {mean:.1f} {item.unit} below {self.rule.min:g} at {at}:"
            f" event {n} of {allowed} allowed on {day}, at {item.site}/{item.device}"
        )
        conditions = (["first"] if n == 1 else []) + (["last_allowed"] if n == allowed else [])
        conditions += ["violation"] if n == allowed + 1 else []
        for condition in conditions:
            fired = self._event(
                AlertState.FIRING,
                start,
                item,
                mean,
                self.rule.min,
                text,
                Measure.READING,
                window=day,
                condition=condition,
            )
            if condition == "violation":
                fired = replace(fired, severity=self.rule.violation_severity)
            self._firing[f"{key}@{day}/{condition}"] = fired
            events.append(fired)
        return events

    def _end_day(self, key: str, ts: int) -> list[AlertEvent]:
        day, n, _ = self._days.pop(key)
        prefix = f"{key}@{day}/"
        text = f"day {day} ended with {n} {self.rule.window} means below {self.rule.min:g}"
        return [
            replace(self._firing.pop(k), ts=ts, state=AlertState.RESOLVED, message=text)
            for k in [k for k in self._firing if k.startswith(prefix)]
        ]

    def events_today(self, now_ns: int) -> dict[tuple[str, str, str], int]:
        """Per series this rule has seen: its events counted on the local day holding ``now_ns``."""
        out: dict[tuple[str, str, str], int] = {}
        for window in self._open.values():
            item = Reading.from_dict(window[4])
            out[(item.site, item.device, item.quantity)] = 0
        for key, (day, n, _) in self._days.items():
            site, device, quantity = key.split("/", 2)
            if self.calendar(site).local(now_ns).date().isoformat() == day:
                out[(site, device, quantity)] = n
            else:
                out.setdefault((site, device, quantity), 0)
        return out

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "open": self._open, "days": self._days, "judged": self._judged}

    def load(self, data: Mapping[str, Any]) -> None:
        super().load(data)
        self._open = {k: list(v) for k, v in data.get("open", {}).items()}
        self._days = {k: list(v) for k, v in data.get("days", {}).items()}
        self._judged = {k: int(v) for k, v in data.get("judged", {}).items()}
