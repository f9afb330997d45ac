"""Threshold rules: one firing and one resolved per excursion, judged on reading time."""

from __future__ import annotations

from typing import Any

from alerts.rules import RulesEngine
from telemetry.config import ThresholdRule
from telemetry.model import AlertState, Flag, Reading

S = 1_000_000_000


def rule(**kw: Any) -> ThresholdRule:
    base: dict[str, Any] = {"name": "cod_limit", "quantity": "cod", "above": 100, "severity": "critical"}
    return ThresholdRule.model_validate(base | kw)


def r(t: float, value: float, flag: Flag = Flag.N, site: str = "s", quantity: str = "cod") -> Reading:
    return Reading(
        ts=int(t * S), site=site, device="an", quantity=quantity, value=value, unit="mg/L", flag=flag
    )


def test_breach_fires_once_and_resolves_once() -> None:
    engine = RulesEngine([rule()])
    events = engine.feed([r(0, 50), r(1, 120), r(2, 130), r(3, 125), r(4, 90), r(5, 80)])
    assert [(e.state, e.value) for e in events] == [(AlertState.FIRING, 120), (AlertState.RESOLVED, 90)]
    assert events[0].limit == 100
    assert events[0].severity == "critical"
    assert "cod 120 mg/L above limit 100 mg/L" in events[0].message


def test_for_duration_ignores_short_spikes() -> None:
    engine = RulesEngine([rule(**{"for": "30s"})])
    assert engine.feed([r(0, 150), r(10, 150), r(20, 90)]) == []  # 20 s spike: nothing
    events = engine.feed([r(30, 150), r(50, 150), r(60, 150), r(70, 150)])
    assert [(e.state, e.ts) for e in events] == [(AlertState.FIRING, 60 * S)]


def test_value_at_the_limit_is_not_a_breach() -> None:
    assert RulesEngine([rule()]).feed([r(0, 100.0)]) == []


def test_below_and_band() -> None:
    engine = RulesEngine([rule(name="ph", quantity="ph", above=9, below=6)])
    events = engine.feed([r(0, 7, quantity="ph"), r(1, 5.5, quantity="ph"), r(2, 7, quantity="ph")])
    assert [(e.state, e.limit) for e in events] == [(AlertState.FIRING, 6), (AlertState.RESOLVED, 6)]
    assert "below limit 6" in events[0].message


def test_calibration_values_neither_fire_nor_resolve() -> None:
    engine = RulesEngine([rule()])
    assert engine.feed([r(0, 500, Flag.C), r(1, 500, Flag.M)]) == []
    engine.feed([r(2, 150)])
    assert engine.feed([r(3, 10, Flag.C)]) == []  # a calibration zero does not clear a real breach
    assert [e.state for e in engine.feed([r(4, 10)])] == [AlertState.RESOLVED]


def test_series_are_independent_and_site_filter_applies() -> None:
    engine = RulesEngine([rule(site="a")])
    events = engine.feed([r(0, 150, site="a"), r(0, 150, site="b"), r(1, 150, site="a")])
    assert [(e.site, e.state) for e in events] == [("a", AlertState.FIRING)]


def test_custom_message_template() -> None:
    engine = RulesEngine([rule(message="{site} COD {value:.0f} > {limit:g}")])
    [event] = engine.feed([r(0, 123.4)])
    assert event.message == "s COD 123 > 100"
