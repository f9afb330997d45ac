"""Monitoring points and the figures the regulator judges, through `telemetry rules test` and `check`.

Each test is one finding of the review (issue 15) replayed as an integrator would: a
config, a CSV of readings, and what the command prints: alert events, the closed
windows (``--windows``) and what the platform would receive (``--hj212``). Expected
figures are computed here by hand from the inputs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from telemetry.cli import main

ROOT = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
BJ = ZoneInfo("Asia/Shanghai")
Row = tuple[int, str, str, str, float, str, str]  # ts ns, site, device, quantity, value, unit, flag

TWO_POINTS = """
sites: [{id: s, timezone: Asia/Shanghai}]
points:
  - {id: outlet, site: s, devices: [eff, eff-flow], flow: {device: eff-flow}}
  - {id: inlet, site: s, devices: [raw, raw-flow]}
hj212:
  - {name: city, host: 127.0.0.1, port: 9, point: outlet, mn: "010000A8900016F000169DC0", pw: "123456"}
"""


def ns(when: datetime) -> int:
    return int(when.timestamp()) * NS


def minutes(
    start: datetime, count: int, device: str, quantity: str, value: float, unit: str, flag: str = "N"
) -> list[Row]:
    return [(ns(start) + (m * 60 + 5) * NS, "s", device, quantity, value, unit, flag) for m in range(count)]


def replay(
    tmp: Path, config: str, rows: Iterable[Row], capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[list[str], list[dict[str, str]], list[dict[str, str]]]:
    """Run `telemetry rules test`; returns (event lines, windows as fields, hj212 items by key)."""
    (tmp / "site.yaml").write_text(config)
    lines = ["ts,site,device,quantity,value,unit,flag"] + [",".join(map(str, r)) for r in sorted(rows)]
    (tmp / "in.csv").write_text("\n".join(lines) + "\n")
    code = main(["rules", "test", "-c", str(tmp / "site.yaml"), "--input", str(tmp / "in.csv"), *extra])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    windows = [
        dict(f.split("=", 1) for f in line.split()[3:] if "=" in f)
        | {"start": line.split()[2], "window": line.split()[1]}
        for line in out
        if line.startswith("window ")
    ]
    packets = []
    for line in out:
        if line.startswith("hj212 "):
            cn = line.split()[3].removeprefix("CN=")
            cp = line.split("CP=&&", 1)[1].removesuffix("&&")
            fields = {"CN": cn}
            for item in cp.split(";"):
                for pair in item.split(","):
                    key, _, value = pair.partition("=")
                    fields[key] = value
            packets.append(fields)
    events = [line for line in out if not line.startswith(("window ", "hj212 ")) and "readings replayed" not in line]
    return events, windows, packets


def one(windows: list[dict[str, str]], **match: str) -> dict[str, str]:
    found = [w for w in windows if all(w.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_inlet_and_outlet_at_one_site_keep_their_own_flow_mass_and_upload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day = datetime(2026, 11, 30, tzinfo=BJ)
    rows = minutes(day, 1440, "eff", "cod", 48.0, "mg/L") + minutes(day, 1440, "eff-flow", "flow", 2.0, "m3/h")
    rows += minutes(day, 1440, "raw", "cod", 9800.0, "mg/L") + minutes(day, 1440, "raw-flow", "flow", 20.0, "m3/h")
    _, windows, packets = replay(
        tmp_path, TWO_POINTS, rows, capsys, "--windows", "1d", "--hj212", "city", "--at", "2026-12-01T00:05:00+08:00"
    )
    outlet = one(windows, window="1d", series="s/eff/cod")
    inlet = one(windows, window="1d", series="s/raw/cod")
    assert outlet["point"] == "outlet"
    assert inlet["point"] == "inlet"
    assert float(outlet["cou"]) == pytest.approx(48.0 * 2.0 * 24 / 1000)  # 2.304 kg: its own 48 m3
    assert float(inlet["cou"]) == pytest.approx(9800.0 * 20.0 * 24 / 1000)
    [day_packet] = [p for p in packets if p["CN"] == "2031"]
    assert day_packet["w01018-Avg"] == "48"  # never the inlet's 9800, nor a mean of the two
    assert day_packet["w01018-Cou"] == "2.304"
    assert day_packet["w00000-Cou"] == "48"  # m3
    hours = [p for p in packets if p["CN"] == "2061"]
    assert len(hours) == 24
    assert {p["w01018-Avg"] for p in hours} == {"48"}


def test_check_lists_inferred_points_and_refuses_ambiguous_or_unconvertible_ones(tmp_path: Path) -> None:
    def check(text: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "site.yaml"
        path.write_text(text)
        return subprocess.run(
            [sys.executable, "-m", "telemetry.cli", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )

    modbus = """
