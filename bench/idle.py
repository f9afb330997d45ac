"""Idle CPU: the daemon polling two RS-485 analyzers and listening on MQTT with no traffic.

    .venv/bin/python bench/idle.py [--seconds 60]

Two analyzers (units 1 and 2) on a simulated RS-485 bus: a pymodbus RTU server behind a pty
made by socat (the daemon opens /dev/pts/N as a serial port), polled every 5 s; an MQTT
subscription on a real Mosquitto (stock limits: 20 in flight, 1000 queued) that nobody
publishes to; two rules; the HTTP listener on.
After a 10 s settle, prints the daemon's CPU as a percentage of one core over SECONDS, and
its RSS. Needs socat (Debian package).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.soak import proc_sample
from telemetry.sim.plant import RegisterServer
from tests import services

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, services.mosquitto(Path(tmp), default_limits=True) as broker:
        server = RegisterServer(units=(1, 2), framer="rtu").start()
        tty = Path(tmp) / "ttyRS485"
        bridge = subprocess.Popen(["socat", f"pty,raw,echo=0,link={tty}", f"tcp:127.0.0.1:{server.port}"])
        deadline = time.monotonic() + 10
        while not tty.exists():  # socat makes the link once its pty is open: no event to wait on
            if time.monotonic() > deadline:
                raise SystemExit("socat made no pty")
            time.sleep(0.05)
        path = Path(tmp) / "idle.yaml"
        points = "points: [{quantity: cod, address: 0, type: float32}, {quantity: nh3n, address: 2, type: float32}]"
        path.write_text(
            f"""
sites: [{{id: outlet}}]
metrics: {{listen: "127.0.0.1:{services.free_port()}"}}
outbox: {{path: "{tmp}/idle.sqlite"}}
log_level: WARNING
devices:
  - {{id: an1, kind: modbus, site: outlet, transport: rtu, serial_port: "{tty}", unit_id: 1,
     interval: 5s, timeout: 1s, {points}}}
  - {{id: an2, kind: modbus, site: outlet, transport: rtu, serial_port: "{tty}", unit_id: 2,
     interval: 5s, timeout: 1s, {points}}}
  - id: broker
    kind: mqtt
    host: {broker.host}
    port: {broker.port}
    client_id: idle-daemon
    subscriptions: [{{topic: "idle/outlet/{{device}}/{{quantity}}", site: outlet, devices: ["*"]}}]
rules:
  - {{kind: nodata, name: silent, quantity: cod, for: 10m}}
  - {{kind: limit, name: high, quantity: cod, above: 100}}
"""
        )
        daemon = subprocess.Popen([sys.executable, "-m", "telemetry.cli", "run", "-c", str(path)], cwd=ROOT)
        try:
            time.sleep(10)  # start-up and the first polls are not idle
            _, cpu0 = proc_sample(daemon.pid)
            time.sleep(args.seconds)  # the interval measured
            rss, cpu1 = proc_sample(daemon.pid)
            print(f"idle_cpu: {100 * (cpu1 - cpu0) / args.seconds:.2f} % of one core")
            print(f"idle_rss: {rss:.1f} MiB")
        finally:
            daemon.terminate()
            daemon.wait(30)
            bridge.terminate()
            bridge.wait(10)
            server.stop()


if __name__ == "__main__":
    main()
