"""HJ 212 uplink against the project's platform receiver over real TCP."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry

from telemetry import app
from telemetry.hj212.codec import Packet
from telemetry.hj212.uplink import RESCAN_S, Uplink
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, Flag, Reading
from telemetry.outbox import Outbox
from telemetry.sim.platform import Receiver
from tests.daemon import RunningDaemon, direct_db, start_daemon
from tests.services import eventually, free_port

BJ = timezone(timedelta(hours=8))
ROOT = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
MN = "010000A8900016F000169DC0"


def config(tmp: Path, port: int, **platform: object) -> Path:
    extra = "".join(f", {k}: {v}" for k, v in platform.items())
    path = tmp / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: s}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
hj212:
  - {{name: city, host: 127.0.0.1, port: {port}, site: s, mn: {MN}, pw: "${{HJ212_PW:-123456}}", rtd_interval: 1s,
     overtime: 500ms, recount: 2, grace: 0s, backfill: 3d{extra}}}
"""
    )
    return path


async def start(path: Path) -> RunningDaemon:
    return await start_daemon(path)


def an_hour(start: datetime, flag_minutes: range = range(0)) -> list[Reading]:
    t0 = int(start.timestamp()) * NS
    out = []
    for m in range(60):
        ts = t0 + (m * 60 + 5) * NS
        flag = Flag.C if m in flag_minutes else Flag.N
        out += [
            Reading(ts, "s", "an", "cod", 40.0 + m % 10, "mg/L", flag),
            Reading(ts, "s", "an", "nh3n", 5.0, "mg/L"),
            Reading(ts, "s", "fm", "flow", 2.0, "m3/h"),
        ]
    return out


def by_cn(packets: list[Packet], cn: str) -> list[Packet]:
    return [p for p in packets if p.cn == cn]


async def test_station_sends_realtime_minute_hour_and_day_data_each_acked(
    tmp_path: Path, hj212_platform: Receiver
) -> None:
    daemon = await start(config(tmp_path, hj212_platform.port))
    try:
        yesterday = datetime.now(BJ).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=1)
        await daemon.pipeline.emit(an_hour(yesterday, flag_minutes=range(20, 35)))  # 45 valid minutes: still valid
        await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "cod", 55.5, "mg/L")])
        daemon.pipeline.tick(time.time_ns())
        packets = await hj212_platform.wait_for(
            lambda ps: len(by_cn(ps, "2051")) >= 6 and by_cn(ps, "2061") and by_cn(ps, "2031") and by_cn(ps, "2011"), 30
        )
        acked = daemon.pipeline.metrics.registry.get_sample_value(
            "telemetry_hj212_packets_total", {"platform": "city", "cn": "2061", "result": "acked"}
        )
    finally:
        await daemon.close()
    rtd = by_cn(packets, "2011")[0]
    assert rtd.get("w01018-Rtd") == "55.5"
    assert rtd.get("w01018-Flag") == "N"
    minutes = by_cn(packets, "2051")
    assert [p.get("DataTime") for p in minutes] == [
        yesterday.strftime("%Y%m%d") + f"10{m:02d}00" for m in range(0, 60, 10)
    ]
    assert minutes[0].get("w01018-Avg") == "44.5"  # 40..49 over ten minutes
    assert minutes[1].get("w01018-Flag") == "N"
    assert minutes[2].get("w01018-Flag") == "C"  # 10:20-10:30 all in calibration: sent with its flag,
    assert minutes[2].get("w01018-Avg") is None  # never with a made-up value
    assert minutes[2].get("w21003-Avg") == "5"  # the other analyzer was measuring
    hour = by_cn(packets, "2061")[0]
    assert hour.get("DataTime") == yesterday.strftime("%Y%m%d%H0000")
    assert hour.get("w00000-Avg") == "0.555556"  # 2 m3/h in the L/s HJ 212-2017 prescribes for w00000
    assert hour.get("w00000-Cou") == "2"  # m3 in the hour
    assert hour.get("w21003-Avg") == "5"
    assert hour.get("w01018-Flag") == "N"
    day = by_cn(packets, "2031")[0]
    assert day.get("DataTime") == yesterday.strftime("%Y%m%d000000")
    assert day.get("w01018-Flag") != "N"  # one valid hour is not a valid day: sent with its flag
    assert all(p.mn == MN and p.pw == "123456" and p.st == "32" for p in packets)
    assert acked == 1


