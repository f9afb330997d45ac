"""Incinerator compliance: O2 correction, GB 18485-2014 table 4, the furnace temperature rule.

Every computed figure is checked against straight-line code written here from
DOMAIN-incinerator.md (the formula, the median/mean method, clock-aligned 5-minute means,
"more than 5 a day"), on generated inputs.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.replay import replay
from alerts.rule_config import FurnaceTemperatureRule
from alerts.rules import RulesEngine
from telemetry import config as config_module
from telemetry.derive import Deriver, O2Reference
from telemetry.errors import ConfigError
from telemetry.furnaces import FurnaceConfig
from telemetry.hj212.codec import Packet
from telemetry.model import AlertState, Flag, Reading
from telemetry.points import PointConfig, Points
from telemetry.sim.platform import Receiver
from tests.daemon import start_daemon
from tests.test_points import replay as rules_test

NS = 1_000_000_000
BJ = ZoneInfo("Asia/Shanghai")
MN = "010000A8900016F000169DC1"

STACK = PointConfig(id="stack1", site="cx", kind="gas", devices=["cems1", "dcs1"])


def deriver(**kw: object) -> Deriver:
    points = Points.from_config(["cx"], [STACK])
    ref = O2Reference("stack1", 11.0, frozenset({"so2", "nox", "dust", "hcl", "co"}))
    return Deriver(points, [ref], **kw)  # type: ignore[arg-type]


# -- O2 correction -----------------------------------------------------------------------------

samples = st.lists(
    st.tuples(
        st.floats(min_value=-1.0, max_value=21.0, allow_nan=False),  # O2 %, some at or above 20
        st.sampled_from([Flag.N, Flag.N, Flag.N, Flag.C]),  # the O2 analyzer's flag
        st.floats(min_value=0.0, max_value=500.0, allow_nan=False),  # SO2 mg/m3
        st.sampled_from([Flag.N, Flag.N, Flag.M]),  # the SO2 analyzer's flag
        st.booleans(),  # O2 reported at this sample at all
    ),
    min_size=1,
    max_size=40,
)


@given(samples)
def test_o2_correction_matches_the_formula_and_never_divides_by_what_is_not_there(
    rows: list[tuple[float, Flag, float, Flag, bool]],
) -> None:
    derive = deriver()
    last_o2: tuple[int, float, Flag] | None = None
    for i, (o2, o2_flag, so2, so2_flag, o2_sent) in enumerate(rows):
        ts = (1_800_000_000 + 30 * i) * NS
        batch = [Reading(ts, "cx", "cems1", "so2", so2, "mg/m3", so2_flag)]  # the pollutant first in the batch
        if o2_sent:
            batch.append(Reading(ts, "cx", "cems1", "o2", o2, "%", o2_flag))
            last_o2 = (ts, o2, o2_flag)
        [out] = derive(batch)
        assert (out.quantity, out.device, out.ts, out.unit) == ("so2_zs", "cems1", ts, "mg/m3")
        fresh = last_o2 is not None and ts - last_o2[0] <= 60 * NS  # the same sample, or at most 60 s older
        usable = fresh and last_o2 is not None and last_o2[2] is Flag.N and 0 <= last_o2[1] < 20
        if usable:
            assert last_o2 is not None
            assert out.value == pytest.approx(so2 * (21 - 11) / (21 - last_o2[1]))
            assert out.flag is so2_flag
        else:
            assert out.value == so2  # the measured value, unconverted ...
            assert out.flag is not Flag.N  # ... and never valid
            o2_flagged = fresh and last_o2 is not None and last_o2[2] is Flag.C
            expected = so2_flag if so2_flag is not Flag.N else Flag.C if o2_flagged else Flag.D
            assert out.flag is expected


def test_only_the_stacks_pollutants_are_converted() -> None:
    derive = deriver()
    ts = 1_800_000_000 * NS
    out = derive(
        [
            Reading(ts, "cx", "cems1", "o2", 9.0, "%"),
            Reading(ts, "cx", "cems1", "so2", 50.0, "mg/m3"),
            Reading(ts, "cx", "cems1", "flue_flow", 80.0, "m3/s"),  # not a pollutant
            Reading(ts, "cx", "other", "so2", 50.0, "mg/m3"),  # not a device of the stack
            Reading(ts, "elsewhere", "cems1", "so2", 50.0, "mg/m3"),
        ]
    )
    assert [(r.device, r.quantity, round(r.value, 6)) for r in out] == [("cems1", "so2_zs", round(50 * 10 / 12, 6))]


# -- the representative furnace temperature --------------------------------------------------

temps = st.floats(min_value=600.0, max_value=1200.0, allow_nan=False)


@given(
    upper=st.lists(temps, min_size=1, max_size=5),
    middle=st.lists(temps, min_size=1, max_size=5),
    lower=st.lists(temps, max_size=3),
)
def test_representative_temperature_is_the_mean_of_the_section_medians(
    upper: list[float], middle: list[float], lower: list[float]
) -> None:
    thermocouples = [("upper", v) for v in upper] + [("middle", v) for v in middle] + [("lower", v) for v in lower]
    furnace = FurnaceConfig.model_validate(
        {
            "id": "line1",
            "site": "cx",
            "device": "dcs1",
            "thermocouples": [
                {"device": "dcs1", "quantity": f"t{i}", "section": s} for i, (s, _) in enumerate(thermocouples)
            ],
        }
    )
    derive = Deriver(Points.from_config(["cx"], [STACK]), [], [furnace])
    ts = 1_800_000_000 * NS
    out = derive([Reading(ts, "cx", "dcs1", f"t{i}", v, "degC") for i, (_, v) in enumerate(thermocouples)])
    # Straight from DOMAIN-incinerator.md A1: median of the upper section, median of the middle
    # section, their arithmetic mean; the lower section is not used.
    upper_median, middle_median = _median(upper), _median(middle)
    assert [(r.quantity, r.device, r.flag) for r in out] == [("furnace_temp", "dcs1", Flag.N)]
    assert out[0].value == pytest.approx((upper_median + middle_median) / 2)


def test_a_section_without_a_valid_thermocouple_flags_the_temperature() -> None:
    furnace = FurnaceConfig.model_validate(
        {
            "id": "line1",
            "site": "cx",
            "device": "dcs1",
            "thermocouples": [
                {"device": "dcs1", "quantity": "tu", "section": "upper"},
                {"device": "dcs1", "quantity": "tm", "section": "middle"},
            ],
        }
    )
    derive = Deriver(Points.from_config(["cx"], [STACK]), [], [furnace])
    ts = 1_800_000_000 * NS
    [out] = derive(
        [Reading(ts, "cx", "dcs1", "tu", 900.0, "degC"), Reading(ts, "cx", "dcs1", "tm", 0.0, "degC", Flag.D)]
    )
    assert (out.value, out.flag) == (900.0, Flag.D)  # the upper section alone: not a valid furnace temperature
    assert derive([Reading(ts + NS, "cx", "dcs1", "tm", 0.0, "degC", Flag.D)]) == [
        Reading(ts + NS, "cx", "dcs1", "furnace_temp", 900.0, "degC", Flag.D)
    ]
    late = ts + 120 * NS  # the upper thermocouple's value is now older than max_age (60 s)
    assert derive([Reading(late, "cx", "dcs1", "tm", 0.0, "degC", Flag.D)]) == []
    assert derive.counts["furnace_no_valid_thermocouple"] == 1


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


# -- the furnace temperature rule on generated days ---------------------------------------------

block = st.tuples(
    st.sampled_from([790.0, 840.0, 849.9, 850.0, 870.0, 950.0]),  # the 5-minute block's level
    st.lists(st.integers(min_value=0, max_value=299), min_size=0, max_size=6, unique=True),  # sample seconds
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(block, min_size=1, max_size=40), offset_blocks=st.integers(0, 288 - 40), jitter=temps)
def test_furnace_events_match_an_independent_count_of_five_minute_means(
    blocks: list[tuple[float, list[int]]], offset_blocks: int, jitter: float
) -> None:
    midnight = datetime(2026, 12, 1, tzinfo=BJ)
    base = int(midnight.timestamp()) * NS + offset_blocks * 300 * NS
    readings = []
    for b, (level, seconds) in enumerate(blocks):
        for k, s in enumerate(sorted(seconds)):
            value = level + (jitter - 900) / 1000 * (-1) ** k  # a wobble that leaves the mean near the level
            readings.append(Reading(base + (b * 300 + s) * NS, "cx", "dcs1", "furnace_temp", value, "degC"))
    rule = FurnaceTemperatureRule.model_validate({"kind": "furnace_temperature", "name": "f850"})
    engine = RulesEngine([rule], {"cx": "Asia/Shanghai"})
    end = int((midnight + timedelta(days=1, minutes=5)).timestamp()) * NS
    events = replay(engine, None, readings, until_ns=end)
    # The oracle: group by clock-aligned 5-minute block of local time, mean, count those < 850.
    means: dict[int, list[float]] = {}
    for r in readings:
        means.setdefault((r.ts - int(midnight.timestamp()) * NS) // (300 * NS), []).append(r.value)
    below = [(k, sum(v) / len(v)) for k, v in sorted(means.items()) if sum(v) / len(v) < 850]
    fired = [e for e in events if e.state is AlertState.FIRING]
    expected = []
    for n, (k, mean) in enumerate(below, start=1):
        for condition in ["first"] * (n == 1) + ["last_allowed"] * (n == 5) + ["violation"] * (n == 6):
            expected.append((condition, int(midnight.timestamp()) * NS + k * 300 * NS, round(mean, 6)))
    assert [(e.labels["condition"], e.ts, round(e.value, 6)) for e in fired] == expected
    assert {e.severity for e in fired if e.labels["condition"] == "violation"} <= {"critical"}
    assert {e.severity for e in fired if e.labels["condition"] != "violation"} <= {"warning"}
    resolved = [e for e in events if e.state is AlertState.RESOLVED]
    assert sorted(e.labels["condition"] for e in resolved) == sorted(e.labels["condition"] for e in fired)


# -- GB 18485 through `telemetry rules test` --------------------------------------------------

INCINERATOR = """
sites: [{id: cx, timezone: Asia/Shanghai}]
points:
  - {id: stack1, site: cx, kind: gas, devices: [cems1, dcs1], flow: {quantity: flue_flow}}
