"""Capacity: a day's throughput against design, and a stock (a regulating pond) against its volume."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alerts.kinds.state import RuleState, key_of, unit_of
from alerts.rule_config import CapacityRule, StockRule
from telemetry.calendar import NS
from telemetry.model import AlertEvent, AlertState, Flag, Measure, Reading


class StockState(RuleState):
    rule: StockRule

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        fraction = r.value / self.rule.capacity
        limit = self.rule.above_fraction

        def event(state: AlertState) -> AlertEvent:
            verb = "above" if state is AlertState.FIRING else "back under"
            text = (
                f"{r.quantity} at {r.site}: {r.value:g}{unit_of(r)} is {fraction:.0%}"
                f" of {self.rule.capacity:g}, {verb} {limit:.0%}"
            )
            return self._event(state, r.ts, r, fraction, limit, text, Measure.FRACTION)

        return self._judge(key_of(r), fraction > limit, r.ts, self.rule.for_, event)


class _Day:
    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.total = 0.0
        self.last: tuple[int, float] | None = None
        self.item: Reading | None = None


class CapacityState(RuleState):
    """Daily totals: a rate integrated over time, or a totalizer's increments, per local plant
    day (23 or 25 hours on DST days); judged at the day's end, projected during it.

    A totalizer that reads lower than before: a step back of at most ``jitter`` (1 % of
    ``design``) is jitter, ignored, the old value staying the baseline so nothing counts
    twice; from within ``reset_below`` (``design``: one day's worth) of the top of a counter
    that wraps (``rollover``) to within it of zero, the wrap; a drop to at most
    ``reset_below``, a reset (the new value is what it counted since); any other drop, a
    replaced or re-set meter, counted from its new value on. Each is counted
    (``telemetry_totalizer_steps_total``); adding the whole counter reading to a day made
    "today ends at 750,239 t of 750 t" out of 0.1 t of jitter.
    """

    rule: CapacityRule

    def __init__(self, rule: CapacityRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._days: dict[str, _Day] = {}

    def dump(self) -> dict[str, Any]:
        days = {
            k: [d.start, d.total, list(d.last) if d.last else None, d.item.to_dict() if d.item else None, d.end]
            for k, d in self._days.items()
        }
        return {**super().dump(), "days": days}

    def load(self, data: Mapping[str, Any]) -> None:
        super().load(data)
        self._days = {}
        for key, (start, total, last, item, *end) in data.get("days", {}).items():
            site = key.split("/", 1)[0]
            day = self._days[key] = _Day(int(start), int(end[0]) if end else self.calendar(site).day_end(int(start)))
            day.total = float(total)
            day.last = (int(last[0]), float(last[1])) if last else None
            day.item = Reading.from_dict(item) if item else None

    def shift(self, delta_ns: int) -> None:
        super().shift(delta_ns)  # day boundaries stay on the calendar; the last sample moves
        for day in self._days.values():
            if day.last is not None:
                day.last = (day.last[0] + delta_ns, day.last[1])

    @property
    def _over(self) -> float:
        return self.rule.design * self.rule.over_percent / 100

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        key = f"{r.site}/{r.device}"
        cal = self.calendar(r.site)
        start = cal.day_start(r.ts)
        day = self._days.get(key)
        events: list[AlertEvent] = []
        carry = None
        if day is not None and start > day.start:
            events += self._close(key, day)
            carry = day.last
            day = None
        if day is not None and start < day.start:
            return events  # a reading of a day already judged
        if day is None:
            day = self._days[key] = _Day(start, cal.day_end(start))
            day.last = carry if self.rule.source == "totalizer" else None
        self._accumulate(day, r)
        day.item = r
        elapsed = r.ts - day.start
        if elapsed >= self.rule.project_after * NS:
            projected = day.total * (day.end - day.start) / elapsed
            events += self._judge(
                key + "/projection",
                projected > self._over,
                r.ts,
                0,
                lambda s: self._capacity_event(s, r.ts, r, projected, "projection", day.total),
            )
        return events

    def _accumulate(self, day: _Day, r: Reading) -> None:
        last = day.last
        day.last = (r.ts, r.value)
        if last is None:
            return
        if self.rule.source == "rate":
            hours = (r.ts - last[0]) / NS / 3600
            if 0 < hours * 3600 <= self.rule.max_gap:
                day.total += (last[1] + r.value) / 2 * hours  # trapezoid: t/h x h = t
            return
        old, new = last[1], r.value
        if new >= old:
            day.total += new - old
            return
        rule = self.rule
        near = rule.reset_below if rule.reset_below is not None else rule.design
        jitter = rule.jitter if rule.jitter is not None else rule.design * 0.01
        if old - new <= jitter:
            self.counts["jitter"] += 1
            day.last = last  # the old reading stays the baseline: the step back is not counted again
        elif rule.rollover and rule.rollover - old <= near and new <= near:
            self.counts["rollover"] += 1
            day.total += new + rule.rollover - old
        elif new <= near:
            self.counts["reset"] += 1
            day.total += max(new, 0.0)
        else:
            self.counts["rebase"] += 1  # a replaced or re-set meter: count on from its new value

    def on_tick(self, now_ns: int) -> list[AlertEvent]:
        events = []
        for key, day in list(self._days.items()):
            if day.end + self.rule.grace * NS <= now_ns:
                events += self._close(key, day)
                del self._days[key]
        return events

    def _close(self, key: str, day: _Day) -> list[AlertEvent]:
        item = day.item
        if item is None:
            return []
        end = day.end
        total = day.total
        events = self._judge(
            key + "/projection",
            False,
            end,
            0,
            lambda s: self._capacity_event(s, end, item, total, "projection", total),
        )
        events += self._judge(
            key + "/overload",
            total > self._over,
            end,
            0,
            lambda s: self._capacity_event(s, end, item, total, "overload", total),
        )
        if self.rule.under_percent is not None:
            floor = self.rule.design * self.rule.under_percent / 100
            events += self._judge(
                key + "/underuse",
                total < floor,
                end,
                0,
                lambda s: self._capacity_event(s, end, item, total, "underuse", total),
            )
        return events

    def _capacity_event(
        self, state: AlertState, ts: int, r: Reading, value: float, condition: str, so_far: float
    ) -> AlertEvent:
        design = self.rule.design
        unit = (r.unit.split("/")[0] if r.unit else "").strip()
        u = f" {unit}" if unit else ""
        if condition == "projection":
            text = (
                f"{r.site}/{r.device}: at this rate today ends at {value:.0f}{u} of {design:g}{u}"
                f" ({so_far:.0f}{u} so far)"
                if state is AlertState.FIRING
                else f"{r.site}/{r.device}: projection back within design ({value:.0f}{u} of {design:g}{u})"
            )
            limit = self._over
        elif condition == "overload":
            text = f"{r.site}/{r.device}: {value:.0f}{u} today, {value / design:.0%} of design {design:g}{u}"
            limit = self._over
        else:
            limit = design * (self.rule.under_percent or 0) / 100
            share = f"{value / design:.0%} of design {design:g}{u}"
            text = f"{r.site}/{r.device}: only {value:.0f}{u} today, {share}"
        if state is AlertState.RESOLVED and condition != "projection":
            text = f"{r.site}/{r.device}: {value:.0f}{u} today, within design {design:g}{u}"
        return self._event(state, ts, r, value, limit, text, Measure.DAY_TOTAL, condition=condition)
