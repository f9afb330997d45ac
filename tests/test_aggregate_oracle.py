"""The aggregator's hourly and daily figures against an independent oracle.

The oracle below is straight-line code written from the rules in README (not with
the aggregator's helpers): it walks a day of minute data hour by hour and computes
hourly means and validity, each point's hourly flow volume, pollutant mass, the
flow-weighted daily mean and the day's validity. Hypothesis generates the days:
random flags, gaps, zero-flow hours, flow meters that are down, negative readings,
an inlet and an outlet at one site, and DST days in Europe/Berlin.
"""

from __future__ import annotations

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


def local_day(zone: str, ymd: tuple[int, int, int]) -> tuple[int, int]:
    """UTC ns of the local midnight starting the day and the next one (23, 24 or 25 hours later)."""
    tz = ZoneInfo(zone)
    start = datetime(*ymd, tzinfo=tz)
    following = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=tz)
    return int(start.timestamp()) * NS, int(following.timestamp()) * NS


@dataclass
class Hour:
    cod: float  # the hour's first minute value; minutes add 0.25 each
    valid: int  # minutes flagged N, from the start of the hour
    flagged: int  # then minutes flagged C; the rest of the hour has no reading (a gap)
    flow: float | None  # m3/h for the whole hour; None: the flow meter sent nothing


hours_strategy = st.builds(
    Hour,
    cod=st.floats(-5, 500, allow_nan=False),
    valid=st.sampled_from([60] * 8 + [0, 10, 44, 45, 50]),  # most hours valid: days of both kinds occur
    flagged=st.integers(0, 15),
    flow=st.one_of(st.none(), st.just(0.0), st.floats(0.5, 20)),
)


def readings_for(point: str, hours: list[Hour], day_start: int) -> list[Reading]:
    analyzer, meter = POINTS[point]
    out: list[Reading] = []
    for h, hour in enumerate(hours):
        t0 = day_start + h * HOUR
        for m in range(60):
            ts = t0 + m * MIN + 10 * NS
            if m < hour.valid:
                out.append(Reading(ts, "s", analyzer, "cod", hour.cod + 0.25 * m, "mg/L"))
            elif m < min(60, hour.valid + hour.flagged):
                out.append(Reading(ts, "s", analyzer, "cod", 999.0, "mg/L", Flag.C))
            if hour.flow is not None:
                out.append(Reading(ts + NS, "s", meter, "flow", hour.flow, "m3/h"))
    return out


HourFigures = tuple[float | None, bool, float | None, float | None]  # mean, valid, volume m3, mass kg


@dataclass
class Expected:
    hours: list[HourFigures]
    day_mean: float | None
    day_valid: bool
    method: str
    day_mass: float | None
    day_volume: float | None


def oracle(hours: list[Hour]) -> Expected:
    """Straight from the rules: 45 valid minutes make an hour, 20 valid hours a day; the day is
    Σ(C·V)/ΣV over valid hours when every valid hour has a volume and some water flowed, else the
    plain mean of the valid hours; mass is max(C, 0)·V/1000 kg per hour with a mean and a volume."""
    hourly: list[HourFigures] = []
    for hour in hours:
        values = [hour.cod + 0.25 * m for m in range(hour.valid)]
        mean = sum(values) / len(values) if values else None
        volume = max(hour.flow, 0.0) if hour.flow is not None else None
        mass = max(mean, 0.0) * volume / 1000 if mean is not None and volume is not None else None
        hourly.append((mean, hour.valid >= 45, volume, mass))
    good = [(mean, volume) for mean, ok, volume, _ in hourly if ok and mean is not None]
    weighted = bool(good) and all(v is not None for _, v in good) and sum(v or 0.0 for _, v in good) > 0
    day_mean: float | None = None
    method = ""
    if not good:
        pass
    elif weighted:
        day_mean = sum(c * (v or 0.0) for c, v in good) / sum(v or 0.0 for _, v in good)
        method = "flow"
    else:
        day_mean = sum(c for c, _ in good) / len(good)
        method = "arithmetic"
    masses = [m for *_, m in hourly if m is not None]
    volumes = [v for _, _, v, _ in hourly if v is not None]
    return Expected(
        hourly,
        day_mean,
        len(good) >= 20,
        method,
        sum(masses) if masses else None,
        sum(volumes) if volumes else None,
    )