async def test_outage_and_restart_back_fill_every_period_once_oldest_first(tmp_path: Path) -> None:
    port = free_port()
    path = config(tmp_path, port, send="[rtd, min, hour]")
    daemon = await start(path)  # the platform is down: nothing listens on the port
    two_hours_ago = datetime.now(BJ).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    try:
        await daemon.pipeline.emit(an_hour(two_hours_ago))
        daemon.pipeline.tick(time.time_ns())
        # While the platform is away, the metrics say what waits for it: six 2051 periods and one 2061.
        pending = {"platform": "city"}
        await asyncio.to_thread(
            eventually,
            lambda: daemon.registry.get_sample_value("telemetry_hj212_pending", pending) == 7,
            30,
            "7 pending",
        )
        age = daemon.registry.get_sample_value("telemetry_hj212_pending_age_seconds", pending) or 0
        assert 2 * 3600 <= age < 3 * 3600
    finally:
        await daemon.close()
    hj212_platform = Receiver(port=port)
    await hj212_platform.start()
    daemon = await start(path)  # restarted daemon, platform back
    try:
        packets = await hj212_platform.wait_for(lambda ps: len(by_cn(ps, "2051")) >= 6 and by_cn(ps, "2061"), 30)
        await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "cod", 60.0, "mg/L")])
        await hj212_platform.wait_for(lambda ps: by_cn(ps, "2011"), 10)  # live data resumes
    finally:
        await daemon.close()
        await hj212_platform.stop()
    periods = [(p.cn, p.get("DataTime")) for p in packets if p.cn in ("2051", "2061")]
    assert len(periods) == len(set(periods)) == 7  # each once
    starts = [p.get("DataTime") or "" for p in packets if p.cn in ("2051", "2061")]
    assert starts == sorted(starts)  # oldest first


async def test_history_request_returns_the_stored_windows_or_exertn_100(
    tmp_path: Path, hj212_platform: Receiver
) -> None:
    daemon = await start(config(tmp_path, hj212_platform.port, send="[rtd]"))
    hour = datetime.now(BJ).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    try:
        await daemon.pipeline.emit(an_hour(hour))
        daemon.pipeline.tick(time.time_ns())
        await asyncio.wait_for(daemon.uplink().connected.wait(), 10)
        begin, end = hour.strftime("%Y%m%d%H%M%S"), (hour + timedelta(minutes=59)).strftime("%Y%m%d%H%M%S")
        request = Packet(
            "20261126100000001", "32", "2061", "123456", MN, 5, None, None, [{"BeginTime": begin, "EndTime": end}]
        )
        await hj212_platform.send(request)
        got = await hj212_platform.wait_for(lambda ps: any(p.cn == "9012" and p.qn == request.qn for p in ps), 20)
        empty = Packet(
            "20261126100000002",
            "32",
            "2061",
            "123456",
            MN,
            5,
            None,
            None,
            [{"BeginTime": "20200101000000", "EndTime": "20200101010000"}],
        )
        await hj212_platform.send(empty)
        none = await hj212_platform.wait_for(lambda ps: any(p.cn == "9012" and p.qn == empty.qn for p in ps), 20)
    finally:
        await daemon.close()
    answer = [p for p in got if p.qn == request.qn or p.cn == "2061"]
    assert [p.cn for p in answer] == ["9011", "2061", "9012"]
    assert answer[0].get("QnRtn") == "1"
    assert answer[1].get("DataTime") == hour.strftime("%Y%m%d%H%M%S")
    assert answer[2].get("ExeRtn") == "1"
    assert [p.get("ExeRtn") for p in none if p.qn == empty.qn and p.cn == "9012"] == ["100"]


