"""The outbox's disk filling up (an 8 MB tmpfs) while InfluxDB is away, with a SIGKILL while it
is nearly full: commits wait (back-pressure), an alert and readiness say so, MQTT messages wait unacknowledged,
and once the sink drains and frees pages every reading is in InfluxDB exactly once."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Daemon, FaultProxy, count_in, mqtt_device, publish, site_config, values_in
from tests.services import Influx1, Mosquitto, free_port

pytestmark = pytest.mark.service
N = 70_000  # about 6.7 MB of outbox: more than the 8 MB disk holds above min_free and the reserve


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, check=False
    )
    if result.returncode:
        message = f"cannot mount an 8 MB tmpfs (needs root): {result.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def ready(port: int) -> int:
    """/readyz's status; 0 when it gave none in time (a daemon busy draining on a loaded machine):
    the caller polls again rather than failing on one slow answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


@pytest.mark.parametrize("interruption", ["SIGKILL", "SIGTERM"])
def test_disk_full_then_freed_loses_nothing(
    interruption: str, tmp_path: Path, small_disk: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    proxy = FaultProxy(influx1.url)
    proxy.mode = "down"
    port = free_port()
    cfg = site_config(
        tmp_path,
        unique,
        port,
        mqtt_device(unique, mosquitto),
        proxy.url,
        sink=", flush_interval: 100ms, batch_size: 2000",
        sections="aggregation: {enabled: false}",
        outbox=f'path: "{small_disk}/outbox.sqlite", min_free: 2MiB',
    )
    daemon = Daemon(cfg, port)
    try:
        daemon.wait("telemetry_device_up", timeout=30)
        influx1.create(unique)
        base_ms = int(time.time() * 1000) - 10 * N
        publish(mosquitto, f"{unique}/{unique}/meter/flow", range(N), base_ms)
        daemon.wait("telemetry_alert_events_total", rule="outbox_full", state="firing", timeout=60)
        daemon.until(lambda: ready(port) == 503, 30, "not ready while the disk is full")
        if interruption == "SIGKILL":
            daemon.kill9()  # while the disk is full
        else:  # a clean stop must not hang on the commit that waits for room, nor ack it
            asked = time.monotonic()
            assert daemon.stop() == 0
            assert time.monotonic() - asked < 10, daemon.log.read_text()[-2000:]
            daemon.start()
        daemon.wait("telemetry_device_up", timeout=30)
        proxy.mode = "pass"
        # A daemon that died here (a committer crash did, on a busy machine) fails the wait at
        # once with its log, instead of the test running out its time waiting for readings.
        daemon.until(lambda: count_in(influx1, unique) >= N, 90, f"{N} readings in InfluxDB")
        daemon.until(lambda: ready(port) == 200, 30, "ready again")
        daemon.wait("telemetry_alert_events_total", rule="outbox_full", state="resolved", timeout=30)
        assert values_in(influx1, unique) == list(range(N))
    finally:
        code = daemon.stop()
        proxy.close()
    assert code == 0, daemon.log.read_text()[-3000:]
