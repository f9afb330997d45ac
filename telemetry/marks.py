"""Operating marks (工况标记) of incinerator furnaces, and the yearly budget of exempt hours.

A plant marks a furnace as drying out (烘炉), starting up (启炉), shutting down (停炉), out
of service (停运), in fault (故障) or in an accident (事故): from the CLI (``telemetry
mark``), the HTTP API (``POST /furnaces/ID/marks``, with the ack token) or a Modbus status
register (``furnaces[].status``). One mark is open per furnace at a time: a new open one
ends the open one where it starts.

What marks do (DOMAIN-incinerator.md A1-A3; the list of marks and how exempt hours enter
the daily mean are [U], so each is a setting of the furnace, with these defaults):
- the furnace temperature rule does not count a window that ``not_normal`` marks cover
  for at least ``exempt_fraction`` of it (drying, start-up, shutdown, out of service);
- a mark entered with no end while a later one exists lasted until that one began; a mark
  with an end never ends the open one; a status register changes only the marks it set;
- ``budget_marks`` (start-up, shutdown, fault, accident) use the furnace's yearly budget
  (``budget_hours``, 60 h per local calendar year, GB 18485 [V]), in the order they
  happened; the hours within the budget are exempt from the stack's daily judgement (an
  hour counts as exempt when at least ``exempt_fraction`` of it is), the hours beyond it
  are judged as normal operation;
- an episode longer than ``max_episode_hours`` of its kind (4 h for a fault, an accident
  and a start-up) is an alert.

Marks are declarations by the plant, which the regulator audits against process data
(``alerts.kinds.furnace``): they never change a stored reading or its flag.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from telemetry.calendar import NS, calendar
from telemetry.furnaces import FurnaceConfig

MARK_NAMES = {
    "drying": "烘炉",
    "startup": "启炉",
    "shutdown": "停炉",
    "out_of_service": "停运",
    "fault": "故障",
    "accident": "事故",
}
_BY_NAME = {**{k: k for k in MARK_NAMES}, **{v: k for k, v in MARK_NAMES.items()}}
STATE_KEY = "@furnaces"  # the marks' entry in the rules' saved state (no rule name starts with @)
MAX_MARKS = 5000  # per furnace: marks older than two years go first, then the oldest


EARLIEST_S = 366 * 86400  # a mark may be entered up to a year afterwards
AHEAD_S = 300  # and never for the future (a clock a few minutes ahead is tolerated)


def check_times(now: int, start: int | None = None, end: int | None = None) -> None:
    """ValueError unless the times a plant gives a mark are past (within a year) and in order:
    the CLI and HTTP refuse them before queuing, the daemon again before applying."""
    for name, at in (("start", start), ("end", end)):
        if at is None:
            continue
        if at > now + AHEAD_S * NS:
            raise ValueError(f"expected a mark's {name} that has passed, not one in the future")
        if at < now - EARLIEST_S * NS:
            raise ValueError(f"expected a mark's {name} within the last year")
    if start is not None and end is not None and end <= start:
        raise ValueError("expected the mark's end after its start")


def mark_kind(name: str) -> str:
    """The mark a name means (``fault`` or 故障); ValueError naming the choices."""
    kind = _BY_NAME.get(name.strip())
    if kind is None:
        choices = ", ".join(f"{k} ({v})" for k, v in MARK_NAMES.items())
        raise ValueError(f"expected a mark: {choices}; found {name!r}")
    return kind


@dataclass
class Mark:
    id: str
    furnace: str
    kind: str
    start: int  # UTC ns
    end: int | None  # None: still open
    by: str
    note: str = ""

    def label(self) -> str:
        return f"{MARK_NAMES[self.kind]} ({self.kind})"


class Marks:
    """Every furnace's marks; the desk applies commands, the rules ask what is exempt."""

    def __init__(self, furnaces: Iterable[FurnaceConfig], zones: Mapping[str, str]) -> None:
        self.furnaces = {f.id: f for f in furnaces}
        self._zones = dict(zones)
        self._marks: dict[str, list[Mark]] = {f: [] for f in self.furnaces}
        self.changed: list[tuple[Mark, bool]] = []  # (mark, ended) not announced yet

    def __bool__(self) -> bool:
        return bool(self.furnaces)

    # -- changes ---------------------------------------------------------------------------------

    def add(self, furnace: str, kind: str, start: int, end: int | None = None, by: str = "", note: str = "") -> Mark:
        """A new mark; it ends the furnace's open mark at its start. ValueError says what is wrong."""
        if furnace not in self.furnaces:
            known = ", ".join(sorted(self.furnaces)) or "none configured"
            raise ValueError(f"expected a furnace ({known}), found {furnace!r}")
        kind = mark_kind(kind)
        if end is not None and end <= start:
            raise ValueError("expected the mark's end after its start")
        marks = self._marks[furnace]
        later = [m.start for m in marks if m.start > start]
        if end is None and later:
            end = min(later)  # entered afterwards, open: it lasted until the next mark began
        current = self.open(furnace)
        if end is None and current is not None and current.start <= start:
            self.end(furnace, start)  # only a mark still open takes over from the open one
        mark = Mark(uuid.uuid4().hex[:8], furnace, kind, start, end, by[:64], note[:200])
        marks.append(mark)
        marks.sort(key=lambda m: m.start)
        self.changed.append((mark, False))
        if end is not None:
            self.changed.append((mark, True))
        self._prune(furnace, start)
        return mark

    def end(self, furnace: str, at: int) -> Mark | None:
        """End the furnace's open mark at ``at`` (not before its start); None when none is open."""
        current = self.open(furnace)
        if current is None:
            return None
        current.end = max(at, current.start + NS)
        self.changed.append((current, True))
        return current

    def _prune(self, furnace: str, now: int) -> None:
        marks = self._marks[furnace]
        old = now - 2 * 366 * 86400 * NS
        marks[:] = [m for m in marks if m.end is None or m.end >= old][-MAX_MARKS:]

    # -- questions -------------------------------------------------------------------------------

    def open(self, furnace: str) -> Mark | None:
        return next((m for m in reversed(self._marks.get(furnace, [])) if m.end is None), None)

    def of(self, furnace: str) -> list[Mark]:
        return list(self._marks.get(furnace, []))

    def at(self, furnace: str, ts: int) -> Mark | None:
        return next(
            (m for m in reversed(self._marks.get(furnace, [])) if m.start <= ts and (m.end is None or ts < m.end)),
            None,
        )

    def covered(self, furnace: str, start: int, end: int, kinds: Iterable[str]) -> int:
        """Nanoseconds of [start, end) that marks of ``kinds`` cover."""
        wanted = set(kinds)
        marks = self._marks.get(furnace, [])
        spans = [(m.start, m.end if m.end is not None else end) for m in marks if m.kind in wanted]
        return _overlap(_union(spans), start, end)

    def exempt_spans(self, furnace: str, year_of: int, now: int) -> list[tuple[int, int]]:
        """The spans of the local calendar year holding ``year_of`` that the yearly budget
        covers: budget marks in the order they happened, until ``budget_hours`` are used."""
        cfg = self.furnaces[furnace]
        first, last = self.year(furnace, year_of)
        left = int(cfg.budget_hours * 3600 * NS)
        out = []
        spans = [
            (m.start, m.end if m.end is not None else now)
            for m in self._marks.get(furnace, [])
            if m.kind in cfg.budget_marks
        ]
        for a, b in _union(spans):
            begin, finish = max(a, first), min(b, last)
            if finish <= begin or left <= 0:
                continue
            take = min(finish - begin, left)
            out.append((begin, begin + take))
            left -= take
        return out

    def used(self, furnace: str, now: int) -> int:
        """Nanoseconds of budget marks in this local year up to ``now`` (beyond the budget too)."""
        cfg = self.furnaces[furnace]
        first, _ = self.year(furnace, now)
        return self.covered(furnace, first, now, cfg.budget_marks)

    def exempt(self, furnace: str, start: int, end: int, now: int) -> bool:
        """Whether [start, end) is exempt from the daily judgement: covered by the budget for at
        least the furnace's ``exempt_fraction``."""
        cfg = self.furnaces[furnace]
        spans = self.exempt_spans(furnace, start, max(now, end))
        return _overlap(spans, start, end) >= cfg.exempt_fraction * (end - start)

    def not_normal(self, furnace: str, start: int, end: int) -> bool:
        """Whether [start, end) is outside normal operation (drying, start-up, shutdown, stopped)."""
        cfg = self.furnaces[furnace]
        return self.covered(furnace, start, end, cfg.not_normal) >= cfg.exempt_fraction * (end - start)

    def year(self, furnace: str, ts: int) -> tuple[int, int]:
        """UTC ns bounds of the furnace site's local calendar year holding ``ts``."""
        zone = calendar(self._zones.get(self.furnaces[furnace].site, "Asia/Shanghai")).zone
        year = datetime.fromtimestamp(ts // NS, zone).year  # whole seconds: a float rounds 1 ns before midnight up
        return (
            int(datetime(year, 1, 1, tzinfo=zone).timestamp()) * NS,
            int(datetime(year + 1, 1, 1, tzinfo=zone).timestamp()) * NS,
        )

    # -- state -----------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {f: [asdict(m) for m in marks] for f, marks in self._marks.items()}

    def load(self, data: Mapping[str, Any]) -> None:
        for furnace, marks in data.items():
            if furnace in self._marks:  # a furnace no longer configured: its marks go
                self._marks[furnace] = [Mark(**m) for m in marks]


def judged_day(
    hours: Iterable[tuple[float | None, bool, bool]], day_hours: int, day_min_valid_hours: int
) -> tuple[float | None, bool, int, int]:
    """A day judged without the hours a furnace's marks exempt, from each hour's (mean, valid,
    exempt): (the mean of the other valid hours, whether they keep the share of valid hours a
    whole day needs - 20 of 24: 15 of 18 -, how many were kept, how many exempt). How exempt
    hours enter the daily mean is [U] (DOMAIN-incinerator.md A2): this is the documented reading.
    The rule (``alerts.kinds.limits``) and the daily report (``telemetry.report``) both judge so."""
    listed = list(hours)
    exempt = sum(1 for _, _, is_exempt in listed if is_exempt)
    kept = [mean for mean, valid, is_exempt in listed if valid and mean is not None and not is_exempt]
    mean = sum(kept) / len(kept) if kept else None
    needed = math.ceil(day_min_valid_hours * (day_hours - exempt) / day_hours)
    return mean, mean is not None and len(kept) >= needed, len(kept), exempt


def exempt_hour(marks: Marks) -> Callable[[str, int, int], bool]:
    """Whether [start, end) of a point (a stack) is exempt from its daily judgement: any of its
    furnaces' marks cover it within their budget (``Marks.exempt``)."""
    by_point: dict[str, list[str]] = {}
    for furnace in marks.furnaces.values():
        by_point.setdefault(furnace.point or "", []).append(furnace.id)

    def exempt(point: str, start: int, end: int) -> bool:
        return any(marks.exempt(f, start, end, end) for f in by_point.get(point, ()))

    return exempt


def _union(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _overlap(spans: Iterable[tuple[int, int]], start: int, end: int) -> int:
    return sum(max(0, min(b, end) - max(a, start)) for a, b in spans)
