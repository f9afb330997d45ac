"""What finding the HJ 212 uplink's due periods costs on the outbox's thread.

    .venv/bin/python bench/uplink_due.py [--days 7] [--quantities 12] [--calls 300]

Stores DAYS days of closed minute, hour and day windows for QUANTITIES quantities of one
monitoring point (12 x 7 days: about 123,000 windows), marks every period older than an
hour acknowledged (a platform that keeps up), and times the uplink's ``_due`` as it runs
every second: the first call (a full look at the back-fill horizon), then CALLS calls
one simulated second apart (each closing the next minute's windows), then a forced full
rescan (what runs every few minutes, for windows stored late). All on one thread, so the
time is the outbox thread's time per call.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telemetry import app
from telemetry.metrics import Metrics
from telemetry.model import Aggregate
from telemetry.outbox import Outbox
from tests.daemon import direct_db

NS = 1_000_000_000
QUANTITIES = ["cod", "nh3n", "tp", "tn", "ph", "flow", "bod5", "ss", "level", "volume", "throughput", "tss"]


def windows(site: str, point: str, quantities: list[str], window: str, starts: range) -> list[Aggregate]:
    return [
        Aggregate(start, window, site, "an", q, "mg/L", 1.0, 1.0, 1.0, 1, 1, True, point=point)
        for start in starts
        for q in quantities
    ]


async def main(days: int, quantities: int, calls: int) -> None:
    names = (QUANTITIES * 2)[:quantities]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.yaml"
        path.write_text(
            f"""
sites: [{{id: s}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
hj212:
  - {{name: city, host: 127.0.0.1, port: 1, site: s, mn: "0101", pw: "123456", send: [min, hour, day], backfill: 7d}}
"""
        )
        dep = app.load(str(path), {})
        uplink = app.uplink(dep, dep.config.hj212[0], Metrics(CollectorRegistry()))
        outbox = Outbox(f"{tmp}/outbox.sqlite")
        now = time.time_ns() // (60 * NS) * 60 * NS
        first = now - days * 86400 * NS
        point = uplink.point.id
        stored = 0
        for day in range(days):
            t0 = first + day * 86400 * NS
            batch = windows("s", point, names, "1m", range(t0, t0 + 86400 * NS, 60 * NS))
            batch += windows("s", point, names, "1h", range(t0, t0 + 86400 * NS, 3600 * NS))
            batch += windows("s", point, names, "1d", range(t0, t0 + 1, 86400 * NS))
            outbox.append(batch)
            stored += len(batch)
        acked_before = now - 3600 * NS
        for kind, cn, step in (("min", "2051", 600), ("hour", "2061", 3600), ("day", "2031", 86400)):
            for start in range(first // (step * NS) * step * NS, acked_before - step * NS, step * NS):
                outbox.hj212_mark_acked("city", cn, uplink.encoder.period(kind, start))
        uplink.attach(direct_db, outbox)
        uplink._acked = outbox.hj212_acked("city")  # what run() loads at start
        closed = {"t": now}
        uplink.closed_through = lambda window: closed["t"]

        started = time.perf_counter()
        await uplink._due(now)  # the method under measurement
        first_ms = (time.perf_counter() - started) * 1000
        times = []
        for i in range(1, calls + 1):
            t = now + i * NS
            if i % 60 == 0:  # a minute later: its windows close and are stored
                outbox.append(windows("s", point, names, "1m", range(t - 60 * NS, t, 60 * NS)))
                closed["t"] = t
            started = time.perf_counter()
            due = await uplink._due(t)
            times.append((time.perf_counter() - started) * 1000)
        uplink._scanned_at = None  # force the full look that runs every few minutes
        started = time.perf_counter()
        await uplink._due(now + (calls + 1) * NS)
        rescan_ms = (time.perf_counter() - started) * 1000
        print(f"stored windows: {stored} ({days} days x {quantities} quantities, 1m/1h/1d)")
        print(f"first _due (full look at {days} days): {first_ms:.1f} ms")
        print(
            f"_due every second, {calls} calls: median {statistics.median(times):.2f} ms,"
            f" mean {statistics.mean(times):.2f} ms, max {max(times):.2f} ms"
        )
        print(f"full rescan: {rescan_ms:.1f} ms; periods due at the end: {len(due)}")
        outbox.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--quantities", type=int, default=12)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.days, args.quantities, args.calls))
