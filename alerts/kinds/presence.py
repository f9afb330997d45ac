"""Data presence and quality: silence (``nodata``), a stuck value (``flatline``), a jump
(``rate``), and an analyzer flagged in maintenance for too long."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from alerts.kinds.state import RuleState, key_of, readings, unit_of, values
from alerts.rule_config import FlatlineRule, MaintenanceRule, NodataRule, RateRule
from telemetry.aggregate import MAX_AHEAD_NS
from telemetry.calendar import NS
from telemetry.model import Aggregate, AlertEvent, AlertState, Flag, Measure, Reading


class NodataState(RuleState):
    rule: NodataRule

    def __init__(self, rule: NodataRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._last = self.keep("last", readings())  # the last valid (or held: maintenance) reading
        self._expected = rule.site is not None and rule.device is not None and rule.quantity is not None
        self._now = 0  # the latest tick: a reading stamped ahead of it counts as seen now, no later

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N and r.flag not in self.rule.hold_flags:
            return []
        key = self._series(r)
        previous = self._last.get(key)
        # Device clocks are not trusted: live, a reading is seen when it arrives (the daemon's
        # clock). In a replay, one stamped ahead of the last tick counts as seen at most 5 minutes
        # after it (the skew the aggregator tolerates). Neither ever moves "last seen" back.
        replayed = min(r.ts, self._now + MAX_AHEAD_NS) if self._now else r.ts
        seen = self.now() if self.now is not None else replayed
        if previous is not None and seen < previous[0]:
            return []
        self._last[key] = (seen, r)
        silent = seen - previous[0] if previous is not None else 0  # a resolve says how long it lasted
        return self._judge(key, False, seen, 0, lambda s: self._silence_event(s, seen, r, silent))

    def on_tick(self, now_ns: int) -> list[AlertEvent]:
        self._now = max(self._now, now_ns)
        if self._expected and not self._last:
            rule = self.rule
            placeholder = Reading(now_ns, rule.site or "", rule.device or "", rule.quantity or "", 0.0)
            self._last[key_of(placeholder)] = (now_ns, placeholder)
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
        self._run = self.keep("run", values())  # since when each series has held its value

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        key = key_of(r)
        start, value = self._run.get(key, (r.ts, r.value))
        if abs(r.value - value) > self.rule.epsilon:
            start, value = r.ts, r.value
        self._run[key] = (start, value)
        held = r.ts - start

        def event(state: AlertState) -> AlertEvent:
            if state is AlertState.FIRING:
                minutes = held / NS / 60
                text = f"{r.quantity} at {r.site}/{r.device} stuck at {value:g}{unit_of(r)} for {minutes:.0f} min"
            else:
                text = f"{r.quantity} at {r.site}/{r.device} moving again ({r.value:g}{unit_of(r)})"
            return self._event(state, r.ts, r, r.value, value, text, Measure.HELD)

        return self._judge(key, held >= self.rule.for_ * NS, r.ts, 0, event)


class RateState(RuleState):
    rule: RateRule

    def __init__(self, rule: RateRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._last = self.keep("last", values())  # each series' previous valid reading

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag is not Flag.N:
            return []
        key = key_of(r)
        previous = self._last.get(key)
        self._last[key] = (r.ts, r.value)
        if previous is None or r.ts <= previous[0]:
            return []
        # Over at least a minute: fast polling must not turn measurement noise into "rate".
        per_minute = abs(r.value - previous[1]) / max(1.0, (r.ts - previous[0]) / NS / 60)
        bound = self.rule.max_per_minute

        def event(state: AlertState) -> AlertEvent:
            verb = "changing" if state is AlertState.FIRING else "steady again:"
            text = f"{r.quantity} at {r.site}/{r.device} {verb} {per_minute:.3g}{unit_of(r)}/min (bound {bound:g})"
            return self._event(state, r.ts, r, per_minute, bound, text, Measure.PER_MINUTE)

        return self._judge(key, per_minute > bound, r.ts, 0, event)


class MaintenanceState(RuleState):
    """Each quantity's own time under a maintenance flag; a reading clears only its own quantity
    (a device that flags COD ``C`` beside an ``N``-flagged flow is still in maintenance). Without a
    ``quantity`` the rule judges the device: its longest-flagged quantity."""

    rule: MaintenanceRule

    def __init__(self, rule: MaintenanceRule, zones: Mapping[str, str]) -> None:
        super().__init__(rule, zones)
        self._flagged = self.keep("flagged", readings())  # site/device/quantity -> (since, reading)

    def on_reading(self, r: Reading) -> list[AlertEvent]:
        if r.flag in self.rule.flags:
            self._flagged.setdefault(key_of(r), (r.ts, r))
            return self._verdict(self._series(r), r.ts, r)
        cleared = self._flagged.pop(key_of(r), None)
        return self._verdict(self._series(r), r.ts, r, cleared[0] if cleared else None)

    def on_tick(self, now_ns: int) -> list[AlertEvent]:
        events = []
        for key in {self._series(r) for _, r in self._flagged.values()}:
            events += self._verdict(key, now_ns, None)
        return events

    def _verdict(self, key: str, ts: int, reading: Reading | None, cleared: int | None = None) -> list[AlertEvent]:
        """The rule's series (a quantity, or the device) against ``for``: held as long as its
        longest-flagged quantity; once none is flagged, a resolve says how long the flag lasted
        (since ``cleared``, when the reading that ended it is the one judged)."""
        if self._device_wide:
            flagged = [(since, r) for k, (since, r) in self._flagged.items() if k.startswith(key + "/")]
        else:  # a quantity's own key: one lookup, not a scan on every reading
            flagged = [self._flagged[key]] if key in self._flagged else []
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