devices:
  - id: eff
    kind: modbus
    site: s
    host: 127.0.0.1
    points:
      - {quantity: cod, address: 0, unit: mg/L}
      - {quantity: flow, address: 2, unit: FLOW_UNIT}
"""
    ok = check("sites: [{id: s}]\n" + modbus.replace("FLOW_UNIT", "m3/h"))
    assert ok.returncode == 0, ok.stderr
    assert "monitoring points (1):" in ok.stdout
    assert "site s, water: every device of the site; flow */flow [inferred" in ok.stdout
    unconvertible = check(
        TWO_POINTS.replace("[eff, eff-flow], flow: {device: eff-flow}", "[eff]") + modbus.replace("FLOW_UNIT", "kg")
    )
    assert unconvertible.returncode == 2
    assert (
        "devices[0].points: expected a unit convertible to L/s for flow (w00000), uploaded to hj212 'city', found 'kg'"
        in unconvertible.stderr
    )
    overlapping = check(TWO_POINTS.replace("devices: [raw, raw-flow]", "devices: [raw, eff]"))
    assert overlapping.returncode == 2
    assert "points[1].devices: expected each series in one point; eff/* is also in 'outlet'" in overlapping.stderr
    no_point = check(TWO_POINTS.replace("point: outlet", "site: s"))
    assert no_point.returncode == 2
    assert "hj212[0].site: expected 'point': site 's' has 2 monitoring points (outlet, inlet)" in no_point.stderr


def test_an_hourly_analyzer_enters_each_hour_once_with_its_sample_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The COD analyzer measures once an hour; its result for hour h appears at hh:40 and stays in
    the register; the daemon polls every 10 minutes. Without the cycle, hour h's mean mixes four
    polls of the previous result with two of its own."""
    start = datetime(2026, 11, 30, 8, tzinfo=BJ)

    def result(h: int) -> float:
        return 50.0 + 3 * h

    polls: list[Row] = []
    for h in range(4):
        for m in range(0, 60, 10):
            value = result(h) if m >= 40 else result(h - 1)
            polls.append((ns(start + timedelta(hours=h, minutes=m)) + 2 * NS, "s", "eff", "cod", value, "mg/L", "N"))
    base = "sites: [{id: s}]\n"
    _, mixed, _ = replay(tmp_path, base, polls, capsys, "--windows", "1h", "--at", "2026-11-30T12:10:00+08:00")
    assert float(one(mixed, start="2026-11-30T09:00:00+08:00")["avg"]) == pytest.approx(
        (4 * result(0) + 2 * result(1)) / 6
    )
    cycled = base + "aggregation: {overrides: [{quantity: cod, cycle: 1h}]}\n"
    _, hours, _ = replay(tmp_path, cycled, polls, capsys, "--windows", "1h", "--at", "2026-11-30T12:10:00+08:00")
    for h in (1, 2, 3):
        hour = one(hours, start=(start + timedelta(hours=h)).isoformat())
        assert float(hour["avg"]) == result(h)  # only this hour's measurement
        assert (hour["valid"], hour["method"], hour["valid_count"]) == ("yes", "cycles", "1")
    # With the analyzer's sample time (a register, or a DAU's data time): every poll of one result
    # carries that time (the measurement finished at hh:35), and SampleTime goes up with the hour.
    sampled: list[Row] = []
    for h in range(4):
        for m in range(0, 60, 10):
            done = h if m >= 40 else h - 1
            sample = ns(start + timedelta(hours=done, minutes=35))
            sampled.append((sample, "s", "eff", "cod", result(done), "mg/L", "N"))
    config = cycled.replace("cycle: 1h}", "cycle: 1h, sample_time: true}") + (
        "hj212: [{name: city, host: 127.0.0.1, port: 9, site: s, mn: '1', pw: '1', send: [hour]}]\n"
    )
    _, hours, packets = replay(
        tmp_path, config, sampled, capsys, "--windows", "1h", "--hj212", "city", "--at", "2026-11-30T12:10:00+08:00"
    )
    assert float(one(hours, start="2026-11-30T10:00:00+08:00")["avg"]) == result(2)
    ten = next(p for p in packets if p["DataTime"] == "20261130100000")
    assert ten["w01018-Avg"] == f"{result(2):g}"
    assert ten["w01018-SampleTime"] == "20261130103500"


