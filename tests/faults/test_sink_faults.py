"""InfluxDB down, slow, 500, 503 + Retry-After, 413 and 400, each with a SIGKILL of the
daemon in the middle of the fault: the daemon keeps running (or restarts cleanly), its
metrics say what happened, and afterwards every reading is in InfluxDB exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.harness import SINK, Daemon, FaultProxy, count_in, mqtt_device, publish, site_config, values_in
from tests.services import Influx1, Mosquitto, eventually, free_port

pytestmark = pytest.mark.service
N = 3000


def config(tmp: Path, unique: str, broker: Mosquitto, influx_url: str, port: int) -> Path:
    sink = f"{SINK}, batch_size: 1000, timeout: 5s"
    return site_config(tmp, unique, port, mqtt_device(unique, broker), influx_url, sink=sink)


# mode -> (the metric that shows the fault, its labels); 413 and 400 depend on the data, so they stay on.
FAULTS = {
    "down": ("telemetry_sink_write_errors_total", {"sink": "local", "error_type": "network"}),
    "slow": ("telemetry_sink_write_seconds_count", {"sink": "local"}),
    "500": ("telemetry_sink_write_errors_total", {"sink": "local", "error_type": "http_5xx"}),
    "503": ("telemetry_sink_retries_total", {"sink": "local"}),
    "413": ("telemetry_sink_write_errors_total", {"sink": "local", "error_type": "too_large"}),
    "400": ("telemetry_sink_write_errors_total", {"sink": "local", "error_type": "bad_data"}),
}


@pytest.mark.parametrize("mode", list(FAULTS))
def test_sink_fault_with_a_kill_in_the_middle_loses_and_duplicates_nothing(
    mode: str, tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    proxy = FaultProxy(influx1.url)
    port = free_port()
    daemon = Daemon(config(tmp_path, unique, mosquitto, proxy.url, port), port)
    try:
        daemon.wait("telemetry_device_up", timeout=30)
        influx1.create(unique)
        proxy.mode = mode
        base_ms = int(time.time() * 1000) - 10 * N
        publish(mosquitto, f"{unique}/{unique}/meter/flow", range(N), base_ms)
        metric, labels = FAULTS[mode]
        if mode == "slow":
            eventually(lambda: proxy.count("slow") >= 1, 30, "a slowed write")
        else:
            daemon.wait(metric, where=labels)
        daemon.kill9()  # in the middle of the fault
        daemon.wait("telemetry_device_up", timeout=30)
        if mode in ("down", "500", "503"):
            daemon.wait(metric, where=labels)  # the restarted daemon meets the fault too
            proxy.mode = "pass"
        expected = [v for v in range(N) if not (mode == "400" and v == 666)]
        daemon.until(lambda: count_in(influx1, unique) >= len(expected), 90, f"{len(expected)} readings in InfluxDB")
        eventually(lambda: daemon.metric("telemetry_outbox_backlog") == 0, 30, "the outbox to drain")
        assert values_in(influx1, unique) == expected
        if mode == "400":  # the one bad point is kept, with the reason, in the quarantine
            quarantined = subprocess.run(
                [sys.executable, "-m", "telemetry.cli", "outbox", "quarantine", "list", "-c", str(daemon.cfg)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "value=666.0" in quarantined
            assert "field type conflict" in quarantined
        if mode == "413":
            assert proxy.count("413") >= 1
    finally:
        code = daemon.stop()
        proxy.close()
    assert code == 0, daemon.log.read_text()[-3000:]
    assert daemon.kills == 1
