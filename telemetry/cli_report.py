"""``telemetry report daily``: a site's daily compliance report, from what the daemon stored or
from a replay of recorded readings (the format ``rules test`` takes)."""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from alerts.daily import build_stored, event_id
from alerts.replay import read_csv, replay
from alerts.rules import RulesEngine
from telemetry import app, report, report_render
from telemetry.calendar import NS, calendar
from telemetry.config import Deployment
from telemetry.errors import OutboxError
from telemetry.marks import STATE_KEY, Marks, exempt_hour
from telemetry.model import AlertState
from telemetry.outbox import read_state
from telemetry.outbox.readonly import ReadOnlyOutbox
from telemetry.times import parse_timestamp


def stored(dep: Deployment, setup_: report.SiteSetup, day: date) -> report.DailyReport:
    """The report from the outbox the daemon writes (read-only: safe while it runs)."""
    path = dep.config.outbox.path
    start, _ = report.day_bounds(setup_.zone, day)
    kept = app.retention(dep.config).windows
    if start < time.time_ns() - int(kept * NS):
        raise ValueError(
            f"--date {day}: the outbox keeps windows {kept / 86400:g} days (outbox.retention.windows);"
            " replay recorded readings with --input for an older day"
        )
    marks = Marks(dep.config.furnaces, {s.id: s.timezone for s in dep.config.sites})
    marks.load(((read_state(path, "rules") or {}).get(STATE_KEY) or {}).get("marks", {}))
    gathered = build_stored(setup_, day, _direct, ReadOnlyOutbox(path), time.time_ns(), exempt_hour(marks))
    return asyncio.run(gathered)  # the daemon's own gathering, on read-only connections


async def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def replayed(dep: Deployment, setup_: report.SiteSetup, day: date, csv_path: str) -> report.DailyReport:
    """The report from recorded readings replayed through the aggregator and the rules."""
    readings = read_csv(pathlib.Path(csv_path), parse_timestamp)
    _, end = report.day_bounds(setup_.zone, day)
    zones = {s.id: s.timezone for s in dep.config.sites}
    engine = RulesEngine(dep.rules, zones, dep.points, dep.config.furnaces, dep.config.aggregation.day_min_valid_hours)
    windows: list[Any] = []
    until = end + int((dep.config.aggregation.grace + 60) * NS)  # the day's own window has closed
    events = replay(engine, app.aggregator(dep), [r for r in readings if r.ts < end], until, windows, dep.deriver())
    log = [
        (e.ts, e.state.value, e.to_dict())
        for e in events
        if e.site == setup_.site and e.state is not AlertState.INSUFFICIENT
    ]
    return report.build(setup_, day, windows, log, event_id, None, (), engine.exempt_hour)


def command(dep: Deployment, args: argparse.Namespace) -> int:
    sites = [args.site] if args.site else [s.id for s in dep.config.sites]
    unknown = [s for s in sites if s not in {c.id for c in dep.config.sites}]
    if unknown:
        print(f"expected a site of {dep.file}, found {unknown[0]!r}", file=sys.stderr)
        return 2
    out: list[str] = []
    try:
        for site in sites:
            zone = dep.zone(site)
            day = date.fromisoformat(args.date) if args.date else _yesterday(zone)
            cfg = app.report_setup(dep, site)
            built = replayed(dep, cfg, day, args.input) if args.input else stored(dep, cfg, day)
            out.append(report_render.render(built, args.format, args.lang))
    except ValueError as err:  # a bad --date, a bad line of --input (FILE:LINE: ...)
        print(err, file=sys.stderr)
        return 2
    except (OutboxError, OSError) as err:
        print(err, file=sys.stderr)
        return 1
    text = "".join(out)
    if args.out:
        pathlib.Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _yesterday(zone: str) -> date:
    return (datetime.now(calendar(zone).zone) - timedelta(days=1)).date()