def two_points() -> Points:
    return Points.from_config(
        ["s"],
        [
            PointConfig(id="outlet", site="s", devices=["eff", "eff-flow"], flow=FlowSource(device="eff-flow")),
            PointConfig(id="inlet", site="s", devices=["raw", "raw-flow"]),
        ],
    )


def run_day(zone: str, day_start: int, day_end: int, readings: list[Reading], **kw: object) -> list[Aggregate]:
    aggregator = Aggregator({"s": zone}, windows=("1h", "1d"), grace_s=60, points=two_points(), **kw)  # type: ignore[arg-type]
    aggregator.add(sorted(readings, key=lambda r: r.ts))
    return aggregator.advance(day_end + 2 * MIN)


def check_point(out: list[Aggregate], point: str, hours: list[Hour], day_start: int) -> None:
    analyzer, meter = POINTS[point]
    expected = oracle(hours)
    by_hour = {a.ts: a for a in out if a.window == "1h" and a.device == analyzer}
    for h, (mean, ok, _volume, mass) in enumerate(expected.hours):
        got = by_hour.get(day_start + h * HOUR)
        if got is None:  # no reading at all in the hour: no window
            assert mean is None
            continue
        assert got.point == point
        assert got.valid == ok
        assert got.avg == pytest.approx(mean) if mean is not None else got.avg is None
        assert got.cou == pytest.approx(mass, abs=1e-9) if mass is not None else got.cou is None
    days = [a for a in out if a.window == "1d" and a.device == analyzer]
    if not days:
        assert expected.day_mean is None
        return
    [day] = days
    assert day.ts == day_start
    assert day.valid == expected.day_valid
    assert day.method == expected.method
    if expected.day_mean is None:
        assert day.avg is None
    else:
        assert day.avg == pytest.approx(expected.day_mean)
    if expected.day_mass is None:
        assert day.cou is None
    else:
        assert day.cou is not None
        assert day.cou == pytest.approx(expected.day_mass, abs=1e-9)
        assert day.cou >= 0
    flow_day = [a for a in out if a.window == "1d" and a.device == meter]
    if expected.day_volume is not None:
        assert flow_day[0].cou == pytest.approx(expected.day_volume)


@settings(max_examples=40, deadline=None)
@given(
    day=st.sampled_from(DAYS),
    outlet=st.lists(hours_strategy, min_size=25, max_size=25),
    inlet=st.lists(hours_strategy, min_size=25, max_size=25),
    meters_up=st.tuples(st.booleans(), st.booleans()),
)
def test_hourly_and_daily_figures_match_the_oracle_per_point(
    day: tuple[str, tuple[int, int, int]], outlet: list[Hour], inlet: list[Hour], meters_up: tuple[bool, bool]
) -> None:
    zone, ymd = day
    start, end = local_day(zone, ymd)
    n = (end - start) // HOUR  # 23, 24 or 25 hours: the local day
    # A flow meter up all day (so flow weighting applies), or down in some hours.
    outlet, inlet = [
        [Hour(h.cod, h.valid, h.flagged, 0.7 if up and h.flow is None else h.flow) for h in hours[:n]]
        for hours, up in ((outlet, meters_up[0]), (inlet, meters_up[1]))
    ]
    out = run_day(zone, start, end, readings_for("outlet", outlet, start) + readings_for("inlet", inlet, start))
    assert {a.ts for a in out if a.window == "1d"} <= {start}  # one day window, from local midnight
    check_point(out, "outlet", outlet, start)
    check_point(out, "inlet", inlet, start)


def test_intermittent_discharge_day_is_flow_weighted_through_a_zero_flow_hour() -> None:
    """The review's case: 2 h at 200 mg/L and 10 m3/h, 22 h at 40 mg/L (21 at 1 m3/h, the last at 0)."""
    start, end = local_day("Asia/Shanghai", (2026, 3, 1))
    hours = [Hour(200.0, 60, 0, 10.0)] * 2 + [Hour(40.0, 60, 0, 1.0)] * 21 + [Hour(40.0, 60, 0, 0.0)]
    readings = [  # constant within each hour, as the review had it
        r._replace(value=200.0 if r.ts < start + 2 * HOUR else 40.0) if r.quantity == "cod" else r
        for r in readings_for("outlet", hours, start)
    ]
    [day] = [a for a in run_day("Asia/Shanghai", start, end, readings) if a.window == "1d" and a.device == "eff"]
    weighted = (2 * 200 * 10 + 21 * 40 * 1) / (2 * 10 + 21 * 1)  # 118.05 mg/L; the unweighted mean was 53.3
    assert day.avg == pytest.approx(weighted)
    assert day.method == "flow"
    assert day.cou == pytest.approx((2 * 200 * 10 + 21 * 40 * 1) / 1000)


