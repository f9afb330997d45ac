"""A station's year on a fake clock, through the real pipeline.

Two monitoring points (an inlet and an outlet) with six quantities each, readings every
``every_min`` simulated minutes, minute, hour and day aggregation, a limit rule that fires
once a week, an HJ 212 platform (the project's receiver, over real TCP) that acknowledges
every period, a disk budget and a sink that counts what it is given. The daemon's clock
is the simulation's: windows close, periods fall due and retention runs in simulated
time, while the outbox, the committer, the sink's delivery and the uplink run as in the
daemon. ``tests/test_year.py`` proves the outbox and the process stay bounded and that
no reading is dropped; ``bench/year.py`` prints the outbox per simulated month.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry

from alerts.desk import AlertDesk
from telemetry import app
from telemetry.config import Deployment
from telemetry.hj212.uplink import Uplink
from telemetry.metrics import Metrics
from telemetry.model import Reading
from telemetry.pipeline import Pipeline
from telemetry.sim.platform import Receiver

NS = 1_000_000_000
HOUR = 3600 * NS
DAY = 24 * HOUR
BJ = timezone(timedelta(hours=8))
SERIES = [  # (device, quantity, unit, base value)
    *[("eff", q, u, v) for q, u, v in (("cod", "mg/L", 45.0), ("nh3n", "mg/L", 6.0), ("tp", "mg/L", 0.8))],
    *[("eff", q, u, v) for q, u, v in (("tn", "mg/L", 18.0), ("ph", "pH", 7.2))],
    ("eff-flow", "flow", "m3/h", 2.1),
    *[("raw", q, u, v) for q, u, v in (("cod", "mg/L", 9800.0), ("nh3n", "mg/L", 1500.0), ("tp", "mg/L", 30.0))],
    *[("raw", q, u, v) for q, u, v in (("tn", "mg/L", 1900.0), ("ph", "pH", 7.8))],
    ("raw-flow", "flow", "m3/h", 2.3),
]

CONFIG = """
sites: [{{id: s}}]
points:
  - {{id: outlet, site: s, devices: [eff, eff-flow], flow: {{device: eff-flow}}}}
  - {{id: inlet, site: s, devices: [raw, raw-flow], flow: {{device: raw-flow}}}}
rules:
  - {{kind: limit, name: cod_high, point: outlet, quantity: cod, above: 100, for: 30m}}
  - {{kind: standard, name: t2, point: outlet, tables: [gb16889-2008-table2], windows: [1h, 1d]}}
aggregation: {{grace: 60s, hour_min_valid_minutes: {per_hour}}}
hj212:
  - {{name: city, host: 127.0.0.1, port: {port}, point: outlet, mn: "41050022000017", pw: "123456",
     send: [min, hour, day], min_interval_minutes: 60, backfill: 7d, grace: 0s, overtime: 5s}}
metrics: {{enabled: false}}
outbox: {{path: "{path}", max_bytes: {budget}, synchronous: normal}}
log_level: WARNING
"""


class Clock:
    """The daemon's wall clock, moved by the simulation."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class CountingSink:
    """A sink that takes everything and counts the readings (``telemetry`` lines) among it."""

    name = "count"
    batch_size = 5000
    flush_interval = 0.01
    timeout = 5.0

    def __init__(self) -> None:
        self.readings = 0

    def write(self, lines: list[str]) -> None:
        self.readings += sum(line.startswith("telemetry,") for line in lines)

    def healthcheck(self) -> None:
        return

    def close(self) -> None:
        return


@dataclass
class Month:
    """The state of things at the end of a simulated month."""

    month: int
    day: int
    outbox_bytes: int
    file_bytes: int
    side_rows: dict[str, int]
    rss_bytes: int
    readings: int
    delivered: int
    dropped: int
    periods_acked: int
    alerts: int
    extra: dict[str, int] = field(default_factory=dict)


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * 4096