def test_a_two_hour_cycle_carries_its_measurement_into_the_hour_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = datetime(2026, 11, 30, 8, tzinfo=BJ)
    polls = [
        (ns(start + timedelta(minutes=m)) + NS, "s", "tp", "tp", 0.8 if m < 150 else 1.4, "mg/L", "N")
        for m in range(30, 270, 10)
    ]
    config = "sites: [{id: s}]\naggregation: {overrides: [{quantity: tp, cycle: 2h}]}\n"
    _, hours, _ = replay(tmp_path, config, polls, capsys, "--windows", "1h", "--at", "2026-11-30T12:10:00+08:00")
    nine = one(hours, start="2026-11-30T09:00:00+08:00")
    assert (nine["avg"], nine["valid"], nine["method"]) == ("0.8", "yes", "carried")
    measured = "aggregation: {overrides: [{quantity: tp, cycle: 2h, hour_value: measured}]}"
    _, hours, _ = replay(
        tmp_path,
        config.replace("aggregation: {overrides: [{quantity: tp, cycle: 2h}]}", measured),
        polls,
        capsys,
        "--windows",
        "1h",
        "--at",
        "2026-11-30T12:10:00+08:00",
    )
    assert one(hours, start="2026-11-30T09:00:00+08:00")["valid"] == "no"


def test_intermittent_discharge_is_flow_weighted_and_trips_the_daily_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 h at 200 mg/L and 10 m3/h, 22 h at 40 mg/L (the last at 0 m3/h): the review's day."""
    day = datetime(2026, 11, 30, tzinfo=BJ)
    rows: list[Row] = []
    for h in range(24):
        conc, flow = (200.0, 10.0) if h < 2 else (40.0, 1.0 if h < 23 else 0.0)
        rows += minutes(day + timedelta(hours=h), 60, "eff", "cod", conc, "mg/L")
        rows += minutes(day + timedelta(hours=h), 60, "eff-flow", "flow", flow, "m3/h")
    config = (
        TWO_POINTS
        + "rules: [{kind: standard, name: t2, point: outlet, tables: [gb16889-2008-table2], windows: [1d]}]\n"
    )
    events, windows, _ = replay(tmp_path, config, rows, capsys, "--windows", "1d", "--at", "2026-12-01T00:05:00+08:00")
    cod = one(windows, series="s/eff/cod")
    assert float(cod["avg"]) == pytest.approx((2 * 200 * 10 + 21 * 40) / (2 * 10 + 21))  # 118.05, not 53.3
    assert cod["method"] == "flow"
    assert float(cod["cou"]) == pytest.approx((2 * 200 * 10 + 21 * 40) / 1000)
    assert [e.split()[1:3] for e in events] == [["firing", "t2_cod_1d"]]  # 100 mg/L daily limit


def test_berlin_dst_days_are_one_day_each_for_windows_and_capacity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A weighbridge at 31.25 t/h all day: 23 hours on 2024-03-31 (718 t, under 97 % of 750) and
    25 on 2024-10-27 (781 t, over 750). Each local day is one window and one capacity verdict."""
    berlin = ZoneInfo("Europe/Berlin")
    config = """
sites: [{id: s, timezone: Europe/Berlin}]
rules:
  - {kind: capacity, name: cap, site: s, quantity: throughput, design: 750, over_percent: 100, under_percent: 97, project_after: 30h}
