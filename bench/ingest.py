"""MQTT -> outbox -> InfluxDB sustained ingest, against real Mosquitto and InfluxDB 1.x.

    .venv/bin/python bench/ingest.py [--readings 100000]

For each message shape (1 reading per message, 50 readings per message) the
broker is preloaded with QoS 1 messages for the daemon's persistent session while
the daemon is down; then the daemon starts and the bench times how long it takes
to commit every reading to the outbox (durable, fsync per group commit, MQTT acks
after commit) and to have every reading accepted by InfluxDB. The raw broker
delivery rate of the same queue to a bare paho subscriber (acking at once, no
storage) is measured the same way, as the ceiling. Prints ``name: value unit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemetry import app
from telemetry.pipeline import Pipeline
from tests import services


def preload(broker: services.Mosquitto, topic_prefix: str, messages: int, per_message: int) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{topic_prefix}")
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    base = time.time() - messages
    infos = []
    for i in range(messages):
        ts = round((base + i) * 1000)
        if per_message == 1:
            payload = json.dumps({"value": i % 997, "ts": ts})
            topic = f"{topic_prefix}/bench/meter{i % 10}/flow"
        else:
            payload = json.dumps({"ts": ts, **{f"q{k}": (i + k) % 997 for k in range(per_message)}})
            topic = f"{topic_prefix}/bench/gw{i % 10}/batch"
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def register_session(broker: services.Mosquitto, client_id: str, topic: str) -> None:
    """Subscribe once with a persistent session, so the broker queues for it while it is away."""
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_subscribe = lambda *_: done.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    done.wait(10)
    client.disconnect()
    client.loop_stop()


def raw_rate(broker: services.Mosquitto, topic: str, messages: int) -> float:
    client_id = f"bench-raw-{topic.split('/', maxsplit=1)[0]}"
    register_session(broker, client_id, topic)
    preload(broker, topic.split("/", maxsplit=1)[0], messages, 1)
    got = 0
    done = threading.Event()

    def on_message(*_: object) -> None:
        nonlocal got
        got += 1
        if got >= messages:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_message = on_message
    start = time.perf_counter()
    client.connect(broker.host, broker.port)
    client.loop_start()
    done.wait(300)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return got / elapsed


async def daemon_rates(
    tmp: Path,
    broker: services.Mosquitto,
    influx: services.Influx1,
    prefix: str,
    messages: int,
    per_message: int,
) -> tuple[float, float]:
    fmt = "batch" if per_message > 1 else "json"
    quantity = "" if per_message > 1 else "/{quantity}"
    topic = f"{prefix}/{{site}}/{{device}}" + (quantity or "/batch")
    cfg = tmp / f"{prefix}.yaml"
    cfg.write_text(
        f"""
sites: [{{id: bench}}]
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: {prefix}-daemon
    subscriptions: [{{topic: "{topic}", format: {fmt}}}]
influxdb:
  - {{name: local, api: v1, url: "{influx.url}", database: {prefix}, create_database: true}}
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/{prefix}.sqlite"}}
log_level: WARNING
"""
    )
    register_session(
        broker,
        f"{prefix}-daemon",
        topic.replace("{site}", "+").replace("{device}", "+").replace("{quantity}", "+"),
    )
    preload(broker, prefix, messages, per_message)
    total = messages * per_message
    dep = app.load(str(cfg), {})
    registry = CollectorRegistry()
    stop = asyncio.Event()
    ready: asyncio.Future[Pipeline] = asyncio.get_running_loop().create_future()
    committed_at = written_at = 0.0
    count = 0
    done = asyncio.Event()

    def observe(readings: object, _events: object) -> None:
        nonlocal count, committed_at
        count += len(readings)  # type: ignore[arg-type]
        if count >= total and not committed_at:
            committed_at = time.perf_counter()
            done.set()

    start = time.perf_counter()
    task = asyncio.create_task(app.serve(dep, stop, observer=observe, registry=registry, pipeline_ready=ready))
    await ready
    await asyncio.wait_for(done.wait(), 600)
    written = {"sink": "local"}
    while (registry.get_sample_value("telemetry_sink_points_written_total", written) or 0) < total:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the sink reports progress only as a counter: sampled, 50 ms resolution
    written_at = time.perf_counter()
    stop.set()
    await task
    return total / (committed_at - start), total / (written_at - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=100_000)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"readings_per_case: {args.readings}")
    print("outbox_sync: full (fsync per group commit)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "m").mkdir()
        (tmp / "i").mkdir()
        with services.mosquitto(tmp / "m") as broker, services.influxd(tmp / "i") as influx:
            raw = raw_rate(broker, "rawbench/#", args.readings)
            print(f"broker_raw_delivery: {raw:.0f} messages/s")
            for per_message in (1, 50):
                prefix = f"ingest{per_message}"
                committed, written = asyncio.run(
                    daemon_rates(tmp, broker, influx, prefix, args.readings // per_message, per_message)
                )
                print(f"ingest_to_outbox_{per_message}_per_message: {committed:.0f} readings/s")
                print(f"ingest_to_influxdb_{per_message}_per_message: {written:.0f} readings/s")
                print(f"outbox_rate_vs_raw_broker_{per_message}_per_message: {committed / raw:.2f} ratio")
    print(f"max_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
