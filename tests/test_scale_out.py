"""Scale-out on a broker's MQTT shared subscription: two daemons split one stream, every
reading lands in InfluxDB exactly once, and killing one mid-stream loses nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import Daemon, PacedPublisher, count_in, values_in
from tests.services import Influx1, Mosquitto, eventually, free_port

pytestmark = pytest.mark.service
N = 20_000


def instance_config(tmp: Path, unique: str, name: str, broker: Mosquitto, influx: Influx1, port: int) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"""
sites: [{{id: {unique}}}]
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: {unique}-{name}
    share_group: {unique}
    subscriptions:
      - topic: {unique}/{{site}}/{{device}}/{{quantity}}
        devices: ["*"]
influxdb:
  - {{name: local, api: v1, url: "{influx.url}", database: {unique}, create_database: true, flush_interval: 100ms}}
metrics: {{listen: "127.0.0.1:{port}"}}
outbox: {{path: "{tmp}/{name}.sqlite"}}
"""
    )
    return path


def test_two_instances_share_a_stream_each_reading_lands_once_and_a_kill_loses_nothing(
    tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    a, b = (
        Daemon(instance_config(tmp_path, unique, name, mosquitto, influx1, port), port)
        for name, port in (("a", free_port()), ("b", free_port()))
    )
    try:
        a.wait("telemetry_device_up", timeout=30)
        b.wait("telemetry_device_up", timeout=30)
        base_ms = int(time.time() * 1000) - N
        # 5,000 msg/s: the stream flows for four seconds, whatever the daemons' pace.
        stream = PacedPublisher(mosquitto, f"{unique}/{unique}/meter/flow", range(N), base_ms, 5000)
        # Both instances take part before one is killed: the broker really splits the stream.
        b.wait("telemetry_readings_total")
        taken_by_a = a.wait("telemetry_readings_total")
        a.kill9()  # mid-stream; the broker keeps a's unacknowledged messages and re-sends them on restart
        at_kill = count_in(influx1, unique)
        assert stream.feeding, "the stream was done before the kill: not a mid-stream kill"
        assert at_kill < N
        stream.join()
        eventually(lambda: count_in(influx1, unique) >= N, 120, f"all {N} readings in InfluxDB (had {at_kill})")
        values = values_in(influx1, unique)
    finally:
        codes = a.stop(), b.stop()
    assert values == list(range(N))  # every reading exactly once in InfluxDB: none missing, none doubled
    assert 0 < taken_by_a < N
    assert codes == (0, 0)