"""
    for date, hours, verdict in (((2024, 3, 31), 23, "only 718 t today"), ((2024, 10, 27), 25, "781 t today, 104%")):
        start = datetime(*date, tzinfo=berlin)
        t = ns(start)
        rows: list[Row] = [(t + m * 60 * NS, "s", "scale", "throughput", 31.25, "t/h", "N") for m in range(hours * 60)]
        until = datetime.fromtimestamp(t / NS + hours * 3600 + 600, berlin).isoformat()
        events, windows, _ = replay(tmp_path, config, rows, capsys, "--windows", "1d", "--at", until)
        [day] = [w for w in windows if w["window"] == "1d"]
        assert day["start"] == start.isoformat()  # from local midnight
        assert int(day["count"]) == hours * 60  # one window holds the whole local day
        [capacity] = [e for e in events if " cap " in e]
        assert "firing" in capacity
        assert verdict in capacity  # the whole day's tonnage, never a day of 1 or 24 hours


def test_a_jittering_totalizer_adds_its_increments_not_its_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day = datetime(2026, 11, 30, tzinfo=BJ)
    rows: list[Row] = []
    counter = 124_500.0
    for m in range(0, 1440, 10):
        counter += 750 / 144
        value = rows[-1][4] - 0.1 if m == 600 else counter  # one reading 0.1 t below the one before it
        rows.append((ns(day + timedelta(minutes=m)), "s", "scale", "throughput_total", value, "t", "N"))
    config = """
sites: [{id: s}]
rules:
  - {kind: capacity, name: cap, site: s, quantity: throughput_total, source: totalizer, design: 700, over_percent: 100, project_after: 30h}
"""
    events, _, _ = replay(tmp_path, config, rows, capsys, "--at", "2026-12-01T00:10:00+08:00")
    [fired] = [e for e in events if "firing" in e]
    increments = rows[-1][4] - rows[0][4]  # what the counter advanced over the day
    assert f"{increments:.0f} t today" in fired  # 745 t, never "750,239 t"


def test_values_go_up_in_the_units_their_codes_prescribe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hour = datetime(2026, 11, 30, 10, tzinfo=BJ)
    rows = minutes(hour, 60, "eff-flow", "flow", 36.0, "m3/h") + minutes(hour, 60, "eff", "nh3n", 800.0, "ug/L")
    _, _, packets = replay(tmp_path, TWO_POINTS, rows, capsys, "--hj212", "city", "--at", "2026-11-30T11:10:00+08:00")
    [h] = [p for p in packets if p["CN"] == "2061"]
    assert h["w00000-Avg"] == "10"  # 36 m3/h = 10 L/s (the platform read 36 as 129.6 m3/h)
    assert h["w00000-Cou"] == "36"  # m3 in the hour
    assert h["w21003-Avg"] == "0.8"  # mg/L
    [m] = [p for p in packets if p["CN"] == "2051" and p["DataTime"] == "20261130101000"]
    assert m["w00000-Cou"] == "6"  # m3 in ten minutes


def test_minute_periods_are_flagged_by_the_documented_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = datetime(2026, 11, 30, 10, tzinfo=BJ)
    # 10:00-10:10: 8 valid minutes, 2 missing; 10:10-10:20: 7 valid, 3 in calibration.
    rows = minutes(start, 8, "eff", "cod", 40.0, "mg/L") + minutes(
        start + timedelta(minutes=10), 7, "eff", "cod", 40.0, "mg/L"
    )
    rows += minutes(start + timedelta(minutes=17), 3, "eff", "cod", 90.0, "mg/L", "C")
    _, _, packets = replay(tmp_path, TWO_POINTS, rows, capsys, "--hj212", "city", "--at", "2026-11-30T10:30:00+08:00")
    first, second = (p for p in packets if p["CN"] == "2051")
    assert (first["DataTime"], first["w01018-Flag"]) == ("20261130100000", "N")  # 8 of 10 >= 3/4
    assert (second["DataTime"], second["w01018-Flag"]) == ("20261130101000", "C")  # 7 of 10 < 3/4
    assert second["w01018-Avg"] == "40"  # the valid minutes' mean, with the period's flag


def test_detection_limits_and_negative_readings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hour = datetime(2026, 11, 30, 10, tzinfo=BJ)
    rows = minutes(hour, 30, "eff", "nh3n", 0.01, "mg/L") + minutes(
        hour + timedelta(minutes=30), 30, "eff", "nh3n", 0.5, "mg/L"
    )
    rows += minutes(hour, 60, "eff", "cod", -3.0, "mg/L") + minutes(hour, 60, "eff-flow", "flow", 2.0, "m3/h")
    config = TWO_POINTS + "aggregation: {overrides: [{quantity: nh3n, detection_limit: 0.025}]}\n"
    _, windows, _ = replay(tmp_path, config, rows, capsys, "--windows", "1h", "--at", "2026-11-30T11:10:00+08:00")
    nh3n = one(windows, series="s/eff/nh3n")
    assert float(nh3n["avg"]) == pytest.approx((30 * 0.0125 + 30 * 0.5) / 60)  # below 0.025: half the limit
    assert float(nh3n["min"]) == 0.0125
    cod = one(windows, series="s/eff/cod")
    assert (cod["avg"], cod["cou"]) == ("-3", "0")  # an offset below zero is shown, never a negative mass
    zero = config.replace("detection_limit: 0.025}", "detection_limit: 0.025, below_detection: zero}")
    _, windows, _ = replay(tmp_path, zero, rows, capsys, "--windows", "1h", "--at", "2026-11-30T11:10:00+08:00")
    assert float(one(windows, series="s/eff/nh3n")["avg"]) == pytest.approx(0.25)


def test_standard_overrides_merge_into_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hour = datetime(2026, 11, 30, 10, tzinfo=BJ)
    rows = minutes(hour, 60, "eff", "ph", 5.0, "pH") + minutes(hour + timedelta(hours=1), 60, "eff", "ph", 8.7, "pH")
    config = """
