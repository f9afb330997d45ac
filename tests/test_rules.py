"""Rule kinds: each fires and resolves at exactly the reading, window or tick expected."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from alerts.rule_config import EvaluatedRule, RuleConfig, StandardRule, expand_standard
from alerts.rules import RulesEngine
from telemetry.aggregate import Aggregator
from telemetry.calendar import NS
from telemetry.model import AlertEvent, AlertState, Flag, Reading

BJ = timezone(timedelta(hours=8))
STANDARDS = Path(__file__).resolve().parents[1] / "config" / "standards"
ZONES = {"s": "Asia/Shanghai"}


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=BJ).timestamp()) * NS


def rule(**kw: Any) -> EvaluatedRule:
    parsed = TypeAdapter(RuleConfig).validate_python({"name": "r", "severity": "critical"} | kw)
    assert not isinstance(parsed, StandardRule)
    return parsed


def r(
    t: float, value: float, flag: Flag = Flag.N, quantity: str = "cod", device: str = "an", unit: str = "mg/L"
) -> Reading:
    return Reading(ts=int(t * NS), site="s", device=device, quantity=quantity, value=value, unit=unit, flag=flag)


def states(events: list[AlertEvent]) -> list[tuple[str, float]]:
    return [(e.state.value, e.ts / NS) for e in events]


# -- instant and rolling limits ---------------------------------------------------------------


def test_instant_limit_fires_once_and_resolves_once() -> None:
    engine = RulesEngine([rule(kind="limit", quantity="cod", above=100)])
    events = engine.feed([r(0, 50), r(1, 120), r(2, 130), r(3, 125), r(4, 90), r(5, 80)])
    assert states(events) == [("firing", 1), ("resolved", 4)]
    assert events[0].limit == 100
    assert "cod 120 mg/L above limit 100 mg/L at s/an" in events[0].message


def test_for_duration_ignores_short_spikes() -> None:
    engine = RulesEngine([rule(kind="limit", quantity="cod", above=100, **{"for": "30s"})])
    assert engine.feed([r(0, 150), r(10, 150), r(20, 90)]) == []
    assert states(engine.feed([r(30, 150), r(50, 150), r(60, 150), r(70, 150)])) == [("firing", 60)]


def test_calibration_values_neither_fire_nor_resolve() -> None:
    engine = RulesEngine([rule(kind="limit", quantity="cod", above=100)])
    assert engine.feed([r(0, 500, Flag.C), r(1, 500, Flag.M)]) == []
    engine.feed([r(2, 150)])
    assert engine.feed([r(3, 10, Flag.C)]) == []
    assert states(engine.feed([r(4, 10)])) == [("resolved", 4)]


def test_band_and_rolling_mean() -> None:
    band = RulesEngine([rule(kind="limit", quantity="ph", above=9, below=6)])
    events = band.feed([r(0, 7, quantity="ph"), r(1, 5.5, quantity="ph"), r(2, 7, quantity="ph")])
    assert [(e.state.value, e.limit) for e in events] == [("firing", 6), ("resolved", 6)]
    rolling = RulesEngine([rule(kind="limit", quantity="cod", above=100, window="rolling 3m")])
    # Means over the last 3 minutes: 90, 105 (fires), 110, 100.3 (still above? no: 100.33 > 100), 95 (resolves).
    events = rolling.feed([r(0, 90), r(60, 120), r(120, 120), r(180, 61), r(240, 104)])
    assert states(events) == [("firing", 60), ("resolved", 240)]


# -- window limits through the aggregator ---------------------------------------------------------


def hourly(values: list[tuple[float, Flag]], hours_start: int) -> list[Reading]:
    out = []
    for h, (value, flag) in enumerate(values):
        for m in range(60):
            out.append(Reading(hours_start + (h * 3600 + m * 60 + 5) * NS, "s", "an", "cod", value, "mg/L", flag))
    return out


def run_windows(readings: list[Reading], rules: list[EvaluatedRule], until: int) -> list[AlertEvent]:
    aggregator = Aggregator(ZONES, windows=("1h", "1d"), grace_s=60)
    engine = RulesEngine(rules, ZONES)
    events: list[AlertEvent] = []
    for reading in readings:
        events += engine.on_windows(aggregator.advance(reading.ts))
        aggregator.add([reading])
        events += engine.feed([reading])
    events += engine.on_windows(aggregator.advance(until))
    return events


def test_hourly_mean_crossing_100_fires_once_per_excursion_and_resolves() -> None:
    start = at(2026, 3, 1, 10)
    readings = hourly([(90, Flag.N), (120, Flag.N), (130, Flag.N), (80, Flag.N)], start)
    events = run_windows(readings, [rule(kind="limit", quantity="cod", above=100, window="1h")], start + 5 * 3600 * NS)
    hour = 3600
    assert states(events) == [("firing", start / NS + hour), ("resolved", start / NS + 3 * hour)]
    assert "cod hourly mean 120 mg/L above limit 100 mg/L" in events[0].message


def test_same_values_flagged_c_never_fire() -> None:
    start = at(2026, 3, 1, 10)
    readings = hourly([(120, Flag.C), (130, Flag.C)], start)
    events = run_windows(readings, [rule(kind="limit", quantity="cod", above=100, window="1h")], start + 3 * 3600 * NS)
    assert [e.state for e in events] == [AlertState.INSUFFICIENT, AlertState.INSUFFICIENT]


def test_window_with_40_valid_minutes_reports_insufficient_data_not_a_breach() -> None:
    start = at(2026, 3, 1, 10)
    readings = [
        Reading(start + (m * 60 + 5) * NS, "s", "an", "cod", 150.0, "mg/L", Flag.N if m < 40 else Flag.D)
        for m in range(60)
    ]
    events = run_windows(readings, [rule(kind="limit", quantity="cod", above=100, window="1h")], start + 2 * 3600 * NS)
    [event] = events
    assert event.state is AlertState.INSUFFICIENT
    assert "insufficient valid data (40 of 60 values valid, window flag D)" in event.message


# -- standards ----------------------------------------------------------------------------------


def test_standard_expands_into_limits_and_tables_combine_with_overrides() -> None:
    attach = StandardRule.model_validate(
        {
            "kind": "standard",
            "name": "permit",
            "site": "s",
            "tables": ["gb8978-1996-grade3", "gbt31962-2015-grade-c"],
            "windows": ["1h"],
            "overrides": {"cod": {"above": 400}},
        }
    )
    rules = {x.name: x for x in expand_standard(attach, STANDARDS)}
    assert rules["permit_cod_1h"].above == 400  # override wins
    assert rules["permit_nh3n_1h"].above == 25  # from GB/T 31962 grade C: grade 3 has none
    assert (rules["permit_ph_1h"].below, rules["permit_ph_1h"].above) == (6.5, 9.5)  # later table wins
    assert all(x.window == "1h" and x.site == "s" for x in rules.values())


def test_gb16889_table2_values() -> None:
    attach = StandardRule.model_validate(
        {"kind": "standard", "name": "t2", "site": "s", "tables": ["gb16889-2008-table2"]}
    )
    limits = {(x.quantity, x.window): x.above for x in expand_standard(attach, STANDARDS)}
    assert limits[("cod", "1h")] == limits[("cod", "1d")] == 100
    assert limits[("nh3n", "1d")] == 25
    assert limits[("tp", "1h")] == 3


# -- message templates ---------------------------------------------------------------------------


def test_message_template_fills_in_the_fields_of_its_kind() -> None:
    limit = rule(
        kind="limit", quantity="cod", above=100, message="{site}/{device} {quantity} {value:.0f} {unit} > {limit:g}"
    )
    cap = rule(
        kind="capacity", quantity="throughput", design=750, project_after="4h", message="{condition}: {value:.0f}"
    )
    engine = RulesEngine([limit, cap], ZONES)
    day = at(2026, 3, 1) / NS
    events = engine.feed([r(day, 120)] + [r(day + m * 600, 34.0, quantity="throughput", unit="t/h") for m in range(30)])
    assert [e.message for e in events] == ["s/an cod 120 mg/L > 100", "projection: 816"]


def test_a_message_that_fails_when_an_alert_fires_falls_back_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A template that got past ``telemetry check`` (a rule built in code) must not raise into
    the committer: the alert goes out with the kind's own text."""
    checked = rule(kind="limit", quantity="cod", above=100, message="{site} COD {value}")
    broken = checked.model_copy(update={"message": "{site} COD {valu}"})  # model_copy skips validation
    engine = RulesEngine([broken], ZONES)
    counted: list[tuple[str, str]] = []
    engine.on_error = lambda stage, error_type: counted.append((stage, error_type))
    with caplog.at_level("DEBUG", logger="alerts.kinds"):
        events = engine.feed([r(0, 120), r(1, 50), r(2, 130)])
    assert states(events) == [("firing", 0), ("resolved", 1), ("firing", 2)]
    assert "cod 120 mg/L above limit 100 mg/L at s/an" in events[0].message
    assert "cod 130 mg/L above limit 100 mg/L at s/an" in events[2].message
    assert counted == [("message", "template")] * 3
    errors = [rec for rec in caplog.records if rec.levelname == "ERROR"]
    assert [rec.getMessage() for rec in errors] == [
        "rule r: message '{site} COD {valu}' failed (KeyError('valu')); sent the default text"
    ]


