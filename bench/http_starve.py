"""/metrics while clients hang connections open: latency percentiles of a scrape.

    .venv/bin/python bench/http_starve.py [--hung 80] [--scrapes 50]

The daemon (``telemetry run``, no devices, HTTP listener on) gets HUNG connections, half idle
and half with a request cut off in its headers, more than the listener's 32; then SCRAPES
sequential GET /metrics are timed. Prints ``name: value unit``.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import services

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hung", type=int, default=80)
    ap.add_argument("--scrapes", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = services.free_port()
        path = Path(tmp) / "http.yaml"
        path.write_text(
            f'sites: [{{id: s}}]\nmetrics: {{listen: "127.0.0.1:{port}"}}\noutbox: {{path: "{tmp}/o.sqlite"}}\n'
        )
        daemon = subprocess.Popen([sys.executable, "-m", "telemetry.cli", "run", "-c", str(path)], cwd=ROOT)
        url = f"http://127.0.0.1:{port}/metrics"
        held: list[socket.socket] = []
        try:
            services.eventually(lambda: _answers(url), 30, "the daemon's listener")
            for i in range(args.hung):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if i % 2:
                    sock.sendall(b"POST /alerts/x/ack HTTP/1.1\r\nContent-Le")
                held.append(sock)
            times = []
            for _ in range(args.scrapes):
                start = time.perf_counter()
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
                times.append(time.perf_counter() - start)
            times.sort()
            print(f"hung_connections: {args.hung}")
            print(f"scrape_p50: {1000 * times[len(times) // 2]:.1f} ms")
            print(f"scrape_p99: {1000 * times[min(len(times) - 1, int(len(times) * 0.99))]:.1f} ms")
            print(f"scrape_max: {1000 * times[-1]:.1f} ms")
        finally:
            for sock in held:
                sock.close()
            daemon.terminate()
            daemon.wait(30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - an http URL built above
            return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