@dataclass
class Cycle:
    sample_minute: int  # when in its cycle the analyzer finished the measurement
    value: float
    flag: Flag


cycles_strategy = st.builds(
    Cycle,
    sample_minute=st.integers(0, 119),
    value=st.floats(0, 300, allow_nan=False),
    flag=st.sampled_from([Flag.N, Flag.N, Flag.N, Flag.C]),
)


def measured(readings: list[Reading], sampled: bool, cycle: int) -> list[tuple[int, float]]:
    """(stamp, value) of each valid measurement in a cyclic analyzer's polls."""
    out: list[tuple[int, float]] = []
    for r in readings:
        if r.flag is not Flag.N:
            continue
        if out and sampled and r.ts <= out[-1][0]:
            continue  # the same sample time: the result seen before
        if out and not sampled and r.value == out[-1][1] and r.ts - out[-1][0] < cycle:
            continue  # the register still holds the last result
        out.append((r.ts, r.value))
    return out


@settings(max_examples=40, deadline=None)
@given(
    cycle_h=st.sampled_from([1, 2]),
    sampled=st.booleans(),
    cycles=st.lists(st.one_of(st.none(), cycles_strategy), min_size=24, max_size=24),
)
def test_cyclic_analyzer_hours_match_the_oracle(cycle_h: int, sampled: bool, cycles: list[Cycle | None]) -> None:
    """An analyzer measuring every ``cycle_h`` hours, polled every 5 minutes: its register holds the
    last result. With a sample-time register every poll of one result carries its sample time;
    without, the poll's own time. Oracle, from README's rule: a valid poll is a new measurement
    when its sample time is new (with the register), or its value changed, or a whole cycle passed
    since the last measurement (without); an hour is the mean of its measurements, or for 2 h
    cycles carries the last valid one while it is at most a cycle old."""
    start, end = local_day("Asia/Shanghai", (2026, 3, 1))
    cycle = cycle_h * HOUR
    results = []  # (sample ts, value, flag) of each cycle that produced one
    for c in range(24 // cycle_h):
        spec = cycles[c]
        if spec is not None:
            offset = (spec.sample_minute % (60 * cycle_h)) * MIN + 7 * NS
            results.append((start + c * cycle + offset, spec.value, spec.flag))
    readings = []
    for poll in range(start, end + 30 * MIN, 5 * MIN):
        newest = [r for r in results if r[0] <= poll]
        if newest:
            sample, value, flag = newest[-1]
            readings.append(Reading(sample if sampled else poll, "s", "eff", "cod", value, "mg/L", flag))
    rules = rules_from(Validity(), [Override("cod", {"cycle_s": cycle / NS, "sampled": sampled})])
    out = run_day("Asia/Shanghai", start, end, readings, rules=rules)
    hours = {a.ts: a for a in out if a.window == "1h" and a.device == "eff"}

    measurements = measured(readings, sampled, cycle)
    for h in range(24):
        h0 = start + h * HOUR
        inside = [v for t, v in measurements if h0 <= t < h0 + HOUR]
        before = [(t, v) for t, v in measurements if t < h0 + HOUR]
        carried = cycle_h > 1 and bool(before) and h0 + HOUR - before[-1][0] <= cycle
        got = hours.get(h0)
        if got is None:
            assert not inside
            assert not carried
        elif inside:
            assert (got.valid, got.method, got.valid_count) == (True, "cycles", len(inside))
            assert got.avg == pytest.approx(sum(inside) / len(inside))
            assert got.sample_ts == max(t for t, v in measurements if h0 <= t < h0 + HOUR)
        elif carried:
            assert (got.valid, got.method) == (True, "carried")
            assert got.avg == pytest.approx(before[-1][1])
            assert got.sample_ts == before[-1][0]
        else:
            assert not got.valid
            assert got.avg is None
