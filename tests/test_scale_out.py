"""Scale-out on a broker's MQTT shared subscription: two daemons split one stream, every
reading lands in InfluxDB exactly once, and killing one mid-stream loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import Influx1, Mosquitto, eventually, free_port, require

pytestmark = pytest.mark.service
ROOT = Path(__file__).resolve().parents[1]
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
influxdb:
  - {{name: local, api: v1, url: "{influx.url}", database: {unique}, create_database: true, flush_interval: 100ms}}
metrics: {{listen: "127.0.0.1:{port}"}}
outbox: {{path: "{tmp}/{name}.sqlite"}}
"""
    )
    return path


class Instance:
    def __init__(self, cfg: Path, log: Path, port: int) -> None:
        self.cfg, self.log, self.port = cfg, log, port
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            cmd = [sys.executable, "-m", "telemetry.cli", "run", "-c", str(self.cfg)]
            self.proc = subprocess.Popen(cmd, stderr=out, cwd=ROOT)
        return self.proc

    def subscribed(self, times: int) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            return self.log.read_text().count("subscribed to") >= times

        eventually(ready, 30, f"{self.cfg.stem} to subscribe")

    def readings(self) -> float:
        """Readings this process committed (telemetry_readings_total, summed over series)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("telemetry_readings_total{")
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)


def test_two_instances_share_a_stream_each_reading_lands_once_and_a_kill_loses_nothing(
    tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    ports = [free_port(), free_port()]
    a, b = (
        Instance(instance_config(tmp_path, unique, name, mosquitto, influx1, port), tmp_path / f"{name}.log", port)
        for name, port in zip(("a", "b"), ports, strict=True)
    )
    try:
        a.subscribed(1)
        b.subscribed(1)
        base_ms = int(time.time() * 1000) - N
        lines = "".join(f'{{"value": {i}, "ts": {base_ms + i}}}\n' for i in range(N))
        topic = f"{unique}/{unique}/meter/flow"
        publish = [require("mosquitto_pub"), "-h", mosquitto.host, "-p", str(mosquitto.port), "-q", "1"]
        subprocess.run([*publish, "-t", topic, "-l"], input=lines.encode(), check=True, timeout=60)

        def count() -> int:
            rows = influx1.query(unique, "SELECT count(value) FROM telemetry")
            return int(rows[0]["count"]) if rows else 0

        # Both instances take part before one is killed: the broker really splits the stream.
        eventually(lambda: a.readings() > 0 and b.readings() > 0, 60, "both instances to commit readings")
        taken_by_a = a.readings()
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        at_kill = count()
        assert at_kill < N, "the stream was done before the kill: not a mid-stream kill"
        # The broker keeps a's unacknowledged messages in its session and re-sends them on restart.
        a.start()
        eventually(lambda: count() >= N, 120, f"all {N} readings in InfluxDB (had {at_kill} at the kill)")
        eventually(lambda: b.readings() + a.readings() + taken_by_a >= N, 30, "the instances' counters to add up")
        rows = influx1.query(unique, "SELECT value FROM telemetry")
    finally:
        a.stop()
        b.stop()
    values = sorted(int(r["value"]) for r in rows)
    assert values == list(range(N))  # every reading exactly once in InfluxDB: none missing, none doubled
    assert {r["time"] for r in rows} == {(base_ms + i) * 1_000_000 for i in range(N)}
    assert 0 < taken_by_a < N
