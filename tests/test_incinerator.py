"""Incinerator compliance: O2 correction, GB 18485-2014 table 4, the furnace temperature rule.

Every computed figure is checked against straight-line code written here from
DOMAIN-incinerator.md (the formula, the median/mean method, clock-aligned 5-minute means,
"more than 5 a day"), on generated inputs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.replay import replay
from alerts.rule_config import FurnaceTemperatureRule, LimitRule
from alerts.rules import RulesEngine
from telemetry import config as config_module
from telemetry.cli import main
from telemetry.derive import Deriver, O2Reference
from telemetry.errors import ConfigError
from telemetry.furnaces import FurnaceConfig
from telemetry.hj212.codec import Packet
from telemetry.model import Aggregate, AlertEvent, AlertState, Flag, Reading
from telemetry.points import PointConfig, Points
from telemetry.sim.platform import Receiver
from tests.daemon import start_daemon
from tests.services import Influx1, eventually, free_port
from tests.test_grafana import queries as dashboard_queries
from tests.test_points import replay as rules_test

NS = 1_000_000_000
BJ = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[1]
CEMS_VALUES = [
    ("o2", 9.0, "%"),
    ("so2", 40.0, "mg/m3"),
    ("nox", 180.0, "mg/m3"),
    ("dust", 6.0, "mg/m3"),
    ("hcl", 18.0, "mg/m3"),
    ("co", 20.0, "mg/m3"),
    ("flue_flow", 38.0, "m3/s"),
]
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


def test_a_section_without_a_valid_thermocouple_leaves_the_other_to_judge(caplog: pytest.LogCaptureFixture) -> None:
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
    # A faulted section must not take the furnace out of the 850 degC audit: the upper one judges.
    assert (out.value, out.flag) == (900.0, Flag.N)
    assert derive([Reading(ts + NS, "cx", "dcs1", "tm", 0.0, "degC", Flag.D)]) == [
        Reading(ts + NS, "cx", "dcs1", "furnace_temp", 900.0, "degC", Flag.N)
    ]
    assert [r.getMessage() for r in caplog.records].count(
        "furnace line1 at cx: no valid thermocouple in the middle section; its temperature is judged on the"
        " other section alone until one is back"
    ) == 1  # logged once, not every sample
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


@pytest.mark.parametrize("version", ["2017", "2025"])
async def test_stack_uploads_zs_values_and_the_furnace_temperature(
    tmp_path: Path, hj212_platform: Receiver, version: str
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        INCINERATOR.replace("port: 9", f"port: {hj212_platform.port}").replace(
            "min_interval_minutes: 5}", f"min_interval_minutes: 5, rtd_interval: 1s, grace: 0s, version: '{version}'}}"
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
        furnace_periods = 12 if version == "2025" else 0  # 2025: a 2111 per 5 minutes of the hour
        packets: list[Packet] = await hj212_platform.wait_for(
            lambda ps: (
                any(p.cn == "2061" for p in ps)
                and any(p.cn == "2011" and p.get("a21026-ZsRtd") for p in ps)
                and sum(p.cn == "2111" for p in ps) >= furnace_periods
            ),
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
    furnace = [p for p in packets if p.cn == "2111"]
    assert [p.get("DataTime") for p in furnace] == [
        (hour + timedelta(minutes=m)).strftime("%Y%m%d%H%M%S") for m in range(0, 60, 5)
    ][: len(furnace)]
    assert len(furnace) == furnace_periods
    assert all({k for item in p.cp for k in item} == {"DataTime", "a01901-Avg", "a01901-Flag"} for p in furnace)
    assert {(p.get("a01901-Avg"), p.get("a01901-Flag")) for p in furnace} <= {("890", "N")}


def test_check_refuses_two_o2_references_for_one_stack(tmp_path: Path) -> None:
    other = "  - {kind: standard, name: other, point: stack1, tables: [gb18485-2014], o2_reference: 6}\n"
    text = INCINERATOR.replace("hj212:", other + "hj212:")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config_module.load(str(path), {})
    assert "expected one reference O2 per stack, found 11 and 6 for stack1" in str(err.value)


# -- marks: the budget, episodes, false marking, feeding below 850 ------------------------------

MARKED = INCINERATOR.replace(
    "      - {device: dcs1, quantity: t_mid2, section: middle}\n",
    "      - {device: dcs1, quantity: t_mid2, section: middle}\n"
    "    feeding: {device: dcs1, quantity: feeder}\n"
    "    status: {device: dcs1, quantity: furnace_status, values: {1: drying, 2: startup}}\n",
)


def furnace_rows(
    start: datetime, minutes: int, temp: float | list[float], **extra: float
) -> list[tuple[int, str, str, str, float, str, str]]:
    rows = []
    for m in range(minutes):
        ts = int(start.timestamp()) * NS + (m * 60 + 5) * NS
        t = temp[m % len(temp)] if isinstance(temp, list) else temp
        for q in ("t_up1", "t_up2", "t_up3", "t_mid1", "t_mid2"):
            rows.append((ts, "cx", "dcs1", q, t, "degC", "N"))
        rows += [(ts, "cx", "dcs1", q, v, "", "N") for q, v in extra.items()]
    return rows


def marked_day(tmp: Path, capsys: pytest.CaptureFixture[str], january_hours: int) -> list[list[str]]:
    """A fault marked 00:00-06:00 on 2026-11-29 with SO2 at 600 (400 corrected) in it and 40
    (26.7) after, the furnace burning at 900; earlier in the year ``january_hours`` of start-up
    marks. Corrected: without the marks the day is (6 x 400 + 18 x 26.7) / 24 = 120 > 80."""
    day = datetime(2026, 11, 29, tzinfo=BJ)
    so2 = [600.0] * 360 + [40.0] * 1080  # at 6 % O2: 400 and 26.7 mg/m3 at the 11 % reference
    rows = minute_rows(day, 1440, o2=6.0, so2=so2, flue_flow=50.0) + furnace_rows(day, 1440, 900.0, feeder=1.0)
    january = datetime(2026, 1, 10, tzinfo=BJ)
    (tmp / "marks.csv").write_text(
        "furnace,mark,start,end\n"
        f"line1,启炉,{january.isoformat()},{(january + timedelta(hours=january_hours)).isoformat()}\n"
        f"line1,fault,{day.isoformat()},{(day + timedelta(hours=6)).isoformat()}\n"
    )
    events, _, _ = rules_test(
        tmp, MARKED, rows, capsys, "--marks", str(tmp / "marks.csv"), "--at", "2026-11-30T00:10:00+08:00"
    )
    return [e.split(maxsplit=5) for e in events]


def fired(lines: list[list[str]], rule: str) -> list[list[str]]:
    return [line for line in lines if line[1] == "firing" and line[2] == rule]


def test_marked_hours_within_the_budget_are_exempt_from_the_daily_judgement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = marked_day(tmp_path, capsys, january_hours=50)  # 50 + 6 = 56 h of 60: every fault hour exempt
    assert fired(lines, "gb18485_so2_1d") == []  # 120 without the marks; 26.7 with
    [budget] = fired(lines, "furnace_exempt_budget")  # 50 h is over 80 % of 60 h
    assert budget[3] == "warning"
    assert "50.0 h of 60 h" in budget[5]
    episodes = fired(lines, "furnace_episode_too_long")  # a 50 h start-up and a 6 h fault: both over 4 h
    assert [(e[0], e[3]) for e in episodes] == [
        ("2026-01-10T04:00:00+08:00", "warning"),  # not stable within 4 h of the start-up
        ("2026-11-29T04:00:00+08:00", "critical"),  # a fault episode beyond 4 h
    ]
    [false] = fired(lines, "furnace_false_marking")  # analyzers normal, 400 over 100, furnace at 900
    assert false[3] == "critical"
    assert "possible false marking: 2026-11-29 00:00 marked 故障 (fault)" in false[5]
    assert len(fired(lines, "furnace_mark")) == 2  # the January start-up and the fault, as info
    assert fired(lines, "furnace_feed_below_850") == []


def test_beyond_the_budget_marked_hours_are_judged_as_normal_operation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = marked_day(tmp_path, capsys, january_hours=58)  # 2 h of budget left: 02:00-06:00 are judged
    [violation] = fired(lines, "gb18485_so2_1d")
    assert violation[3] == "critical"
    mean = (4 * 600 * 10 / 15 + 18 * 40 * 10 / 15) / 22  # the 22 hours left after the 2 exempt ones
    assert f"{mean:g} mg/m3 above limit 80" in violation[5]
    assert "(2 marked hours exempt)" in violation[5]
    levels = [line[3] for line in fired(lines, "furnace_exempt_budget")]
    assert levels == ["warning", "critical"]  # 58 h at the start, 60 h used during the fault


def test_feeding_below_850_is_critical_whatever_the_mark_and_status_register_sets_marks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = datetime(2026, 12, 1, 6, tzinfo=BJ)
    rows = furnace_rows(start, 60, 700.0, feeder=0.0, furnace_status=1.0)  # drying: no waste fed
    rows += furnace_rows(start + timedelta(hours=1), 30, 800.0, feeder=1.0, furnace_status=1.0)  # fed while drying
    rows += furnace_rows(start + timedelta(minutes=90), 90, 900.0, feeder=1.0, furnace_status=0.0)  # normal
    rows += furnace_rows(start + timedelta(hours=3), 10, 830.0, feeder=1.0, furnace_status=0.0)  # a dip, fed
    rows += furnace_rows(start + timedelta(minutes=190), 20, 900.0, feeder=1.0, furnace_status=0.0)
    events, _, _ = rules_test(tmp_path, MARKED, rows, capsys, "--at", "2026-12-01T09:30:00+08:00")
    lines = [e.split(maxsplit=5) for e in events]
    [feed] = fired(lines, "furnace_feed_below_850")
    assert (feed[0], feed[3]) == ("2026-12-01T07:00:05+08:00", "critical")
    assert "while marked 烘炉 (drying)" in feed[5]
    assert [line[0] for line in lines if line[1] == "resolved" and line[2] == "furnace_feed_below_850"] == [
        "2026-12-01T07:30:05+08:00"
    ]
    [mark] = fired(lines, "furnace_mark")
    assert (mark[0], mark[3]) == ("2026-12-01T06:00:05+08:00", "info")
    assert "marked 烘炉 (drying) by register" in mark[5]
    # Below 850 from 06:00 to 07:30, all of it marked drying: not one furnace temperature event. The
    # 09:00 dip while feeding in normal operation (fed since the furnace reached 850) is the
    # 5-minute rule's event, not a second feeding alert.
    assert [(line[0], line[3]) for line in fired(lines, "furnace850")] == [("2026-12-01T09:00:00+08:00", "warning")]


# -- marks through the running daemon: HTTP, CLI, restart ----------------------------------------


def _post(port: int, path: str, body: Mapping[str, object], token: str | None) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_marks_from_http_and_the_cli_reach_the_daemon_and_survive_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        MARKED.split("hj212:")[0]
        + f"metrics: {{listen: '127.0.0.1:{port}', ack_token: tok-s3cret}}\noutbox: {{path: '{tmp_path}/outbox.sqlite'}}\n"
    )
    marks_seen: list[AlertEvent] = []
    changed = asyncio.Event()

    def observer(_readings: Sequence[Reading], events: Sequence[AlertEvent]) -> None:
        marks_seen.extend(e for e in events if e.rule == "furnace_mark")
        if marks_seen:
            changed.set()

    async def next_mark_event() -> AlertEvent:
        await asyncio.wait_for(changed.wait(), 10)
        changed.clear()
        return marks_seen.pop(0)

    daemon = await start_daemon(path, observer)
    try:
        fault = {"kind": "故障", "note": "ID fan tripped", "by": "zhang"}
        assert (await asyncio.to_thread(_post, port, "/furnaces/line1/marks", fault, None))[0] == 401
        assert (await asyncio.to_thread(_post, port, "/furnaces/line9/marks", fault, "tok-s3cret"))[0] == 404
        bad = await asyncio.to_thread(_post, port, "/furnaces/line1/marks", {"kind": "nap"}, "tok-s3cret")
        assert bad[0] == 400
        assert "expected a mark" in str(bad[1]["error"])
        assert (await asyncio.to_thread(_post, port, "/furnaces/line1/marks", fault, "tok-s3cret"))[0] == 202
        started = await next_mark_event()
        assert (started.state, started.severity) == (AlertState.FIRING, "info")
        assert started.message == "furnace line1 marked 故障 (fault) by zhang: ID fan tripped"
        assert main(["mark", "end", "line1", "-c", str(path)]) == 0
        ended = await next_mark_event()
        assert ended.state is AlertState.RESOLVED
        assert main(["mark", "set", "line1", "shutdown", "-c", str(path), "--by", "li"]) == 0
        assert (await next_mark_event()).message == "furnace line1 marked 停炉 (shutdown) by li"
        await daemon.desk().save()
    finally:
        await daemon.close()
    capsys.readouterr()
    assert main(["mark", "list", "-c", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "故障 (fault)" in listing
    assert "by zhang: ID fan tripped" in listing
    assert "停炉 (shutdown)" in listing
    again = await start_daemon(path)
    try:
        await asyncio.wait_for(again.pipeline.started.wait(), 10)  # after the state is restored
        marks = again.desk().rules.marks
        assert [(m.kind, m.by, m.end is None) for m in marks.of("line1")] == [
            ("fault", "zhang", False),
            ("shutdown", "li", True),  # still open after the restart
        ]
    finally:
        await again.close()


# -- the "incinerator compliance" dashboard against a real InfluxDB -------------------------------


@pytest.mark.service
async def test_every_incinerator_panel_query_returns_data_from_the_daemons_influxdb(
    tmp_path: Path, unique: str, influx1: Influx1
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        MARKED.split("hj212:")[0]
        + f"""influxdb: [{{name: local, api: v1, url: "{influx1.url}", database: {unique}, create_database: true,
             flush_interval: 100ms}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    daemon = await start_daemon(path)
    pipeline = daemon.pipeline
    now = time.time_ns()
    start = now - 30 * 3600 * NS
    readings: list[Reading] = []
    for step in range(30 * 60):  # a reading a minute for 30 hours
        ts = start + step * 60 * NS
        furnace = 830.0 if step % 240 < 12 else 905.0  # a 12-minute dip every 4 hours
        readings += [Reading(ts, "cx", "cems1", q, v, u) for q, v, u in CEMS_VALUES]
        readings += [Reading(ts, "cx", "dcs1", q, furnace, "degC") for q in ("t_up1", "t_mid1")]
        readings.append(Reading(ts, "cx", "dcs1", "feeder", 1.0, ""))
    try:
        await asyncio.wait_for(pipeline.started.wait(), 10)
        daemon.desk().rules.marks.add("line1", "fault", start + 3600 * NS, start + 3 * 3600 * NS, by="zhang")
        for i in range(0, len(readings), 2000):
            await pipeline.emit(readings[i : i + 2000])
        pipeline.tick(now)
        await asyncio.to_thread(
            eventually,
            lambda: (
                influx1.query(unique, 'SELECT count("avg") FROM telemetry_agg WHERE "window" = \'1d\'')
                and influx1.query(unique, 'SELECT count("value") FROM alerts WHERE "rule" = \'furnace_mark\'')
                and influx1.query(unique, 'SELECT count("value") FROM telemetry WHERE "quantity" = \'furnace_events\'')
                and pipeline.outbox.backlog()["influx:local"] == 0
            ),
            30,
            "aggregates, marks and the rules' figures in InfluxDB",
        )
    finally:
        await daemon.close()
    board = json.loads((ROOT / "config" / "grafana" / "dashboards" / "incinerator-compliance.json").read_text())
    empty = []
    for where, query in dashboard_queries(board):
        expanded = query.replace("$timeFilter", "time > now() - 48h").replace("/^$site$/", "/^cx$/")
        if not await asyncio.to_thread(influx1.query, unique, expanded):
            empty.append(f"{where}: {expanded}")
    assert empty == []
    events = await asyncio.to_thread(
        influx1.query, unique, 'SELECT last("value") FROM telemetry WHERE "quantity" = \'furnace_events\''
    )
    assert events  # the rule's count, as the stat panel shows it


def test_the_incinerator_example_passes_check_and_lists_its_furnace() -> None:
    example = ROOT / "config" / "examples" / "incinerator-line.yaml"
    env = {**os.environ, "DINGTALK_URL": "json://127.0.0.1:9/x", "HJ212_PW": "abc123", "TELEMETRY_ACK_TOKEN": "t0ken"}
    done = subprocess.run(
        [sys.executable, "-m", "telemetry.cli", "check", "-c", str(example)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "line1                stack stack1, temperature dcs1/furnace_temp" in done.stdout
    assert "gb18485_so2_1d               limit                *@stack1/*/so2_zs 1d > 80 [critical]" in done.stdout
    assert "warnings (0)" in done.stdout


# -- what the review found: late readings, restarts, backdated marks, the register, absurd times ---


def test_a_late_reading_never_gets_its_judged_window_counted_twice() -> None:
    rule = FurnaceTemperatureRule.model_validate({"kind": "furnace_temperature", "name": "f850"})
    state = RulesEngine([rule], {"cx": "Asia/Shanghai"})
    ten = int(datetime(2026, 12, 1, 10, tzinfo=BJ).timestamp()) * NS

    def reading(seconds: int, value: float) -> Reading:
        return Reading(ten + seconds * NS, "cx", "dcs1", "furnace_temp", value, "degC")

    fired = state.feed([reading(10, 800.0), reading(70, 800.0)])
    fired += state.tick(ten + 360 * NS)  # 10:00-10:05 judged (its grace passed): event 1
    for late in range(6):  # six stragglers of 10:00-10:05, and a restart in between
        fired += state.feed([reading(100 + late, 800.0)])
        if late == 3:
            saved = state.snapshot()
            state = RulesEngine([rule], {"cx": "Asia/Shanghai"})
            state.restore(saved)
        fired += state.tick(ten + (400 + late) * NS)
    assert [e.labels["condition"] for e in fired if e.state is AlertState.FIRING] == ["first"]
    [entry] = [e for e in state.counts().items() if e[0][1] == "late"]
    assert entry[1] == 2  # counted since the restart (the counts are metrics, not state)


def test_exempt_hours_survive_a_restart_and_the_hours_left_must_be_valid_enough(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = LimitRule.model_validate(
        {
            "kind": "limit",
            "name": "so2_day",
            "point": "stack1",
            "quantity": "so2_zs",
            "window": "1d",
            "above": 80,
            "each_window": True,
        }
    )
    furnace = FurnaceConfig.model_validate({"id": "line1", "site": "cx", "point": "stack1", "device": "dcs1"})
    points = Points.from_config(["cx"], [STACK])
    day = int(datetime(2026, 11, 29, tzinfo=BJ).timestamp()) * NS

    def engine() -> RulesEngine:
        return RulesEngine([rule], {"cx": "Asia/Shanghai"}, points, [furnace])

    def hour(h: int, avg: float, valid: bool = True) -> Aggregate:
        return Aggregate(
            day + h * 3600 * NS, "1h", "cx", "cems1", "so2_zs", "mg/m3", avg, avg, avg, 60, 60, valid, point="stack1"
        )

    first = engine()
    first.marks.add("line1", "fault", day, day + 6 * 3600 * NS, by="zhang")
    first.on_windows([hour(h, 400.0 if h < 6 else 40.0) for h in range(12)])
    second = engine()  # a restart at noon
    second.restore(first.snapshot())
    second.on_windows([hour(h, 40.0) for h in range(12, 24)])
    whole = Aggregate(day, "1d", "cx", "cems1", "so2_zs", "mg/m3", 40.0, 130.0, 400.0, 24, 24, True, point="stack1")
    assert [e.state for e in second.on_windows([whole])] == []  # 40 over the 18 hours kept: no violation

    third = engine()
    third.marks.add("line1", "fault", day, day + 6 * 3600 * NS, by="zhang")
    # Of the 18 hours left only 10 valid: a day needs 20 of 24, so 15 of 18.
    third.on_windows([hour(h, 400.0 if h < 6 else 90.0, valid=h < 6 or h >= 14) for h in range(24)])
    [insufficient] = third.on_windows([whole])
    assert insufficient.state is AlertState.INSUFFICIENT


def test_backdated_and_closed_marks_and_the_register_respect_the_open_one() -> None:
    furnace = FurnaceConfig.model_validate(
        {
            "id": "line1",
            "site": "cx",
            "device": "dcs1",
            "status": {"device": "dcs1", "quantity": "mode", "values": {2: "startup"}},
        }
    )
    engine = RulesEngine([], {"cx": "Asia/Shanghai"}, Points.from_config(["cx"], [STACK]), [furnace])
    marks = engine.marks
    h = 3600 * NS
    t0 = int(datetime(2026, 6, 1, tzinfo=BJ).timestamp()) * NS
    startup = marks.add("line1", "startup", t0 + 10 * h, by="li")  # open
    marks.add("line1", "fault", t0 + 11 * h, t0 + 12 * h, by="zhang")  # entered afterwards, closed
    assert marks.open("line1") is startup  # a closed mark does not end the open one
    backdated = marks.add("line1", "shutdown", t0 + 2 * h, by="wang")  # open, but before the open one
    assert backdated.end == t0 + 10 * h  # it lasted until the next mark began
    assert [m.id for m in marks.of("line1") if m.end is None] == [startup.id]
    # The register changes only its own marks: the operator's start-up stays.
    engine.feed([Reading(t0 + 13 * h, "cx", "dcs1", "mode", 0.0, "")])
    assert marks.open("line1") is startup
    marks.end("line1", t0 + 14 * h)
    engine.feed([Reading(t0 + 15 * h, "cx", "dcs1", "mode", 2.0, "")])
    assert (marks.open("line1") or startup).by == "register"
    engine.feed([Reading(t0 + 16 * h, "cx", "dcs1", "mode", 0.0, "")])
    assert marks.open("line1") is None


def test_the_budget_is_per_local_calendar_year() -> None:
    furnace = FurnaceConfig.model_validate({"id": "line1", "site": "cx", "device": "dcs1", "budget_hours": 10})
    marks = RulesEngine([], {"cx": "Asia/Shanghai"}, Points.from_config(["cx"], [STACK]), [furnace]).marks
    new_year = int(datetime(2027, 1, 1, tzinfo=BJ).timestamp()) * NS
    h = 3600 * NS
    marks.add("line1", "fault", new_year - 8 * h, new_year + 4 * h)  # 8 h in 2026, 4 h in 2027
    assert marks.used("line1", new_year - 1) == 8 * h - 1
    assert marks.used("line1", new_year + 5 * h) == 4 * h
    assert marks.exempt_spans("line1", new_year + h, new_year + 5 * h) == [(new_year, new_year + 4 * h)]
    marks.add("line1", "startup", new_year + 10 * h, new_year + 20 * h)  # 10 h more: 6 h of it in budget
    assert marks.exempt_spans("line1", new_year + h, new_year + 30 * h)[-1] == (new_year + 10 * h, new_year + 16 * h)


async def test_absurd_mark_times_are_refused_before_they_are_queued(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "site.yaml"
    path.write_text(
        MARKED.split("hj212:")[0]
        + f"metrics: {{listen: '127.0.0.1:{port}', ack_token: tok-s3cret}}\noutbox: {{path: '{tmp_path}/outbox.sqlite'}}\n"
    )
    daemon = await start_daemon(path)
    try:
        await asyncio.wait_for(daemon.pipeline.started.wait(), 10)
        for body in (
            {"kind": "fault", "start": "2255-01-01T00:00:00+08:00"},
            {"kind": "fault", "start": "2020-01-01T00:00:00+08:00"},
            {"kind": "fault", "start": "2026-12-01T10:00:00+08:00", "end": "2026-12-01T09:00:00+08:00"},
        ):
            status, answer = await asyncio.to_thread(_post, port, "/furnaces/line1/marks", body, "tok-s3cret")
            assert status == 400, answer
        status, answer = await asyncio.to_thread(
            _post, port, "/furnaces/line1/marks/end", {"at": "2255-01-01T00:00:00+08:00"}, "tok-s3cret"
        )
        assert status == 400
        assert "future" in str(answer["error"])
    finally:
        await daemon.close()
    assert main(["mark", "end", "line1", "-c", str(path), "--at", "2255-01-01T00:00:00+08:00"]) == 2
    assert main(["mark", "set", "line1", "fault", "-c", str(path), "--start", "99999999999999999999999"]) == 2
