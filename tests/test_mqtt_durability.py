"""MQTT all the way to InfluxDB: a SIGKILL mid-stream loses nothing and duplicates nothing;
topic-derived tags cannot inject points or tags."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.mqtt import MqttDriver
from telemetry.outbox import read_dead_letters
from tests.daemon import start_daemon
from tests.services import Influx1, Mosquitto, eventually

pytestmark = pytest.mark.service
ROOT = Path(__file__).resolve().parents[1]
N = 10_000


def config(tmp: Path, unique: str, broker: Mosquitto, influx: Influx1) -> Path:
    path = tmp / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: {unique}}}]
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: {unique}-daemon
    subscriptions:
      - topic: {unique}/{{site}}/{{device}}/{{quantity}}
        devices: ["*"]
influxdb:
  - {{name: local, api: v1, url: "{influx.url}", database: {unique}, create_database: true, flush_interval: 100ms}}
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
"""
    )
    return path


def start_process(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "telemetry.cli", "run", "-c", str(cfg)], stderr=out, cwd=ROOT)


def wait_subscribed(proc: subprocess.Popen[bytes], log: Path, times: int) -> None:
    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        return log.read_text().count("subscribed to") >= times

    eventually(ready, 30, "the daemon to subscribe")


class Publisher:
    """Publishes ``N`` QoS 1 messages (value i, timestamp base + i ms) from a thread."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{topic}", clean_session=False)
        self.client.max_inflight_messages_set(500)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.topic = topic
        self.base_ms = int(time.time() * 1000) - N

    def run(self) -> None:
        infos = [
            self.client.publish(self.topic, json.dumps({"value": i, "ts": self.base_ms + i}), qos=1) for i in range(N)
        ]
        for info in infos:
            info.wait_for_publish(60)
        self.client.disconnect()
        self.client.loop_stop()


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    cfg = config(tmp_path, unique, mosquitto, influx1)
    log = tmp_path / "daemon.log"
    daemon = start_process(cfg, log)
    wait_subscribed(daemon, log, 1)
    publisher = Publisher(mosquitto, f"{unique}/{unique}/meter/flow")
    thread = threading.Thread(target=publisher.run)
    thread.start()

    def count() -> int:
        rows = influx1.query(unique, "SELECT count(value) FROM telemetry")
        return int(rows[0]["count"]) if rows else 0

    eventually(lambda: count() >= 500, 60, "the first readings in InfluxDB")
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait()
    at_kill = count()
    assert at_kill < N, "the daemon finished before it was killed: not a mid-stream kill"

    daemon = start_process(cfg, log)
    try:
        eventually(lambda: count() >= N, 120, f"all {N} readings in InfluxDB (had {at_kill} at the kill)")
        thread.join(60)
        rows = influx1.query(unique, "SELECT value FROM telemetry")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    values = sorted(int(r["value"]) for r in rows)
    assert values == list(range(N))  # every reading once: none missing, none doubled
    assert {r["time"] for r in rows} == {(publisher.base_ms + i) * 1_000_000 for i in range(N)}


async def test_topic_levels_cannot_inject_points_or_tags(
    tmp_path: Path, unique: str, mosquitto: Mosquitto, influx1: Influx1
) -> None:
    daemon = await start_daemon(config(tmp_path, unique, mosquitto, influx1))
    pipeline = daemon.pipeline
    driver = next(d for d in pipeline.drivers if isinstance(d, MqttDriver))
    await asyncio.wait_for(driver.subscribed.wait(), 10)
    evil = [
        (f"{unique}/{unique}/dev ice,evil=1/cod", {"value": 1.0}),
        (f"{unique}/{unique}/x=y/nh3n value=666 1", {"value": 2.0}),
        # Mosquitto itself refuses topics with control characters; a payload can still carry one.
        (f"{unique}/{unique}/nl/cod", {"value": 3.0, "unit": "mg/L\nmeasurement2 value=1"}),
        (f"{unique}/{unique}/u/tp", {"value": 4.0, "unit": "mg/L,evil=1 value=666"}),
    ]

    def send() -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.connect(mosquitto.host, mosquitto.port)
        client.loop_start()
        for topic, payload in evil:
            client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)
        client.disconnect()
        client.loop_stop()

    try:
        await asyncio.to_thread(send)
        rows: list[dict[str, Any]] = await asyncio.to_thread(
            eventually,
            lambda: r if len(r := influx1.query(unique, "SELECT * FROM telemetry")) >= 3 else None,
            20,
            "the three acceptable points",
        )
    finally:
        await daemon.close()
    got = sorted((r["device"], r["quantity"], r["unit"], r["value"]) for r in rows)
    assert got == [
        ("dev ice,evil=1", "cod", None, 1.0),
        ("u", "tp", "mg/L,evil=1 value=666", 4.0),
        ("x=y", "nh3n value=666 1", None, 2.0),
    ]
    measurements = influx1.query(unique, "SHOW MEASUREMENTS")
    assert [m["name"] for m in measurements] == ["telemetry"]
    keys = sorted(k["tagKey"] for k in influx1.query(unique, "SHOW TAG KEYS FROM telemetry"))
    assert keys == ["device", "quantity", "site", "unit"]
    fields = sorted(f["fieldKey"] for f in influx1.query(unique, "SHOW FIELD KEYS FROM telemetry"))
    assert fields == ["flag", "value"]
    [letter] = read_dead_letters(str(tmp_path / "outbox.sqlite"))
    assert letter.reason == "invalid_reading"
    assert "control character" in letter.detail
