"""The local-time calendar every period of the daemon follows: minutes, hours and plant days.

Aggregation, capacity rules and the HJ 212 uplink all ask this module where a
period starts and ends, so they cannot disagree. A day runs from one local
midnight to the next: 23 hours on a spring DST day, 25 on an autumn one (a
fixed 86,400 s day split the spring day in two and judged the 25th autumn hour
as a day of its own). Minutes and hours are local too: in a zone whose offset is
not whole hours (Asia/Kolkata) the hour starts at the local full hour.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime

NS = 1_000_000_000
MINUTE_NS = 60 * NS
HOUR_NS = 3600 * NS
DAY_NS = 86400 * NS
_QUARTER_NS = 900 * NS
DEFAULT_ZONE = "Asia/Shanghai"  # HJ 212 platforms keep Beijing time
FIXED_NS = {"1m": MINUTE_NS, "5m": 5 * MINUTE_NS, "1h": HOUR_NS}


@functools.lru_cache(maxsize=10_000)
def _offset(zone: zoneinfo.ZoneInfo, quarter: int) -> int:
    """The zone's UTC offset in ns during one quarter hour (zone changes fall on quarter hours),
    remembered: per reading, ``datetime.fromtimestamp`` was a hot spot."""
    delta = datetime.fromtimestamp(quarter * _QUARTER_NS / NS, zone).utcoffset()
    return int(delta.total_seconds()) * NS if delta else 0


@functools.lru_cache(maxsize=10_000)
def _midnight(zone: zoneinfo.ZoneInfo, ordinal: int) -> int:
    """UTC ns of the first instant of local date ``ordinal`` (where midnight itself does not
    exist, as in zones that move their clocks at 00:00, the day starts at the transition)."""
    day = datetime.fromordinal(ordinal)
    local = datetime(day.year, day.month, day.day, tzinfo=zone)
    return int(local.timestamp()) * NS


class Calendar:
    """Bounds of local minutes, hours and days in one time zone."""

    __slots__ = ("name", "zone")

    def __init__(self, zone: str = DEFAULT_ZONE) -> None:
        self.name = zone
        self.zone = zoneinfo.ZoneInfo(zone)

    def offset(self, ts: int) -> int:
        return _offset(self.zone, ts // _QUARTER_NS)

    def start(self, window: str, ts: int) -> int:
        """Start (UTC ns) of the ``1m``/``5m``/``1h``/``1d`` period holding ``ts``."""
        offset = _offset(self.zone, ts // _QUARTER_NS)
        if window == "1d":
            return _midnight(self.zone, _EPOCH_ORDINAL + (ts + offset) // DAY_NS)
        size = FIXED_NS[window] if window in FIXED_NS else _minutes(window)
        return (ts + offset) // size * size - offset

    def end(self, window: str, start: int) -> int:
        """End (exclusive) of the period starting at ``start``: the next local midnight for a day."""
        if window == "1d":
            offset = _offset(self.zone, start // _QUARTER_NS)
            return _midnight(self.zone, _EPOCH_ORDINAL + (start + offset) // DAY_NS + 1)
        return start + (FIXED_NS[window] if window in FIXED_NS else _minutes(window))

    def day_start(self, ts: int) -> int:
        return self.start("1d", ts)

    def day_end(self, day_start: int) -> int:
        return self.end("1d", day_start)

    def local(self, ts: int) -> datetime:
        return datetime.fromtimestamp(ts / NS, self.zone)

    def moment(self, text: str) -> datetime:
        """An ISO 8601 time (``2026-12-01 08:00``, ``2026-12-01T08:00+08:00``); one without a
        zone is a wall-clock time here (the earlier one where the clock went back).
        Raises ValueError saying what was expected."""
        try:
            stamp = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError("expected an ISO 8601 time such as 2026-12-01T08:00 or 2026-12-01T08:00+08:00") from None
        return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=self.zone)

    def parse_local(self, text: str, fmt: str = "%Y%m%d%H%M%S") -> int:
        """UTC ns of a local wall-clock time (the earlier one where the clock went back)."""
        return int(datetime.strptime(text, fmt).replace(tzinfo=self.zone).timestamp()) * NS


def _minutes(window: str) -> int:
    """``10m``-style windows (HJ 212 MinInterval periods)."""
    if window.endswith("m") and window[:-1].isdigit() and int(window[:-1]) > 0:
        return int(window[:-1]) * MINUTE_NS
    raise ValueError(f"unknown window {window!r}")


_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=1_000)
def calendar(zone: str | None = None) -> Calendar:
    """The calendar of a zone (one object per zone)."""
    return Calendar(zone or DEFAULT_ZONE)


__all__ = ["DAY_NS", "HOUR_NS", "MINUTE_NS", "NS", "Calendar", "calendar"]
