"""The broker stopped and restarted, and the broker refusing the daemon's password after a
change, each with a SIGKILL of the daemon during the fault: nothing lost, nothing doubled."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests import services
from tests.faults.harness import Daemon, count_in, mqtt_device, publish, site_config, values_in
from tests.services import Influx1, Mosquitto, free_port

pytestmark = pytest.mark.service
N = 2000


def config(tmp: Path, unique: str, broker: Mosquitto, influx: Influx1, port: int, auth: str = "") -> Path:
    return site_config(tmp, unique, port, mqtt_device(unique, broker, f", keepalive: 5s{auth}"), influx.url)


def test_broker_stopped_and_restarted_with_a_kill_while_it_is_down(
    tmp_path: Path, unique: str, influx1: Influx1
) -> None:
    (tmp_path / "broker").mkdir()
    with services.mosquitto(tmp_path / "broker") as broker:
        port = free_port()
        daemon = Daemon(config(tmp_path, unique, broker, influx1, port), port)
        try:
            daemon.wait("telemetry_device_up", timeout=30)
            base_ms = int(time.time() * 1000) - 10 * N
            topic = f"{unique}/{unique}/meter/flow"
            publish(broker, topic, range(N // 2), base_ms)
            daemon.until(lambda: count_in(influx1, unique) > 0, 60, "the first readings in InfluxDB")
            broker.stop()
            daemon.wait("telemetry_errors_total", component="mqtt", stage="connection", error_type="lost")
            daemon.kill9()  # while the broker is down
            daemon.wait("telemetry_errors_total", component="mqtt", stage="connect", error_type="unreachable")
            broker.start()
            daemon.wait("telemetry_device_up", timeout=90)  # back-off: up to its maximum
            publish(broker, topic, range(N // 2, N), base_ms)
            daemon.until(lambda: count_in(influx1, unique) >= N, 90, f"{N} readings in InfluxDB")
            assert values_in(influx1, unique) == list(range(N))
        finally:
            code = daemon.stop()
    assert code == 0


def test_password_changed_on_the_broker_is_refused_then_a_rotated_password_file_is_used(
    tmp_path: Path, unique: str, influx1: Influx1
) -> None:
    (tmp_path / "broker").mkdir()
    with services.mosquitto(tmp_path / "broker", user=("plant", "old-pass")) as broker:
        secret = tmp_path / "mqtt.pw"
        secret.write_text("old-pass\n")
        secret.chmod(0o600)
        port = free_port()
        auth = f", username: plant, password_file: {secret}"
        daemon = Daemon(config(tmp_path, unique, broker, influx1, port, auth), port)
        try:
            daemon.wait("telemetry_device_up", timeout=30)
            passwd = str(tmp_path / "broker" / "passwd")
            subprocess.run([services.require("mosquitto_passwd"), "-b", passwd, "plant", "new-pass"], check=True)
            broker.stop()  # a restart drops the session's connection; the broker keeps its queue
            broker.start()
            daemon.wait("telemetry_errors_total", component="mqtt", stage="connect", error_type="refused", timeout=90)
            base_ms = int(time.time() * 1000) - 10 * N
            publish(broker, f"{unique}/{unique}/meter/flow", range(N), base_ms, "plant", "new-pass")
            daemon.kill9()  # while refused: the readings wait in the broker for the daemon's session
            daemon.wait("telemetry_errors_total", component="mqtt", stage="connect", error_type="refused", timeout=90)
            assert count_in(influx1, unique) == 0
            secret.write_text("new-pass\n")  # rotated: no restart needed
            daemon.wait("telemetry_device_up", timeout=90)
            daemon.until(lambda: count_in(influx1, unique) >= N, 90, f"{N} readings in InfluxDB")
            assert values_in(influx1, unique) == list(range(N))
            assert "new-pass" not in daemon.log.read_text()
        finally:
            code = daemon.stop()
    assert code == 0
