"""The system clock stepping back an hour (and forward again) under a running daemon
(libfaketime, monotonic time left alone as the kernel does): it keeps polling, committing
and delivering, and every record it committed is in InfluxDB exactly once."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from telemetry.sim.plant import RegisterServer
from tests.faults.harness import Daemon, committed, site_config
from tests.services import Influx1, eventually, free_port

pytestmark = pytest.mark.service
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


@pytest.fixture
def device() -> Iterator[RegisterServer]:
    server = RegisterServer().start()
    hi, lo = struct.unpack(">HH", struct.pack(">f", 42.5))
    server.memory[1]["holding"].update({0: hi, 1: lo})
    yield server
    server.stop()


def points(influx: Influx1, db: str, since_ns: int = 0, until_ns: int = 2**62) -> int:
    total = 0
    for measurement, field in (("telemetry", "value"), ("telemetry_agg", "count")):
        where = f"time >= {since_ns} AND time < {until_ns}"
        rows = influx.query(db, f"SELECT count({field}) FROM {measurement} WHERE {where}")
        total += int(rows[0]["count"]) if rows else 0
    return total


def set_offset(clock: Path, offset: str) -> None:
    """Replace the file whole: libfaketime reads it on every call and must never see it empty."""
    staged = clock.with_suffix(".new")
    staged.write_text(offset + "\n")
    os.replace(staged, clock)


def test_clock_stepping_back_and_forward(tmp_path: Path, unique: str, influx1: Influx1, device: RegisterServer) -> None:
    if not os.path.exists(LIBFAKETIME):
        message = f"{LIBFAKETIME} missing (Debian package faketime; .ci/setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    clock = tmp_path / "clock"
    clock.write_text("+0\n")
    port = free_port()
    analyzer = f"""{{id: analyzer, kind: modbus, site: {unique}, host: 127.0.0.1, port: {device.port}, interval: 200ms,
     timeout: 100ms, retries: 0, points: [{{quantity: cod, address: 0, type: float32, unit: mg/L}}]}}"""
    sections = """rules:
  - {kind: nodata, name: cod_silent, quantity: cod, for: 10s}
aggregation: {grace: 0s}"""
    cfg = site_config(tmp_path, unique, port, analyzer, influx1.url, sections=sections)
    env = {
        **os.environ,
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    daemon = Daemon(cfg, port, env)
    try:
        daemon.until(lambda: points(influx1, unique) >= 10, 30, "readings before the step")
        stepped_at = time.time_ns()
        set_offset(clock, "-3600")  # the host clock steps back an hour
        hour_ago = stepped_at - 3600 * 10**9
        eventually(
            lambda: daemon.alive() and points(influx1, unique, hour_ago, hour_ago + 600 * 10**9) >= 10,
            30,
            "readings stamped on the stepped-back clock",
        )
        set_offset(clock, "+0")  # and forward again
        resumed_at = time.time_ns()
        daemon.until(lambda: points(influx1, unique, resumed_at) >= 10, 30, "readings after stepping forward")
        eventually(lambda: daemon.metric("telemetry_outbox_backlog") == 0, 30, "the outbox to drain")
        assert daemon.metric("telemetry_clock_steps_total") == 2
        # No stuck-data alarm from the jumps, not even one that fired and resolved: the
        # outbox would hold its two events beside the readings (the count below).
        assert daemon.metric("telemetry_alert_events_total") == 0
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log.read_text()[-3000:]
    assert points(influx1, unique) == committed(tmp_path / "outbox.sqlite")