# -- capacity ----------------------------------------------------------------------------------


def test_capacity_from_a_totalizer_with_a_rollover_and_a_reset() -> None:
    cap = rule(
        kind="capacity",
        quantity="throughput_total",
        source="totalizer",
        design=750,
        over_percent=110,
        under_percent=60,
        rollover=10000,
        project_after="24h",
    )
    engine = RulesEngine([cap], ZONES)
    day1 = at(2026, 3, 1) / NS
    day2 = at(2026, 3, 2) / NS
    # Day 1: 9,500 -> 9,999 (499 t), rolls over to 400 (+401): 900 t, 120 % of 750: overload.
    feed = [
        r(day1 + 60, 9500, quantity="throughput_total", unit="t"),
        r(day1 + 3600 * 12, 9999, quantity="throughput_total", unit="t"),
        r(day1 + 3600 * 20, 400, quantity="throughput_total", unit="t"),
    ]
    # Day 2: 400 -> 500, meter reset to 0, then 200: 100 + 200 = 300 t, 40 %: under-use.
    feed += [
        r(day2 + 60, 500, quantity="throughput_total", unit="t"),
        r(day2 + 3600, 0, quantity="throughput_total", unit="t"),
        r(day2 + 7200, 200, quantity="throughput_total", unit="t"),
    ]
    events = engine.feed(feed)
    events += engine.tick(int((day2 + 86400 + 301) * NS))
    summary = [(e.labels["condition"], e.state.value, round(e.value)) for e in events]
    assert summary == [
        ("overload", "firing", 900),
        ("overload", "resolved", 300),  # day 2: 400 -> 500 (+100), reset to 0 (+0), then 200 (+200)
        ("underuse", "firing", 300),
    ]
    assert events[0].ts == int(day2 * NS)
    assert "900 t today, 120% of design 750 t" in events[0].message


