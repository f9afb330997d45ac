"""Minute, hour and day windows per series, aligned to each site's local time.

The regulator judges averages, not instants: a limit applies to the hourly or
daily mean of valid data (HJ 75/76, HJ 356). Here:
- only ``N``-flagged values are valid; min/avg/max cover valid values only;
- a minute is valid with one valid value; an hour with ``hour_min_valid_minutes``
  valid minutes (default 45); a day with ``day_min_valid_hours`` valid hours
  (default 20), each overridable per quantity (an analyzer with an hourly cycle
  gives one value an hour: set its ``hour_min_valid_minutes`` to 1);
- a day's average is the mean of its valid hours, flow-weighted by each hour's
  flow volume when ``flow_weighted_daily`` and the site's flow is known;
- ``cou``: flow volume in m3 (flow in m3/h, or L/s converted) and pollutant mass
  in kg (mg/L x m3 / 1000), from the same site's flow in the same window;
- a window closes ``grace`` after its end (late readings inside the grace count),
  by ``advance(now)``: the daemon calls it on a clock tick, a replay with event time.

Open windows are plain data, so ``snapshot``/``restore`` let a restart resume them.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from telemetry.model import Aggregate, Flag, Reading

NS = 1_000_000_000
WINDOW_NS = {"1m": 60 * NS, "1h": 3600 * NS, "1d": 86400 * NS}
_QUARTER_NS = 900 * NS


@functools.lru_cache(maxsize=10_000)
def _utc_offset(zone: zoneinfo.ZoneInfo | None, quarter: int) -> int:
    """A zone's UTC offset in ns during one quarter hour (zone changes fall on quarter hours),
    remembered: per reading, datetime.fromtimestamp was a hot spot."""
    if zone is None:
        return 8 * 3600 * NS  # HJ 212 platforms keep Beijing time
    delta = datetime.fromtimestamp(quarter * _QUARTER_NS / NS, zone).utcoffset()
    return int(delta.total_seconds()) * NS if delta else 0


FLOW_TO_M3H = {"m3/h": 1.0, "L/s": 3.6, "l/s": 3.6, "m3/s": 3600.0, "t/h": 1.0}


@dataclass(frozen=True)
class Validity:
    hour_min_valid_minutes: int = 45
    day_min_valid_hours: int = 20


@dataclass
class _Acc:
    """One open window of one series."""

    start: int
    unit: str
    count: int = 0
    valid_count: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None
    # Valid minutes as bits (bit m: minute m of the window has a valid value). A set held
    # up to 1,440 ints per series in a day window: hundreds of MB by evening at 7,000 series.
    minutes: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    hours: list[list[Any]] = field(default_factory=list)  # day: [start, avg, valid, low, high, volume]

    def add(self, r: Reading) -> None:
        self.count += 1
        if r.flag is not Flag.N:
            self.flags[r.flag.value] = self.flags.get(r.flag.value, 0) + 1
            return
        self.valid_count += 1
        self.total += r.value
        self.low = r.value if self.low is None else min(self.low, r.value)
        self.high = r.value if self.high is None else max(self.high, r.value)
        self.minutes |= 1 << ((r.ts - self.start) // (60 * NS))


Key = tuple[str, str, str]  # site, device, quantity


class Aggregator:
    def __init__(
        self,
        zones: Mapping[str, str],
        windows: Iterable[str] = ("1m", "1h", "1d"),
        grace_s: float = 120.0,
        validity: Validity = Validity(),
        overrides: Mapping[str, Validity] | None = None,
        flow_quantity: str = "flow",
        flow_weighted_daily: bool = True,
    ) -> None:
        self._zones = {site: zoneinfo.ZoneInfo(zone) for site, zone in zones.items()}
        self.windows = [w for w in ("1m", "1h", "1d") if w in set(windows)]
        # Days are built from closed hours, so hours are kept whenever days are wanted.
        self._levels = [w for w in ("1m", "1h") if w in self.windows or (w == "1h" and "1d" in self.windows)]
        self._closed_until: dict[str, int] = {}
        self.grace = int(grace_s * NS)
        self._validity = validity
        self._overrides = dict(overrides or {})
        self.flow = flow_quantity
        self.flow_weighted = flow_weighted_daily
        self._open: dict[str, dict[Key, dict[int, _Acc]]] = {w: {} for w in ("1m", "1h", "1d")}
        self._flow_volume: dict[tuple[str, str, int], float] = {}  # (site, window, start) -> m3
        self.late = 0  # readings that arrived after their window closed

    def add(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            offset = self._offset(r.site, r.ts)
            key = (r.site, r.device, r.quantity)
            late = False
            for window in self._levels:
                size = WINDOW_NS[window]
                start = (r.ts + offset) // size * size - offset
                if start + size + self.grace <= self._closed_until.get(window, 0):
                    late = True
                    continue
                series = self._open[window].setdefault(key, {})
                acc = series.get(start)
                if acc is None:
                    acc = series[start] = _Acc(start, r.unit)
                acc.add(r)
            self.late += late

    def advance(self, now_ns: int) -> list[Aggregate]:
        """Close every window whose end + grace has passed; minute, then hour, then day."""
        out: list[Aggregate] = []
        for window in [*self._levels, "1d"]:
            size = WINDOW_NS[window]
            due: list[tuple[Key, _Acc]] = []
            for key, series in self._open[window].items():
                for start in [s for s in series if s + size + self.grace <= now_ns]:
                    due.append((key, series.pop(start)))
            # Flow first: a pollutant's mass needs the same window's flow volume.
            due.sort(key=lambda item: (item[0][2] != self.flow, item[1].start, item[0]))
            for key, acc in due:
                agg = self._close(window, key, acc)
                if window in self.windows:
                    out.append(agg)
            self._closed_until[window] = now_ns
            for key in [k for k, s in self._open[window].items() if not s]:
                del self._open[window][key]
        return out

    def _close(self, window: str, key: Key, acc: _Acc) -> Aggregate:
        site, device, quantity = key
        size = WINDOW_NS[window]
        rules = self._overrides.get(quantity, self._validity)
        if window == "1d":
            return self._close_day(key, acc, rules)
        avg = acc.total / acc.valid_count if acc.valid_count else None
        valid = acc.valid_count > 0 if window == "1m" else acc.minutes.bit_count() >= rules.hour_min_valid_minutes
        cou = self._cou(site, window, acc.start, quantity, acc.unit, avg, size)
        agg = Aggregate(
            acc.start,
            window,
            site,
            device,
            quantity,
            acc.unit,
            acc.low,
            avg,
            acc.high,
            acc.count,
            acc.valid_count,
            valid,
            cou,
            Flag.N if valid else _worst(acc.flags),
        )
        if window == "1h" and "1d" in self.windows:
            self._feed_day(key, agg)
        return agg

    def _cou(
        self, site: str, window: str, start: int, quantity: str, unit: str, avg: float | None, size: int
    ) -> float | None:
        if avg is None:
            return None
        if quantity == self.flow:
            volume = avg * FLOW_TO_M3H.get(unit, 1.0) * size / (3600 * NS)
            self._flow_volume[(site, window, start)] = volume
            return volume
        volume_m3 = self._flow_volume.get((site, window, start))
        if volume_m3 is None or unit not in ("mg/L", "mg/l"):
            return None
        return avg * volume_m3 / 1000.0  # mg/L x m3 = g; /1000 = kg

    def _feed_day(self, key: Key, hour: Aggregate) -> None:
        offset = self._offset(hour.site, hour.ts)
        size = WINDOW_NS["1d"]
        start = (hour.ts + offset) // size * size - offset
        series = self._open["1d"].setdefault(key, {})
        acc = series.get(start) or series.setdefault(start, _Acc(start, hour.unit))
        acc.count += hour.count
        acc.valid_count += hour.valid_count
        for flag in (hour.flag,) if hour.flag is not Flag.N else ():
            acc.flags[flag.value] = acc.flags.get(flag.value, 0) + 1
        volume = self._flow_volume.get((hour.site, "1h", hour.ts))
        acc.hours.append([hour.ts, hour.avg, hour.valid, hour.min, hour.max, volume, hour.cou])

    def _close_day(self, key: Key, acc: _Acc, rules: Validity) -> Aggregate:
        site, device, quantity = key
        valid_hours = [h for h in acc.hours if h[2] and h[1] is not None]
        valid = len(valid_hours) >= rules.day_min_valid_hours
        avg = None
        if valid_hours:
            weights = [h[5] for h in valid_hours]
            if self.flow_weighted and quantity != self.flow and all(w for w in weights):
                avg = sum(h[1] * h[5] for h in valid_hours) / sum(weights)
            else:
                avg = sum(h[1] for h in valid_hours) / len(valid_hours)
        lows = [h[3] for h in valid_hours if h[3] is not None]
        highs = [h[4] for h in valid_hours if h[4] is not None]
        parts = [h[6] for h in acc.hours if h[6] is not None]
        cou = sum(parts) if parts else None
        if quantity == self.flow and cou is not None:
            self._flow_volume[(site, "1d", acc.start)] = cou
        return Aggregate(
            acc.start,
            "1d",
            site,
            device,
            quantity,
            acc.unit,
            min(lows) if lows else None,
            avg,
            max(highs) if highs else None,
            acc.count,
            acc.valid_count,
            valid,
            cou,
            Flag.N if valid else _worst(acc.flags),
        )

    def _offset(self, site: str, ts: int) -> int:
        return _utc_offset(self._zones.get(site), ts // _QUARTER_NS)

    def open_windows(self) -> int:
        return sum(len(s) for w in self._open.values() for s in w.values())

    def snapshot(self) -> bytes:
        """Open windows as JSON, for a restart to resume them (``restore`` takes it parsed).

        Written window by window into one buffer: building the whole state as lists and dicts
        first was a transient of ~30 MiB every 30 s at 7,000 series, and objects the MQTT
        thread allocated meanwhile pinned that memory (soak RSS stepped up ~50 MiB at times).
        """
        buf = bytearray(b'{"open":{')
        for i, (window, series) in enumerate(self._open.items()):
            buf += b'%s"%s":[' % (b"," if i else b"", window.encode())
            first = True
            for key, opened in series.items():
                for start, acc in opened.items():
                    if not first:
                        buf += b","
                    buf += orjson.dumps([key, start, _acc_dict(acc)])
                    first = False
            buf += b"]"
        buf += b'},"flow":' + orjson.dumps([[k, v] for k, v in self._flow_volume.items()])
        buf += b',"closed_until":' + orjson.dumps(self._closed_until) + b"}"
        return bytes(buf)

    def restore(self, data: Mapping[str, Any]) -> None:
        for window, entries in data.get("open", {}).items():
            for key, start, acc in entries:
                self._open[window].setdefault(tuple(key), {})[int(start)] = _acc_from(acc)
        self._flow_volume = {tuple(k): v for k, v in data.get("flow", [])}
        self._closed_until = {k: int(v) for k, v in data.get("closed_until", {}).items()}

    def sites(self) -> set[str]:
        """Configured sites and any an open window belongs to."""
        return set(self._zones) | {key[0] for series in self._open.values() for key in series}

    def adoptable_hours_since(self) -> int | None:
        """After a restore: the earliest start of an hour that closed after the snapshot (its
        day window does not hold it yet), or None when no days are aggregated."""
        if "1d" not in self.windows:
            return None
        return self._closed_until.get("1h", 0) - WINDOW_NS["1h"] - self.grace + 1

    def adopt_hours(self, hours: Iterable[Aggregate]) -> None:
        """Hours closed and stored after the snapshot (see ``adoptable_hours_since``) go into
        their day windows as they did when they closed (flow first: pollutant days are
        weighted by hourly flow)."""
        for hour in sorted(hours, key=lambda a: (a.quantity != self.flow, a.ts)):
            if hour.quantity == self.flow and hour.cou is not None:
                self._flow_volume[(hour.site, "1h", hour.ts)] = hour.cou
            self._feed_day((hour.site, hour.device, hour.quantity), hour)

    def committed(self, window: str, last_start: int) -> int:
        """After a restore: windows of this size starting at or before ``last_start`` were closed
        and stored after the snapshot was taken (windows close by time, all series at once).
        Forget them, and treat their readings as late, instead of closing them again with only
        the readings the snapshot held, over the complete aggregates. Returns how many went."""
        size = WINDOW_NS[window]
        self._closed_until[window] = max(self._closed_until.get(window, 0), last_start + size + self.grace)
        dropped = 0
        for series in self._open[window].values():
            for start in [s for s in series if s <= last_start]:
                del series[start]
                dropped += 1
        return dropped

    def prune_flow(self, before_ns: int) -> None:
        """Forget flow volumes of windows that started before ``before_ns`` (they closed long ago)."""
        self._flow_volume = {k: v for k, v in self._flow_volume.items() if k[2] >= before_ns}


def _worst(flags: Mapping[str, int]) -> Flag:
    """The flag that explains an invalid window: the most frequent non-N flag, else F (no data)."""
    if not flags:
        return Flag.F
    return Flag(max(flags.items(), key=lambda kv: kv[1])[0])


def _acc_dict(acc: _Acc) -> dict[str, Any]:
    return {**acc.__dict__, "minutes": f"{acc.minutes:x}"}  # hex: JSON numbers stop at 64 bits


def _acc_from(data: Mapping[str, Any]) -> _Acc:
    minutes = data["minutes"]  # a list of minute numbers in snapshots of earlier versions
    bits = int(minutes, 16) if isinstance(minutes, str) else sum(1 << m for m in set(minutes))
    return _Acc(**{**data, "minutes": bits})