async def test_no_9014_means_resend_recount_times_then_pending_then_sent(
    tmp_path: Path, hj212_platform: Receiver
) -> None:
    hj212_platform.ack = False
    daemon = await start(config(tmp_path, hj212_platform.port, send="[hour]"))
    hour = datetime.now(BJ).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    try:
        await daemon.pipeline.emit(an_hour(hour))
        daemon.pipeline.tick(time.time_ns())
        tries = await hj212_platform.wait_for(lambda ps: len(by_cn(ps, "2061")) >= 3, 20)
        first = by_cn(tries, "2061")[:3]
        assert len({p.qn for p in first}) == 1  # one packet, sent and resent twice (ReCount 2)
        hj212_platform.ack = True
        packets = await hj212_platform.wait_for(lambda ps: len({p.qn for p in by_cn(ps, "2061")}) >= 2, 30)
        registry = daemon.pipeline.metrics.registry
        unacked = registry.get_sample_value(
            "telemetry_hj212_packets_total", {"platform": "city", "cn": "2061", "result": "unacked"}
        )
    finally:
        await daemon.close()
    assert unacked is not None
    assert unacked >= 1
    assert len(by_cn(packets, "2061")) >= 4


async def test_a_password_refusal_raises_an_alert(tmp_path: Path, hj212_platform: Receiver) -> None:
    hj212_platform.refuse = "3"
    daemon = await start(config(tmp_path, hj212_platform.port, send="[rtd]"))
    manager = daemon.desk().manager
    try:
        await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "cod", 60.0, "mg/L")])
        await hj212_platform.wait_for(lambda ps: by_cn(ps, "2011"), 10)
        for _ in range(100):
            if manager.alerts:
                break
            await asyncio.sleep(0.05)  # the answer is handled by the uplink's reader task; bounded poll
    finally:
        await daemon.close()
    [alert] = [a for a in manager.alerts.values() if a.rule == "hj212_city_refused"]
    assert alert.state == "firing"
    assert "wrong password" in alert.message


async def test_garbage_from_the_platform_is_counted_and_the_link_stays_up(
    tmp_path: Path, hj212_platform: Receiver
) -> None:
    daemon = await start(config(tmp_path, hj212_platform.port, send="[rtd]"))
    try:
        uplink = daemon.uplink()
        await asyncio.wait_for(uplink.connected.wait(), 10)
        for writer in hj212_platform._writers:
            writer.write(os.urandom(300) + b"##0010garbage!!1234\r\n" + b"##00x")
            await writer.drain()
        await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "cod", 61.0, "mg/L")])
        packets = await hj212_platform.wait_for(lambda ps: any(p.get("w01018-Rtd") == "61" for p in ps), 10)
    finally:
        await daemon.close()
    assert uplink.reader_errors >= 1
    garbage = {"component": "hj212", "stage": "read", "error_type": "garbage"}
    assert daemon.sample("telemetry_errors_total", garbage) >= 300  # every skipped byte counted
    assert by_cn(packets, "2011")


async def test_receiver_command_asks_a_station_for_history(tmp_path: Path) -> None:
    port = free_port()
    hour = datetime.now(BJ).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    begin, end = hour.strftime("%Y%m%d%H%M%S"), (hour + timedelta(minutes=59)).strftime("%Y%m%d%H%M%S")
    tool = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telemetry.cli",
        "hj212",
        "receiver",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--request",
        "2061",
        "--begin",
        begin,
        "--end",
        end,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert tool.stdout is not None
    assert "HJ 212 receiver on" in (await tool.stdout.readline()).decode()
    daemon = await start(config(tmp_path, port, send="[rtd]"))
    lines: list[str] = []
    try:
        await daemon.pipeline.emit(an_hour(hour))
        daemon.pipeline.tick(time.time_ns())
        await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "cod", 60.0, "mg/L")])
        async with asyncio.timeout(30):
            while not any("CN=9012" in line for line in lines):
                lines.append((await tool.stdout.readline()).decode())
    finally:
        await daemon.close()
        tool.send_signal(signal.SIGINT)
        await tool.wait()
    text = "".join(lines)
    assert f"-> history request 2061 {begin}..{end}" in text
    assert "CN=2061;" in text
    assert f"DataTime={begin}" in text
    assert "ExeRtn=1" in text


TWO_POINTS = """
sites: [{{id: s}}]
points:
  - {{id: outlet, site: s, devices: [eff, eff-flow]}}
  - {{id: inlet, site: s, devices: [raw, raw-flow]}}
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
hj212:
  - {{name: outlet, host: 127.0.0.1, port: {port}, point: outlet, mn: "{mn_out}", pw: "123456", rtd_interval: 1s,
     overtime: 500ms, grace: 0s, send: [rtd, hour]}}
  - {{name: inlet, host: 127.0.0.1, port: {port}, point: inlet, mn: "{mn_in}", pw: "123456", rtd_interval: 1s,
     overtime: 500ms, grace: 0s, send: [rtd, hour]}}
"""


