"""Start-up time: ``telemetry run`` exec'd -> first Modbus request at a local device.

    .venv/bin/python bench/startup.py [--runs 5]

A pymodbus server (the project's RegisterServer) runs in this process and notes
the moment its first request arrives; the daemon is a fresh ``telemetry run``
process each time (interpreter start, imports, config load, outbox open, first
poll), with an InfluxDB sink configured but unreachable, as on a site whose
network is not up yet. Prints ``name: value unit``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemetry.sim.plant import RegisterServer
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]


def once(tmp: Path, run: int) -> float:
    polled = threading.Event()
    server = RegisterServer(on_read=lambda _unit: polled.set()).start()
    cfg = tmp / f"startup{run}.yaml"
    cfg.write_text(
        f"""
sites: [{{id: plant}}]
devices:
  - id: analyzer
    kind: modbus
    site: plant
    host: 127.0.0.1
    port: {server.port}
    interval: 1s
    timeout: 300ms
    points: [{{quantity: cod, address: 0, type: float32, unit: mg/L}}]
influxdb:
  - {{name: local, api: v1, url: "http://127.0.0.1:{free_port()}", database: plant}}
metrics: {{listen: "127.0.0.1:{free_port()}"}}
outbox: {{path: "{tmp}/startup{run}.sqlite"}}
log_level: WARNING
"""
    )
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "telemetry.cli", "run", "-c", str(cfg)], cwd=ROOT, stderr=subprocess.DEVNULL
        )
        if not polled.wait(30):
            raise SystemExit("the daemon did not poll within 30 s")
        elapsed = time.perf_counter() - start
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        return elapsed
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"runs: {args.runs}")
    with tempfile.TemporaryDirectory() as tmp_name:
        times = [once(Path(tmp_name), run) for run in range(args.runs)]
    print(f"startup_to_first_poll_median: {statistics.median(times) * 1000:.0f} ms")
    print(f"startup_to_first_poll_max: {max(times) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
