"""The records that travel through the daemon: readings and alert events.

Stdlib only: drivers, sinks, rules and the uplink all import this module, and it
imports none of them.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


class Flag(StrEnum):
    """HJ 212 data flag of a value. Only ``N`` values count towards valid averages."""

    N = "N"  # normal
    F = "F"  # analyzer stopped
    M = "M"  # maintenance
    S = "S"  # manually entered value
    D = "D"  # analyzer fault
    C = "C"  # calibration
    T = "T"  # above measuring range
    B = "B"  # communication error with the analyzer


FLAG_MEANING: dict[Flag, str] = {
    Flag.N: "normal",
    Flag.F: "stopped",
    Flag.M: "maintenance",
    Flag.S: "manual value",
    Flag.D: "fault",
    Flag.C: "calibration",
    Flag.T: "above measuring range",
    Flag.B: "communication error",
}

MAX_IDENTIFIER = 128
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")  # control characters and the backslash


def now_ns() -> int:
    """Wall-clock time in integer nanoseconds since the epoch (UTC)."""
    return time.time_ns()


@functools.lru_cache(maxsize=100_000)  # most readings repeat a few names
def identifier_problem(value: str) -> str | None:
    """Why ``value`` cannot be a site, device, quantity or unit name, or None.

    Identifiers become InfluxDB tag values and come from MQTT topics that others
    control; line protocol cannot carry control characters at all, and a
    backslash can swallow the separator after it, so both are refused here
    rather than mangled in the sink.
    """
    if not value:
        return "must not be empty"
    if len(value) > MAX_IDENTIFIER:
        return f"longer than {MAX_IDENTIFIER} characters"
    bad = _FORBIDDEN.search(value)
    if bad is None:
        return None
    return "contains a backslash" if bad.group() == "\\" else "contains a control character"


class InvalidReading(ValueError):
    """A reading that cannot be stored; the message says which part and why."""


class Reading(NamedTuple):
    """One measured value. ``ts`` is UTC in integer nanoseconds.

    (site, device, quantity, ts) identifies the point: InfluxDB overwrites on the
    same key, so replaying a reading after a crash never duplicates it.

    A named tuple rather than a frozen dataclass: every reading is built at least
    twice on its way (decoded, read back from the outbox), and a frozen dataclass
    costs one ``object.__setattr__`` per field, twice the time of the tuple.
    """

    ts: int
    site: str
    device: str
    quantity: str
    value: float
    unit: str = ""
    flag: Flag = Flag.N

    def check(self) -> Reading:
        """Return self, or raise InvalidReading naming the bad part."""
        if (
            identifier_problem(self.site)
            or identifier_problem(self.device)
            or identifier_problem(self.quantity)
            or (self.unit and identifier_problem(self.unit))
            or not math.isfinite(self.value)
        ):
            for name in ("site", "device", "quantity", "unit"):
                value = getattr(self, name)
                if (name != "unit" or value) and (problem := identifier_problem(value)):
                    raise InvalidReading(f"{name} {value!r} {problem}")
            raise InvalidReading(f"value {self.value!r} is not a finite number")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "site": self.site,
            "device": self.device,
            "quantity": self.quantity,
            "value": self.value,
            "unit": self.unit,
            "flag": self.flag.value,
        }

    def to_row(self) -> tuple[int, str, str, str, float, str, str]:
        """The outbox's compact form: half the bytes of ``to_dict`` and a third of the decode time."""
        return (self.ts, self.site, self.device, self.quantity, self.value, self.unit, self.flag.value)

    @classmethod
    def from_row(cls, row: list[Any]) -> Reading:
        ts, site, device, quantity, value, unit, flag = row
        return cls(int(ts), site, device, quantity, float(value), unit, _FLAGS.get(flag) or Flag(flag))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reading:
        return cls(
            ts=int(data["ts"]),
            site=data["site"],
            device=data["device"],
            quantity=data["quantity"],
            value=float(data["value"]),
            unit=data.get("unit", ""),
            flag=Flag(data.get("flag", "N")),
        )


