"""The aggregator's hourly and daily figures against independent oracles.

The oracles below are straight-line code written from the rules in README, not with the
aggregator's helpers and not in its shape: they start from what happened (a day of minute
data per hour; an analyzer's results per measuring cycle) and say what the regulator's
figures must be. Hypothesis generates the days: random flags, gaps, zero-flow hours, flow
meters down or partly flagged, negative readings, an inlet and an outlet at one site
(a water point and, for its mass and means, a stack), and DST days in Europe/Berlin.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.aggregate import Aggregator, Override, Validity, rules_from
from telemetry.model import Aggregate, Flag, Reading
from telemetry.points import FlowSource, PointConfig, Points

NS = 1_000_000_000
MIN = 60 * NS
HOUR = 3600 * NS
DAYS = [("Asia/Shanghai", (2026, 3, 1)), ("Europe/Berlin", (2024, 3, 31)), ("Europe/Berlin", (2024, 10, 27))]
POINTS = {"outlet": ("eff", "eff-flow"), "inlet": ("raw", "raw-flow")}  # point -> (analyzer, flow meter)
UNIT = {"water": "mg/L", "gas": "mg/m3"}
KG_PER_UNIT_M3 = {"water": 1e-3, "gas": 1e-6}  # 1 mg/L in 1 m3 is 1 g; 1 mg/m3 in 1 m3 is 1 mg


def local_day(zone: str, ymd: tuple[int, int, int]) -> tuple[int, int]:
    """UTC ns of the local midnight starting the day and the next one (23, 24 or 25 hours later)."""
    tz = ZoneInfo(zone)
    start = datetime(*ymd, tzinfo=tz)
    following = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=tz)
    return int(start.timestamp()) * NS, int(following.timestamp()) * NS


@dataclass
class Hour:
    conc: float  # the hour's first minute value; minutes add 0.25 each
    valid: int  # minutes flagged N, from the start of the hour
    flagged: int  # then minutes flagged C; the rest of the hour has no reading (a gap)
    flag: Flag  # the flag of those minutes
    flow: float | None  # m3/h for the whole hour; None: the flow meter sent nothing
    flow_valid: int  # minutes of valid flow (the rest flagged D: the meter in fault)


hours_strategy = st.builds(
    Hour,
    conc=st.floats(-5, 500, allow_nan=False),
    valid=st.sampled_from([60] * 8 + [0, 10, 44, 45, 50]),  # most hours valid: days of both kinds occur
    flagged=st.integers(0, 15),
    flag=st.sampled_from([Flag.C, Flag.M, Flag.D]),
    flow=st.one_of(st.floats(0.5, 20), st.floats(0.5, 20), st.just(0.0), st.none()),
    flow_valid=st.sampled_from([60] * 6 + [0, 30]),
)


def readings_for(point: str, kind: str, hours: list[Hour], day_start: int) -> list[Reading]:
    analyzer, meter = POINTS[point]
    out: list[Reading] = []
    for h, hour in enumerate(hours):
        t0 = day_start + h * HOUR
        for m in range(60):
            ts = t0 + m * MIN + 10 * NS
            if m < hour.valid:
                out.append(Reading(ts, "s", analyzer, "cod", hour.conc + 0.25 * m, UNIT[kind]))
            elif m < min(60, hour.valid + hour.flagged):
                out.append(Reading(ts, "s", analyzer, "cod", 999.0, UNIT[kind], hour.flag))
            if hour.flow is not None:
                flag = Flag.N if m < hour.flow_valid else Flag.D
                out.append(Reading(ts + NS, "s", meter, "flow", hour.flow if flag is Flag.N else 99.0, "m3/h", flag))
    return out


@dataclass
class HourFigures:
    mean: float | None
    valid: bool
    flag: Flag
    volume: float | None  # m3
    mass: float | None  # kg


@dataclass
class Expected:
    hours: list[HourFigures]
    day_mean: float | None
    day_valid: bool
    method: str
    day_mass: float | None
    day_volume: float | None


def oracle(hours: list[Hour], kind: str) -> Expected:
    """From README: 45 valid minutes make an hour, 20 valid hours a day; an invalid hour carries
    the flag most of its flagged minutes had (F when minutes were only missing); an hour's volume
    is its valid flow's mean over the whole hour; mass is max(C, 0)·V per hour with a mean and a
    volume. A water day weighs each valid hour by its volume, leaving out hours whose volume is
    unknown (``flow_partial``), unless no volume flowed; a stack's day, or a day without volume,
    is the plain mean of its valid hours."""
    figures = []
    for hour in hours:
        values = [hour.conc + 0.25 * m for m in range(hour.valid)]
        mean = sum(values) / len(values) if values else None
        flagged = min(60 - hour.valid, hour.flagged)
        valid = hour.valid >= 45
        flag = Flag.N if valid else (hour.flag if flagged else Flag.F)
        volume = hour.flow if hour.flow is not None and hour.flow_valid > 0 else None
        mass = max(mean, 0.0) * volume * KG_PER_UNIT_M3[kind] if mean is not None and volume is not None else None
        figures.append(HourFigures(mean, valid, flag, volume, mass))
    good = [f for f in figures if f.valid and f.mean is not None]
    with_volume = [f for f in good if f.volume is not None]
    flowed = sum(f.volume or 0.0 for f in with_volume)
    day_mean: float | None = None
    method = ""
    if good and kind == "water" and flowed > 0:
        day_mean = sum((f.mean or 0.0) * (f.volume or 0.0) for f in with_volume) / flowed
        method = "flow" if len(with_volume) == len(good) else "flow_partial"
    elif good:
        day_mean = sum(f.mean or 0.0 for f in good) / len(good)
        method = "arithmetic"
    masses = [f.mass for f in figures if f.mass is not None]
    volumes = [f.volume for f in figures if f.volume is not None]
    return Expected(
        figures,
        day_mean,
        len(good) >= 20,
        method,
        sum(masses) if masses else None,
        sum(volumes) if volumes else None,
    )


def two_points(inlet_kind: str = "water") -> Points:
    return Points.from_config(
        ["s"],
        [
            PointConfig(id="outlet", site="s", devices=["eff", "eff-flow"], flow=FlowSource(device="eff-flow")),
            PointConfig(id="inlet", site="s", kind=inlet_kind, devices=["raw", "raw-flow"]),
        ],
    )


def run_day(
    zone: str, day_start: int, day_end: int, readings: list[Reading], inlet_kind: str = "water", **kw: object
) -> list[Aggregate]:
    aggregator = Aggregator(
        {"s": zone},
        windows=("1h", "1d"),
        grace_s=60,
        points=two_points(inlet_kind),
        **kw,  # type: ignore[arg-type]
    )
    aggregator.add(sorted(readings, key=lambda r: r.ts))
    return aggregator.advance(day_end + 2 * MIN)


def check_point(out: list[Aggregate], point: str, kind: str, hours: list[Hour], day_start: int) -> None:
    analyzer, meter = POINTS[point]
    expected = oracle(hours, kind)
    by_hour = {a.ts: a for a in out if a.window == "1h" and a.device == analyzer}
    for h, want in enumerate(expected.hours):
        got = by_hour.get(day_start + h * HOUR)
        if got is None:  # no reading at all in the hour: no window
            assert want.mean is None
            assert hours[h].flagged == 0 or hours[h].valid == 60
            continue
        assert (got.point, got.unit) == (point, UNIT[kind])
        assert (got.valid, got.flag) == (want.valid, want.flag)
        assert got.avg == pytest.approx(want.mean) if want.mean is not None else got.avg is None
        assert got.cou == pytest.approx(want.mass, abs=1e-9) if want.mass is not None else got.cou is None
    days = [a for a in out if a.window == "1d" and a.device == analyzer]
    if not days:
        assert expected.day_mean is None
        return
    [day] = days
    assert day.ts == day_start
    assert (day.valid, day.method) == (expected.day_valid, expected.method)
    assert day.avg == pytest.approx(expected.day_mean) if expected.day_mean is not None else day.avg is None
    if expected.day_mass is None:
        assert day.cou is None
    else:
        assert day.cou is not None
        assert day.cou == pytest.approx(expected.day_mass, abs=1e-9)
        assert day.cou >= 0
    flow_day = [a for a in out if a.window == "1d" and a.device == meter]
    if expected.day_volume is not None:
        assert flow_day[0].cou == pytest.approx(expected.day_volume)


@settings(max_examples=60, deadline=None)
@given(
    day=st.sampled_from(DAYS),
    outlet=st.lists(hours_strategy, min_size=25, max_size=25),
    inlet=st.lists(hours_strategy, min_size=25, max_size=25),
    meters_up=st.tuples(st.booleans(), st.booleans()),
    inlet_kind=st.sampled_from(["water", "gas"]),
)
def test_hourly_and_daily_figures_match_the_oracle_per_point(
    day: tuple[str, tuple[int, int, int]],
    outlet: list[Hour],
    inlet: list[Hour],
    meters_up: tuple[bool, bool],
    inlet_kind: str,
) -> None:
    zone, ymd = day
    start, end = local_day(zone, ymd)
    n = (end - start) // HOUR  # 23, 24 or 25 hours: the local day
    # A flow meter up all day (so the whole day is weighted), or down in some hours.
    outlet, inlet = [
        [
            Hour(
                h.conc, h.valid, h.flagged, h.flag, 0.7 if up and h.flow is None else h.flow, 60 if up else h.flow_valid
            )
            for h in hours[:n]
        ]
        for hours, up in ((outlet, meters_up[0]), (inlet, meters_up[1]))
    ]
    readings = readings_for("outlet", "water", outlet, start) + readings_for("inlet", inlet_kind, inlet, start)
    out = run_day(zone, start, end, readings, inlet_kind)
    assert {a.ts for a in out if a.window == "1d"} <= {start}  # one day window, from local midnight
    check_point(out, "outlet", "water", outlet, start)
    check_point(out, "inlet", inlet_kind, inlet, start)


def test_intermittent_discharge_day_is_flow_weighted_through_a_zero_flow_hour() -> None:
    """The review's case: 2 h at 200 mg/L and 10 m3/h, 22 h at 40 mg/L (21 at 1 m3/h, the last at 0);
    then the same day with the flow meter in fault for one hour."""
    start, end = local_day("Asia/Shanghai", (2026, 3, 1))
    hours = [Hour(200.0, 60, 0, Flag.C, 10.0, 60)] * 2 + [Hour(40.0, 60, 0, Flag.C, 1.0, 60)] * 21
    hours += [Hour(40.0, 60, 0, Flag.C, 0.0, 60)]
    readings = [  # constant within each hour, as the review had it
        r._replace(value=200.0 if r.ts < start + 2 * HOUR else 40.0) if r.quantity == "cod" else r
        for r in readings_for("outlet", "water", hours, start)
    ]
    [day] = [a for a in run_day("Asia/Shanghai", start, end, readings) if a.window == "1d" and a.device == "eff"]
    weighted = (2 * 200 * 10 + 21 * 40 * 1) / (2 * 10 + 21 * 1)  # 118.05 mg/L; the unweighted mean was 53.3
    assert day.avg == pytest.approx(weighted)
    assert day.method == "flow"
    assert day.cou == pytest.approx((2 * 200 * 10 + 21 * 40 * 1) / 1000)
    fault = [
        r._replace(flag=Flag.D) if r.device == "eff-flow" and start + 12 * HOUR <= r.ts < start + 13 * HOUR else r
        for r in readings
    ]
    [day] = [a for a in run_day("Asia/Shanghai", start, end, fault) if a.window == "1d" and a.device == "eff"]
    assert day.avg == pytest.approx((2 * 200 * 10 + 20 * 40) / (2 * 10 + 20))  # hour 12 weighs nothing
    assert day.method == "flow_partial"


@dataclass
class Cycle:
    sample_minute: int  # when in its cycle the analyzer finished the measurement
    value: float
    flag: Flag


cycles_strategy = st.builds(
    Cycle,
    sample_minute=st.integers(0, 119),
    value=st.floats(0, 300, allow_nan=False),
    flag=st.sampled_from([Flag.N, Flag.N, Flag.N, Flag.C, Flag.D]),
)


def expected_measurements(
    results: list[tuple[int, float, Flag]], polls: list[int], sampled: bool, cycle: int
) -> list[tuple[int, float]]:
    """(stamp, value) of each measurement the analyzer's results make, from README's rule."""
    out: list[tuple[int, float]] = []
    for i, (sample, value, flag) in enumerate(results):
        seen = [p for p in polls if p >= sample and (i + 1 == len(results) or p < results[i + 1][0])]
        if flag is not Flag.N or not seen:
            continue
        stamp = sample if sampled else seen[0]
        out.append((stamp, value))
        while not sampled:  # held a cycle after its last stamp: counted again
            again = [p for p in seen if p >= stamp + cycle]
            if not again:
                break
            stamp = again[0]
            out.append((stamp, value))
    return out


@settings(max_examples=60, deadline=None)
@given(
    cycle_h=st.sampled_from([1, 2, 4]),
    sampled=st.booleans(),
    cycles=st.lists(st.one_of(st.none(), cycles_strategy), min_size=24, max_size=24),
)
def test_cyclic_analyzer_hours_match_the_oracle(cycle_h: int, sampled: bool, cycles: list[Cycle | None]) -> None:
    """An analyzer measuring every ``cycle_h`` hours (a result per cycle, or none), polled every 5
    minutes: its register holds the last result. With a sample-time register every poll of a result
    carries its sample time; without, the poll's time. The point's flow is 10 m3/h all day.

    Oracle, from the results rather than the polls: each valid result is one measurement, stamped
    with its sample time (without a register: its first poll), and a result still held a whole
    cycle after it was last stamped counts again at the first poll a cycle on (README: "the same
    value a whole cycle later"). An hour is the mean of its measurements; an hour with none carries
    the last measurement before it, for cycles above an hour, while that is at most a cycle old and
    the analyzer flagged nothing in the hour; otherwise an hour with readings is invalid with the
    most frequent flag among them (F if none was flagged)."""
    start, end = local_day("Asia/Shanghai", (2026, 3, 1))
    cycle = cycle_h * HOUR
    results: list[tuple[int, float, Flag]] = []  # (sample ts, value, flag)
    for c in range(24 // cycle_h):
        spec = cycles[c]
        if spec is not None:
            value = round(spec.value, 2) + c * 1000  # each cycle's result differs from the last
            offset = (spec.sample_minute % (60 * cycle_h)) * MIN + 7 * NS
            results.append((start + c * cycle + offset, value, spec.flag))
    polls = range(start, end + 30 * MIN, 5 * MIN)
    readings = []
    for poll in polls:
        held = [r for r in results if r[0] <= poll]
        if held:
            sample, value, flag = held[-1]
            readings.append(Reading(sample if sampled else poll, "s", "eff", "cod", value, "mg/L", flag))
        readings.append(Reading(poll + NS, "s", "eff-flow", "flow", 10.0, "m3/h"))
    rules = rules_from(Validity(), [Override("cod", {"cycle_s": cycle / NS, "sampled": sampled})])
    out = run_day("Asia/Shanghai", start, end, readings, rules=rules)
    hours = {a.ts: a for a in out if a.window == "1h" and a.device == "eff"}

    measurements = expected_measurements(results, list(polls), sampled, cycle)
    measured_hours = 0
    for h in range(24):
        h0 = start + h * HOUR
        inside = [(t, v) for t, v in measurements if h0 <= t < h0 + HOUR]
        in_hour = [r for r in readings if r.device == "eff" and h0 <= r.ts < h0 + HOUR]
        flags = Counter(r.flag for r in in_hour if r.flag is not Flag.N)
        before = [(t, v) for t, v in measurements if t < h0]
        carried = cycle_h > 1 and bool(before) and h0 + HOUR - before[-1][0] <= cycle and not flags
        got = hours.get(h0)
        if inside:
            assert got is not None
            assert (got.valid, got.method, got.valid_count, got.unit) == (True, "cycles", len(inside), "mg/L")
            assert got.avg == pytest.approx(sum(v for _, v in inside) / len(inside))
            assert got.sample_ts == inside[-1][0]
            measured_hours += 1
        elif carried:
            assert got is not None
            assert (got.valid, got.method, got.flag, got.unit) == (True, "carried", Flag.N, "mg/L")
            assert got.avg == pytest.approx(before[-1][1])
            assert got.sample_ts == before[-1][0]
        elif got is not None:
            assert not got.valid
            assert got.avg is None
            assert got.flag == (flags.most_common(1)[0][0] if flags else Flag.F)
        else:
            assert not in_hour
        if got is not None and got.avg is not None:
            assert got.cou == pytest.approx(max(got.avg, 0.0) * 10.0 / 1000)  # 10 m3 in the hour
    valid = [a for a in hours.values() if a.valid]
    days = [a for a in out if a.window == "1d" and a.device == "eff"]
    if valid:
        [day] = days
        assert day.avg == pytest.approx(sum(a.avg or 0.0 for a in valid) / len(valid))  # equal volumes
        assert day.cou == pytest.approx(sum(a.cou or 0.0 for a in hours.values()))
        assert day.valid == (len(valid) >= 20)
    assert measured_hours <= len(measurements)


def test_a_result_repeated_with_the_same_value_counts_once_per_cycle() -> None:
    """Without a sample time, an unchanged value is the held result until a cycle has passed."""
    start, _ = local_day("Asia/Shanghai", (2026, 3, 1))
    polls = [Reading(start + m * MIN, "s", "eff", "cod", 42.0, "mg/L") for m in range(0, 180, 10)]
    rules = rules_from(Validity(), [Override("cod", {"cycle_s": 3600.0})])
    aggregator = Aggregator({"s": "Asia/Shanghai"}, windows=("1h",), grace_s=60, rules=rules)
    aggregator.add(polls)
    hours = sorted((a.ts, a.valid_count) for a in aggregator.advance(start + 4 * HOUR))
    assert hours == [(start, 1), (start + HOUR, 1), (start + 2 * HOUR, 1)]
    assert aggregator.held == len(polls) - 3


def test_a_sample_time_ahead_of_the_clock_is_not_aggregated() -> None:
    """One message stamped 20 h ahead must not hold back the analyzer's real results."""
    start, _ = local_day("Asia/Shanghai", (2026, 3, 1))
    rules = rules_from(Validity(), [Override("cod", {"cycle_s": 3600.0, "sampled": True})])
    aggregator = Aggregator({"s": "Asia/Shanghai"}, windows=("1h",), grace_s=60, rules=rules)
    now = start + 10 * MIN
    aggregator.add([Reading(start + 5 * MIN, "s", "eff", "cod", 40.0, "mg/L")], now)
    aggregator.add([Reading(start + 20 * HOUR, "s", "eff", "cod", 41.0, "mg/L")], now)
    for h in range(1, 4):
        now = start + h * HOUR + 15 * MIN
        aggregator.add([Reading(start + h * HOUR + 10 * MIN, "s", "eff", "cod", 40.0 + h, "mg/L")], now)
    hours = sorted((a.ts, a.avg, a.method) for a in aggregator.advance(start + 4 * HOUR + 2 * MIN))
    assert hours == [(start + h * HOUR, 40.0 + h, "cycles") for h in range(4)]
    assert aggregator.future == 1