sites: [{id: s}]
rules:
  - {kind: standard, name: g1, site: s, tables: [gb8978-1996-grade1], windows: [1h], overrides: {ph: {above: 8.5}}}
"""
    low, high = rows[:60], rows[60:]
    [below] = replay(tmp_path, config, low, capsys, "--at", "2026-11-30T11:10:00+08:00")[0]
    assert "firing" in below
    assert "ph hourly mean 5 pH below limit 6" in below  # the table's lower bound stays
    [above] = replay(tmp_path, config, high, capsys, "--at", "2026-11-30T12:10:00+08:00")[0]
    assert "ph hourly mean 8.7 pH above limit 8.5" in above  # the override's upper bound


def test_check_warns_of_two_flow_meters_in_one_inferred_point_and_asks_for_cycles_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"

    def check(text: str) -> subprocess.CompletedProcess[str]:
        path.write_text(text)
        return subprocess.run(
            [sys.executable, "-m", "telemetry.cli", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )

    devices = """
sites: [{id: s}]
devices:
  - {id: raw, kind: modbus, site: s, host: 127.0.0.1, unit_id: 1, points: [{quantity: flow, address: 0, unit: m3/h}]}
  - id: eff
    kind: modbus
    site: s
    host: 127.0.0.1
    unit_id: 2
    points:
      - {quantity: flow, address: 0, unit: m3/h}
      - {quantity: cod, address: 2, unit: mg/L, sample_time: {address: 10}}
"""
    no_cycle = check(devices)
    assert no_cycle.returncode == 2
    assert "devices[1].points: expected the analyzer's measuring cycle for a sample-time register" in no_cycle.stderr
    ok = check(devices + "aggregation: {overrides: [{quantity: cod, device: eff, cycle: 1h}]}\n")
    assert ok.returncode == 0, ok.stderr
    assert "site s: 2 flow meters (eff, raw) in its one inferred point; declare 'points'" in ok.stdout
    digits = check(devices + "hj212: [{name: city, host: h, port: 1, site: s, mn: 41050022000017, pw: 123456}]\n")
    assert (
        "hj212[0].mn: expected text: put it in quotes, so YAML keeps every digit, found 41050022000017" in digits.stderr
    )
    assert "hj212[0].pw: expected text: put it in quotes" in digits.stderr
    assert "123456" not in digits.stderr  # a password is never printed


def test_check_refuses_points_without_a_clear_flow_and_keeps_older_configs_valid(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"

    def check(text: str) -> subprocess.CompletedProcess[str]:
        path.write_text(text)
        return subprocess.run(
            [sys.executable, "-m", "telemetry.cli", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )

    base = """
sites: [{id: s}]
devices:
  - {id: a, kind: modbus, site: s, host: 127.0.0.1, unit_id: 1, points: [{quantity: flow, address: 0, unit: m3/h}]}
  - id: b
    kind: modbus
    site: s
    host: 127.0.0.1
    unit_id: 2
    points:
      - {quantity: flow, address: 0, unit: t/h}
      - {quantity: cod, address: 2, unit: mg/L, sample_time: {address: 50}}
