"""`telemetry rules test`, and aggregates in InfluxDB checked against the raw points there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from telemetry.cli import main
from telemetry.model import Flag, Reading
from tests import services
from tests.daemon import start_daemon
from tests.services import Influx1, eventually

BJ = timezone(timedelta(hours=8))
AGG_1H = "SELECT * FROM telemetry_agg WHERE \"window\" = '1h'"
CONFIG = """
sites: [{id: diaoyushan}]
rules:
  - {kind: standard, name: t2, site: diaoyushan, tables: [gb16889-2008-table2], windows: [1h]}
  - {kind: limit, name: cod_now, site: diaoyushan, quantity: cod, above: 100, for: 10m}
"""


def test_rules_test_replays_a_csv_and_prints_what_would_fire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG)
    start = datetime(2026, 11, 25, 8, 0, tzinfo=BJ)
    rows = ["ts,site,device,quantity,value,unit,flag"]
    for m in range(4 * 60):
        cod = 130.0 if 60 <= m < 120 else 60.0
        flag = "C" if 150 <= m < 170 else "N"  # 40 valid minutes in the 4th hour
        rows.append(f"{(start + timedelta(minutes=m)).isoformat()},diaoyushan,an,cod,{cod},mg/L,{flag}")
    csv = tmp_path / "cod.csv"
    csv.write_text("\n".join(rows) + "\n")
    code = main(["rules", "test", "-c", str(config), "--input", str(csv), "--at", "2026-11-25T12:05:00+08:00"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    events = [line.split()[1:3] for line in out if line[:4] == "2026"]
    assert events == [  # in time order; a window's event carries the window's start
        ["firing", "t2_cod_1h"],  # the 09:00-10:00 mean, 130 mg/L
        ["firing", "cod_now"],  # 09:10: ten minutes above 100
        ["resolved", "cod_now"],  # 10:00: back to 60
        ["insufficient_data", "t2_cod_1h"],  # 10:00-11:00: 40 valid minutes (20 in calibration)
        ["resolved", "t2_cod_1h"],  # 11:00-12:00: mean 60
    ]
    assert out[-1] == "240 readings replayed: 5 events, 2 firing"


ROW = "2026-11-25T08:00:00+08:00,diaoyushan,an,cod,130,mg/L,N"


@pytest.mark.parametrize(
    "text",
    [
        f"ts,site,device,quantity,value,unit,flag\n{ROW}\n",
        f"{ROW}\n",  # no header line: the columns in their order
        f"{ROW}\n\n",  # a blank line is no reading
        "value,ts,device,site,quantity\n130,2026-11-25T08:00:00+08:00,an,diaoyushan,cod\n",  # a header's order
        "2026-11-25T08:00:00+08:00,diaoyushan,an,cod,130\n",  # unit and flag are optional
    ],
)
def test_rules_test_reads_a_csv_with_or_without_its_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """Without the header line it used to say `day.csv:2: 'ts'`."""
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG)
    csv = tmp_path / "day.csv"
    csv.write_text(text)
    assert main(["rules", "test", "-c", str(config), "--input", str(csv)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 readings replayed: 0 events, 0 firing"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"{ROW}\n2026-11-25T08:01:00+08:00,diaoyushan,an,cod,high\n", "2: value: expected a number, found 'high'"),
        (
            f"{ROW}\n2026-11-25T08:01:00+08:00,diaoyushan,an\n",
            "2: expected 5 to 7 fields (ts,site,device,quantity,value,unit,flag), found 3",
        ),
        (
            "2026-11-25 08:00,diaoyushan,an,cod,130\n",
            "1: ts: expected epoch seconds (or ms, us, ns) or ISO 8601 with a zone, found '2026-11-25 08:00':"
            " timestamp has no time zone (add Z or +08:00)",
        ),
        (f"{ROW[:-1]}X\n", "1: flag: expected one of N, F, M, S, D, C, T, B, found 'X'"),
        (f"{ROW.replace('130', 'nan')}\n", "1: value: expected a number, found 'nan'"),
        (
            "ts,site,device,quantity,value\n2026-11-25T08:00:00+08:00,,an,cod,1\n",
            "2: site: expected a name usable as a tag, found '' (must not be empty)",
        ),
        (
            "time,site,device,quantity,value\n" + ROW + "\n",
            "1: expected a header of ts,site,device,quantity,value[,unit][,flag] (or none), found column 'time'",
        ),
        (
            "ts,site,device,quantity,valeu\n" + ROW + "\n",
            "1: expected a header of ts,site,device,quantity,value[,unit][,flag] (or none), found column 'valeu'"
            " (did you mean 'value'?)",
        ),
        (
            "ts,site,device,value\n" + ROW + "\n",
            "1: expected a header of ts,site,device,quantity,value[,unit][,flag] (or none), found no quantity",
        ),
    ],
)
def test_rules_test_says_what_is_wrong_with_a_bad_csv_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG)
    csv = tmp_path / "day.csv"
    csv.write_text(text)
    assert main(["rules", "test", "-c", str(config), "--input", str(csv)]) == 2
    assert capsys.readouterr().err == f"{csv}:{problem}\n"


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[Influx1]:
    (tmp_path / "influx").mkdir()
    with services.influxd(tmp_path / "influx") as server:
        yield server


@pytest.mark.service
async def test_aggregates_in_influxdb_match_a_recomputation_from_the_raw_points(
    tmp_path: Path, influx: Influx1
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
sites: [{{id: s}}]
influxdb: [{{name: local, api: v1, url: "{influx.url}", database: plant, create_database: true, flush_interval: 50ms}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    daemon = await start_daemon(config)
    pipeline = daemon.pipeline
    hour_ns = 3600 * 10**9
    start = (time.time_ns() // hour_ns - 3) * hour_ns  # a whole hour, three hours ago (UTC+8: whole hours too)
    readings = [
        Reading(
            start + m * 60 * 10**9 + 7 * 10**9,
            "s",
            "an",
            "cod",
            50.0 + (m * 37 % 23),
            "mg/L",
            Flag.C if m % 9 == 0 else Flag.N,
        )
        for m in range(60)
    ] + [Reading(start + m * 60 * 10**9 + 7 * 10**9, "s", "fm", "flow", 2.0 + m / 60, "m3/h") for m in range(60)]
    try:
        await pipeline.emit(readings)
        pipeline.tick(start + 2 * hour_ns)
        rows = await asyncio.to_thread(
            eventually,
            lambda: r if len(r := influx.query("plant", AGG_1H)) == 2 else None,
            20,
            "two hourly aggregates",
        )
    finally:
        await daemon.close()
    cod = next(r for r in rows if r["quantity"] == "cod")
    flow = next(r for r in rows if r["quantity"] == "flow")
    span = f"time >= {start} AND time < {start + hour_ns}"
    [raw] = influx.query(
        "plant",
        f"SELECT mean(value), min(value), max(value), count(value) FROM telemetry WHERE quantity='cod' AND flag='N' AND {span}",
    )
    [every] = influx.query("plant", f"SELECT count(value) FROM telemetry WHERE quantity='cod' AND {span}")
    [raw_flow] = influx.query("plant", f"SELECT mean(value) FROM telemetry WHERE quantity='flow' AND {span}")
    assert cod["time"] == start
    assert cod["avg"] == pytest.approx(raw["mean"])
    assert (cod["min"], cod["max"], cod["valid_count"], cod["count"]) == (
        raw["min"],
        raw["max"],
        raw["count"],
        every["count"],
    )
    assert cod["valid"] is True  # 53 valid minutes of 45 needed
    assert flow["cou"] == pytest.approx(raw_flow["mean"] * 1.0)  # m3/h for one hour
    assert cod["cou"] == pytest.approx(cod["avg"] * flow["cou"] / 1000)  # kg
