"""The HJ 212 listener (``kind: hj212``) with simulated data acquisition units over real TCP:
every field variant acknowledged by QN and stored (outbox and a real InfluxDB), refusals,
a station's own periods, isolation of bad connections, and acknowledgement only after commit."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from drivers.hj212 import Hj212Config, Hj212Driver
from telemetry.hj212.codec import Packet
from telemetry.hj212.inbound import MAX_CODES, Inbound
from telemetry.hj212.stations import Station
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, AlertEvent, Reading, Rejected
from tests.daemon import RunningDaemon, start_daemon
from tests.dau import VARIANTS, Dau, period_cp, rtd_cp, wrap
from tests.faults.harness import committed
from tests.services import Influx1, eventually, free_port

BJ = timezone(timedelta(hours=8))
NS = 1_000_000_000
PW = "dau-pw1"


def mn(i: int) -> str:
    return f"4105002200{i:04d}"


def config(tmp: Path, port: int, stations: str, listener: str = "lenient: true", sections: str = "") -> Path:
    path = tmp / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: s}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
aggregation: {{grace: 0s}}
devices:
  - {{id: dau, kind: hj212, listen: "127.0.0.1:{port}", {listener},
     stations: [{stations}]}}
{sections}
"""
    )
    return path


def station(i: int, extra: str = "") -> str:
    return f'{{mn: "{mn(i)}", pw: "{PW}", site: s, device: st{i}{extra}}}'


class Committed(list[Reading]):
    """The readings the outbox committed, in order (the pipeline's observer sees each commit)."""

    def __call__(self, readings: Sequence[Reading], events: Sequence[AlertEvent]) -> None:
        self.extend(readings)


async def started(path: Path) -> tuple[RunningDaemon, int, Committed]:
    committed = Committed()
    daemon = await start_daemon(path, observer=committed)
    driver = daemon.pipeline.drivers[0]
    assert isinstance(driver, Hj212Driver)
    await asyncio.wait_for(driver.listening.wait(), 10)
    return daemon, driver.port, committed


def windows(outbox: Path) -> list[Aggregate]:
    with sqlite3.connect(outbox) as db:
        return [Aggregate.from_dict(orjson.loads(body)) for (body,) in db.execute("SELECT body FROM windows")]


def dead_letters(outbox: Path) -> list[tuple[str, bytes]]:
    with sqlite3.connect(outbox) as db:
        return [(str(r), bytes(p)) for r, p in db.execute("SELECT reason, payload FROM deadletter ORDER BY id")]


def now_bj() -> datetime:
    return datetime.now(BJ).replace(microsecond=0)


@pytest.mark.service
async def test_daus_sending_every_variant_are_acked_by_qn_and_stored_once(
    tmp_path: Path, unique: str, influx1: Influx1
) -> None:
    sink = f'influxdb: [{{name: local, api: v1, url: "{influx1.url}", database: {unique}, create_database: true,'
    sink += " flush_interval: 100ms}]"
    stations = ", ".join(station(i) for i in range(len(VARIANTS)))
    daemon, port, stored = await started(config(tmp_path, free_port(), stations, sections=sink))
    when = now_bj() - timedelta(seconds=5)
    daus = [Dau("127.0.0.1", port, mn(i), PW, variant) for i, variant in enumerate(VARIANTS)]
    try:
        for dau in daus:
            await dau.connect()
        text = "i12001-Info=正常运行"  # GBK on the wire from the GBK unit: only lenient decoding reads it
        qns = await asyncio.gather(
            *(
                dau.upload("2011", rtd_cp(when, {"w01018": (40.5 + i, "N"), "w21003": (2.5, "C")}, text))
                for i, dau in enumerate(daus)
            )
        )
        deviations = {
            d: daemon.sample("telemetry_hj212_lenient_total", {"device": "dau", "deviation": d})
            for d in ("crc_modbus", "crc_modbus_swapped", "crc_lowercase", "no_qn", "no_flag", "st_3digit", "gbk")
        }

        def in_influx() -> list[dict[str, object]] | None:
            got = influx1.query(unique, "SELECT value, flag FROM telemetry")
            return got if len(got) >= 12 else None

        rows = await asyncio.to_thread(eventually, in_influx, 30, "12 readings in InfluxDB")
    finally:
        for dau in daus:
            await dau.close()
        await daemon.close()
    for dau, qn in zip(daus, qns, strict=True):
        if dau.variant == "v2005":
            assert qn == ""
            assert dau.answer("9014") is None
            continue
        ack = dau.answer("9014", qn)
        assert ack is not None, dau.variant
        assert ack["ST"] == "91"
        assert ack["MN"] == dau.mn
    assert deviations == dict.fromkeys(deviations, 1.0)
    assert len(stored) == committed(tmp_path / "outbox.sqlite") == 12  # two values from each unit, once
    cod = sorted((r.device, r.value) for r in stored if r.quantity == "cod")
    assert cod == [(f"st{i}", 40.5 + i) for i in range(6)]
    assert {r.ts for r in stored} == {int(when.timestamp()) * NS}  # the unit's DataTime, Beijing time
    assert {(r.quantity, r.unit, r.flag.value) for r in stored} == {("cod", "mg/L", "N"), ("nh3n", "mg/L", "C")}
    assert sorted((row["value"], row["flag"]) for row in rows if row["flag"] == "C") == [(2.5, "C")] * 6
    assert len(rows) == 12