aggregation: {overrides: [{quantity: cod, cycle: 1h}]}
"""
    two_flows = check(base + "points: [{id: out, site: s, devices: [a, b]}]\n")
    assert two_flows.returncode == 2
    assert "points[0].flow: expected flow.device: a, b all measure flow at this point" in two_flows.stderr
    no_flow = check(base + "points: [{id: out, site: s, devices: [a, b], quantities: [cod]}]\n")
    assert "points[0].quantities: expected its flow quantity 'flow' among them" in no_flow.stderr
    chosen = check(base + "points: [{id: out, site: s, devices: [a, b], flow: {device: b}}]\n")
    assert chosen.returncode == 0, chosen.stderr
    assert "device b: cod and its sample time are read in separate requests" in chosen.stdout
    # A platform for a site that only MQTT topics name was valid before points existed; it is refused
    # now (issue 17: a typo in `site` uploaded nothing), saying how to keep it: list the site.
    older = check(base + "hj212: [{name: c, host: h, port: 1, site: elsewhere, mn: '1', pw: '1'}]\n")
    assert older.returncode == 2
    assert (
        f"{path}:14: hj212[0].site: expected a site from 'sites' (s), found 'elsewhere': add it to 'sites'\n"
        in older.stderr
    )
    listed = check(
        base.replace("sites: [{id: s}]", "sites: [{id: s}, {id: elsewhere}]")
        + "hj212: [{name: c, host: h, port: 1, site: elsewhere, mn: '1', pw: '1'}]\n"
    )
    assert listed.returncode == 0, listed.stderr
    fast = check(base + "hj212: [{name: c, host: h, port: 1, site: s, mn: '1', pw: '1', rtd_interval: 1s}]\n")
    assert "device a is polled every 10s but hj212 c leaves a value out of real-time data 3s after" in fast.stdout


async def test_the_demo_station_uploads_its_outlet_and_never_its_inlet(tmp_path: Path) -> None:
    """config/demo.yaml as shipped: the simulated inlet (raw leachate, ~10,000 mg/L COD) and outlet
    (~60 mg/L) on one Modbus server; the city platform stand-in gets the outlet's values only."""
    import asyncio  # noqa: PLC0415 - this test alone runs the daemon

    from telemetry import app  # noqa: PLC0415
    from telemetry.model import AlertEvent, Reading  # noqa: PLC0415
    from telemetry.sim.plant import LeachateInlet, LeachateStation, ModbusAnalyzer  # noqa: PLC0415
    from telemetry.sim.platform import Receiver  # noqa: PLC0415
    from tests.services import free_port  # noqa: PLC0415

    receiver = Receiver()
    await receiver.start()
    analyzer = ModbusAnalyzer(LeachateStation(excursion_at=1e9), port=free_port(), inlet=LeachateInlet())
    await analyzer.start()
    env = {
        "DEMO_MODBUS_PORT": str(analyzer.port),
        "DEMO_MQTT_PORT": str(free_port()),
        "DEMO_POLL": "500ms",
        "DEMO_POLL_TIMEOUT": "200ms",
        "HJ212_PORT": str(receiver.port),
        "HJ212_RTD": "1s",
        "DEMO_DAU_LISTEN": f"127.0.0.1:{free_port()}",
        "METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        "INFLUX_URL": f"http://127.0.0.1:{free_port()}",
        "TELEMETRY_STATE": str(tmp_path),
    }
    dep = app.load(str(ROOT / "config" / "demo.yaml"), env)
    seen: list[Reading] = []

    def observe(readings: Sequence[Reading], _: Sequence[AlertEvent]) -> None:
        seen.extend(readings)

    stop = asyncio.Event()
    daemon = asyncio.create_task(app.serve(dep, stop, observer=observe))
    try:
        packets = await receiver.wait_for(lambda ps: sum(p.cn == "2011" for p in ps) >= 3, 30)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)
        await analyzer.stop()
        await receiver.stop()
    realtime = [p for p in packets if p.cn == "2011"]
    cod = [float(p.get("w01018-Rtd") or "nan") for p in realtime]
    assert all(20 < value < 200 for value in cod), cod  # the outlet's ~60 mg/L, never the inlet's ~10,000
    assert all(p.mn == "010000A8900016F000169DC0" for p in realtime)
    assert any(r.device == "inlet-analyzers" and r.quantity == "cod" and r.value > 5000 for r in seen)
