"""Outbox commit throughput and latency, by batch size and sync mode.

    .venv/bin/python bench/outbox.py [--readings 200000]

Prints one figure per line as ``name: value unit``. The pipeline's group commit
makes the batch size follow the load: 1 at a trickle, thousands under a burst.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from telemetry.model import Reading
from telemetry.outbox import Outbox


def run(readings: int, batch: int, sync: str) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(os.path.join(tmp, "o.sqlite"), synchronous=sync)
        rows = [Reading(i, "diaoyushan", "analyzer", "cod", 41.5 + i % 7, "mg/L") for i in range(batch)]
        latencies = []
        start = time.perf_counter()
        for _ in range(max(1, readings // batch)):
            t0 = time.perf_counter()
            box.append(rows)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        box.close()
    latencies.sort()
    total = batch * len(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return total / elapsed, statistics.median(latencies) * 1000, p99 * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=200_000)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"readings_per_case: {args.readings}")
    for sync in ("full", "normal"):
        for batch in (1, 10, 100, 1000, 5000):
            n = min(args.readings, 5000 if batch == 1 else args.readings)
            rate, p50, p99 = run(n, batch, sync)
            print(f"append_rate_sync_{sync}_batch_{batch}: {rate:.0f} readings/s")
            print(f"commit_p50_sync_{sync}_batch_{batch}: {p50:.3f} ms")
            print(f"commit_p99_sync_{sync}_batch_{batch}: {p99:.3f} ms")


if __name__ == "__main__":
    main()