async def test_a_strict_listener_refuses_the_field_variants_and_counts_why(tmp_path: Path) -> None:
    stations = ", ".join(station(i) for i in range(len(VARIANTS)))
    daemon, port, _stored = await started(config(tmp_path, free_port(), stations, listener="lenient: false"))
    daus = [Dau("127.0.0.1", port, mn(i), PW, variant, overtime=0.3, recount=0) for i, variant in enumerate(VARIANTS)]
    try:
        for dau in daus:
            await dau.connect()
        when = now_bj()
        qns = [await dau.upload("2011", rtd_cp(when, {"w01018": (41.0, "N")}, "i12001-Info=正常")) for dau in daus]
        errors = {
            reason: daemon.sample(
                "telemetry_errors_total", {"component": "hj212_input", "stage": "decode", "error_type": reason}
            )
            for reason in ("bad_crc", "bad_encoding", "missing_field")
        }
    finally:
        for dau in daus:
            await dau.close()
        await daemon.close()
    acked = [dau.variant for dau, qn in zip(daus, qns, strict=True) if qn and dau.answer("9014", qn)]
    assert acked == ["standard", "lowercase"]  # lower-case CRC digits: accepted by HJ 212 receivers
    assert errors == {"bad_crc": 2, "bad_encoding": 1, "missing_field": 1}


async def test_unknown_mn_wrong_pw_and_bad_qn_are_refused_dead_lettered_and_alerted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    daemon, port, stored = await started(config(tmp_path, free_port(), station(1)))
    when = now_bj()
    stranger = Dau("127.0.0.1", port, "99999999999999", "stranger-pw", overtime=0.3, recount=0)
    wrong = Dau("127.0.0.1", port, mn(1), "not-the-pw", overtime=0.3, recount=0)
    good = Dau("127.0.0.1", port, mn(1), PW)
    manager = daemon.desk().manager
    try:
        for dau in (stranger, wrong, good):
            await dau.connect()
        for _ in range(2):  # twice each: refused twice, alerted once
            await stranger.upload("2011", rtd_cp(when, {"w01018": (1.0, "N")}))
            await wrong.upload("2011", rtd_cp(when, {"w01018": (2.0, "N")}))
        _, frame = good.frame("2011", rtd_cp(when, {"w01018": (3.0, "N")}), qn="2024x")
        await good.send_raw(frame)  # a QN that is not 17-20 digits
        await good.wait_for(lambda: good.answer("9011") is not None, 10)
        firing = {a.rule: a.state for a in manager.alerts.values()}
        await good.upload("2011", rtd_cp(when, {"w01018": (4.0, "N")}))  # the right password again
        events = {
            (rule, state): daemon.sample("telemetry_alert_events_total", {"rule": rule, "state": state})
            for rule in ("hj212_unknown_station", "hj212_wrong_password")
            for state in ("firing", "resolved")
        }
        refused = daemon.sample(
            "telemetry_hj212_input_frames_total", {"device": "dau", "cn": "2011", "result": "refused"}
        )
    finally:
        for dau in (stranger, wrong, good):
            await dau.close()
        await daemon.close()
    assert [a["QnRtn"] for a in stranger.answers if a.get("CN") == "9011"] == ["4", "4"]
    assert [a["QnRtn"] for a in wrong.answers if a.get("CN") == "9011"] == ["3", "3"]
    assert [(a["QN"], a["QnRtn"]) for a in good.answers if a.get("CN") == "9011"] == [("2024x", "7")]
    assert not stranger.answer("9014")
    assert not wrong.answer("9014")
    assert firing == {"hj212_unknown_station": "firing", "hj212_wrong_password": "firing"}
    assert events == {
        ("hj212_unknown_station", "firing"): 1,
        ("hj212_unknown_station", "resolved"): 0,
        ("hj212_wrong_password", "firing"): 1,
        ("hj212_wrong_password", "resolved"): 1,
    }
    assert refused == 5
    letters = dead_letters(tmp_path / "outbox.sqlite")
    assert [reason for reason, _ in letters] == ["unknown_mn", "wrong_pw"] * 2 + ["bad_qn"]
    assert all(b"PW=***" in payload for _, payload in letters)
    secrets = ("not-the-pw", "stranger-pw", PW)
    assert not any(s.encode() in payload for _, payload in letters for s in secrets)
    assert not any(s in record.getMessage() for record in caplog.records for s in secrets)
    assert [r.value for r in stored] == [4.0]


