"""A station's uploads as the daemon's records: the part of the input side that knows HJ 212's data.

Pure (no sockets): the TCP listener (``drivers.hj212``) and MQTT ``format: hj212`` both use it.

- 2011 real-time data: one reading per ``code-Rtd`` (``-ZsRtd``, the converted value, as
  ``QUANTITY_zs``), stamped with the packet's DataTime (the station's local time, Beijing by
  default), with its ``-Flag`` (N when absent); ``-SampleTime`` and ``-EFlag`` are kept
  beside it (``Extras``) for a relay to the platforms.
- 2051/2061/2031 period data: with ``aggregates: station``, each code's ``-Min/-Avg/-Max/-Cou``
  and ``-Flag`` become the station's own window (``Aggregate``, ``method: station``; ``10m``
  for a MinInterval of 10, ``1h``, ``1d``), which the uplink relays as it is; the daemon does
  not aggregate the station's series itself, so nothing is counted twice. Besides, a period's
  ``-Avg`` becomes a reading at the period's start where no finer data of that code came from
  the station within the period (a station sending minute data only still fills the charts).
  With ``aggregates: daemon`` only those readings are stored, and the daemon aggregates them
  with the real-time ones: a period value enters only where no real-time value did.
- 2021/2041 equipment status and running time: ``SBn-RS`` as reading ``SBn`` (or the
  quantity ``codes`` maps it to), ``SBn-RT`` as ``..._rt`` in hours.

Codes map to quantities through the 2017 and 2005 code sets and the station's ``codes``; a
code outside them keeps its name as the quantity. Values go in the unit the code prescribes.
Nothing the station sends is trusted: a DataTime before 2000 or more than ``max_ahead`` ahead
of the daemon's clock refuses the packet; a value that is not a finite number, a flag HJ 212
does not define, or a code that could not be a name is left out and reported.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from telemetry.calendar import NS, calendar
from telemetry.hj212 import codes
from telemetry.hj212.codec import Packet
from telemetry.hj212.config import CODE_CHARS
from telemetry.hj212.extras import Extra, Extras
from telemetry.hj212.periods import CN_KIND, KINDS, STATION
from telemetry.hj212.stations import Station
from telemetry.model import Aggregate, Flag, Reading
from telemetry.times import EARLIEST_NS

# What a station's uploads are relayed as; a 2111 (5-minute furnace means) is not taken in yet.
UPLOADS = {"2011": "rtd", **{cn: k for cn, k in CN_KIND.items() if k != "furnace"}, "2021": "status", "2041": "runtime"}
_LEVEL = {"rtd": 0, "min": 1, "hour": 2, "day": 3}
_EFLAG = re.compile(r"[A-Za-z0-9]{1,4}")
_FLAGS = {f.value: f for f in Flag}
_KEEP_NS = 3 * 86400 * NS  # what the coverage remembers: a DAU back-fills a few days at most
_KEEP_PER_SERIES = 20_000
MAX_CODES = 256  # distinct codes a station may send: its series become tags, so they stay bounded


class InboundError(ValueError):
    """A packet that cannot be used at all; ``reason`` is a bounded label."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass
class Decoded:
    readings: list[Reading] = field(default_factory=list)
    windows: list[Aggregate] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # items left out, for the dead letter

    @property
    def records(self) -> list[Reading | Aggregate]:
        return [*self.readings, *self.windows]

    @property
    def problem_summary(self) -> str:
        """The dead letter's detail when values were left out."""
        return f"{len(self.problems)} values left out; first: {self.problems[0]}"


class _Item(NamedTuple):
    code: str
    quantity: str
    values: dict[str, str]  # suffix (Rtd, Avg, Flag ...) -> text


