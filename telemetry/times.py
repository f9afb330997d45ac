"""Timestamps from text and numbers, one way for every input: MQTT payloads, the CLI's ``--at``,
CSV replays and silences.

Epoch seconds, milliseconds, microseconds or nanoseconds are told apart by magnitude; ISO 8601
must carry its zone here (a zone-less local time is ``telemetry.calendar.Calendar.moment``'s
job, which knows the site's zone).
"""

from __future__ import annotations

import math
from datetime import datetime

EARLIEST_NS = 946_684_800 * 10**9  # 2000-01-01: older stamps are broken device clocks


class TimeError(ValueError):
    """A timestamp that cannot be read; ``reason`` is a bounded label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def parse_timestamp(raw: str) -> int:
    """UTC ns from text: epoch s/ms/us/ns or ISO 8601 with a zone."""
    text = raw.strip()
    try:
        number: float = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return iso_ns(text)
    return epoch_ns(number)


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


def iso_ns(raw: str) -> int:
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        raise TimeError("bad_ts", "timestamp is not ISO 8601") from None
    if stamp.tzinfo is None:
        raise TimeError("bad_ts", "timestamp has no time zone (add Z or +08:00)")
    return int(stamp.timestamp()) * 10**9 + stamp.microsecond * 1000
