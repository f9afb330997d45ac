"""Spoofed names: what 10,000 refused series cost the daemon (RSS, /metrics size, commit time).

    .venv/bin/python bench/spoof.py [--series 10000] [--settle 60]

A real Mosquitto (stock settings) and the daemon as a separate ``telemetry run`` process with
the demo's subscription (``plants/{site}/{device}/{quantity}``, devices ``[weighbridge, pond]``),
one configured site and a ``nodata`` rule naming no site. A publisher sends SERIES messages,
each a series nobody configured: a third to invented sites, a third to invented devices of the
real site, a third as invented batch keys (in batches of 1,000) to a batch subscription whose
``quantities`` lists two. Before, right after and SETTLE seconds later it prints the daemon's
RSS, the size of /metrics, the refusal counters and how many alerts fire. Prints
``name: value unit``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.soak import proc_sample
from tests import services

ROOT = Path(__file__).resolve().parents[1]


def config(tmp: Path, broker: services.Mosquitto, port: int) -> Path:
    path = tmp / "spoof.yaml"
    path.write_text(
        f"""
sites: [{{id: diaoyushan}}]
devices:
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: spoof-daemon
    subscriptions:
      - {{topic: "plants/{{site}}/{{device}}/{{quantity}}", devices: [weighbridge, pond]}}
      - {{topic: "plants/{{site}}/{{device}}", format: batch, devices: [gw], quantities: [cod, nh3n]}}
rules:
  - {{kind: nodata, name: silent, for: 10s}}
metrics: {{listen: "127.0.0.1:{port}"}}
outbox: {{path: "{tmp}/spoof.sqlite"}}
log_level: WARNING
"""
    )
    return path


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return bytes(resp.read())


def total(body: bytes, name: str) -> float:
    lines = body.decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + "{", name + " ")))


def report(label: str, pid: int, port: int) -> None:
    rss, _ = proc_sample(pid)
    body = scrape(port)
    print(f"{label}_rss: {rss:.1f} MiB")
    print(f"{label}_metrics_size: {len(body)} bytes")
    print(f"{label}_refused: {total(body, 'telemetry_mqtt_rejected_total'):.0f} messages")
    print(f"{label}_alerts_firing: {total(body, 'telemetry_alerts_firing'):.0f}")


def publish(broker: services.Mosquitto, series: int) -> float:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="spoof-pub")
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    third = series // 3
    msgs = [(f"plants/spoof-{i}/weighbridge/weight", b"41.5") for i in range(third)]
    msgs += [(f"plants/diaoyushan/dev-{i}/cod", b"41.5") for i in range(third)]
    keys = series - 2 * third
    for start in range(0, keys, 1000):
        batch = {f"k{i}": float(i) for i in range(start, min(start + 1000, keys))}
        msgs.append(("plants/diaoyushan/gw", json.dumps(batch).encode()))
    started = time.perf_counter()
    infos = [client.publish(topic, body, qos=1) for topic, body in msgs]
    for info in infos:
        info.wait_for_publish(60)
    client.loop_stop()
    client.disconnect()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--settle", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, services.mosquitto(Path(tmp), default_limits=True) as broker:
        port = services.free_port()
        path = config(Path(tmp), broker, port)
        daemon = subprocess.Popen([sys.executable, "-m", "telemetry.cli", "run", "-c", str(path)], cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if total(scrape(port), "telemetry_device_up") > 0:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not come up")
                time.sleep(0.2)  # polling a process we do not own: no event to wait on
            report("before", daemon.pid, port)
            print(f"publish_time: {publish(broker, args.series):.2f} s")
            deadline = time.monotonic() + 120
            expected = 2 * (args.series // 3) + -(-(args.series - 2 * (args.series // 3)) // 1000)
            while total(scrape(port), "telemetry_mqtt_rejected_total") < expected:
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not count every refusal")
                time.sleep(0.2)
            report("after", daemon.pid, port)
            time.sleep(args.settle)  # memory that grows later (open windows) shows after a while
            report(f"after_{args.settle:g}s", daemon.pid, port)
        finally:
            daemon.terminate()
            daemon.wait(30)


if __name__ == "__main__":
    main()
