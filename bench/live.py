"""Live ingest under Mosquitto's default queue limits: how much is lost, at which rate.

    .venv/bin/python bench/live.py [--seconds 5] [--rates 2000,5000,10000,max]

The broker runs with its defaults (max_queued_messages 1000, max_inflight_messages
20): a subscriber that falls behind by more than that loses QoS 1 messages. For each
publish rate, four ``mosquitto_pub -l`` processes (C) publish single-reading QoS 1
messages, paced in 10 ms steps (``max``: as fast as they go), for SECONDS seconds,
once to a bare paho subscriber (acks at once, stores nothing: the ceiling) and once
to the daemon (durable commit before each ack). Prints, per rate, what each received
and lost, and the daemon's rate as a fraction of the bare subscriber's, as
``name: value unit``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.mqtt import MqttDriver
from tests import services
from tests.daemon import start_daemon

PUBLISHERS = 4
PROTOCOL = os.environ.get("BENCH_MQTT", "3.1.1")  # the daemon's MQTT version: 3.1.1 or 5


def publish(broker: services.Mosquitto, prefix: str, rate: float | None, seconds: float) -> tuple[int, float]:
    """Publish for ``seconds`` at ``rate`` msg/s in all (None: flat out); returns (sent, achieved rate)."""
    total = int((rate or 60_000) * seconds)
    per = total // PUBLISHERS
    base_ms = int(time.time() * 1000) - total
    procs = []
    for p in range(PUBLISHERS):
        topic = f"{prefix}/live/pub{p}/flow"
        cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic, "-l"]
        lines = [json.dumps({"value": i, "ts": base_ms + i}).encode() + b"\n" for i in range(per)]
        procs.append((subprocess.Popen(cmd, stdin=subprocess.PIPE), lines))
    start = time.perf_counter()
    step = 0.01
    chunk = max(1, int((rate or 0) / PUBLISHERS * step))
    sent = 0
    while sent < per:
        for proc, lines in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"".join(lines[sent : sent + chunk] if rate else lines))
            proc.stdin.flush()
        sent = sent + chunk if rate else per
        if rate:
            ahead = start + sent / (rate / PUBLISHERS) - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)  # pacing of a load generator
    for proc, _ in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(120)
    elapsed = time.perf_counter() - start
    return per * PUBLISHERS, per * PUBLISHERS / elapsed


def settle(count: object, expected: int) -> int:
    """Wait until ``count()`` reaches ``expected`` or stops moving for 3 s; returns it."""
    last, since = -1, time.perf_counter()
    while True:
        now = count()  # type: ignore[operator]
        if now >= expected:
            return int(now)
        if now != last:
            last, since = now, time.perf_counter()
        elif time.perf_counter() - since > 3:
            return int(now)
        time.sleep(0.05)  # polling a counter another thread advances


def bare(broker: services.Mosquitto, prefix: str, rate: float | None, seconds: float) -> tuple[int, int, float, float]:
    got = 0
    first = last = 0.0

    def on_message(*_: object) -> None:
        nonlocal got, first, last
        last = time.perf_counter()
        first = first or last
        got += 1

    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-bare", clean_session=False)
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(f"{prefix}/#", qos=1)
    subscribed.wait(10)
    sent, achieved = publish(broker, prefix, rate, seconds)
    received = settle(lambda: got, sent)
    client.disconnect()
    client.loop_stop()
    return sent, received, received / max(1e-9, last - first), achieved


async def daemon(
    tmp: Path, broker: services.Mosquitto, prefix: str, rate: float | None, seconds: float
) -> tuple[int, int, float]:
    cfg = tmp / f"{prefix}.yaml"
    cfg.write_text(
        f"""
sites: [{{id: live}}]
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: {prefix}-daemon
    protocol: "{PROTOCOL}"
    subscriptions: [{{topic: "{prefix}/{{site}}/{{device}}/{{quantity}}", format: json, devices: ["*"]}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/{prefix}.sqlite"}}
log_level: ERROR
"""
    )
    got = 0
    first = last = 0.0

    def observe(readings: object, _events: object) -> None:
        nonlocal got, first, last
        last = time.perf_counter()
        first = first or last
        got += len(readings)  # type: ignore[arg-type]

    running = await start_daemon(cfg, observer=observe)
    try:
        mqtt = next(d for d in running.pipeline.drivers if isinstance(d, MqttDriver))
        await asyncio.wait_for(mqtt.subscribed.wait(), 10)
        sent, _ = await asyncio.to_thread(publish, broker, prefix, rate, seconds)
        received = await asyncio.to_thread(settle, lambda: got, sent)
    finally:
        await running.close()
    return sent, received, received / max(1e-9, last - first)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rates", default="2000,5000,10000,max", help="messages/s in all, or max")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print("broker_limits: mosquitto defaults (max_queued_messages 1000, max_inflight_messages 20)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with services.mosquitto(tmp, default_limits=True) as broker:
            for i, spec in enumerate(args.rates.split(",")):
                rate = None if spec == "max" else float(spec)
                sent, got_bare, bare_rate, achieved = bare(broker, f"bare{i}", rate, args.seconds)
                _, got, our_rate = asyncio.run(daemon(tmp, broker, f"live{i}", rate, args.seconds))
                print(f"rate_{spec}_sent: {sent} messages at {achieved:.0f} msg/s")
                print(f"rate_{spec}_bare_subscriber_lost: {sent - got_bare} messages ({bare_rate:.0f} msg/s)")
                print(f"rate_{spec}_daemon_lost: {sent - got} messages ({our_rate:.0f} msg/s)")
                print(f"rate_{spec}_daemon_vs_bare: {our_rate / bare_rate:.2f} ratio")


if __name__ == "__main__":
    main()
