"""Replay recorded readings through the aggregator and the rules, in event time.

What ``telemetry rules test`` runs: operators tune rules on last month's data
instead of waiting for an incident. The same code paths as the daemon; the
clock is the readings' own timestamps.
"""

from __future__ import annotations

import csv
import difflib
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from alerts.rules import RulesEngine
from telemetry.aggregate import Aggregator
from telemetry.model import Aggregate, AlertEvent, Flag, Reading, identifier_problem

TICK_NS = 60 * 1_000_000_000  # time-based rules look once a minute of replayed time


def replay(
    engine: RulesEngine,
    aggregator: Aggregator | None,
    readings: Iterable[Reading],
    until_ns: int | None = None,
    windows: list[Aggregate] | None = None,
    derive: Callable[[Sequence[Reading]], list[Reading]] | None = None,
) -> list[AlertEvent]:
    """The alert events the readings give, in event time; the closed windows go to ``windows``.
    Readings of one timestamp go in together, with what ``derive`` computes from them (as
    one poll's readings are committed together by the daemon)."""
    events: list[AlertEvent] = []
    closed = windows if windows is not None else []
    last_tick = None
    last_ts = 0
    for ts, group in itertools.groupby(sorted(readings, key=lambda r: r.ts), key=lambda r: r.ts):
        batch = list(group)
        if derive is not None:
            batch += derive(batch)
        if last_tick is None or ts - last_tick >= TICK_NS:
            t = ts if last_tick is None else last_tick + TICK_NS
            while t <= ts:  # the minutes a gap spans are ticked, so silence is noticed
                events += _advance(engine, aggregator, t, closed)
                last_tick = t
                t += TICK_NS
        if aggregator is not None:
            aggregator.add(batch)
        events += engine.feed(batch)
        last_ts = ts
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


COLUMNS = ("ts", "site", "device", "quantity", "value", "unit", "flag")
_REQUIRED = COLUMNS[:5]
_SHAPE = "ts,site,device,quantity,value[,unit][,flag]"


def read_csv(path: Path, parse_ts: Callable[[str], int]) -> list[Reading]:
    """Rows of ``ts,site,device,quantity,value[,unit][,flag]``, with or without a header line.

    A first line that names columns (three or more of the names above) is the header, and its
    order is used; any other first line is a reading. Blank lines are skipped. A bad line
    raises ValueError as ``FILE:LINE: what was expected, what was found``."""
    out: list[Reading] = []
    columns: list[str] = list(COLUMNS)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        first = True
        for row in rows:
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            where = f"{path}:{rows.line_num}"
            if first and sum(c.lower() in COLUMNS for c in cells) >= 3:
                columns = _header(cells, where)
            else:
                out.append(_reading(cells, columns, parse_ts, where))
            first = False
    return out


def _header(cells: list[str], where: str) -> list[str]:
    names = [c.lower() for c in cells]
    for name in names:
        if name not in COLUMNS:
            close = difflib.get_close_matches(name, COLUMNS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{where}: expected a header of {_SHAPE} (or none), found column {name!r}{hint}")
    missing = [c for c in _REQUIRED if c not in names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if missing or twice:
        found = f"no {', '.join(missing)}" if missing else f"{', '.join(twice)} twice"
        raise ValueError(f"{where}: expected a header of {_SHAPE} (or none), found {found}")
    return names


def _reading(cells: list[str], columns: list[str], parse_ts: Callable[[str], int], where: str) -> Reading:
    required = sum(c in _REQUIRED for c in columns)
    if not required <= len(cells) <= len(columns):
        count = f"{required}" if required == len(columns) else f"{required} to {len(columns)}"
        raise ValueError(f"{where}: expected {count} fields ({','.join(columns)}), found {len(cells)}")
    row = dict(zip(columns, cells, strict=False))
    try:
        ts = parse_ts(row["ts"])
    except ValueError as err:
        raise ValueError(
            f"{where}: ts: expected epoch seconds (or ms, us, ns) or ISO 8601 with a zone, found {row['ts']!r}: {err}"
        ) from None
    try:
        value = float(row["value"])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{where}: value: expected a number, found {row['value']!r}")
    for name in ("site", "device", "quantity", "unit"):
        text = row.get(name) or ""
        problem = identifier_problem(text) if text or name != "unit" else None
        if problem:
            raise ValueError(f"{where}: {name}: expected a name usable as a tag, found {text!r} ({problem})")
    flag = row.get("flag") or "N"
    if flag not in Flag.__members__:
        raise ValueError(f"{where}: flag: expected one of {', '.join(Flag.__members__)}, found {flag!r}")
    return Reading(ts, row["site"], row["device"], row["quantity"], value, row.get("unit") or "", Flag(flag))
