"""Store-and-forward against real InfluxDB 1.x and VictoriaMetrics: outages, bad points,
the disk budget, a dead sink beside a live one."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from telemetry.cli import main
from telemetry.model import Reading
from telemetry.outbox import Outbox, read_status
from telemetry.sim.notifications import NotificationReceiver
from telemetry.sim.plant import LeachateStation, ModbusAnalyzer
from tests import services
from tests.daemon import RunningDaemon, start_daemon
from tests.faults.harness import TcpGate
from tests.services import Influx1, Mosquitto, Victoria, eventually, free_port

pytestmark = pytest.mark.service
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[Influx1]:
    """A private InfluxDB 1.x, so a test may stop and start it."""
    (tmp_path / "influx").mkdir()
    with services.influxd(tmp_path / "influx") as server:
        yield server


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Victoria]:
    (tmp_path / "vm").mkdir()
    with services.victoria(tmp_path / "vm") as server:
        yield server


async def start(tmp_path: Path, sinks: str, extra: str = "") -> RunningDaemon:
    path = tmp_path / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: s}}]
influxdb:
{sinks}
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"{extra}}}
"""
    )
    return await start_daemon(path)


def series(n: int, t0: int, step: int = 1_000_000) -> list[Reading]:
    """n readings for each of three series, values distinct per series."""
    return [
        Reading(t0 + i * step, "s", dev, "cod", float(i) + offset, "mg/L")
        for i in range(n)
        for dev, offset in (("a", 0.0), ("b", 0.25), ("c", 0.5))
    ]


