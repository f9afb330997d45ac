"""Alert latency end to end: a breaching reading published on MQTT -> notification received.

    .venv/bin/python bench/alert_latency.py [--alerts 200]

A real Mosquitto (started here), the daemon in this process (MQTT driver, durable
outbox commit, rules, alert manager, apprise ``json://`` to a local HTTP receiver),
one instantaneous COD limit (above 100 mg/L) and a route with ``group_wait: 0``.
Each round publishes one QoS 1 reading of 150 mg/L for a new site (so every alert
is its own group and nothing waits for ``group_interval``), and measures from just
before ``publish`` to the receiver's arrival time of the request (the receiver's
own handling is excluded). Prints ``name: value unit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.mqtt import MqttDriver
from telemetry.sim.notifications import NotificationReceiver
from tests import services
from tests.daemon import start_daemon


def config(tmp: Path, broker: services.Mosquitto, receiver: NotificationReceiver, sites: int) -> Path:
    site_list = ", ".join(f"{{id: s{i}}}" for i in range(sites))
    path = tmp / "latency.yaml"
    path.write_text(
        f"""
sites: [{site_list}]
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: latency-daemon
    subscriptions: [{{topic: "lat/{{site}}/{{device}}/{{quantity}}", format: json, devices: ["*"]}}]
rules:
  - {{kind: limit, name: cod_limit, quantity: cod, above: 100}}
notify:
  routes:
    - {{name: bench, urls: ["{receiver.url}"], group_wait: 0s, send_resolved: false, language: en}}
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/latency.sqlite"}}
log_level: ERROR
"""
    )
    return path


async def measure(tmp: Path, alerts: int) -> list[float]:
    with services.mosquitto(tmp) as broker:
        receiver = NotificationReceiver().start()
        daemon = await start_daemon(config(tmp, broker, receiver, alerts))
        try:
            mqtt = next(d for d in daemon.pipeline.drivers if isinstance(d, MqttDriver))
            await asyncio.wait_for(mqtt.subscribed.wait(), 10)
            client = paho.Client(CallbackAPIVersion.VERSION2, client_id="latency-pub")
            client.connect(broker.host, broker.port)
            client.loop_start()
            latencies = []
            for i in range(alerts):
                payload = json.dumps({"value": 150.0, "ts": time.time()})
                sent = time.perf_counter()
                client.publish(f"lat/s{i}/an1/cod", payload, qos=1)
                got = await asyncio.to_thread(receiver.wait_for, i + 1, 10)
                if len(got) <= i:
                    raise SystemExit(f"alert {i} was not notified within 10 s")
                latencies.append(got[i]["_received"] - sent)
            client.loop_stop()
            client.disconnect()
            return latencies
        finally:
            await daemon.close()
            receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"cores: {os.cpu_count()}")
    print(f"alerts: {args.alerts}")
    with tempfile.TemporaryDirectory() as tmp_name:
        latencies = sorted(asyncio.run(measure(Path(tmp_name), args.alerts)))
    ms = [x * 1000 for x in latencies]
    print(f"alert_latency_p50: {statistics.median(ms):.1f} ms")
    print(f"alert_latency_p99: {ms[min(len(ms) - 1, round(len(ms) * 0.99))]:.1f} ms")
    print(f"alert_latency_max: {ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
