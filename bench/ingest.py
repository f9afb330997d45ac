"""MQTT -> outbox -> InfluxDB 1.x and VictoriaMetrics sustained ingest, against real services.

    .venv/bin/python bench/ingest.py [--readings 100000] [--shapes 1,50] [--sinks influxdb1,victoriametrics]

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
import subprocess
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

PROTOCOL = os.environ.get("BENCH_MQTT", "3.1.1")


def preload(broker: services.Mosquitto, topic_prefix: str, messages: int, per_message: int) -> None:
    """QoS 1 messages on ten topics, published by ten ``mosquitto_pub -l`` processes (C, not
    the process being measured), each message's timestamp unique so every reading is a point."""
    base = time.time() - messages
    pubs = []
    for meter in range(10):
        lines = []
        for i in range(meter, messages, 10):
            ts = round((base + i) * 1000)
            if per_message == 1:
                lines.append(json.dumps({"value": i % 997, "ts": ts}))
            else:
                lines.append(json.dumps({"ts": ts, **{f"q{k}": (i + k) % 997 for k in range(per_message)}}))
        topic = (
            f"{topic_prefix}/bench/meter{meter}/flow" if per_message == 1 else f"{topic_prefix}/bench/gw{meter}/batch"
        )
        cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-l"]
        pub = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        pubs.append((pub, "\n".join(lines).encode() + b"\n"))
    for pub, data in pubs:
        pub.communicate(data, timeout=300)
        if pub.returncode:
            raise SystemExit(f"mosquitto_pub failed with {pub.returncode}")


def raw_rate(broker: services.Mosquitto, topic: str, messages: int) -> float:
    client_id = f"bench-raw-{topic.split('/', maxsplit=1)[0]}"
    services.register_session(broker, client_id, topic)
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
    sink: str,
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
    protocol: "{PROTOCOL}"
    subscriptions: [{{topic: "{topic}", format: {fmt}, devices: ["*"]}}]
influxdb:
  - {sink}
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/{prefix}.sqlite"}}
log_level: WARNING
"""
    )
    services.register_session(
        broker,
        f"{prefix}-daemon",
        topic.replace("{site}", "+").replace("{device}", "+").replace("{quantity}", "+"),
        v5=PROTOCOL != "3.1.1",
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
    cpu_start = os.times()
    task = asyncio.create_task(app.serve(dep, stop, observer=observe, registry=registry, pipeline_ready=ready))
    await ready
    await asyncio.wait_for(done.wait(), 600)
    written = {"sink": "local"}
    while (registry.get_sample_value("telemetry_sink_points_written_total", written) or 0) < total:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the sink reports progress only as a counter: sampled, 50 ms resolution
    written_at = time.perf_counter()
    cpu_end = os.times()
    user = (cpu_end.user - cpu_start.user) / (written_at - start) * 100
    system = (cpu_end.system - cpu_start.system) / (written_at - start) * 100
    print(f"daemon_cpu_{prefix}: {user + system:.0f} % of one core ({user:.0f} user, {system:.0f} system)")
    stop.set()
    await task
    return total / (committed_at - start), total / (written_at - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--shapes", default="1,50", help="readings per message, comma-separated")
    parser.add_argument("--sinks", default="influxdb1,victoriametrics", help="comma-separated")
    parser.add_argument("--raw", type=float, default=0.0, help="skip the bare subscriber, use this rate (profiling)")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"readings_per_case: {args.readings}")
    print("outbox_sync: full (fsync per group commit)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "m").mkdir()
        (tmp / "i").mkdir()
        (tmp / "v").mkdir()
        with (
            services.mosquitto(tmp / "m") as broker,
            services.influxd(tmp / "i") as influx,
            services.victoria(tmp / "v") as vm,
        ):
            raw = args.raw or raw_rate(broker, "rawbench/#", args.readings)
            print(f"broker_raw_delivery: {raw:.0f} messages/s")
            sinks = {
                "influxdb1": f'{{name: local, api: v1, url: "{influx.url}", database: bench, create_database: true}}',
                "victoriametrics": f'{{name: local, api: v2, url: "{vm.url}", bucket: bench}}',
            }
            for sink_name in args.sinks.split(","):
                for per_message in [int(s) for s in args.shapes.split(",")]:
                    prefix = f"{sink_name}_{per_message}_per_message"
                    messages = args.readings // per_message
                    committed, written = asyncio.run(
                        daemon_rates(tmp, broker, sinks[sink_name], prefix, messages, per_message)
                    )
                    print(f"ingest_to_outbox_{prefix}: {committed:.0f} readings/s")
                    print(f"ingest_to_sink_{prefix}: {written:.0f} readings/s")
                    ratio = committed / per_message / raw  # messages/s against the bare subscriber's messages/s
                    print(f"outbox_messages_vs_raw_broker_{prefix}: {ratio:.2f} ratio")
    print(f"max_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
