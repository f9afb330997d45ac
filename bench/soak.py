"""Soak: steady MQTT load through the daemon for N minutes; RSS and CPU sampled each minute.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 10000] [--per-message 50]

Real Mosquitto and InfluxDB 1.x (started here); the daemon is a separate
``telemetry run`` process with rules (an instantaneous limit, no-data) and
1m, 1h and 1d aggregation. A publisher thread sends RATE readings/s
as QoS 1 messages of PER_MESSAGE readings over 20 sites. Each minute prints the
daemon's RSS, its CPU over that minute and how far InfluxDB is behind; at the end,
the RSS growth from the first minute to the last (flat memory means no leak) and
whether every published reading reached InfluxDB. Prints ``name: value unit``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import services

ROOT = Path(__file__).resolve().parents[1]
SITES = 20
TICKS = os.sysconf("SC_CLK_TCK")


def config(tmp: Path, broker: services.Mosquitto, influx: services.Influx1, metrics_port: int) -> Path:
    sites = ", ".join(f"{{id: s{i}}}" for i in range(SITES))
    path = tmp / "soak.yaml"
    path.write_text(
        f"""
sites: [{sites}]
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: soak-daemon
    subscriptions: [{{topic: "soak/{{site}}/{{device}}/batch", format: batch, devices: ["gw*"]}}]
rules:
  - {{kind: limit, name: q0_limit, quantity: q0, above: 1000}}
  - {{kind: nodata, name: q1_silent, quantity: q1, for: 5m}}
influxdb:
  - {{name: local, api: v1, url: "{influx.url}", database: soak, create_database: true}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
outbox: {{path: "{tmp}/soak.sqlite"}}
log_level: WARNING
"""
    )
    return path


class Publisher(threading.Thread):
    """Paced QoS 1 publishing: every 10 ms, the messages due by then."""

    def __init__(self, broker: services.Mosquitto, rate: int, per_message: int) -> None:
        super().__init__(name="publisher", daemon=True)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="soak-pub")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.messages_per_s = rate / per_message
        self.per_message = per_message
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        self.client.loop_start()
        start = time.perf_counter()
        while not self.stop.is_set():
            due = int((time.perf_counter() - start) * self.messages_per_s)
            while self.sent < due:
                i = self.sent
                ts = time.time_ns() // 1000  # microseconds: unique per message on one topic
                body = {"ts": ts, **{f"q{k}": float((i + k) % 997) for k in range(self.per_message)}}
                self.client.publish(f"soak/s{i % SITES}/gw{i % 7}/batch", json.dumps(body), qos=1)
                self.sent += 1
            time.sleep(0.01)  # pacing of a load generator, not synchronisation
        self.client.loop_stop()
        self.client.disconnect()


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS in MiB, user+system CPU seconds) of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / TICKS


def metric(port: int, name: str) -> float:
    """A metric of the daemon's /metrics, summed over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + "{", name + " ")))


def connected(port: int) -> bool:
    try:
        return metric(port, "telemetry_device_up") > 0
    except OSError:  # not listening yet
        return False


def sample_until(
    daemon: subprocess.Popen[bytes], publisher: Publisher, port: int, minutes: float, interval: float
) -> list[float]:
    """Print one line per interval; returns the RSS samples."""
    rss_samples: list[float] = []
    last_cpu, last_t = proc_sample(daemon.pid)[1], time.perf_counter()
    end = last_t + minutes * 60
    while time.perf_counter() < end:
        time.sleep(interval)  # a sampling period, not synchronisation
        rss, cpu = proc_sample(daemon.pid)
        now = time.perf_counter()
        load = (cpu - last_cpu) / (now - last_t) * 100
        last_cpu, last_t = cpu, now
        rss_samples.append(rss)
        backlog = metric(port, "telemetry_outbox_backlog")
        print(f"sample_{len(rss_samples)}: rss {rss:.1f} MiB, cpu {load:.0f} %, outbox backlog {backlog:.0f} records")
    return rss_samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=10_000, help="readings per second")
    parser.add_argument("--per-message", type=int, default=50)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"minutes: {args.minutes}")
    print(f"rate: {args.rate} readings/s in messages of {args.per_message}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "m").mkdir()
        (tmp / "i").mkdir()
        with services.mosquitto(tmp / "m") as broker, services.influxd(tmp / "i") as influx:
            port = services.free_port()
            cmd = [sys.executable, "-m", "telemetry.cli", "run", "-c", str(config(tmp, broker, influx, port))]
            daemon = subprocess.Popen(cmd, cwd=ROOT)
            services.eventually(lambda: connected(port) or None, 30, "the daemon to connect to the broker")
            publisher = Publisher(broker, args.rate, args.per_message)
            publisher.start()
            rss = sample_until(daemon, publisher, port, args.minutes, args.interval)
            publisher.stop.set()
            publisher.join(30)
            total = publisher.sent * args.per_message

            def caught_up() -> bool:
                done = metric(port, "telemetry_readings_total") >= total
                return done and not metric(port, "telemetry_outbox_backlog")

            services.eventually(caught_up, 120, "the daemon to commit and deliver everything")
            committed = metric(port, "telemetry_readings_total")
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            rows = influx.query("soak", "SELECT count(value) FROM telemetry WHERE quantity = 'q0'")
            landed_q0 = int(rows[0]["count"]) if rows else 0
    print(f"readings_published: {total}")
    print(f"readings_committed: {committed:.0f}")
    print(f"q0_points_in_influxdb: {landed_q0} of {publisher.sent} published")
    print(f"rss_first_sample: {rss[0]:.1f} MiB")
    print(f"rss_last_sample: {rss[-1]:.1f} MiB")
    print(f"rss_max: {max(rss):.1f} MiB")
    print(f"rss_growth_first_to_last: {rss[-1] - rss[0]:.1f} MiB")


if __name__ == "__main__":
    main()
