"""One class per rule kind, each keeping its per-series state.

Every kind reports transitions through ``RuleState._judge``: a condition that
holds (for ``for`` seconds) fires once, and resolves once when it stops holding.
A window too thin to judge yields an ``insufficient_data`` record, never a breach.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from telemetry.calendar import NS, Calendar, calendar
from telemetry.model import Aggregate, AlertEvent, AlertState, Flag, Measure, Reading
from telemetry.rule_config import (
    CapacityRule,
    EvaluatedRule,
    FlatlineRule,
    LimitRule,
    MaintenanceRule,
    NodataRule,
    RateRule,
    StockRule,
)

log = logging.getLogger(__name__)

WINDOW_WORDS = {"1m": "minute mean", "1h": "hourly mean", "1d": "daily mean"}


def _no_point(item: Reading | Aggregate) -> str:
    return ""


def _no_count(stage: str, error_type: str) -> None:
    return None


class RuleState:
    def __init__(self, rule: Any, zones: Mapping[str, str]) -> None:
        self.rule = rule
        self._calendars = {site: calendar(zone) for site, zone in zones.items()}
        self._firing: dict[str, AlertEvent] = {}
        self._since: dict[str, int] = {}
        self._clear_since: dict[str, int] = {}
        self.point_of: Callable[[Reading | Aggregate], str] = _no_point  # the engine knows the points
        self.count_error: Callable[[str, str], None] = _no_count  # (stage, error_type): the engine's metrics
        self._message_failed = False
        self.counts: Counter[str] = Counter()  # data this rule adjusted or ignored, by reason (metrics)

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        return []

    def on_window(self, w: Aggregate) -> list[AlertEvent]:
        return []

    def on_tick(self, now_ns: int) -> list[AlertEvent]:
        return []

    def firing_keys(self) -> list[str]:
        return list(self._firing)

    def shift(self, delta_ns: int) -> None:
        """The host clock stepped by ``delta_ns``: move the times this state measures from
        with it, so the step neither counts as time held or silent nor takes time away."""
        self._since = {k: t + delta_ns for k, t in self._since.items()}
        self._clear_since = {k: t + delta_ns for k, t in self._clear_since.items()}

    def _judge(
        self, key: str, breached: bool, ts: int, for_s: float, event: Callable[[AlertState], AlertEvent]
    ) -> list[AlertEvent]:
        if breached:
            self._clear_since.pop(key, None)
            since = self._since.setdefault(key, ts)
            if key not in self._firing and ts - since >= for_s * NS:
                self._firing[key] = fired = event(AlertState.FIRING)
                return [fired]
            return []
        self._since.pop(key, None)
        if key in self._firing:
            clear_since = self._clear_since.setdefault(key, ts)
            if ts - clear_since < self.rule.keep_firing_for * NS:
                return []  # keep-firing-for: a brief dip does not resolve (and re-fire)
            del self._firing[key]
            self._clear_since.pop(key, None)
            return [event(AlertState.RESOLVED)]
        return []

    def dump(self) -> dict[str, Any]:
        """State to survive a restart; subclasses add theirs."""
        return {
            "firing": {k: e.to_dict() for k, e in self._firing.items()},
            "since": self._since,
            "clear_since": self._clear_since,
        }

    def load(self, data: Mapping[str, Any]) -> None:
        self._firing = {k: AlertEvent.from_dict(e) for k, e in data.get("firing", {}).items()}
        self._since = {k: int(v) for k, v in data.get("since", {}).items()}
        self._clear_since = {k: int(v) for k, v in data.get("clear_since", {}).items()}

    def _event(
        self,
        state: AlertState,
        ts: int,
        item: Reading | Aggregate,
        value: float,
        limit: float,
        default: str,
        measure: Measure,
        **labels: str,
    ) -> AlertEvent:
        """``measure`` says what ``value`` and ``limit`` are (a duration, a fraction, ...), so a
        notification renders each with its own unit."""
        fields = {"site": item.site, "device": item.device, "quantity": item.quantity, "unit": item.unit}
        message, templated = self._message(default, **fields, **labels, value=value, limit=limit, state=state.value)
        point = item.point if isinstance(item, Aggregate) else self.point_of(item)
        return AlertEvent(
            ts=ts,
            site=item.site,
            rule=self.rule.name,
            severity=self.rule.severity,
            state=state,
            message=message,
            value=value,
            limit=limit,
            labels={**self._identity(item), **({"point": point} if point else {}), **labels},
            measure=measure,
            templated=templated,
        )

    def _identity(self, item: Reading | Aggregate) -> dict[str, str]:
        """The labels that identify the alert: the rule's own key, the same for its firing and its
        resolve. A rule that watches a device as a whole (``nodata`` or ``maintenance_too_long``
        without a quantity) leaves the quantity out: whichever reading fired it or resolved it,
        it is one alert."""
        if getattr(self.rule, "quantity", ...) is None:
            return {"device": item.device}
        return {"device": item.device, "quantity": item.quantity, "unit": item.unit}

    def _message(self, default: str, **fields: Any) -> tuple[str, bool]:
        """The rule's ``message`` template filled in, or the kind's own text without one.

        ``telemetry check`` refuses a template that cannot be filled in; one that fails
        anyway (a rule built without the check) falls back to the default text, is counted
        and logged once per rule: an alert must never take the committer down with it. The
        flag says whether the text is the template's."""
        template = self.rule.message
        if not template:
            return default, False
        try:
            return str(template.format(**fields)), True
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as err:
            self.count_error("message", "template")
            level = logging.DEBUG if self._message_failed else logging.ERROR
            self._message_failed = True
            log.log(level, "rule %s: message %r failed (%r); sent the default text", self.rule.name, template, err)
            return default, False

    def calendar(self, site: str) -> Calendar:
        return self._calendars.get(site) or calendar()