furnaces:
  - id: line1
    site: cx
    point: stack1
    device: dcs1
    thermocouples:
      - {device: dcs1, quantity: t_up1, section: upper}
      - {device: dcs1, quantity: t_up2, section: upper}
      - {device: dcs1, quantity: t_up3, section: upper}
      - {device: dcs1, quantity: t_mid1, section: middle}
      - {device: dcs1, quantity: t_mid2, section: middle}
rules:
  - {kind: standard, name: gb18485, point: stack1, tables: [gb18485-2014]}
  - {kind: furnace_temperature, name: furnace850, point: stack1}
hj212:
  - {name: city, host: 127.0.0.1, port: 9, point: stack1, mn: "MN", pw: "123456", min_interval_minutes: 5}
""".replace('"MN"', f'"{MN}"')


def minute_rows(
    start: datetime, minutes: int, **series: float | list[float]
) -> list[tuple[int, str, str, str, float, str, str]]:
    units = {"o2": "%", "flue_flow": "m3/s"}
    rows = []
    for m in range(minutes):
        ts = int(start.timestamp()) * NS + (m * 60 + 5) * NS
        for quantity, value in series.items():
            v = value[m % len(value)] if isinstance(value, list) else value
            rows.append((ts, "cx", "cems1", quantity, v, units.get(quantity, "mg/m3"), "N"))
    return rows


def test_hourly_means_are_of_converted_minutes_and_go_up_as_zs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hour = datetime(2026, 12, 1, 10, tzinfo=BJ)
    rows = minute_rows(hour, 60, o2=[7.0, 15.0], so2=60.0, flue_flow=50.0)
    events, windows, packets = rules_test(
        tmp_path, INCINERATOR, rows, capsys, "--windows", "1h", "--hj212", "city", "--at", "2026-12-01T11:05:00+08:00"
    )
    converted = [60 * 10 / (21 - o2) for o2 in [7.0, 15.0] * 30]
    zs = next(w for w in windows if w["series"] == "cx/cems1/so2_zs")
    assert float(zs["avg"]) == pytest.approx(sum(converted) / 60)  # 71.43, not 60 x 10 / (21 - 11) = 60
    assert zs["cou"] == "-"  # a converted concentration has no mass of its own
    so2 = next(w for w in windows if w["series"] == "cx/cems1/so2")
    assert float(so2["cou"]) == pytest.approx(60 * 50 * 3600 / 1e6)  # mg/m3 x m3 -> kg, of the measured value
    [hourly] = [p for p in packets if p["CN"] == "2061"]
    assert hourly["a21026-Avg"] == "60"
    assert hourly["a21026-ZsAvg"] == f"{sum(converted) / 60:.6g}"
    assert hourly["a19001-Avg"] == "11"
    assert hourly["a21026-Flag"] == "N"
    assert not any("firing" in e for e in events)  # 71 is under the hourly 100


def test_daily_violation_once_per_pollutant_and_day_hourly_breach_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day = datetime(2026, 11, 29, tzinfo=BJ)
    nox = [200.0] * 600 + [330.0] * 60 + [200.0] * 780  # 10:00-11:00 above the hourly 300
    rows = minute_rows(day, 2 * 1440, o2=11.0, so2=90.0, nox=nox, flue_flow=50.0)
    events, _, _ = rules_test(tmp_path, INCINERATOR, rows, capsys, "--at", "2026-12-01T00:10:00+08:00")
    lines = [e.split(maxsplit=5) for e in events]
    fired = [(line[0], line[2], line[3]) for line in lines if line[1] == "firing"]
    assert fired == [
        ("2026-11-29T00:00:00+08:00", "gb18485_so2_1d", "critical"),  # day 1: 90 > 80
        ("2026-11-29T10:00:00+08:00", "gb18485_nox_1h", "warning"),
        ("2026-11-30T00:00:00+08:00", "gb18485_so2_1d", "critical"),  # day 2: its own violation
        ("2026-11-30T10:00:00+08:00", "gb18485_nox_1h", "warning"),
    ]
    day_lines = [e for e in events if "gb18485_so2_1d" in e and "firing" in e]
    assert "2026-11-29" in day_lines[0]
    assert "2026-11-30" in day_lines[1]
    assert any(line[1] == "resolved" and line[2] == "gb18485_so2_1d" for line in lines)  # day 1's, as day 2 closed


def test_furnace_dip_prints_first_last_allowed_and_violation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day = datetime(2026, 12, 1, tzinfo=BJ)
    rows = []
    for m in range(24 * 60):
        ts = int(day.timestamp()) * NS + (m * 60 + 10) * NS
        dip = 8 * 60 <= m < 8 * 60 + 35  # 08:00-08:35: seven 5-minute means at 830
        upper = [830.0, 835.0, 825.0] if dip else [900.0, 910.0, 905.0]
        middle = [828.0, 832.0] if dip else [880.0, 890.0]
        for q, v in zip(["t_up1", "t_up2", "t_up3", "t_mid1", "t_mid2"], upper + middle, strict=True):
            rows.append((ts, "cx", "dcs1", q, v, "degC", "N"))
    events, _, packets = rules_test(
        tmp_path, INCINERATOR, rows, capsys, "--hj212", "city", "--at", "2026-12-02T00:05:00+08:00"
    )
    lines = [e.split(maxsplit=5) for e in events if "furnace850" in e]
    assert [(line[0], line[1], line[3]) for line in lines if line[1] == "firing"] == [
        ("2026-12-01T08:00:00+08:00", "firing", "warning"),  # first event of the day
        ("2026-12-01T08:20:00+08:00", "firing", "warning"),  # the 5th: the last allowed
        ("2026-12-01T08:25:00+08:00", "firing", "critical"),  # the 6th: a violation
    ]
    assert "mean 830.0 degC below 850" in lines[0][5]
    assert "event 1 of 5" in lines[0][5]
    assert [line[1] for line in lines].count("resolved") == 3  # at the end of the day
    # Uploaded as a01901 in the 5-minute data: the representative temperature's means.
    dipped = next(p for p in packets if p["CN"] == "2051" and p["DataTime"] == "20261201080000")
    assert dipped["a01901-Avg"] == "830"  # mean(median(830, 835, 825), median(828, 832)) = (830 + 830) / 2
    normal = next(p for p in packets if p["CN"] == "2051" and p["DataTime"] == "20261201120000")
    assert normal["a01901-Avg"] == "895"  # (median(900, 910, 905) + median(880, 890)) / 2 = (905 + 885) / 2


# -- the uplink against a platform stand-in ---------------------------------------------------


async def test_stack_uploads_zs_values_and_the_furnace_temperature(tmp_path: Path, hj212_platform: Receiver) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        INCINERATOR.replace("port: 9", f"port: {hj212_platform.port}").replace(
            "min_interval_minutes: 5}", "min_interval_minutes: 5, rtd_interval: 1s, grace: 0s}"
        )
        + f"metrics: {{enabled: false}}\noutbox: {{path: '{tmp_path}/outbox.sqlite'}}\n"
    )
    daemon = await start_daemon(path)
    hour = datetime.now(BJ).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    rows = []
    for m in range(60):
        ts = int(hour.timestamp()) * NS + (m * 60 + 5) * NS
        rows += [
            Reading(ts, "cx", "cems1", "o2", 9.0, "%"),
            Reading(ts, "cx", "cems1", "so2", 36.0, "mg/m3"),
            Reading(ts, "cx", "dcs1", "t_up1", 900.0, "degC"),
            Reading(ts, "cx", "dcs1", "t_mid1", 880.0, "degC"),
        ]
    try:
        await daemon.pipeline.emit(rows)
        daemon.pipeline.tick(time.time_ns())
        now = time.time_ns()
        await daemon.pipeline.emit(
            [Reading(now, "cx", "cems1", "o2", 16.0, "%"), Reading(now, "cx", "cems1", "so2", 20.0, "mg/m3")]
        )
        packets: list[Packet] = await hj212_platform.wait_for(
            lambda ps: any(p.cn == "2061" for p in ps) and any(p.cn == "2011" and p.get("a21026-ZsRtd") for p in ps),
            30,
        )
    finally:
        await daemon.close()
    [hourly] = [p for p in packets if p.cn == "2061"]
    assert (hourly.get("a21026-Avg"), hourly.get("a21026-ZsAvg")) == ("36", "30")  # 36 x 10 / 12
    assert hourly.get("a01901-Avg") == "890"
    assert hourly.st == "31"  # a stack
    rtd = next(p for p in packets if p.cn == "2011" and p.get("a21026-ZsRtd"))
    assert (rtd.get("a21026-Rtd"), rtd.get("a21026-ZsRtd"), rtd.get("a19001-Rtd")) == ("20", "40", "16")


def test_check_refuses_two_o2_references_for_one_stack(tmp_path: Path) -> None:
    other = "  - {kind: standard, name: other, point: stack1, tables: [gb18485-2014], o2_reference: 6}\n"
    text = INCINERATOR.replace("hj212:", other + "hj212:")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config_module.load(str(path), {})
    assert "expected one reference O2 per stack, found 11 and 6 for stack1" in str(err.value)