def totalizer_day(values: list[float], **kw: Any) -> tuple[float, dict[tuple[str, str], int]]:
    """The day's total a capacity rule on a totalizer counts from these readings, and its counts."""
    cap = rule(kind="capacity", quantity="throughput_total", source="totalizer", design=750, under_percent=100, **kw)
    engine = RulesEngine([cap], ZONES)
    day = at(2026, 3, 1) / NS
    engine.feed([r(day + 600 * i, v, quantity="throughput_total", unit="t") for i, v in enumerate(values)])
    [event] = engine.tick(int((day + 86400 + 301) * NS))
    assert (event.labels["condition"], event.state) == ("underuse", AlertState.FIRING)
    return event.value, engine.counts()


def test_a_totalizer_reading_lower_is_jitter_a_reset_a_wrap_or_a_new_meter_each_counted() -> None:
    """Oracle: the day's tonnage is what the counter advanced. A step back of 0.1 t is ignored
    (the old value stays the baseline); a drop to near zero counts from zero; a drop to 12,000 t
    (a replacement meter preset) counts from 12,000; a wrap only from near the top to near zero."""
    total, counts = totalizer_day([125_000, 125_020, 125_019.9, 125_030, 12_000, 12_010, 5, 25])
    assert total == pytest.approx((125_020 - 125_000) + (125_030 - 125_020) + 0 + 10 + 5 + 20)  # 65 t
    assert counts == {("r", "jitter"): 1, ("r", "rebase"): 1, ("r", "reset"): 1}
    # A counter that wraps at 1,000,000: 0.1 t of jitter near 600,000 is no wrap (it counted
    # 1,000,695 t), a reset to 0 at 600,000 is no wrap either (+400,000 t); from 999,900 to 300 is.
    total, counts = totalizer_day([600_000, 600_100, 600_099.9, 600_150, 0, 50], rollover=1_000_000)
    assert total == pytest.approx(100 + 0 + 50 + 0 + 50)
    assert counts == {("r", "jitter"): 1, ("r", "reset"): 1}
    total, counts = totalizer_day([999_800, 999_900, 300, 400], rollover=1_000_000)
    assert total == pytest.approx(100 + 400 + 100)
    assert counts == {("r", "rollover"): 1}


