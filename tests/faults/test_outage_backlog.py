"""The daemon down for an hour while the broker keeps its session: when it comes back, the
hour's readings arrive as a backlog, and the hour's aggregate windows must close complete
(what HJ 212 2051/2061 then report), not with whatever had arrived by the first tick."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.faults.harness import Daemon, mqtt_device, publish_lines, site_config
from tests.services import Influx1, Mosquitto, eventually, free_port

pytestmark = pytest.mark.service
SERIES = 30
PER_MINUTE = 10


def test_an_outage_backlog_fills_its_windows_before_they_close(
    tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    port = free_port()
    cfg = site_config(
        tmp_path,
        unique,
        port,
        mqtt_device(unique, mosquitto),
        influx1.url,
        sink=", create_database: true",
        sections="aggregation: {windows: [1m, 1h], grace: 10s}",
        site=", timezone: UTC",
    )
    daemon = Daemon(cfg, port)
    try:
        daemon.wait("telemetry_device_up", timeout=30)
        daemon.kill9()  # the session exists; the daemon now stays down for "the hour"
        daemon.stop()
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        t0 = int(hour.timestamp())
        for series in range(SERIES):
            lines = [
                json.dumps({"value": 40.0 + m % 7, "ts": t0 + m * 60 + k * 5})
                for m in range(60)
                for k in range(PER_MINUTE)
            ]
            publish_lines(mosquitto, f"{unique}/{unique}/an{series}/cod", lines)
        started = time.monotonic()
        daemon.start()
        expected = SERIES * 60 * PER_MINUTE
        daemon.wait("telemetry_readings_total", expected, timeout=120)
        drained_in = time.monotonic() - started
        outbox = tmp_path / "outbox.sqlite"

        def hours() -> list[dict[str, object]]:
            with sqlite3.connect(outbox) as db:
                rows = db.execute("SELECT body FROM windows WHERE window = '1h' AND start_ns = ?", (t0 * 10**9,))
                return [orjson.loads(body) for (body,) in rows]

        closed = eventually(lambda: h if len(h := hours()) == SERIES else None, 60, "the hour's windows to close")
    finally:
        code = daemon.stop()
    assert code == 0
    # Every series' hour holds all its readings and all 60 minutes: valid, nothing cut short.
    assert sorted((w["valid_count"], w["valid"]) for w in closed) == [(60 * PER_MINUTE, True)] * SERIES, (
        f"backlog drained in {drained_in:.1f} s"
    )