async def test_two_points_at_one_site_go_up_under_their_own_mn_with_their_own_values(
    tmp_path: Path, hj212_platform: Receiver
) -> None:
    mn_out, mn_in = "41050022000017", "41050022000018"
    path = tmp_path / "site.yaml"
    path.write_text(TWO_POINTS.format(tmp=tmp_path, port=hj212_platform.port, mn_out=mn_out, mn_in=mn_in))
    daemon = await start(path)
    hour = datetime.now(BJ).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    t0 = int(hour.timestamp()) * NS
    readings = []
    for m in range(60):
        ts = t0 + (m * 60 + 5) * NS
        readings += [
            Reading(ts, "s", "eff", "cod", 48.0, "mg/L"),
            Reading(ts, "s", "eff-flow", "flow", 2.0, "m3/h"),
            Reading(ts, "s", "raw", "cod", 9800.0, "mg/L"),
            Reading(ts, "s", "raw-flow", "flow", 20.0, "m3/h"),
        ]
    try:
        await daemon.pipeline.emit(readings)
        daemon.pipeline.tick(time.time_ns())
        now = time.time_ns()
        await daemon.pipeline.emit(
            [Reading(now, "s", "eff", "cod", 47.0, "mg/L"), Reading(now, "s", "raw", "cod", 9700.0, "mg/L")]
        )
        packets = await hj212_platform.wait_for(
            lambda ps: (
                {(p.mn, p.cn) for p in ps} >= {(mn_out, "2061"), (mn_in, "2061"), (mn_out, "2011"), (mn_in, "2011")}
            ),
            30,
        )
    finally:
        await daemon.close()
    [outlet] = [p for p in packets if (p.mn, p.cn) == (mn_out, "2061")]
    [inlet] = [p for p in packets if (p.mn, p.cn) == (mn_in, "2061")]
    assert (outlet.get("w01018-Avg"), outlet.get("w00000-Avg"), outlet.get("w01018-Cou")) == ("48", "0.555556", "0.096")
    assert (inlet.get("w01018-Avg"), inlet.get("w00000-Avg"), inlet.get("w01018-Cou")) == ("9800", "5.55556", "196")
    assert {p.get("w01018-Rtd") for p in packets if (p.mn, p.cn) == (mn_out, "2011")} == {"47"}
    assert {p.get("w01018-Rtd") for p in packets if (p.mn, p.cn) == (mn_in, "2011")} == {"9700"}


async def test_a_silent_analyzer_drops_out_of_realtime_data(tmp_path: Path, hj212_platform: Receiver) -> None:
    daemon = await start(config(tmp_path, hj212_platform.port, send="[rtd]", stale_after="2s"))
    stop = asyncio.Event()

    async def nh3n_keeps_reporting() -> None:
        while not stop.is_set():
            await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "nh3n", 5.0, "mg/L")])
            await asyncio.sleep(0.3)  # the analyzer's own pace, not a wait for the daemon

    feeder = asyncio.create_task(nh3n_keeps_reporting())
    try:
        await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "cod", 55.0, "mg/L")])  # then silence
        first = await hj212_platform.wait_for(lambda ps: any(p.get("w01018-Rtd") == "55" for p in ps), 10)
        seen = len(first)
        later = await hj212_platform.wait_for(
            lambda ps: any(p.cn == "2011" and p.get("w01018-Rtd") is None for p in ps[seen:]), 15
        )
    finally:
        stop.set()
        await feeder
        await daemon.close()
    gone = next(p for p in later[seen:] if p.cn == "2011" and p.get("w01018-Rtd") is None)
    assert gone.get("w21003-Rtd") == "5"  # the analyzer that still reports is still sent
    stale = [p for p in later if p.cn == "2011" and p.get("w01018-Rtd") == "55"]
    assert stale  # sent while fresh ...
    assert all(p.get("w01018-Rtd") is None for p in later[later.index(gone) :] if p.cn == "2011")  # ... never after


