"""Backlog drain: time to empty a large outbox into InfluxDB 1.x and VictoriaMetrics.

    .venv/bin/python bench/backlog.py [--readings 1000000]

Fills an outbox with READINGS readings (100 series, durable commits of 5,000),
as an outage would, then starts the daemon with one sink and times the drain.
The backlog lives on disk: RSS is printed with the backlog held and after the
drain. Starts its own influxd and victoria-metrics on free ports (as the test
fixtures do). Prints ``name: value unit``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemetry import app
from telemetry.model import Reading
from telemetry.outbox import Outbox
from telemetry.pipeline import Pipeline
from tests import services


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fill(path: str, consumer: str, readings: int) -> float:
    box = Outbox(path)
    box.register(consumer)
    t0 = time.time_ns() - readings * 1_000_000
    start = time.perf_counter()
    for base in range(0, readings, 5000):
        box.append(
            [
                Reading(
                    t0 + (base + i) * 1_000_000,
                    "bench",
                    f"dev{(base + i) % 100}",
                    "cod",
                    float(i % 1000),
                    "mg/L",
                )
                for i in range(min(5000, readings - base))
            ]
        )
    elapsed = time.perf_counter() - start
    box.close()
    return readings / elapsed


async def drain(config: Path, consumer: str) -> tuple[float, float, float]:
    dep = app.load(str(config), {})
    before = rss_mib()
    stop = asyncio.Event()
    ready: asyncio.Future[Pipeline] = asyncio.get_running_loop().create_future()
    start = time.perf_counter()
    task = asyncio.create_task(app.serve(dep, stop, registry=CollectorRegistry(), pipeline_ready=ready))
    pipeline = await ready
    held = rss_mib()
    while pipeline.outbox.backlog().get(consumer, 1) > 0:  # noqa: ASYNC110 - sampling progress, 50 ms resolution
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return elapsed, held, before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    print(f"backlog_readings: {args.readings}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "i").mkdir()
        (tmp / "v").mkdir()
        with services.influxd(tmp / "i") as influx, services.victoria(tmp / "v") as vm:
            sinks = {
                "influxdb1": (f'{{name: sink, api: v1, url: "{influx.url}", database: bench, create_database: true}}'),
                "victoriametrics": f'{{name: sink, api: v2, url: "{vm.url}", bucket: bench}}',
            }
            for name, sink in sinks.items():
                outbox = tmp / f"{name}.sqlite"
                rate = fill(str(outbox), "influx:sink", args.readings)
                size = sum(p.stat().st_size for p in tmp.glob(f"{name}.sqlite*"))
                config = tmp / f"{name}.yaml"
                config.write_text(
                    f"sites: [{{id: bench}}]\ninfluxdb: [{sink}]\nmetrics: {{enabled: false}}\n"
                    f'outbox: {{path: "{outbox}"}}\nlog_level: WARNING\n'
                )
                elapsed, held, before = asyncio.run(drain(config, "influx:sink"))
                print(f"outbox_fill_rate_{name}: {rate:.0f} readings/s")
                print(f"outbox_file_size_{name}: {size / 1e6:.0f} MB")
                print(f"drain_time_{name}: {elapsed:.1f} s")
                print(f"drain_rate_{name}: {args.readings / elapsed:.0f} readings/s")
                print(f"rss_with_backlog_held_{name}: {held:.0f} MiB")
                print(f"rss_increase_with_backlog_held_{name}: {held - before:.1f} MiB (daemon started on it)")
    print(f"rss_after: {rss_mib():.0f} MiB")
    print(f"max_rss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