_FLAGS: dict[str, Flag] = {f.value: f for f in Flag}  # a dict lookup is a fifth of the cost of Flag(text)


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    INSUFFICIENT = "insufficient_data"  # a window too thin to judge: recorded, never a breach


class Measure(StrEnum):
    """What an alert's ``value`` and ``limit`` are, as the rule kind says: notifications render
    each with its own unit. ``""`` (events from before this existed) reads as plain numbers in
    the series' unit."""

    READING = "reading"  # a reading or a mean of readings, limit in the reading's unit
    SILENCE = "silence"  # seconds without valid data, limit in seconds
    FLAGGED = "flagged"  # seconds flagged maintenance/calibration, limit in seconds
    HELD = "held"  # a reading (unit) that has not changed; limit is the value held
    FRACTION = "fraction"  # a fraction of capacity (0.35 is 35 %), limit likewise
    DAY_TOTAL = "day_total"  # a plant day's total in the rate's unit without "/h" (t/h -> t)
    PER_MINUTE = "per_minute"  # change of the reading per minute, limit likewise
    STATE = "state"  # a condition of the daemon's own (a refused station, a full outbox): no numbers


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A transition of one alert (rule + series) to firing or resolved.

    ``measure`` (a ``Measure`` value, or "") says how ``value`` and ``limit`` read;
    ``templated`` says ``message`` is the rule's own ``message`` template filled in, rather
    than the kind's English text (which a Chinese notification leaves out).
    """

    ts: int
    site: str
    rule: str
    severity: str
    state: AlertState
    message: str
    value: float
    limit: float
    labels: dict[str, str] = field(default_factory=dict)
    measure: str = ""
    templated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "site": self.site,
            "rule": self.rule,
            "severity": self.severity,
            "state": self.state.value,
            "message": self.message,
            "value": self.value,
            "limit": self.limit,
            "labels": dict(self.labels),
            "measure": self.measure,
            "templated": self.templated,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertEvent:
        return cls(
            ts=int(data["ts"]),
            site=data["site"],
            rule=data["rule"],
            severity=data["severity"],
            state=AlertState(data["state"]),
            message=data["message"],
            value=float(data["value"]),
            limit=float(data["limit"]),
            labels=dict(data.get("labels", {})),
            measure=str(data.get("measure", "")),  # absent from state saved by earlier versions
            templated=bool(data.get("templated", False)),
        )


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A closed minute, hour or day window of one series (``ts`` is the window start, UTC ns).

    ``valid`` follows the validity rules (enough ``N`` minutes in an hour, hours in a
    day); min/avg/max cover valid values only and are None when there were none.
    ``cou`` is the cumulative amount: m3 for flow, kg for a pollutant (needs the point's flow).
    ``point`` is the monitoring point the series belongs to ("" for none). ``method`` says how
    the value was formed: an hour from ``minutes`` (continuous analyzers), from ``cycles``
    (one value per measuring cycle) or ``carried`` (the last valid measurement of a cycle
    longer than an hour); a day ``flow``-weighted or ``arithmetic``. ``sample_ts`` is the
    analyzer's sample time of the value, where the series has measuring cycles.
    """

    ts: int
    window: str
    site: str
    device: str
    quantity: str
    unit: str
    min: float | None
    avg: float | None
    max: float | None
    count: int
    valid_count: int
    valid: bool
    cou: float | None = None
    flag: Flag = Flag.N
    point: str = ""
    method: str = ""
    sample_ts: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "window": self.window,
            "site": self.site,
            "device": self.device,
            "quantity": self.quantity,
            "unit": self.unit,
            "min": self.min,
            "avg": self.avg,
            "max": self.max,
            "count": self.count,
            "valid_count": self.valid_count,
            "valid": self.valid,
            "cou": self.cou,
            "flag": self.flag.value,
            "point": self.point,
            "method": self.method,
            "sample_ts": self.sample_ts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Aggregate:
        return cls(**{**data, "flag": Flag(data.get("flag", "N"))})


Record = Reading | AlertEvent | Aggregate


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input that could not become readings, kept for inspection (the dead-letter table).

    ``payload`` is the raw input, truncated by the receiver of the record.
    """

    ts: int
    source: str
    topic: str
    reason: str
    detail: str
    payload: bytes
