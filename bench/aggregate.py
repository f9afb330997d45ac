"""Aggregation throughput: readings into minute/hour/day windows, and closing them.

    .venv/bin/python bench/aggregate.py [--series 7000] [--seconds 30]

SERIES series (an analyzer per five quantities at ten sites, each site its inferred
monitoring point), one reading per series per simulated ten seconds, SECONDS x 10
simulated seconds; prints readings/s into ``Aggregator.add`` (best of three) and the
time ``advance`` takes to close a day's worth of windows. The aggregator runs on the
commit path: every reading the daemon commits goes through ``add``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemetry.aggregate import Aggregator
from telemetry.model import Flag, Reading

NS = 1_000_000_000
QUANTITIES = (("cod", "mg/L"), ("nh3n", "mg/L"), ("tp", "mg/L"), ("flow", "m3/h"), ("ph", "pH"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=7000)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    zones = {f"s{i}": "Asia/Shanghai" for i in range(10)}
    t0 = 1_796_000_000 * NS
    batch = [
        Reading(t0 + step * 10 * NS + i * 1000, f"s{i % 10}", f"d{i // 5}", q, 10.0 + i % 7, unit, Flag.N)
        for step in range(args.seconds)
        for i in range(args.series)
        for q, unit in (QUANTITIES[i % 5],)
    ]
    best = float("inf")
    aggregator = Aggregator(zones)
    for _ in range(3):
        aggregator = Aggregator(zones)
        start = time.perf_counter()
        aggregator.add(batch)
        best = min(best, time.perf_counter() - start)
    print(f"add: {len(batch) / best:,.0f} readings/s ({args.series} series, {len(batch):,} readings, best of 3)")
    start = time.perf_counter()
    closed = aggregator.advance(t0 + 2 * 86400 * NS)
    print(f"advance: {len(closed):,} windows closed in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