def _key(item: Reading | Aggregate, *extra: str) -> str:
    return "/".join((item.site, item.device, item.quantity, *extra))


def _unit(item: Reading | Aggregate) -> str:
    return f" {item.unit}" if item.unit else ""


class LimitState(RuleState):
    rule: LimitRule

    def __init__(self, rule: LimitRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._recent: dict[str, deque[tuple[int, float]]] = {}

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
        unit = _unit(item)
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
        return {**super().dump(), "recent": {k: list(v) for k, v in self._recent.items()}}

    def load(self, data: Mapping[str, Any]) -> None:
        super().load(data)
        self._recent = {k: deque((int(t), float(v)) for t, v in d) for k, d in data.get("recent", {}).items()}

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        if self.rule.window == "instant":
            return self._verdict(_key(r), r.value, r.ts, r, "")
        span = self.rule.rolling_s
        if span is None:
            return []
        recent = self._recent.setdefault(_key(r), deque())
        recent.append((r.ts, r.value))
        while recent and recent[0][0] <= r.ts - span * NS:
            recent.popleft()
        mean = sum(v for _, v in recent) / len(recent)
        return self._verdict(_key(r), mean, r.ts, r, f"{self.rule.window} mean ")

    def on_window(self, w: Aggregate) -> list[AlertEvent]:
        if w.window != self.rule.window:
            return []
        if not w.valid or w.avg is None:
            bound = self._nearest(w.avg if w.avg is not None else 0.0)
            text = (
                f"{w.quantity} {WINDOW_WORDS[w.window]}: insufficient valid data "
                f"({w.valid_count} of {w.count} values valid, window flag {w.flag.value}); not judged"
            )
            return [self._event(AlertState.INSUFFICIENT, w.ts, w, w.avg or 0.0, bound, text, Measure.READING)]
        return self._verdict(_key(w), w.avg, w.ts, w, WINDOW_WORDS[w.window] + " ")


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
                f"{r.quantity} at {r.site}: {r.value:g}{_unit(r)} is {fraction:.0%}"
                f" of {self.rule.capacity:g}, {verb} {limit:.0%}"
            )
            return self._event(state, r.ts, r, fraction, limit, text, Measure.FRACTION)

        return self._judge(_key(r), fraction > limit, r.ts, self.rule.for_, event)


