"""``telemetry mark``: furnaces' operating marks, queued for the running daemon or replayed."""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import time

from telemetry.calendar import NS, calendar
from telemetry.config import Deployment
from telemetry.errors import OutboxError
from telemetry.marks import MARK_NAMES, STATE_KEY, Marks, check_times, mark_kind
from telemetry.outbox import add_command, read_state
from telemetry.times import TimeError, parse_timestamp


def command(dep: Deployment, args: argparse.Namespace) -> int:
    furnaces = {f.id for f in dep.config.furnaces}
    path = dep.config.outbox.path
    try:
        if args.action == "list":
            return _list(dep)
        if args.furnace not in furnaces:
            print(
                f"expected a furnace of {dep.file} ({', '.join(sorted(furnaces)) or 'none'}), found {args.furnace!r}",
                file=sys.stderr,
            )
            return 2
        now = time.time_ns()
        if args.action == "end":
            body: dict[str, object] = {"furnace": args.furnace}
            if args.at:
                body["at_ns"] = at = parse_timestamp(args.at)
                check_times(now, end=at)
            add_command(path, "mark_end", body)
            print(f"end of {args.furnace}'s open mark queued; the daemon applies it within a second")
            return 0
        kind = mark_kind(args.kind)
        body = {"furnace": args.furnace, "kind": kind, "by": args.by, "note": args.note}
        start = parse_timestamp(args.start) if args.start else None
        end = parse_timestamp(args.end) if args.end else None
        check_times(now, start, end)
        body |= {k: v for k, v in (("start_ns", start), ("end_ns", end)) if v is not None}
        add_command(path, "mark", body)
        print(f"mark {MARK_NAMES[kind]} ({kind}) of {args.furnace} queued; the daemon applies it within a second")
        return 0
    except (TimeError, ValueError, OverflowError) as err:
        print(err, file=sys.stderr)
        return 2
    except OutboxError as err:
        print(err, file=sys.stderr)
        return 1


def _list(dep: Deployment) -> int:
    marks = Marks(dep.config.furnaces, {s.id: s.timezone for s in dep.config.sites})
    saved = (read_state(dep.config.outbox.path, "rules") or {}).get(STATE_KEY) or {}
    marks.load(saved.get("marks", {}))
    now = time.time_ns()
    for furnace in dep.config.furnaces:
        cal = calendar(dep.zone(furnace.site))
        used = marks.used(furnace.id, now) / 3600 / NS
        print(f"{furnace.id}: {used:.1f} h of {furnace.budget_hours:g} h exempt hours used this year")
        for m in marks.of(furnace.id):
            end = cal.local(m.end).isoformat(timespec="minutes") if m.end is not None else "open"
            hours = ((m.end if m.end is not None else now) - m.start) / 3600 / NS
            note = f": {m.note}" if m.note else ""
            print(
                f"  {m.id}  {cal.local(m.start).isoformat(timespec='minutes')} -> {end}  {hours:6.1f} h"
                f"  {m.label():<24} by {m.by}{note}"
            )
    return 0


def replay_marks(file: str, marks: Marks) -> str | None:
    """Add the marks of ``file`` for a replay; what is wrong with it, or None."""
    try:
        read_marks(pathlib.Path(file), marks)
    except OSError as err:
        return f"cannot read {file}: {err.strerror}"
    except ValueError as err:
        return str(err)
    return None


def read_marks(path: pathlib.Path, marks: Marks) -> None:
    """Marks for a replay, from ``furnace,mark,start[,end]`` lines (a header line is optional).
    ValueError as ``FILE:LINE: what was expected``."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        for row in rows:
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].lower() == "furnace":
                continue
            where = f"{path}:{rows.line_num}"
            if len(cells) not in (3, 4):
                raise ValueError(f"{where}: expected furnace,mark,start[,end], found {len(cells)} fields")
            try:
                start = parse_timestamp(cells[2])
                end = parse_timestamp(cells[3]) if len(cells) == 4 and cells[3] else None
                marks.add(cells[0], cells[1], start, end, by="replay")
            except (TimeError, ValueError) as err:
                raise ValueError(f"{where}: {err}") from None