def test_capacity_from_a_rate_with_a_projection_during_the_day() -> None:
    cap = rule(kind="capacity", quantity="throughput", design=750, over_percent=100, project_after="4h")
    engine = RulesEngine([cap], ZONES)
    day = at(2026, 3, 1) / NS
    # 34 t/h all day: 816 t, over 750.
    readings = [r(day + m * 600, 34.0, quantity="throughput", unit="t/h") for m in range(144)]
    events = engine.feed(readings)
    projection = [e for e in events if e.labels["condition"] == "projection"]
    assert states(projection) == [("firing", day + 4 * 3600)]
    assert "at this rate today ends at 816 t of 750 t (136 t so far)" in projection[0].message
    end = engine.tick(int((day + 86400 + 301) * NS))
    assert [(e.labels["condition"], e.state.value) for e in end] == [
        ("projection", "resolved"),
        ("overload", "firing"),
    ]
    assert end[1].value == pytest.approx(34 * (23 + 50 / 60))  # 00:00 to 23:50 at 34 t/h


# -- stock, nodata, flatline, rate, maintenance ----------------------------------------------


def test_stock_above_a_third_of_the_pond() -> None:
    engine = RulesEngine([rule(kind="stock", quantity="volume", capacity=100000, above_fraction=0.3333)])
    events = engine.feed(
        [
            r(0, 30000, quantity="volume", unit="m3"),
            r(1, 36000, quantity="volume", unit="m3"),
            r(2, 33000, quantity="volume", unit="m3"),
        ]
    )
    assert states(events) == [("firing", 1), ("resolved", 2)]
    assert "36000 m3 is 36% of 100000, above 33%" in events[0].message


def test_nodata_fires_on_the_tick_and_resolves_on_the_next_valid_reading() -> None:
    engine = RulesEngine([rule(kind="nodata", quantity="cod", hold_flags=[], **{"for": "10m"})])
    engine.feed([r(0, 50)])
    assert engine.tick(600 * NS) == []  # exactly 10 min: not yet longer than allowed
    assert states(engine.tick(601 * NS)) == [("firing", 601)]
    assert engine.tick(900 * NS) == []
    assert engine.feed([r(950, 50, Flag.C)]) == []  # hold_flags []: a calibration value is not data
    assert engine.feed([r(960, 50, Flag.D)]) == []  # nor, ever, a faulted analyzer's
    assert states(engine.feed([r(1000, 50)])) == [("resolved", 1000)]


def test_an_analyzer_in_maintenance_is_not_silent_and_maintenance_too_long_takes_over() -> None:
    nodata = rule(kind="nodata", name="silent", quantity="cod", **{"for": "20s"})
    long = rule(kind="maintenance_too_long", name="long", quantity="cod", **{"for": "2h"})
    engine = RulesEngine([nodata, long])
    engine.feed([r(0, 50)])
    fired: list[tuple[str, str]] = []
    for t in range(10, 3 * 3600, 10):  # three hours of maintenance, a reading every 10 s
        events = engine.feed([r(t, 50, Flag.M)]) + engine.tick(t * NS + 1)
        fired += [(e.rule, e.state.value) for e in events]
    assert fired == [("long", "firing")]  # nodata stayed quiet; the long maintenance is told
    # The analyzer falls silent while in maintenance: that is noticed.
    assert [(e.rule, e.state.value) for e in engine.tick((3 * 3600 + 30) * NS)] == [("silent", "firing")]


def test_nodata_for_an_expected_series_that_never_reported() -> None:
    engine = RulesEngine([rule(kind="nodata", site="s", device="an", quantity="cod", **{"for": "5m"})])
    assert engine.tick(0) == []
    assert engine.tick(300 * NS) == []
    assert states(engine.tick(301 * NS)) == [("firing", 301)]


def test_flatline_stuck_analyzer() -> None:
    engine = RulesEngine([rule(kind="flatline", quantity="cod", epsilon=0.01, **{"for": "1h"})])
    events = engine.feed([r(0, 41.5), r(1800, 41.505), r(3599, 41.5), r(3600, 41.5), r(4000, 41.5), r(4200, 45)])
    assert states(events) == [("firing", 3600), ("resolved", 4200)]


