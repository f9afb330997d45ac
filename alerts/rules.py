"""Threshold rules on instantaneous values, evaluated on the live stream.

A series (site, device, quantity) that breaches a rule's limit continuously for
the rule's ``for`` duration fires once; it resolves once when a value is back
inside the limit. Time is the readings' own timestamps, so a replay gives the
same events and tests need no clock. Only ``N``-flagged values are judged: a
value measured during calibration or maintenance neither fires nor resolves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from telemetry.config import ThresholdRule
from telemetry.model import AlertEvent, AlertState, Flag, Reading

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str, str]  # rule, site, device, quantity


@dataclass
class _State:
    breach_since: int | None = None
    firing: bool = False


class RulesEngine:
    def __init__(self, rules: Iterable[ThresholdRule]) -> None:
        self._by_quantity: dict[str, list[ThresholdRule]] = {}
        for rule in rules:
            self._by_quantity.setdefault(rule.quantity, []).append(rule)
        self._states: dict[SeriesKey, _State] = {}

    def feed(self, readings: Iterable[Reading]) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for reading in readings:
            for rule in self._by_quantity.get(reading.quantity, ()):
                if reading.flag is not Flag.N or not _matches(rule, reading):
                    continue
                event = self._judge(rule, reading)
                if event is not None:
                    events.append(event)
        return events

    def firing(self) -> list[SeriesKey]:
        return [key for key, state in self._states.items() if state.firing]

    def _judge(self, rule: ThresholdRule, r: Reading) -> AlertEvent | None:
        key = (rule.name, r.site, r.device, r.quantity)
        state = self._states.setdefault(key, _State())
        limit = _breached(rule, r.value)
        if limit is not None:
            if state.breach_since is None:
                state.breach_since = r.ts
            if not state.firing and r.ts - state.breach_since >= rule.for_ * 1e9:
                state.firing = True
                return _event(rule, r, AlertState.FIRING, limit)
            return None
        state.breach_since = None
        if state.firing:
            state.firing = False
            return _event(rule, r, AlertState.RESOLVED, _limit(rule, r.value))
        return None


def _matches(rule: ThresholdRule, r: Reading) -> bool:
    return (rule.site is None or rule.site == r.site) and (rule.device is None or rule.device == r.device)


def _breached(rule: ThresholdRule, value: float) -> float | None:
    """The limit ``value`` breaks, or None."""
    if rule.above is not None and value > rule.above:
        return rule.above
    if rule.below is not None and value < rule.below:
        return rule.below
    return None


def _limit(rule: ThresholdRule, value: float) -> float:
    """The limit a resolved value is judged against (the nearer one for a band)."""
    if rule.above is not None and rule.below is not None:
        return rule.above if abs(value - rule.above) <= abs(value - rule.below) else rule.below
    return rule.above if rule.above is not None else rule.below  # type: ignore[return-value]


def _event(rule: ThresholdRule, r: Reading, state: AlertState, limit: float) -> AlertEvent:
    unit = f" {r.unit}" if r.unit else ""
    if state is AlertState.FIRING:
        side = "above" if rule.above is not None and r.value > rule.above else "below"
        default = f"{r.quantity} {r.value:g}{unit} {side} limit {limit:g}{unit} at {r.site}/{r.device}"
    else:
        default = f"{r.quantity} back to {r.value:g}{unit} (limit {limit:g}{unit}) at {r.site}/{r.device}"
    message = rule.message.format(**r.to_dict(), limit=limit, state=state.value) if rule.message else default
    return AlertEvent(
        ts=r.ts,
        site=r.site,
        rule=rule.name,
        severity=rule.severity,
        state=state,
        message=message,
        value=r.value,
        limit=limit,
        labels={"device": r.device, "quantity": r.quantity, "unit": r.unit},
    )