class NodataState(RuleState):
    rule: NodataRule

    def __init__(self, rule: NodataRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._last: dict[str, tuple[int, Reading]] = {}
        self._expected = rule.site is not None and rule.device is not None and rule.quantity is not None

    def _series(self, r: Reading) -> str:
        return _key(r) if self.rule.quantity is not None else f"{r.site}/{r.device}"

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "last": {k: [t, item.to_dict()] for k, (t, item) in self._last.items()}}

    def load(self, data: Mapping[str, Any]) -> None:
        super().load(data)
        self._last = {k: (int(t), Reading.from_dict(d)) for k, (t, d) in data.get("last", {}).items()}

    def shift(self, delta_ns: int) -> None:
        super().shift(delta_ns)
        self._last = {k: (t + delta_ns, item) for k, (t, item) in self._last.items()}

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        key = self._series(r)
        previous = self._last.get(key)
        self._last[key] = (r.ts, r)
        silent = r.ts - previous[0] if previous is not None else 0  # a resolve says how long it lasted
        return self._judge(key, False, r.ts, 0, lambda s: self._silence_event(s, r.ts, r, silent))

    def on_tick(self, now_ns: int) -> list[AlertEvent]:
        if self._expected and not self._last:
            rule = self.rule
            placeholder = Reading(now_ns, rule.site or "", rule.device or "", rule.quantity or "", 0.0)
            self._last[_key(placeholder)] = (now_ns, placeholder)
        events = []
        for key, (last, item) in self._last.items():
            silent = now_ns - last
            events += self._judge(
                key,
                silent > self.rule.for_ * NS,
                now_ns,
                0,
                partial(self._silence_event, ts=now_ns, item=item, silent=silent),
            )
        return events

    def _silence_event(self, state: AlertState, ts: int, item: Reading | Aggregate, silent: int) -> AlertEvent:
        what = item.quantity if self.rule.quantity is not None else "any quantity"
        if state is AlertState.FIRING:
            text = f"no valid {what} from {item.site}/{item.device} for {silent / NS / 60:.0f} min"
        else:
            text = f"{what} from {item.site}/{item.device} reporting again"
        return self._event(state, ts, item, max(silent, 0) / NS, self.rule.for_, text, Measure.SILENCE)


class FlatlineState(RuleState):
    rule: FlatlineRule

    def __init__(self, rule: FlatlineRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._run: dict[str, tuple[int, float]] = {}

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "run": self._run}

    def load(self, data: Mapping[str, Any]) -> None:
        super().load(data)
        self._run = {k: (int(t), float(v)) for k, (t, v) in data.get("run", {}).items()}

    def shift(self, delta_ns: int) -> None:
        super().shift(delta_ns)
        self._run = {k: (t + delta_ns, v) for k, (t, v) in self._run.items()}

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        key = _key(r)
        start, value = self._run.get(key, (r.ts, r.value))
        if abs(r.value - value) > self.rule.epsilon:
            start, value = r.ts, r.value
        self._run[key] = (start, value)
        held = r.ts - start

        def event(state: AlertState) -> AlertEvent:
            if state is AlertState.FIRING:
                minutes = held / NS / 60
                text = f"{r.quantity} at {r.site}/{r.device} stuck at {value:g}{_unit(r)} for {minutes:.0f} min"
            else:
                text = f"{r.quantity} at {r.site}/{r.device} moving again ({r.value:g}{_unit(r)})"
            return self._event(state, r.ts, r, r.value, value, text, Measure.HELD)

        return self._judge(key, held >= self.rule.for_ * NS, r.ts, 0, event)


