"""MQTT payloads to readings' values: a number, a JSON object, or a JSON batch.

Formats (``format`` of a subscription):
- ``number``: ``12.3``.
- ``json``: an object; the value, timestamp, flag and unit are read from
  configurable dot paths (``value``, ``ts``, ``flag``, ``unit`` by default;
  ``data.v`` reaches into nested objects, ``items.0.v`` into lists).
- ``batch``: many readings in one message, either a list of such objects each
  naming its ``quantity``, or an object of quantity → number (or → object),
  where top-level ``ts``/``flag``/``unit`` apply to every entry.
- ``auto`` (default): a number, an object with a value (json), a list or an
  object without one (batch).
- ``hj212``: one or more HJ 212 frames as a DTU publishes them (``hj212_frames``); what
  they hold is decoded by the MQTT driver with its ``stations`` table, as the HJ 212
  listener does (``telemetry.hj212.inbound``), not here.

Timestamps: epoch seconds, milliseconds, microseconds or nanoseconds (told apart
by magnitude), ISO 8601 (``T`` or a space) or ``YYYYMMDDHHMMSS`` (text or number); a time
without a zone is local time in ``Paths.zone`` (the site's, or the subscription's
``timezone``). In a batch, ``Paths.units`` gives a field its unit and ``Paths.ignore`` names
fields that are not readings (a gateway's status text). Anything wrong raises PayloadError with a
bounded ``reason`` for metrics and a message that says what was wrong; in a
batch, the good entries are kept and the bad ones reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal, NamedTuple

import orjson

from telemetry.hj212.codec import FrameReader
from telemetry.model import Flag
from telemetry.times import EARLIEST_NS, TimeError, compact_ns, epoch_ns, parse_timestamp

_MAX_AHEAD_NS = 86_400 * 10**9
MAX_PAYLOAD = 256 * 1024

FormatName = Literal["auto", "number", "json", "batch", "hj212"]


class PayloadError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class Decoded(NamedTuple):  # a tuple: one per reading on the hot path, built in half a frozen dataclass's time
    value: float
    ts: int
    flag: Flag
    unit: str | None
    quantity: str | None = None  # set by batch formats; else the topic or config names it


@dataclass(frozen=True)
class Paths:
    """Where a JSON object keeps each part (dot paths)."""

    value: str = "value"
    ts: str = "ts"
    flag: str = "flag"
    unit: str = "unit"
    quantity: str = "quantity"
    zone: tzinfo | None = None  # of a timestamp without one; None: such a timestamp is refused
    units: Mapping[str, str] = field(default_factory=dict)  # a batch field's unit, where it sends none
    ignore: frozenset[str] = frozenset()  # batch fields that are not readings


@dataclass
class Result:
    readings: list[Decoded]
    errors: list[PayloadError]


DEFAULT_PATHS = Paths()


def decode(
    payload: bytes,
    received_ns: int,
    fmt: FormatName = "auto",
    paths: Paths = DEFAULT_PATHS,
    max_bytes: int = MAX_PAYLOAD,
) -> Result:
    """Decode one message; raises PayloadError when nothing in it can be used."""
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"payload of {len(payload)} bytes exceeds {max_bytes}")
    if fmt not in DECODERS:
        raise PayloadError("bad_format", f"format {fmt} is decoded with a station table, not here")
    return DECODERS[fmt](payload.strip(), received_ns, paths)


def hj212_frames(payload: bytes, max_bytes: int = MAX_PAYLOAD) -> list[bytes]:
    """The HJ 212 frames of one message (a DTU may publish several, with or without CR LF);
    raises PayloadError when it holds anything else."""
    if len(payload) > max_bytes:
        raise PayloadError("too_large", f"payload of {len(payload)} bytes exceeds {max_bytes}")
    reader = FrameReader()
    data = payload.strip()
    frames = reader.feed(data + b"\r\n")
    if reader.skipped or reader.pending or not frames:
        raise PayloadError("not_hj212", "expected HJ 212 frames (##NNNN...CRC), found other bytes")
    return frames


def _auto(text: bytes, received_ns: int, paths: Paths) -> Result:
    if text[:1] in (b"{", b"["):
        data = _json(text)
        if isinstance(data, dict) and _get(data, paths.value) is not _MISSING:
            return Result([_entry(data, received_ns, paths, None)], [])
        return _batch_of(data, received_ns, paths)
    return _number(text, received_ns, paths)


def _number(text: bytes, received_ns: int, _paths: Paths) -> Result:
    if not text:
        raise PayloadError("empty", "empty payload")
    try:
        value = float(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("not_a_number", "expected a number") from None
    return Result([Decoded(_finite(value), received_ns, Flag.N, None)], [])


def _single(text: bytes, received_ns: int, paths: Paths) -> Result:
    data = _json(text)
    if not isinstance(data, dict):
        raise PayloadError("not_an_object", f"expected a JSON object, found {_kind(data)}")
    return Result([_entry(data, received_ns, paths, None)], [])


def _batch(text: bytes, received_ns: int, paths: Paths) -> Result:
    return _batch_of(_json(text), received_ns, paths)


DECODERS: dict[str, Callable[[bytes, int, Paths], Result]] = {
    "auto": _auto,
    "number": _number,
    "json": _single,
    "batch": _batch,
}


def _batch_of(data: Any, received_ns: int, paths: Paths) -> Result:
    out: list[Decoded] = []
    errors: list[PayloadError] = []
    if isinstance(data, list):
        for i, item in enumerate(data):
            try:
                if not isinstance(item, dict):
                    raise PayloadError("bad_entry", f"expected an object, found {_kind(item)}")
                quantity = _get(item, paths.quantity)
                if not isinstance(quantity, str) or not quantity:
                    raise PayloadError("no_quantity", f"no '{paths.quantity}' text")
                if quantity in paths.ignore:
                    continue
                out.append(_entry(item, received_ns, paths, quantity))
            except PayloadError as err:
                errors.append(PayloadError(err.reason, f"entry {i}: {err}"))
    elif isinstance(data, dict):
        _by_name(data, received_ns, paths, out, errors)
    else:
        raise PayloadError("not_a_batch", f"expected a JSON list or object, found {_kind(data)}")
    if not out:
        if errors:
            raise errors[0]
        raise PayloadError("empty", "batch holds no readings")
    return Result(out, errors)


def _by_name(
    data: dict[str, Any], received_ns: int, paths: Paths, out: list[Decoded], errors: list[PayloadError]
) -> None:
    """``{"ts": ..., "cod": 41.5, "nh3n": {"value": 2.1, "flag": "C"}}``: one reading per name."""
    shared = {k: data[k] for k in (paths.ts, paths.flag, paths.unit) if k in data}
    try:  # the shared ts/flag/unit, decoded once for the plain numbers of a gateway's scan
        common: Decoded | None = _entry({**shared, paths.value: 0}, received_ns, paths, None)
    except PayloadError:
        common = None  # each entry reports the problem, as below
    for key, item in data.items():
        if key in shared or key in paths.ignore:
            continue
        if common is not None and type(item) in (int, float) and math.isfinite(item):
            unit = common.unit if common.unit is not None else paths.units.get(key)
            out.append(Decoded(float(item), common.ts, common.flag, unit, str(key)))
            continue
        try:
            entry = dict(shared) | (item if isinstance(item, dict) else {paths.value: item})
            out.append(_entry(entry, received_ns, paths, str(key)))
        except PayloadError as err:
            errors.append(PayloadError(err.reason, f"{key}: {err}"))


def _entry(data: dict[str, Any], received_ns: int, paths: Paths, quantity: str | None) -> Decoded:
    value = _get(data, paths.value)
    if value is _MISSING:
        raise PayloadError("no_value", f"no '{paths.value}'")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError("bad_value", f"'{paths.value}' must be a number, found {_kind(value)}")
    raw_ts = _get(data, paths.ts)
    ts = received_ns if raw_ts is _MISSING or raw_ts is None else _timestamp(raw_ts, received_ns, paths.zone)
    flag = Flag.N
    raw_flag = _get(data, paths.flag)
    if raw_flag is not _MISSING:
        try:
            flag = Flag(raw_flag)
        except ValueError:
            raise PayloadError("bad_flag", f"'{paths.flag}' must be one of {''.join(Flag)}") from None
    unit = _get(data, paths.unit)
    if unit is _MISSING:
        unit = paths.units.get(quantity) if quantity is not None and paths.units else None
    elif not isinstance(unit, str):
        raise PayloadError("bad_unit", f"'{paths.unit}' must be text")
    return Decoded(_finite(float(value)), ts, flag, unit, quantity)


_MISSING: Any = object()


def _get(data: Any, path: str) -> Any:
    if "." not in path:  # the common case, without splitting the path
        return data.get(path, _MISSING) if isinstance(data, dict) else _MISSING
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def _json(text: bytes) -> Any:
    if not text:
        raise PayloadError("empty", "empty payload")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise PayloadError("bad_json", f"not valid JSON: {err}") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise PayloadError("not_finite", "value is not a finite number")
    return value


def _timestamp(raw: Any, received_ns: int, zone: tzinfo | None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise PayloadError("bad_ts", "timestamp must be epoch seconds/ms/ns, ISO 8601 or YYYYMMDDHHMMSS")
    try:
        if isinstance(raw, str):
            ns = parse_timestamp(raw, zone)
        elif isinstance(raw, int) and 10**13 <= raw < 10**14:  # as ms it would be past 2286
            ns = compact_ns(str(raw), zone)
        else:
            ns = epoch_ns(raw)
    except TimeError as err:
        raise PayloadError(err.reason, str(err)) from None
    if ns < EARLIEST_NS or ns > received_ns + _MAX_AHEAD_NS:
        raise PayloadError("implausible_ts", "timestamp is before 2000 or more than a day ahead")
    return ns
