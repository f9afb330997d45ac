"""Rule evaluation throughput and alert latency.

    .venv/bin/python bench/rules.py [--series 1000] [--seconds 600]

1. Throughput: the demo's rules (config/demo.yaml, GB 16889 table 2 expanded)
   and the aggregator over SERIES series (200 analyzers x cod, nh3n, tp, ph,
   flow at Diaoyushan), one reading per series per simulated second, for
   SECONDS simulated seconds; prints readings/s and rule evaluations/s.
2. Latency: through the running pipeline (durable commit included), a breaching
   reading is emitted and the time until its alert event is out of the rules
   engine is measured, 200 times; prints p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts.rules import RulesEngine
from telemetry import app
from telemetry.model import Reading
from telemetry.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
QUANTITIES = {
    "cod": (60.0, "mg/L"),
    "nh3n": (9.0, "mg/L"),
    "tp": (0.9, "mg/L"),
    "ph": (7.3, "pH"),
    "flow": (2.0, "m3/h"),
}


def throughput(series: int, seconds: int) -> tuple[float, float, int]:
    devices = max(1, series // len(QUANTITIES))
    # The demo's outfall measured by DEVICES analyzers, so its rules judge every reading.
    text = (ROOT / "config" / "demo.yaml").read_text(encoding="utf-8")
    names = ", ".join(f"an{d}" for d in range(devices))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "demo.yaml"
        config.write_text(text.replace("devices: [effluent-analyzers]", f"devices: [{names}]"), encoding="utf-8")
        dep = app.load(str(config), {})
    zones = {s.id: s.timezone for s in dep.config.sites}
    engine = RulesEngine(dep.rules, zones, dep.points)
    aggregator = app.aggregator(dep)
    t0 = time.time_ns() - seconds * 10**9
    start = time.perf_counter()
    count = 0
    for second in range(seconds):
        ts = t0 + second * 10**9
        batch = [
            Reading(ts + d, "diaoyushan", f"an{d}", q, base + (second % 7) * 0.1, unit)
            for d in range(devices)
            for q, (base, unit) in QUANTITIES.items()
        ]
        aggregator.add(batch)
        engine.feed(batch)
        engine.on_windows(aggregator.advance(ts))
        engine.tick(ts)
        count += len(batch)
    elapsed = time.perf_counter() - start
    return count / elapsed, engine.evaluations / elapsed, devices * len(QUANTITIES)


async def latency(samples: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "site.yaml"
        config.write_text(
            "sites: [{id: s}]\nrules: [{kind: limit, name: cod, site: s, quantity: cod, above: 100}]\n"
            f'metrics: {{enabled: false}}\noutbox: {{path: "{tmp}/o.sqlite"}}\n'
            "aggregation: {enabled: false}\nlog_level: ERROR\n"
        )
        dep = app.load(str(config), {})
        got = asyncio.Event()

        def observe(_readings: object, events: list[object]) -> None:
            if events:
                got.set()

        stop = asyncio.Event()
        ready: asyncio.Future[Pipeline] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            app.serve(dep, stop, observer=observe, registry=CollectorRegistry(), pipeline_ready=ready)
        )
        pipeline = await ready
        out = []
        for i in range(samples):
            got.clear()
            value = 150.0 if i % 2 == 0 else 50.0  # alternate: every reading is a transition
            start = time.perf_counter()
            await pipeline.emit([Reading(time.time_ns(), "s", "an", "cod", value, "mg/L")])
            await got.wait()
            out.append((time.perf_counter() - start) * 1000)
        stop.set()
        await task
    return sorted(out)


def main() -> None:
    logging.getLogger("telemetry.pipeline").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=600)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    readings, evaluations, series = throughput(args.series, args.seconds)
    print(f"series: {series}")
    print(f"simulated_seconds: {args.seconds}")
    print(f"rules_throughput: {readings:.0f} readings/s (demo rules + 1m/1h/1d aggregation)")
    print(f"rule_evaluations: {evaluations:.0f} evaluations/s")
    lat = asyncio.run(latency(200))
    print(f"alert_latency_p50: {statistics.median(lat):.2f} ms (emit -> alert event, durable commit included)")
    print(f"alert_latency_p99: {lat[int(len(lat) * 0.99) - 1]:.2f} ms")


if __name__ == "__main__":
    main()