class RateState(RuleState):
    rule: RateRule

    def __init__(self, rule: RateRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._last: dict[str, tuple[int, float]] = {}

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "last": self._last}

    def load(self, data: Mapping[str, Any]) -> None:
        super().load(data)
        self._last = {k: (int(t), float(v)) for k, (t, v) in data.get("last", {}).items()}

    def shift(self, delta_ns: int) -> None:
        super().shift(delta_ns)
        self._last = {k: (t + delta_ns, v) for k, (t, v) in self._last.items()}

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        key = _key(r)
        previous = self._last.get(key)
        self._last[key] = (r.ts, r.value)
        if previous is None or r.ts <= previous[0]:
            return []
        # Over at least a minute: fast polling must not turn measurement noise into "rate".
        per_minute = abs(r.value - previous[1]) / max(1.0, (r.ts - previous[0]) / NS / 60)
        bound = self.rule.max_per_minute

        def event(state: AlertState) -> AlertEvent:
            verb = "changing" if state is AlertState.FIRING else "steady again:"
            text = f"{r.quantity} at {r.site}/{r.device} {verb} {per_minute:.3g}{_unit(r)}/min (bound {bound:g})"
            return self._event(state, r.ts, r, per_minute, bound, text, Measure.PER_MINUTE)

        return self._judge(key, per_minute > bound, r.ts, 0, event)


class MaintenanceState(RuleState):
    """Each quantity's own time under a maintenance flag; a reading clears only its own quantity
    (a device that flags COD ``C`` beside an ``N``-flagged flow is still in maintenance). Without a
    ``quantity`` the rule judges the device: its longest-flagged quantity."""

    rule: MaintenanceRule

    def __init__(self, rule: MaintenanceRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._flagged: dict[str, tuple[int, Reading]] = {}  # site/device/quantity -> (since, reading)

    def dump(self) -> dict[str, Any]:
        return {**super().dump(), "flagged": {k: [t, r.to_dict()] for k, (t, r) in self._flagged.items()}}

    def load(self, data: Mapping[str, Any]) -> None:
        super().load(data)
        self._flagged = {k: (int(t), Reading.from_dict(d)) for k, (t, d) in data.get("flagged", {}).items()}

    def shift(self, delta_ns: int) -> None:
        super().shift(delta_ns)
        self._flagged = {k: (t + delta_ns, r) for k, (t, r) in self._flagged.items()}

    def _judged(self, r: Reading) -> str:
        return _key(r) if self.rule.quantity is not None else f"{r.site}/{r.device}"

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag in self.rule.flags:
            self._flagged.setdefault(_key(r), (r.ts, r))
            return self._verdict(self._judged(r), r.ts, r)
        cleared = self._flagged.pop(_key(r), None)
        return self._verdict(self._judged(r), r.ts, r, cleared[0] if cleared else None)

    def on_tick(self, now_ns: int) -> list[AlertEvent]:
        events = []
        for key in {self._judged(r) for _, r in self._flagged.values()}:
            events += self._verdict(key, now_ns, None)
        return events

    def _verdict(self, key: str, ts: int, reading: Reading | None, cleared: int | None = None) -> list[AlertEvent]:
        """The rule's series (a quantity, or the device) against ``for``: held as long as its
        longest-flagged quantity; once none is flagged, a resolve says how long the flag lasted
        (since ``cleared``, when the reading that ended it is the one judged)."""
        flagged = [(since, r) for k, (since, r) in self._flagged.items() if k == key or k.startswith(key + "/")]
        since, r = min(flagged, key=lambda f: f[0]) if flagged else (cleared if cleared is not None else ts, reading)
        if r is None:
            return []
        held = ts - since

        def event(state: AlertState) -> AlertEvent:
            if state is AlertState.FIRING:
                names = ", ".join(sorted({q.quantity for _, q in flagged}))
                text = f"{r.site}/{r.device} {names} flagged {r.flag.value} for {held / NS / 3600:.1f} h"
            else:
                text = f"{r.site}/{r.device} back to normal"
            return self._event(state, ts, r, max(held, 0) / NS, self.rule.for_, text, Measure.FLAGGED)

        return self._judge(key, bool(flagged) and held >= self.rule.for_ * NS, ts, 0, event)


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


KINDS: dict[str, type[RuleState]] = {
    "limit": LimitState,
    "stock": StockState,
    "nodata": NodataState,
    "flatline": FlatlineState,
    "rate": RateState,
    "maintenance_too_long": MaintenanceState,
    "capacity": CapacityState,
}

__all__ = ["KINDS", "EvaluatedRule", "RuleState"]