async def test_a_minute_period_waits_until_every_window_in_it_has_closed(
    tmp_path: Path, hj212_platform: Receiver
) -> None:
    """The aggregation grace (10 min) is longer than the platform's (0 s): half the period's minute
    windows have closed when the period is over. It must not go up with five minutes of ten."""
    path = config(tmp_path, hj212_platform.port, send="[rtd, min]")
    path.write_text(path.read_text() + "aggregation: {grace: 10m}\n")
    daemon = await start(path)
    period = (time.time_ns() // (600 * NS) - 2) * 600 * NS  # a ten-minute period that ended 10-20 min ago
    when = datetime.fromtimestamp(period / NS, BJ).strftime("%Y%m%d%H%M%S")
    try:
        await daemon.pipeline.emit(
            [Reading(period + (m * 60 + 5) * NS, "s", "an", "cod", float(m), "mg/L") for m in range(10)]
        )
        daemon.pipeline.tick(period + 5 * 60 * NS + 600 * NS)  # minutes 0-4 closed and stored, 5-9 still open
        for value in ("1", "2"):  # two real-time packets: the uplink has looked at what is due in between
            await daemon.pipeline.emit([Reading(time.time_ns(), "s", "an", "nh3n", float(value), "mg/L")])

            def has(ps: list[Packet], v: str = value) -> bool:
                return any(p.get("w21003-Rtd") == v for p in ps)

            await hj212_platform.wait_for(has, 10)
        early = [p for p in hj212_platform.packets if p.cn == "2051"]
        daemon.pipeline.tick(period + 10 * 60 * NS + 600 * NS)  # now the whole period has closed
        packets = await hj212_platform.wait_for(lambda ps: any(p.cn == "2051" for p in ps), 20)
    finally:
        await daemon.close()
    assert early == []
    [sent] = [p for p in packets if p.cn == "2051"]
    assert sent.get("DataTime") == when
    assert sent.get("w01018-Avg") == "4.5"  # all ten minutes (0..9), not the first five (2)
    assert sent.get("w01018-Flag") == "N"


async def test_a_site_outside_beijing_time_sends_its_own_days_in_platform_time(
    tmp_path: Path, hj212_platform: Receiver
) -> None:
    """A station in Asia/Tokyo: its day runs from Tokyo midnight, which the platform (Beijing
    time) reads as 23:00 the evening before; the daemon and `rules test --hj212` agree."""
    tokyo = ZoneInfo("Asia/Tokyo")
    path = tmp_path / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: s, timezone: Asia/Tokyo}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
hj212:
  - {{name: city, host: 127.0.0.1, port: {hj212_platform.port}, site: s, mn: {MN}, pw: "123456", overtime: 500ms,
     grace: 0s, send: [day]}}
"""
    )
    midnight = datetime.now(tokyo).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    readings = [
        Reading(int(midnight.timestamp()) * NS + (m * 60 + 5) * NS, "s", "an", "cod", 40.0, "mg/L") for m in range(60)
    ]
    daemon = await start(path)
    try:
        await daemon.pipeline.emit(readings)
        daemon.pipeline.tick(time.time_ns())
        packets = await hj212_platform.wait_for(lambda ps: any(p.cn == "2031" for p in ps), 20)
    finally:
        await daemon.close()
    [day] = [p for p in packets if p.cn == "2031"]
    assert day.get("DataTime") == midnight.astimezone(BJ).strftime("%Y%m%d%H%M%S")  # ...230000 the day before
    assert (day.get("DataTime") or "").endswith("230000")


# -- finding what is due without rescanning the history --------------------------------------------


class CountingOutbox(Outbox):
    """Counts the window starts ``_due`` reads: the work it makes the outbox's thread do."""

    read = 0

    def window_starts(self, site: str, window: str, since_ns: int, points: object = None) -> list[int]:
        starts = super().window_starts(site, window, since_ns, points)  # type: ignore[arg-type]
        self.read += len(starts)
        return starts


def minutes(point: str, starts: range, quantities: tuple[str, ...] = ("cod", "nh3n")) -> list[Aggregate]:
    return [
        Aggregate(t, window, "s", "an", q, "mg/L", 1.0, 1.0, 1.0, 1, 1, True, point=point)
        for t in starts
        for q in quantities
        for window in (["1m", "1h"] if t % (3600 * NS) == 0 else ["1m"])
    ]