def value(base: float, ts: int, weekly_excursion: bool) -> float:
    hour = (ts // HOUR) % 24
    wave = 1 + 0.15 * math.sin(2 * math.pi * hour / 24)
    excursion = 3.0 if weekly_excursion and (ts // DAY) % 7 == 3 and 10 <= hour < 12 else 1.0
    return base * wave * excursion


async def run_year(
    tmp: Path,
    days: int = 400,
    every_min: int = 15,
    budget: int = 64 << 20,
    on_month: Callable[[Month], None] | None = None,
) -> list[Month]:
    """Simulate ``days`` days ending now; returns (and passes to ``on_month``) each month's state."""
    receiver = Receiver()
    await receiver.start()
    path = tmp / "outbox.sqlite"
    config = tmp / "site.yaml"
    config.write_text(CONFIG.format(port=receiver.port, path=path, budget=budget, per_hour=max(1, 60 // every_min - 1)))
    dep = app.load(str(config), {})
    start = int(datetime.now(BJ).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()) * NS - days * DAY
    clock = Clock(start)
    sink = CountingSink()
    pipeline = _pipeline(dep, sink, clock)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await pipeline.started.wait()
    uplink = pipeline.uplinks[0]
    assert isinstance(uplink, Uplink)
    months: list[Month] = []
    emitted = acked = 0
    step = every_min * 60 * NS
    try:
        for hour in range(days * 24):
            t0 = start + hour * HOUR
            readings = [
                Reading(t, "s", device, quantity, value(base, t, device == "eff" and quantity == "cod"), unit)
                for t in range(t0 + 5 * NS, t0 + HOUR, step)
                for device, quantity, unit, base in SERIES
            ]
            clock.now = t0 + HOUR - NS
            await pipeline.emit(readings)
            emitted += len(readings)
            clock.now = t0 + HOUR + 61 * NS  # the hour and its minutes are due (grace 60 s)
            pipeline.tick(clock.now)
            await pipeline.emit([])  # the committer has taken what the tick closed
            await pipeline.alerts.tick(clock.now)  # alerts: notified (no route here), resolved ones forgotten
            if (hour + 1) % 24 == 0:
                await uplink.settled()  # the platform has every period of the day
                acked += sum(p.cn in ("2051", "2061", "2031") for p in receiver.packets)
                receiver.packets.clear()  # the platform's memory is not the daemon's
                await pipeline.prune()
            if (hour + 1) % (30 * 24) == 0 or hour + 1 == days * 24:
                month = await _month(pipeline, sink, len(months) + 1, (hour + 1) // 24, emitted, acked)
                months.append(month)
                if on_month is not None:
                    on_month(months[-1])
        await pipeline.drained()  # the sink has everything committed
        months[-1].delivered = sink.readings
    finally:
        stop.set()
        await task
        await receiver.stop()
    return months


def _pipeline(dep: Deployment, sink: CountingSink, clock: Clock) -> Pipeline:
    """``app.build`` with the counting sink and the simulation's clock; the pipeline's own ticker
    is left idle (the simulation ticks it)."""
    cfg = dep.config
    metrics = Metrics(CollectorRegistry())
    return Pipeline(
        outbox=app.outbox(cfg),
        drivers=[],
        sinks=[sink],
        alerts=app.alert_desk(dep, metrics),
        metrics=metrics,
        aggregator=app.aggregator(dep),
        uplinks=[app.uplink(dep, p, metrics) for p in cfg.hj212],
        tick_s=24 * 3600.0,
        clock=clock,
    )


async def _month(pipeline: Pipeline, sink: CountingSink, month: int, day: int, emitted: int, acked: int) -> Month:
    outbox = pipeline.outbox
    files = sum(p.stat().st_size for p in Path(outbox.path).parent.glob(Path(outbox.path).name + "*"))
    return Month(
        month=month,
        day=day,
        outbox_bytes=await pipeline.db(outbox.used_bytes),
        file_bytes=files,
        side_rows=await pipeline.db(outbox.side_rows),
        rss_bytes=rss_bytes(),
        readings=emitted,
        delivered=sink.readings,
        dropped=outbox.dropped,
        periods_acked=acked,
        alerts=len(desk.manager.alerts) if isinstance(desk := pipeline.alerts, AlertDesk) else -1,
    )