V1 = '  - {{name: local, api: v1, url: "{url}", database: plant, create_database: true, flush_interval: 50ms}}'
V2 = '  - {{name: vm, api: v2, url: "{url}", bucket: plant, flush_interval: 50ms}}'


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_sink_down_while_readings_flow_then_back_exactly_once(
    tmp_path: Path, api: str, request: pytest.FixtureRequest
) -> None:
    server: Influx1 | Victoria = request.getfixturevalue("influx" if api == "v1" else "vm")
    sinks = (V1 if api == "v1" else V2).format(url=server.url)
    t0 = time.time_ns() - 10**9 * 60
    readings = series(300, t0)
    daemon = await start(tmp_path, sinks)
    try:
        consumer = "influx:local" if api == "v1" else "influx:vm"
        for chunk in range(0, 300, 30):
            if chunk == 90:
                await asyncio.to_thread(server.stop)
            if chunk == 210:
                assert daemon.pipeline.outbox.backlog()[consumer] > 0  # it really was held back
                await asyncio.to_thread(server.start)
            await daemon.pipeline.emit(readings[chunk * 3 : (chunk + 30) * 3])
        await asyncio.to_thread(eventually, lambda: daemon.pipeline.outbox.backlog()[consumer] == 0, 60, "drain")
    finally:
        await daemon.close()
    if api == "v1":
        assert isinstance(server, Influx1)
        rows = server.query("plant", "SELECT value FROM telemetry GROUP BY device")
        got = {(r["device"], r["time"]): r["value"] for r in rows}
    else:
        assert isinstance(server, Victoria)
        got = {
            (s["metric"]["device"], t * 1_000_000): v
            for s in server.export('{__name__="telemetry_value"}')
            for v, t in zip(s["values"], s["timestamps"], strict=True)
        }
    expected = {(r.device, r.ts if api == "v1" else r.ts // 1_000_000 * 1_000_000): r.value for r in readings}
    assert len(got) == len(expected) == 900
    assert got == expected


async def test_one_bad_point_is_quarantined_and_its_batch_arrives(tmp_path: Path, influx: Influx1) -> None:
    old = (int(time.time()) - 30 * 86400) * 10**9
    influx.create("plant")
    body = f'telemetry,device=a,quantity=cod,site=s,unit=mg/L value="broken analyzer text" {old}'
    await asyncio.to_thread(influx.write, "plant", body)
    now = time.time_ns()
    good = [Reading(now + i, "s", "b", "cod", float(i), "mg/L") for i in range(40)]
    bad = Reading(old + 1, "s", "a", "cod", 99.0, "mg/L")  # same shard as the string value: type conflict
    daemon = await start(tmp_path, V1.format(url=influx.url))
    try:
        await daemon.pipeline.emit([*good[:20], bad, *good[20:]])
        await asyncio.to_thread(eventually, lambda: daemon.pipeline.outbox.backlog()["influx:local"] == 0, 30, "drain")
        [(consumer, record, reason)] = await daemon.pipeline.db(daemon.pipeline.outbox.quarantined)
        assert daemon.sample("telemetry_sink_points_rejected_total", {"sink": "local"}) == 1
    finally:
        await daemon.close()
    assert consumer == "influx:local"
    assert record == bad
    assert "field type conflict" in reason
    rows = influx.query("plant", "SELECT value FROM telemetry WHERE device='b'")
    assert sorted(r["value"] for r in rows) == [float(i) for i in range(40)]


def test_quarantine_list_and_status_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    box = Outbox(str(tmp_path / "outbox.sqlite"))
    box.register("influx:local")
    box.append([Reading(1_764_000_000 * 10**9 + i, "s", "a", "cod", float(i)) for i in range(5)])
    batch = box.begin("influx:local", 2)
    batch.rejected = [(batch.items[0][0], "HTTP 400: field type conflict")]
    box.end(batch)
    box.close()
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""sites: [{{id: s}}]
influxdb: [{{name: local, api: v1, url: "http://127.0.0.1:1", database: d}}]
outbox: {{path: "{tmp_path}/outbox.sqlite", max_bytes: 10MB}}
"""
    )
    assert main(["outbox", "status", "-c", str(config)]) == 0
    status = capsys.readouterr().out
    assert "records 3" in status
    assert "of 10.0 MB budget (drop_oldest when full)" in status
    assert "quarantined 1" in status
    assert "influx:local" in status
    assert "backlog         3  oldest pending 2025-11-2" in status
    assert main(["outbox", "quarantine", "list", "-c", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "refused: HTTP 400: field type conflict" in listed
    assert 'telemetry,device=a,quantity=cod,site=s flag="N",value=0.0 1764000000000000000' in listed


async def test_disk_budget_drops_the_oldest_counts_and_alerts(tmp_path: Path, receiver: NotificationReceiver) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sinks = V1.format(url=dead) + f'\nnotify: {{routes: [{{name: ops, urls: ["{receiver.url}"], group_wait: 0s}}]}}'
    daemon = await start(tmp_path, sinks, extra=", max_bytes: 300KB")
    try:
        t0 = time.time_ns()
        for chunk in range(40):
            await daemon.pipeline.emit(
                [Reading(t0 + chunk * 1000 + i, "s", "a", "cod", float(chunk * 1000 + i)) for i in range(500)]
            )
        dropped = daemon.sample("telemetry_outbox_dropped_total")
        oldest = (await daemon.pipeline.db(daemon.pipeline.outbox.begin, "influx:local", 1)).items[0][1]
        newest_id = daemon.pipeline.outbox.backlog()
        used = await daemon.pipeline.db(daemon.pipeline.outbox.used_bytes)
        messages = await asyncio.to_thread(receiver.wait_for, 1, 20)
    finally:
        await daemon.close()
    assert dropped > 0
    assert oldest.value > 0  # the oldest readings went, the newest stayed
    assert used <= 300_000
    assert newest_id["influx:local"] > 0
    assert "outbox_full" in messages[0]["title"]
    # the Chinese template says the oldest records were dropped, and how many
    assert re.search(r"已丢弃最早未送出的记录 [1-9]\d* 条", messages[0]["message"]), messages[0]["message"]


async def test_the_committer_and_the_ticker_resolving_outbox_full_at_once_resolve_it_once(tmp_path: Path) -> None:
    """Both look at the budget after their awaits on the outbox's thread; the one that comes
    second used to resolve an alert the first had already cleared (dataclasses.replace on None),
    which killed the committer: seen as the disk-full fault test timing out on a busy machine."""
    daemon = await start(tmp_path, V1.format(url=f"http://127.0.0.1:{free_port()}"), extra=", max_bytes: 10MB")
    try:
        daemon.pipeline._budget_firing("disk nearly full", 0)  # as a commit held back for room does
        # Both get past the first check before either hears back from the outbox's thread.
        await asyncio.gather(daemon.pipeline._watch_budget(), daemon.pipeline._watch_budget())
        resolved = daemon.sample("telemetry_alert_events_total", {"rule": "outbox_full", "state": "resolved"})
    finally:
        await daemon.close()
    assert resolved == 1


async def test_disk_budget_block_holds_drivers_back_until_the_sink_drains(tmp_path: Path, influx: Influx1) -> None:
    await asyncio.to_thread(influx.stop)
    daemon = await start(tmp_path, V1.format(url=influx.url), extra=", max_bytes: 300KB, when_full: block")
    try:
        t0 = time.time_ns()
        chunk = 0
        pending = None
        while chunk < 200:
            batch = [Reading(t0 + chunk * 1000 + i, "s", "a", "cod", float(chunk * 1000 + i)) for i in range(500)]
            pending = asyncio.ensure_future(daemon.pipeline.emit(batch))
            done, _ = await asyncio.wait({pending}, timeout=2.0)
            if not done:
                break  # the outbox is full: this emit is held back
            chunk += 1
        assert pending is not None
        assert not pending.done(), "never blocked"
        assert daemon.sample("telemetry_outbox_dropped_total") == 0
        await asyncio.to_thread(influx.start)
        await asyncio.wait_for(pending, 60)  # room again: the held emit commits
        await asyncio.to_thread(eventually, lambda: daemon.pipeline.outbox.backlog()["influx:local"] == 0, 60, "drain")
    finally:
        await daemon.close()
    rows = influx.query("plant", "SELECT count(value) FROM telemetry")
    assert rows[0]["count"] == (chunk + 1) * 500  # nothing dropped


async def test_a_dead_sink_never_delays_the_live_one(tmp_path: Path, influx: Influx1) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sinks = V1.format(url=influx.url) + "\n" + V2.format(url=dead)
    daemon = await start(tmp_path, sinks)
    try:
        t0 = time.time_ns()
        for i in range(10):
            await daemon.pipeline.emit([Reading(t0 + i, "s", "a", "cod", float(i))])
            await asyncio.to_thread(
                eventually,
                lambda n=i + 1: (
                    (r := influx.query("plant", "SELECT count(value) FROM telemetry")) and r[0]["count"] == n
                ),
                10,
                f"reading {i} in the live sink",
            )
        # InfluxDB has accepted the point; the cursor moves right after the server's answer.
        await asyncio.to_thread(
            eventually, lambda: daemon.pipeline.outbox.backlog()["influx:local"] == 0, 10, "the live cursor"
        )
        backlog = daemon.pipeline.outbox.backlog()
        lag = {d.consumer: d.lag_seconds() for d in daemon.pipeline.deliveries}
    finally:
        await daemon.close()
    assert backlog == {"influx:local": 0, "influx:vm": 10}
    assert lag["influx:local"] == 0.0
    assert lag["influx:vm"] > 0.0


def behind_gate(
    tmp_path: Path, site: str, gate: TcpGate, timeout: str, device: str = "", metrics: str = "{enabled: false}"
) -> Path:
    """Site ``site`` with one VictoriaMetrics sink (v2 API) reached through ``gate``."""
    path = tmp_path / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: {site}}}]
devices: [{device}]
influxdb:
  - {{name: vm, api: v2, url: "{gate.url}", bucket: plant, flush_interval: 50ms, timeout: {timeout}}}
metrics: {metrics}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    return path


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


@pytest.mark.parametrize("skew_s", [-300, 600], ids=["stamped-5-min-ago", "stamped-10-min-ahead"])
async def test_readyz_counts_a_sinks_wait_from_the_commit(
    tmp_path: Path, unique: str, victoria: Victoria, skew_s: int
) -> None:
    """Stuck means waiting since the commit, on the daemon's clock: readings stamped 5 min ago
    used to make a healthy sink "stuck" at once, readings stamped ahead hid a held-up one."""
    port = free_port()
    gate = TcpGate(("127.0.0.1", victoria.port))
    metrics = f'{{listen: "127.0.0.1:{port}", ready_sink_age: 2s}}'
    t0 = time.time_ns() + skew_s * 10**9
    readings = [Reading(t0 + i * 1_000_000, unique, "a", "cod", float(i), "mg/L") for i in range(10)]
    try:
        daemon = await start_daemon(behind_gate(tmp_path, unique, gate, "30s", metrics=metrics))
        try:
            assert await asyncio.wait_for(daemon.pipeline.sink_checks[0], 30)
            gate.hold()  # the sink stops answering
            await daemon.pipeline.emit(readings)
            assert await asyncio.to_thread(gate.holding.wait, 10)  # the write is in flight
            status, body = await asyncio.to_thread(readyz, port)
            assert (status, body["sinks_stuck_seconds"]) == (200, {})  # committed a moment ago
            # Held past ready_sink_age: stuck, whatever the readings' stamps say.
            stuck = await asyncio.to_thread(
                eventually, lambda: readyz(port)[1]["sinks_stuck_seconds"], 10, "the sink reported stuck"
            )
            assert stuck["influx:vm"] >= 2
            assert (await asyncio.to_thread(readyz, port))[0] == 503
            lag = daemon.sample("telemetry_outbox_lag_seconds", {"consumer": "influx:vm"})
            assert 2 <= lag < 60
            gate.release()
            await asyncio.to_thread(eventually, lambda: readyz(port)[0] == 200, 30, "ready again")
            assert daemon.sample("telemetry_outbox_lag_seconds", {"consumer": "influx:vm"}) == 0
            assert daemon.sample("telemetry_sink_points_written_total", {"sink": "vm"}) == 10
        finally:
            await daemon.close()
    finally:
        gate.close()


def samples_of(victoria: Victoria, site: str) -> int:
    return sum(len(s["values"]) for s in victoria.export(f'{{__name__="telemetry_value", site="{site}"}}'))


async def test_a_hung_sink_at_start_up_delays_no_poll(tmp_path: Path, unique: str, victoria: Victoria) -> None:
    """VictoriaMetrics accepting connections and never answering: the v2 start-up check had
    no timeout and ran before the drivers, so no Modbus poll was taken meanwhile."""
    analyzer = ModbusAnalyzer(LeachateStation(excursion_at=1e9), port=free_port())
    await analyzer.start()
    gate = TcpGate(("127.0.0.1", victoria.port), held=True)
    device = (
        f"{{id: an, kind: modbus, site: {unique}, host: 127.0.0.1, port: {analyzer.port}, interval: 200ms,"
        " timeout: 80ms, points: [{quantity: cod, address: 0}]}"
    )
    polled = asyncio.Event()
    try:
        daemon = await start_daemon(
            behind_gate(tmp_path, unique, gate, "30s", device), lambda readings, _: polled.set() if readings else None
        )
        try:
            await asyncio.wait_for(polled.wait(), 10)  # a poll, committed
            assert await asyncio.to_thread(gate.holding.wait, 10)  # the sink holds the check's request
            [check] = daemon.pipeline.sink_checks
            assert not check.done()
            gate.release()  # the sink answers: the check says so, the backlog is delivered
            assert await asyncio.wait_for(check, 30)
            await asyncio.to_thread(
                eventually, lambda: daemon.pipeline.outbox.backlog()["influx:vm"] == 0, 30, "the backlog delivered"
            )
        finally:
            await daemon.close()
    finally:
        gate.close()
        await analyzer.stop()
    committed = daemon.sample("telemetry_readings_total", {"site": unique, "device": "an"})
    assert committed > 0
    await asyncio.to_thread(eventually, lambda: samples_of(victoria, unique) == committed, 10, "every reading")


async def test_a_sink_hung_at_start_up_is_reported_once_and_retried(
    tmp_path: Path, unique: str, victoria: Victoria, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="telemetry.delivery")
    gate = TcpGate(("127.0.0.1", victoria.port), held=True)
    t0 = time.time_ns()
    readings = [Reading(t0 + i * 1_000_000, unique, "a", "cod", float(i), "mg/L") for i in range(20)]
    try:
        daemon = await start_daemon(behind_gate(tmp_path, unique, gate, "1s"))
        try:
            [check] = daemon.pipeline.sink_checks
            await asyncio.wait_for(daemon.pipeline.emit(readings[:10]), 5)  # committed while the check waits
            assert await asyncio.wait_for(check, 10) is False  # given up after the sink's timeout
            await asyncio.wait_for(daemon.pipeline.emit(readings[10:]), 5)
            assert daemon.pipeline.outbox.backlog()["influx:vm"] > 0
            gate.release()  # the sink answers again: delivery, which kept retrying, gets through
            await asyncio.to_thread(
                eventually, lambda: daemon.pipeline.outbox.backlog()["influx:vm"] == 0, 30, "the backlog delivered"
            )
        finally:
            await daemon.close()
    finally:
        gate.close()
    errors = {"component": "sink", "stage": "healthcheck", "error_type": "timeout"}
    assert daemon.sample("telemetry_errors_total", errors) == 1
    reports = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "telemetry.delivery"]
    assert len(reports) == 1, reports  # the check's report, or the first failed write's: one, not both
    assert reports[0].startswith("sink vm: ")
    assert any(r.getMessage().startswith("sink vm: writing again") for r in caplog.records)
    await asyncio.to_thread(eventually, lambda: samples_of(victoria, unique) == 20, 10, "every reading")


def _daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "telemetry.cli", "run", "-c", str(cfg)], stderr=out, cwd=ROOT)


def _publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(500)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for info in [client.publish(t, p, qos=1) for t, p in messages]:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def test_kill_9_at_random_moments_during_ingest_and_drain(
    tmp_path: Path, unique: str, mosquitto: Mosquitto, influx: Influx1
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        f"""
sites: [{{id: s}}]
devices:
  - {{id: broker, kind: mqtt, host: {mosquitto.host}, port: {mosquitto.port}, client_id: {unique},
     subscriptions: [{{topic: "{unique}/{{site}}/{{device}}/{{quantity}}", devices: ["*"]}}, {{topic: "{unique}/{{site}}/{{device}}", format: batch, devices: ["*"]}}]}}
influxdb:
  - {{name: local, api: v1, url: "{influx.url}", database: plant, create_database: true, batch_size: 500, flush_interval: 50ms}}
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
"""
    )
    log = tmp_path / "daemon.log"
    outbox = str(tmp_path / "outbox.sqlite")

    def count() -> int:
        rows = influx.query("plant", "SELECT count(value) FROM telemetry")
        return int(rows[0]["count"]) if rows else 0

    def subscribed(proc: subprocess.Popen[bytes], times: int) -> None:
        eventually(lambda: proc.poll() is None and log.read_text().count("subscribed to") >= times, 30, "subscribe")

    # Ingest: 6,000 messages, the daemon killed three times at random moments while they arrive.
    base = int(time.time() * 1000) - 100_000
    phase_a = [(f"{unique}/s/meter/flow", json.dumps({"value": i, "ts": base + i}).encode()) for i in range(6000)]
    daemon, starts = _daemon(cfg, log), 1
    subscribed(daemon, starts)
    publisher = threading.Thread(target=_publish, args=(mosquitto, phase_a))
    publisher.start()
    for _ in range(3):
        time.sleep(rng.uniform(0.2, 0.8))  # a random moment, on purpose
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
        daemon, starts = _daemon(cfg, log), starts + 1
        subscribed(daemon, starts)
    publisher.join(60)
    eventually(lambda: count() >= 6000, 60, f"the 6,000 ingest readings (seed {seed})")

    # Drain: InfluxDB down while 10,000 readings arrive as 200 batch messages, then back;
    # the daemon killed twice at random moments while it drains the backlog.
    influx.stop()
    phase_b = [
        (
            f"{unique}/s/gw",
            json.dumps({"ts": base + 10_000 + j, **{f"q{k}": j * 50 + k for k in range(50)}}).encode(),
        )
        for j in range(200)
    ]
    _publish(mosquitto, phase_b)
    eventually(lambda: read_status(outbox).consumers[0].backlog >= 10_000, 60, "the backlog to be committed")
    influx.start()
    during_drain = []
    for _ in range(2):
        time.sleep(rng.uniform(0.05, 0.4))  # a random moment, on purpose
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
        during_drain.append(count())
        daemon, starts = _daemon(cfg, log), starts + 1
    try:
        eventually(lambda: count() >= 16_000, 90, f"all 16,000 readings (seed {seed})")
        flow = influx.query("plant", "SELECT value FROM telemetry WHERE quantity='flow'")
        batch = influx.query("plant", "SELECT value FROM telemetry WHERE device='gw'")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert min(during_drain) < 16_000, f"no kill landed during the drain (seed {seed})"
    assert sorted(int(r["value"]) for r in flow) == list(range(6000))
    assert sorted(int(r["value"]) for r in batch) == list(range(10_000))
    box = Outbox(outbox)
    assert box._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    box.close()