def uplinks(tmp: Path, box: Outbox, closed: Callable[[], int], n: int) -> list[Uplink]:
    dep = app.load(str(config(tmp, 1, send="[min, hour]")), {})  # back-fill 3 days
    out = []
    for _ in range(n):
        uplink = app.uplink(dep, dep.config.hj212[0], Metrics(CollectorRegistry()))
        uplink.attach(direct_db, box)
        uplink.closed_through = lambda window: closed()
        out.append(uplink)
    return out


async def test_due_periods_are_found_by_reading_only_new_windows(tmp_path: Path) -> None:
    """``_due`` runs every second on the outbox's thread: after one full look at the back-fill
    horizon it reads only the windows from the newest start it has seen on, and finds what a
    full look finds, pending gauges included."""
    box = CountingOutbox(str(tmp_path / "o.sqlite"))
    now = time.time_ns() // (3600 * NS) * 3600 * NS
    closed = {"t": now}
    uplink, oracle = uplinks(tmp_path, box, lambda: closed["t"], 2)
    point = uplink.point.id
    box.append(minutes(point, range(now - 4 * 86400 * NS, now, 60 * NS)))  # 4 days: 3 in the horizon
    first = await uplink._due(now)
    assert box.read == 3 * (1440 + 24)  # the first look reads the horizon's minute and hour window starts
    full_looks = []
    for second in range(1, 1801):  # half an hour, a minute's windows closing every minute
        t = now + second * NS
        if second % 60 == 0:
            box.append(minutes(point, range(t - 60 * NS, t, 60 * NS)))
            closed["t"] = t
        box.read = 0
        due = await uplink._due(t)
        if box.read > 4:  # more than the newest minute and hour starts again, and any newer
            full_looks.append(second)
        oracle._scanned_at = None  # a full look every time: what _due did before
        assert due == await oracle._due(t)
        for start, cn in due[:2]:  # the platform acknowledges a little at a time
            uplink._acked.add((cn, start))
            oracle._acked.add((cn, start))
    assert full_looks == list(range(int(RESCAN_S), 1801, int(RESCAN_S)))  # every 5 minutes, not every second
    pending = uplink._metrics.registry.get_sample_value("telemetry_hj212_pending", {"platform": "city"})
    assert pending == len(due) > 0
    assert len(first) > len(due)


async def test_a_window_stored_late_is_found_by_the_periodic_full_look(tmp_path: Path) -> None:
    """A window older than the newest seen (a device's back-filled outage) for a period nobody
    knew: not read by the cheap look, found by the full one at most RESCAN_S later."""
    box = CountingOutbox(str(tmp_path / "o.sqlite"))
    now = time.time_ns() // (3600 * NS) * 3600 * NS
    [uplink] = uplinks(tmp_path, box, lambda: now, 1)
    point = uplink.point.id
    box.append(minutes(point, range(now - 3600 * NS, now, 60 * NS)))
    due = await uplink._due(now)
    assert sorted(cn for _, cn in due) == ["2051"] * 6 + ["2061"]
    uplink._acked.update((cn, start) for start, cn in due)  # all sent and acknowledged
    late = now - 3 * 3600 * NS
    box.append(minutes(point, range(late, late + 600 * NS, 60 * NS)))
    assert await uplink._due(now + NS) == []
    assert await uplink._due(now + int(RESCAN_S * NS) - NS) == []
    assert await uplink._due(now + int(RESCAN_S * NS)) == [(late, "2051"), (late, "2061")]


async def test_a_new_min_interval_from_the_platform_regroups_the_due_minutes(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    now = time.time_ns() // (3600 * NS) * 3600 * NS
    [uplink] = uplinks(tmp_path, box, lambda: now, 1)
    box.append(minutes(uplink.point.id, range(now - 1800 * NS, now, 60 * NS)))
    assert [s for s, cn in await uplink._due(now) if cn == "2051"] == [now - k * 600 * NS for k in (3, 2, 1)]
    uplink.encoder.min_minutes = 5  # what a 1064 command sets
    got = [s for s, cn in await uplink._due(now + NS) if cn == "2051"]
    assert got == [now - k * 300 * NS for k in range(6, 0, -1)]