def test_rate_of_change() -> None:
    engine = RulesEngine([rule(kind="rate", quantity="flow", max_per_minute=5)])
    events = engine.feed(
        [
            r(0, 10, quantity="flow"),
            r(60, 14, quantity="flow"),
            r(120, 30, quantity="flow"),
            r(180, 31, quantity="flow"),
        ]
    )
    assert states(events) == [("firing", 120), ("resolved", 180)]


def test_maintenance_too_long() -> None:
    engine = RulesEngine([rule(kind="maintenance_too_long", **{"for": "4h"})])
    events = engine.feed([r(0, 1, Flag.M), r(3600, 1, Flag.C), r(4 * 3600 - 1, 1, Flag.M)])
    assert events == []
    assert states(engine.tick(4 * 3600 * NS)) == [("firing", 4 * 3600)]
    assert states(engine.feed([r(5 * 3600, 40)])) == [("resolved", 5 * 3600)]


@pytest.mark.parametrize("kind", ["stock", "flatline", "rate"])
def test_rules_filter_by_site_and_device(kind: str) -> None:
    extras: dict[str, dict[str, Any]] = {
        "stock": {"capacity": 10},
        "flatline": {"for": "1s"},
        "rate": {"max_per_minute": 1},
    }
    extra = extras[kind]
    engine = RulesEngine([rule(kind=kind, quantity="cod", device="other", **extra)])
    assert engine.feed([r(0, 1), r(10, 100), r(20, 100), r(30, 1000)]) == []


def test_nodata_is_not_fooled_by_a_device_clock_ahead_or_behind() -> None:
    from alerts.rule_config import NodataRule  # noqa: PLC0415 - only here

    rule = NodataRule.model_validate({"kind": "nodata", "name": "silent", "quantity": "nh3n", "for": "10m"})
    engine = RulesEngine([rule], {"s": "UTC"})
    t0 = 1_800_000_000 * NS
    engine.tick(t0)
    assert engine.feed([Reading(t0, "s", "an", "nh3n", 5.0, "mg/L")]) == []
    # One reading stamped 23.9 h ahead, then the analyzer falls silent: it counts as seen 5 minutes
    # ahead at most, so the silence is noticed 10 minutes after that, not a day later.
    engine.feed([Reading(t0 + int(23.9 * 3600) * NS, "s", "an", "nh3n", 5.0, "mg/L")])
    fired = [(m, e.state.value) for m in range(1, 21) for e in engine.tick(t0 + m * 60 * NS)]
    assert fired == [(16, "firing")]
    # A reading stamped in the year 2000 does not move "last seen" back (nor resolve it).
    assert engine.feed([Reading(946_771_200 * NS, "s", "an", "nh3n", 5.0, "mg/L")]) == []
    assert [e.state.value for e in engine.feed([Reading(t0 + 21 * 60 * NS, "s", "an", "nh3n", 5.0, "mg/L")])] == [
        "resolved"
    ]


class _Clock:
    """The daemon's wall clock, moved by the test (seconds)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> int:
        return int(self.t * NS)


def test_live_nodata_judges_arrival_so_a_clock_50_min_behind_does_not_flap() -> None:
    engine = RulesEngine([rule(kind="nodata", name="silent", quantity="cod", **{"for": "30m"})])
    clock = _Clock(10_000.0)
    engine.use_clock(clock)
    events: list[AlertEvent] = []
    for minute in range(60):  # a reading every minute, stamped 50 minutes behind
        clock.t = 10_000.0 + minute * 60
        events += engine.feed([r(clock.t - 3000, 41.0)]) + engine.tick(clock())
    assert events == []
    clock.t += 31 * 60  # then silence: noticed by the daemon's clock
    assert [e.state.value for e in engine.tick(clock())] == ["firing"]


def test_for_is_measured_by_the_stamps_so_a_replayed_outage_still_fires() -> None:
    """Device clocks ahead are refused at the source and clamped to the daemon's clock by the
    pipeline; a gateway replaying its store after an outage sends real history, whose breach of
    10 minutes must fire even though it arrives in a second."""
    engine = RulesEngine([rule(kind="limit", name="high", quantity="cod", above=100, **{"for": "4m"})])
    clock = _Clock(10_000.0)
    engine.use_clock(clock)
    assert engine.feed([r(clock.t - 600, 150.0)]) == []
    assert [e.state.value for e in engine.feed([r(clock.t - 300, 150.0)])] == ["firing"]
