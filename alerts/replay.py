"""Replay recorded readings through the aggregator and the rules, in event time.

What ``telemetry rules test`` runs: operators tune rules on last month's data
instead of waiting for an incident. The same code paths as the daemon; the
clock is the readings' own timestamps.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path

from alerts.rules import RulesEngine
from telemetry.aggregate import Aggregator
from telemetry.model import Aggregate, AlertEvent, Flag, Reading

TICK_NS = 60 * 1_000_000_000  # time-based rules look once a minute of replayed time


def replay(
    engine: RulesEngine,
    aggregator: Aggregator | None,
    readings: Iterable[Reading],
    until_ns: int | None = None,
    windows: list[Aggregate] | None = None,
) -> list[AlertEvent]:
    """The alert events the readings give, in event time; the closed windows go to ``windows``."""
    events: list[AlertEvent] = []
    closed = windows if windows is not None else []
    last_tick = None
    last_ts = 0
    for reading in sorted(readings, key=lambda r: r.ts):
        if last_tick is None or reading.ts - last_tick >= TICK_NS:
            t = reading.ts if last_tick is None else last_tick + TICK_NS
            while t <= reading.ts:  # the minutes a gap spans are ticked, so silence is noticed
                events += _advance(engine, aggregator, t, closed)
                last_tick = t
                t += TICK_NS
        if aggregator is not None:
            aggregator.add([reading])
        events += engine.feed([reading])
        last_ts = reading.ts
    end = until_ns if until_ns is not None else last_ts
    t = (last_tick or end) + TICK_NS
    while t < end:
        events += _advance(engine, aggregator, t, closed)
        t += TICK_NS
    events += _advance(engine, aggregator, end, closed)
    return events


def _advance(engine: RulesEngine, aggregator: Aggregator | None, now: int, out: list[Aggregate]) -> list[AlertEvent]:
    closed = aggregator.advance(now) if aggregator is not None else []
    out += closed
    return engine.on_windows(closed) + engine.tick(now)


def read_csv(path: Path, parse_ts: Callable[[str], int]) -> list[Reading]:
    """Rows of ``ts,site,device,quantity,value[,unit][,flag]`` (a header row is expected)."""
    out = []
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                out.append(
                    Reading(
                        ts=parse_ts(row["ts"]),
                        site=row["site"],
                        device=row["device"],
                        quantity=row["quantity"],
                        value=float(row["value"]),
                        unit=row.get("unit") or "",
                        flag=Flag(row.get("flag") or "N"),
                    ).check()
                )
            except (KeyError, ValueError) as err:
                raise ValueError(f"{path}:{line}: {err}") from None
    return out
