"""A year unattended, compressed: the outbox and the process per simulated month.

    .venv/bin/python bench/year.py [--days 400] [--every 15] [--budget 64MiB]

Runs ``tests/year.py``: 400 simulated days of a station (two monitoring points, twelve
quantities, readings every EVERY minutes, minute/hour/day aggregation, an HJ 212 platform
acknowledging every period, a disk budget) through the real pipeline on a fake clock,
and prints at the end of each simulated month the outbox's bytes in use and on disk, its
side tables' rows, the process's RSS, readings committed and delivered, and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemetry.config_base import parse_size
from tests.year import Month, run_year


def show(month: Month) -> None:
    rows = month.side_rows
    print(
        f"month {month.month:>2} (day {month.day:>3}): outbox {month.outbox_bytes / 1e6:7.2f} MB in use,"
        f" {month.file_bytes / 1e6:7.2f} MB on disk; windows {rows['windows']:>6}, acks {rows['hj212_acked']:>5};"
        f" RSS {month.rss_bytes / 2**20:6.1f} MiB; readings {month.readings:>9,}, delivered {month.delivered:>9,},"
        f" dropped {month.dropped}; periods acked {month.periods_acked:,}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--every", type=int, default=15, help="minutes between readings of a series")
    parser.add_argument("--budget", default="64MiB")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the weekly excursion's alerts are not the point here
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        months = asyncio.run(run_year(Path(tmp), args.days, args.every, parse_size(args.budget), show))
    last = months[-1]
    print(
        f"{args.days} simulated days in {time.perf_counter() - started:.0f} s: {last.readings:,} readings,"
        f" {last.delivered:,} delivered, {last.dropped} dropped; outbox {last.outbox_bytes / 1e6:.2f} MB,"
        f" RSS {last.rss_bytes / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