async def test_station_periods_are_its_windows_and_readings_only_where_no_finer_data_came(tmp_path: Path) -> None:
    stations = f"{station(1)}, {station(2, ', aggregates: daemon')}"
    path = config(tmp_path, free_port(), stations)
    daemon, port, stored = await started(path)
    period = (now_bj() - timedelta(hours=2)).replace(minute=10, second=0)
    hour = period.replace(minute=0)
    own, daemons = Dau("127.0.0.1", port, mn(1), PW), Dau("127.0.0.1", port, mn(2), PW)
    try:
        for dau in (own, daemons):
            await dau.connect()
            await dau.upload("2011", rtd_cp(period + timedelta(minutes=1), {"w01018": (50.0, "N")}))
            values = {"w01018": (48.0, 49.0, 51.0, "N"), "w21003": (1.0, 2.0, 3.0, "N"), "w00000": (1.0, 1.5, 2.0, "N")}
            await dau.upload("2051", period_cp(period, values, cou={"w00000": 900.0}))
            await dau.upload(
                "2061", period_cp(hour, {"w01018": (40.0, 45.0, 51.0, "N"), "w21011": (0.1, 0.2, 0.3, "D")})
            )
        daemon.pipeline.tick(time.time_ns())  # the daemon's own windows close (grace 0)
        await daemon.pipeline.emit([])
    finally:
        for dau in (own, daemons):
            await dau.close()
        await daemon.close()
    t = int(period.timestamp()) * NS

    def of(device: str) -> set[tuple[str, int, float, str]]:
        return {(r.quantity, (r.ts - t) // NS, r.value, r.flag.value) for r in stored if r.device == device}

    expected = {
        ("cod", 60, 50.0, "N"),  # the real-time value
        ("nh3n", 0, 2.0, "N"),  # minute data with nothing finer: the period's average, at its start
        ("flow", 0, 1.5, "N"),
        ("tp", -600, 0.2, "D"),  # the hour's only value of TP: no minute or real-time data of it
    }
    assert of("st1") == of("st2") == expected  # cod's minute and hour averages: finer data came
    own_windows = {(w.device, w.window, w.quantity): w for w in windows(tmp_path / "outbox.sqlite")}
    cod = own_windows[("st1", "10m", "cod")]
    assert (cod.ts, cod.min, cod.avg, cod.max, cod.flag.value, cod.method) == (t, 48.0, 49.0, 51.0, "N", "station")
    assert own_windows[("st1", "10m", "flow")].cou == 900.0
    assert own_windows[("st1", "10m", "flow")].unit == "L/s"
    tp = own_windows[("st1", "1h", "tp")]
    assert (tp.valid, tp.flag.value, tp.avg) == (False, "D", 0.2)
    assert not [k for k in own_windows if k[0] == "st1" and k[1] == "1m"]  # not aggregated again by the daemon
    assert not [k for k in own_windows if k[0] == "st2" and k[1] in ("10m",)]  # aggregates: daemon
    assert ("st2", "1m", "cod") in own_windows  # ... which aggregates that station's readings itself


async def test_bad_connections_are_isolated_and_counted_while_many_daus_are_served(tmp_path: Path) -> None:
    stations = ", ".join(station(i) for i in range(8))
    listener = "max_connections: 10, idle_timeout: 500ms, max_frame_bytes: 2000"
    daemon, port, stored = await started(config(tmp_path, free_port(), stations, listener=listener))
    daus = [Dau("127.0.0.1", port, mn(i), PW) for i in range(8)]
    garbage = Dau("127.0.0.1", port, mn(0), PW)
    silent = Dau("127.0.0.1", port, mn(0), PW)
    try:
        await garbage.connect()
        await silent.connect()
        await garbage.send_raw(os.urandom(5000) + b"##9000" + b"x" * 100)  # noise, then an oversized frame
        await silent.send_raw(b"##0101QN=2024")  # half a frame, then nothing: a half-open peer
        for dau in daus:
            await dau.connect()
        extra = Dau("127.0.0.1", port, mn(0), PW)
        await extra.connect()  # the eleventh: over max_connections
        await extra.wait_for(lambda: extra.answer("closed") is not None, 10)
        when = now_bj()

        async def five(dau: Dau, i: int) -> list[str]:
            return [
                await dau.upload("2011", rtd_cp(when - timedelta(seconds=k), {"w01018": (i * 10 + k, "N")}))
                for k in range(5)
            ]

        qns = await asyncio.gather(*(five(dau, i) for i, dau in enumerate(daus)))
        await silent.wait_for(lambda: silent.answer("closed") is not None, 10)  # closed after 500 ms idle
        errors = {
            kind: daemon.sample(
                "telemetry_errors_total", {"component": "hj212_input", "stage": stage, "error_type": kind}
            )
            for stage, kind in (
                ("read", "garbage"),
                ("read", "oversized"),
                ("read", "idle_timeout"),
                ("accept", "too_many_connections"),
            )
        }
    finally:
        for dau in (*daus, garbage, silent, extra):
            await dau.close()
        await daemon.close()
    assert all(dau.answer("9014", qn) for dau, mine in zip(daus, qns, strict=True) for qn in mine)
    assert errors["garbage"] >= 5000
    assert errors["oversized"] >= 1
    assert errors["idle_timeout"] >= 1
    assert errors["too_many_connections"] == 1
    assert sorted(r.value for r in stored) == sorted(i * 10 + k for i in range(8) for k in range(5))


async def test_the_9014_goes_out_only_once_the_upload_is_committed() -> None:
    port = free_port()
    cfg = Hj212Config.model_validate(
        {
            "id": "dau",
            "kind": "hj212",
            "listen": f"127.0.0.1:{port}",
            "stations": [{"mn": mn(1), "pw": PW, "site": "s"}],
        }
    )
    driver = Hj212Driver(cfg, Metrics(CollectorRegistry()))
    called, release = asyncio.Event(), asyncio.Event()
    committed: list[Reading] = []

    async def slow_emit(readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()) -> None:
        called.set()
        await release.wait()  # the commit's fsync, as long as it takes
        committed.extend(r for r in readings if isinstance(r, Reading))

    stop = asyncio.Event()
    task = asyncio.create_task(driver.run(slow_emit, stop))
    await driver.listening.wait()
    dau = Dau("127.0.0.1", port, mn(1), PW, overtime=30)
    await dau.connect()
    try:
        qn, frame = dau.frame("2011", rtd_cp(now_bj(), {"w01018": (42.0, "N")}))
        await dau.send_raw(frame)
        await asyncio.wait_for(called.wait(), 10)
        assert dau.answer("9014") is None
        assert not committed
        release.set()
        await dau.wait_for(lambda: dau.answer("9014", qn) is not None, 10)
        assert [r.value for r in committed] == [42.0]
    finally:
        await dau.close()
        stop.set()
        await task


def test_frames_the_test_unit_writes_match_the_standard() -> None:
    example = "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&"
    assert wrap(example.encode()) == f"##0101{example}1C80\r\n".encode()


async def test_a_stop_closes_waiting_connections_cleanly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    daemon, port, stored = await started(config(tmp_path, free_port(), station(1)))
    dau = Dau("127.0.0.1", port, mn(1), PW)
    await dau.connect()
    try:
        await dau.upload("2011", rtd_cp(now_bj(), {"w01018": (7.0, "N")}))
        await daemon.close()  # the unit stays connected, waiting to send its next upload
        await dau.wait_for(lambda: dau.answer("closed") is not None, 10)
    finally:
        await dau.close()
    assert [r.value for r in stored] == [7.0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_station_cannot_create_unbounded_series() -> None:
    inbound = Inbound("dau")
    station = Station.model_validate({"mn": mn(1), "pw": PW, "site": "s"})
    now = time.time_ns()
    when = datetime.fromtimestamp(now // NS, BJ).strftime("%Y%m%d%H%M%S")
    items = [{"DataTime": when}] + [{f"x{i:05d}-Rtd": "1.0"} for i in range(MAX_CODES + 10)]
    decoded = inbound.decode(station, Packet("1" * 17, "32", "2011", PW, mn(1), 4, None, None, items), now)
    assert len(decoded.readings) == MAX_CODES
    assert len(decoded.problems) == 10


async def test_uploads_that_cannot_be_stored_are_dead_lettered_then_acknowledged(tmp_path: Path) -> None:
    daemon, port, stored = await started(config(tmp_path, free_port(), station(1)))
    dau = Dau("127.0.0.1", port, mn(1), PW)
    try:
        await dau.connect()
        ahead = await dau.upload("2011", rtd_cp(now_bj() + timedelta(hours=1), {"w01018": (1.0, "N")}))
        ancient = await dau.upload("2011", rtd_cp(datetime(1999, 12, 31, tzinfo=BJ), {"w01018": (2.0, "N")}))
        info = await dau.upload("3020", f"DataTime={now_bj():%Y%m%d%H%M%S};i11001-Info=V1.2")
        bad = await dau.upload("2011", rtd_cp(now_bj(), {"w01018": (3.0, "N"), "w21003": (4.0, "X")}))
    finally:
        await dau.close()
        await daemon.close()
    assert all(dau.answer("9014", qn) for qn in (ahead, ancient, info, bad))  # none is sent forever
    reasons = [reason for reason, _ in dead_letters(tmp_path / "outbox.sqlite")]
    assert reasons == ["implausible_time", "implausible_time", "unsupported_cn", "bad_values"]
    assert [(r.quantity, r.value) for r in stored] == [("cod", 3.0)]  # the good value of the last one


async def test_notices_are_answered_and_a_time_request_calibrates_the_unit_when_allowed(tmp_path: Path) -> None:
    daemon, port, _ = await started(config(tmp_path, free_port(), station(1), listener="calibrate_time: true"))
    dau = Dau("127.0.0.1", port, mn(1), PW)
    try:
        await dau.connect()
        time_qn, frame = dau.frame("1013", "")
        await dau.send_raw(frame)
        await dau.wait_for(lambda: dau.answer("1012") is not None and dau.answer("9013", time_qn) is not None, 10)
        beat_qn, frame = dau.frame("9015", "", ack=False)
        await dau.send_raw(frame)
        boot_qn, frame = dau.frame("2081", f"DataTime={now_bj():%Y%m%d%H%M%S};RestartTime={now_bj():%Y%m%d%H%M%S}")
        await dau.send_raw(frame)
        await dau.wait_for(lambda: all(dau.answer("9013", qn) for qn in (beat_qn, boot_qn)), 10)
    finally:
        await dau.close()
        await daemon.close()
    command = dau.answer("1012")
    assert command is not None
    assert command["MN"] == mn(1)
    set_to = datetime.strptime(command["SystemTime"], "%Y%m%d%H%M%S").replace(tzinfo=BJ)
    assert abs(set_to - datetime.now(BJ)) < timedelta(minutes=1)  # the host's clock, in the unit's zone


async def test_a_station_hour_is_judged_by_the_window_rules(tmp_path: Path) -> None:
    rules = "rules: [{kind: limit, name: cod_1h, site: s, quantity: cod, window: 1h, above: 100}]"
    daemon, port, _ = await started(config(tmp_path, free_port(), station(1), sections=rules))
    dau = Dau("127.0.0.1", port, mn(1), PW)
    hour = (now_bj() - timedelta(hours=1)).replace(minute=0)
    try:
        await dau.connect()
        await dau.upload("2061", period_cp(hour, {"w01018": (90.0, 120.0, 150.0, "N")}))
        await daemon.pipeline.emit([])  # after the upload's commit, and the rules that saw it
        firing = [a for a in daemon.desk().manager.alerts.values() if a.rule == "cod_1h"]
    finally:
        await dau.close()
        await daemon.close()
    assert [a.state for a in firing] == ["firing"]
