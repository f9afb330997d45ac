"""MQTT payloads to (value, timestamp, flag): a bare number or a JSON object.

Accepted: ``12.3``; ``{"value": 12.3}``; ``{"value": 12.3, "ts": 1700000000}`` with
``ts`` in epoch seconds, milliseconds, microseconds or nanoseconds (told apart by
magnitude) or ISO 8601 with a zone; optional ``"flag": "N"`` (an HJ 212 flag) and
``"unit"``. Anything else raises PayloadError with a bounded ``reason`` for metrics
and a message that says what was wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from telemetry.model import Flag

_EARLIEST_NS = 946_684_800 * 10**9  # 2000-01-01: older stamps are broken device clocks
_MAX_AHEAD_NS = 86_400 * 10**9


class PayloadError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Decoded:
    value: float
    ts: int
    flag: Flag
    unit: str | None


def decode(payload: bytes, received_ns: int) -> Decoded:
    text = payload.strip()
    if not text:
        raise PayloadError("empty", "empty payload")
    if text[:1] == b"{":
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as err:
            raise PayloadError("bad_json", f"not valid JSON: {err}") from None
        return _from_object(data, received_ns)
    try:
        value = float(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("not_a_number", "expected a number or a JSON object") from None
    return Decoded(_finite(value), received_ns, Flag.N, None)


def _from_object(data: dict[str, Any], received_ns: int) -> Decoded:
    if "value" not in data:
        raise PayloadError("no_value", "JSON object has no 'value'")
    value = data["value"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError("bad_value", f"'value' must be a number, found {type(value).__name__}")
    ts = _timestamp(data["ts"], received_ns) if data.get("ts") is not None else received_ns
    flag = Flag.N
    if "flag" in data:
        try:
            flag = Flag(data["flag"])
        except ValueError:
            raise PayloadError("bad_flag", f"'flag' must be one of {''.join(Flag)}") from None
    unit = data.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise PayloadError("bad_unit", "'unit' must be text")
    return Decoded(_finite(float(value)), ts, flag, unit)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise PayloadError("not_finite", "value is not a finite number")
    return value


def _timestamp(raw: Any, received_ns: int) -> int:
    if isinstance(raw, bool):
        raise PayloadError("bad_ts", "'ts' must be epoch seconds/ms/ns or ISO 8601")
    if isinstance(raw, int | float):
        magnitude = abs(raw)
        factor = (
            10**9 if magnitude < 1e11 else 10**6 if magnitude < 1e14 else 10**3 if magnitude < 1e17 else 1
        )
        # Integers stay exact; a float carries its fraction through round(), not truncation.
        ns = raw * factor if isinstance(raw, int) else round(raw * factor)
    elif isinstance(raw, str):
        try:
            stamp = datetime.fromisoformat(raw)
        except ValueError:
            raise PayloadError("bad_ts", "'ts' is not ISO 8601") from None
        if stamp.tzinfo is None:
            raise PayloadError("bad_ts", "'ts' has no time zone (add Z or +08:00)")
        ns = int(stamp.timestamp()) * 10**9 + stamp.microsecond * 1000
    else:
        raise PayloadError("bad_ts", "'ts' must be epoch seconds/ms/ns or ISO 8601")
    if ns < _EARLIEST_NS or ns > received_ns + _MAX_AHEAD_NS:
        raise PayloadError("implausible_ts", "'ts' is before 2000 or more than a day ahead")
    return ns