class Coverage:
    """Which times a station's finer data covered, per station and code: whether a period value
    must stand in for missing finer data as a reading. In memory and bounded; after a restart a
    period whose finer data came before it may add its average as one more reading."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, int], list[int]] = {}

    def note(self, mn: str, code: str, level: str, ts: int) -> None:
        seen = self._seen.setdefault((mn, code, _LEVEL[level]), [])
        at = bisect.bisect_left(seen, ts)
        if at < len(seen) and seen[at] == ts:
            return  # known already (a second value of the code, a frame sent again)
        seen.insert(at, ts)
        if len(seen) > _KEEP_PER_SERIES or seen[0] < seen[-1] - _KEEP_NS:
            cut = max(len(seen) - _KEEP_PER_SERIES, bisect.bisect_left(seen, seen[-1] - _KEEP_NS))
            del seen[:cut]

    def finer(self, mn: str, code: str, level: str, start: int, end: int) -> bool:
        for finer in range(_LEVEL[level]):
            seen = self._seen.get((mn, code, finer), [])
            i = bisect.bisect_left(seen, start)
            if i < len(seen) and seen[i] < end:
                return True
        return False


class Inbound:
    """Uploads of known stations into records."""

    def __init__(
        self,
        default_device: str,
        timezone: str = "Asia/Shanghai",
        max_ahead_s: float = 300.0,
        extras: Extras | None = None,
    ) -> None:
        self.default_device = default_device
        self.timezone = timezone
        self.max_ahead = int(max_ahead_s * NS)
        self.extras = extras
        self.coverage = Coverage()
        self._split_time: dict[str, tuple[str, str]] = {}  # mn -> (QN, DataTime) of a split packet
        self._quantities: dict[str, dict[str, str]] = {}
        self._codes: dict[str, set[str]] = {}  # per station, the codes it sent so far

    def decode(self, station: Station, p: Packet, received_ns: int) -> Decoded:
        """Records from one upload (``UPLOADS``); raises InboundError when nothing can be used."""
        kind = UPLOADS.get(p.cn)
        if kind is None:
            raise InboundError("unsupported_cn", f"CN {p.cn[:8]!r} is not an upload this listener stores")
        ts = self._time(station, p, received_ns)
        out = Decoded()
        device = station.device_or(self.default_device)
        for item in self._items(station, p, out):
            if kind == "rtd":
                self._rtd(station, device, item, ts, received_ns, out)
            elif kind in ("status", "runtime"):
                self._equipment(station, device, item, kind, ts, out)
            else:
                self._period(station, device, item, kind, ts, out)
        if not out.readings and not out.windows:
            raise InboundError("no_values", "; ".join(out.problems[:3]) or "the packet holds no values")
        return out

    def _time(self, station: Station, p: Packet, received_ns: int) -> int:
        text = p.get("DataTime")
        if text is None and p.pnum:  # a part of a split packet that does not repeat the DataTime
            qn, earlier = self._split_time.get(station.mn, ("", ""))
            text = earlier if qn == p.qn and earlier else None
        if text is None:
            raise InboundError("no_datatime", "the packet has no DataTime")
        if p.pnum and p.qn:
            self._split_time[station.mn] = (p.qn, text)
        ts = self._parse(text, station)
        if ts is None:
            raise InboundError("bad_datatime", f"DataTime {text[:20]!r} is not yyyyMMddHHmmss")
        if ts < EARLIEST_NS or ts > received_ns + self.max_ahead:
            raise InboundError("implausible_time", f"DataTime {text} is before 2000 or ahead of the daemon's clock")
        return ts

    def _parse(self, text: str, station: Station) -> int | None:
        if not (len(text) == 14 and text.isdigit()):
            return None
        try:
            return calendar(station.timezone or self.timezone).parse_local(text)
        except ValueError:
            return None

    def _items(self, station: Station, p: Packet, out: Decoded) -> list[_Item]:
        """Each code's values, whatever the grouping of CP items (one per code, or several)."""
        by_code: dict[str, dict[str, str]] = {}
        seen = self._codes.setdefault(station.mn, set())
        for item in p.cp:
            for key, value in item.items():
                code, dash, suffix = key.partition("-")
                if not dash:
                    continue  # DataTime and the like
                if not CODE_CHARS.fullmatch(code):
                    out.problems.append(f"code {code[:16]!r} is not a pollutant code")
                    continue
                if code not in seen and len(seen) >= MAX_CODES:
                    out.problems.append(f"code {code}: the station already sent {MAX_CODES} distinct codes")
                    continue
                seen.add(code)
                by_code.setdefault(code, {})[suffix] = value
        names = self._quantities.get(station.mn)
        if names is None:
            names = self._quantities[station.mn] = codes.quantities(station.codes)
        return [_Item(code, names.get(code, code), values) for code, values in by_code.items()]

    def _rtd(self, station: Station, device: str, item: _Item, ts: int, received_ns: int, out: Decoded) -> None:
        flag = self._flag(item, out)
        if flag is None:
            return
        unit = codes.unit_of(item.code, "Rtd")
        extra: Extra | None = None
        for suffix, quantity in (("Rtd", item.quantity), ("ZsRtd", f"{item.quantity}_zs")):
            value = self._number(item, suffix, out)
            if value is None:
                continue
            out.readings.append(Reading(ts, station.site, device, quantity, value, unit, flag))
            if extra is None:  # the code's coverage, sample time and EFlag: once for both values
                self.coverage.note(station.mn, item.code, "rtd", ts)
                sample = self._sample_time(station, item, received_ns)
                eflag = item.values.get("EFlag", "")
                extra = Extra(ts, sample, eflag if _EFLAG.fullmatch(eflag) else "")
            if self.extras is not None and (extra.sample_ts is not None or extra.eflag):
                self.extras.note(station.site, device, quantity, extra)

    def _period(self, station: Station, device: str, item: _Item, kind: str, start: int, out: Decoded) -> None:
        flag = self._flag(item, out)
        if flag is None:
            return
        window = station.min_window if kind == "min" else KINDS[kind][1]
        end = calendar(station.timezone or self.timezone).end(window, start)
        values = {suffix: self._number(item, suffix, out) for suffix in ("Min", "Avg", "Max", "Cou")}
        if all(v is None for v in values.values()) and "Flag" not in item.values:
            return
        unit = codes.unit_of(item.code, "Avg")
        avg = values["Avg"]
        if avg is not None and not self.coverage.finer(station.mn, item.code, kind, start, end):
            out.readings.append(Reading(start, station.site, device, item.quantity, avg, unit, flag))
        self.coverage.note(station.mn, item.code, kind, start)
        if station.aggregates != "station":
            return
        valid = flag is Flag.N and avg is not None
        sample = self._sample_time(station, item, end)
        out.windows.append(
            Aggregate(
                start,
                window,
                station.site,
                device,
                item.quantity,
                unit,
                values["Min"] if values["Min"] is not None else avg,
                avg,
                values["Max"] if values["Max"] is not None else avg,
                1,
                1 if valid else 0,
                valid,
                values["Cou"],
                flag,
                station.point or "",
                STATION,
                sample,
            )
        )

    def _equipment(self, station: Station, device: str, item: _Item, kind: str, ts: int, out: Decoded) -> None:
        suffix, quantity, unit = ("RS", item.quantity, "") if kind == "status" else ("RT", f"{item.quantity}_rt", "h")
        value = self._number(item, suffix, out)
        if value is not None:
            out.readings.append(Reading(ts, station.site, device, quantity, value, unit))

    def _number(self, item: _Item, suffix: str, out: Decoded) -> float | None:
        text = item.values.get(suffix)
        if text is None or text == "":
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            out.problems.append(f"{item.code}-{suffix}: {text[:16]!r} is not a finite number")
            return None
        return value

    def _flag(self, item: _Item, out: Decoded) -> Flag | None:
        text = item.values.get("Flag", "N")
        flag = _FLAGS.get(text)
        if flag is None:
            out.problems.append(f"{item.code}-Flag: {text[:4]!r} is not an HJ 212 data flag")
        return flag

    def _sample_time(self, station: Station, item: _Item, latest: int) -> int | None:
        """The analyzer's sample time, when given and plausible (never after ``latest`` + skew)."""
        text = item.values.get("SampleTime")
        ts = self._parse(text, station) if text else None
        if ts is None or ts < EARLIEST_NS or ts > latest + self.max_ahead:
            return None
        return ts
