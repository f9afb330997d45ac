"""Timestamps from text and numbers, one way for every input: MQTT payloads, the CLI's ``--at``,
CSV replays and silences.

Epoch seconds, milliseconds, microseconds or nanoseconds are told apart by magnitude; ISO 8601
(``2026-12-01T08:00:00+08:00``, ``2026-12-01 08:00:00``) and the compact ``20261201080000`` of
Chinese gateways and HJ 212 are read too. A time without a zone needs ``zone`` (a gateway's
local time: its site's zone); without one it is refused. A local time in a DST fold is read
as its first occurrence.
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo

EARLIEST_NS = 946_684_800 * 10**9  # 2000-01-01: older stamps are broken device clocks


class TimeError(ValueError):
    """A timestamp that cannot be read; ``reason`` is a bounded label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def parse_timestamp(raw: str, zone: tzinfo | None = None) -> int:
    """UTC ns from text: epoch s/ms/us/ns, ISO 8601 or ``YYYYMMDDHHMMSS`` (local in ``zone``
    when the text has no zone)."""
    text = raw.strip()
    if len(text) == 14 and text.isdigit():
        return compact_ns(text, zone)
    try:
        number: float = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return iso_ns(text, zone)
    return epoch_ns(number)


def spoken(seconds: float) -> str:
    """A duration as people read it in a message or a status line: 45 s, 12 min, 3.5 h."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def compact_ns(text: str, zone: tzinfo | None) -> int:
    """``YYYYMMDDHHMMSS``: local time in ``zone``."""
    try:
        stamp = datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        raise TimeError("bad_ts", f"{text[:20]!r} is not a YYYYMMDDHHMMSS time") from None
    return _zoned(stamp, zone)


def epoch_ns(raw: float) -> int:
    """Epoch s, ms, us or ns, told apart by magnitude."""
    if not math.isfinite(raw):
        raise TimeError("bad_ts", "timestamp is not finite")
    magnitude = abs(raw)
    if magnitude < 1e11:
        factor = 10**9  # seconds
    elif magnitude < 1e14:
        factor = 10**6  # milliseconds
    elif magnitude < 1e17:
        factor = 10**3  # microseconds
    else:
        factor = 1
    if isinstance(raw, int):
        return raw * factor
    whole = math.floor(raw)  # whole and fraction apart, so the fraction keeps its precision
    return whole * factor + round((raw - whole) * factor)


def iso_ns(raw: str, zone: tzinfo | None = None) -> int:
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        raise TimeError("bad_ts", "timestamp is not ISO 8601") from None
    return _zoned(stamp, zone)


def _zoned(stamp: datetime, zone: tzinfo | None) -> int:
    if stamp.tzinfo is None:
        if zone is None:
            raise TimeError("bad_ts", "timestamp has no time zone (add Z or +08:00)")
        stamp = stamp.replace(tzinfo=zone)
    return int(stamp.timestamp()) * 10**9 + stamp.microsecond * 1000
