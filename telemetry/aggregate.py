"""Minute, hour and day windows per series, on each site's local calendar, per monitoring point.

The regulator judges averages, not instants: a limit applies to the hourly or
daily mean of valid data (HJ 75/76, HJ 356). Here (every number configurable,
the water ones unverified against HJ 356-2019's own text, see README):
- only ``N``-flagged values are valid; min/avg/max cover valid values only;
- a minute is valid with one valid value; an hour of a continuous analyzer with
  ``hour_min_valid_minutes`` valid minutes (45); a day with ``day_min_valid_hours``
  valid hours (20);
- an analyzer with a measuring ``cycle`` holds its result in a register: one value
  per cycle enters aggregation (a new sample time, or a changed value, or the same
  value a whole cycle later), stamped with its sample time. Its hour is the mean of
  the measurements in it (valid with ``hour_min_measurements``, 1); for cycles above
  an hour, an hour without a measurement carries the last valid one while it is at
  most one cycle old (``hour_value: carry``; ``measured`` leaves such hours invalid);
- a value below the quantity's ``detection_limit`` counts as half the limit
  (``below_detection``: ``half``, ``limit``, ``zero`` or ``keep``);
- a water point's day is Σ(Cᵢ·Vᵢ)/ΣVᵢ over its valid hours, Vᵢ the hour's volume of the
  point's own flow: a zero-flow hour weighs nothing, and so does an hour whose volume is
  unknown (the flow meter was down: ``method`` says ``flow_partial``). A day with no volume
  at all, or that discharged nothing, and a stack's day (HJ 75) are the arithmetic mean of
  the valid hours (``method: arithmetic``);
- ``cou``: flow volume in m3 and pollutant mass in kg (mg/L x m3 / 1000, mg/m3 x m3 / 1e6)
  from the point's flow in the same window, units from ``telemetry.hj212.units`` (a flow in
  an unknown unit has no volume); negative readings never make negative mass;
- a cyclic hour with no measurement carries the last one only if the analyzer flagged
  nothing in it (a fault hour stays invalid with its flag);
- readings stamped more than 5 minutes ahead of the daemon's clock are left out (counted);
- a window closes ``grace`` after its end (late readings inside the grace count),
  by ``advance(now)``: the daemon calls it on a clock tick, a replay with event time.

Open windows are plain data, so ``snapshot``/``restore`` let a restart resume them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import orjson

from telemetry.calendar import FIXED_NS, HOUR_NS, MINUTE_NS, NS, Calendar, calendar
from telemetry.derive import measured_of
from telemetry.hj212 import units
from telemetry.model import Aggregate, Flag, Reading
from telemetry.points import Point, Points

WINDOW_NS = {"1m": MINUTE_NS, "1h": HOUR_NS, "1d": 86400 * NS}  # a day's real length: the calendar


@dataclass(frozen=True)
class Validity:
    """How one series' windows are judged (the defaults, or a quantity's overrides)."""

    hour_min_valid_minutes: int = 45
    day_min_valid_hours: int = 20
    cycle_s: float = 0.0  # the analyzer's measuring cycle; 0: a continuous reading
    sampled: bool = False  # readings carry the analyzer's sample time (repeated until the next sample)
    hour_value: Literal["measured", "carry"] = "carry"
    hour_min_measurements: int = 1
    detection_limit: float | None = None
    below_detection: Literal["half", "limit", "zero", "keep"] = "half"


@dataclass(frozen=True)
class Override:
    """Settings for the series it selects (by quantity, and optionally site, point, device).
    Every matching override applies in order; the keys it sets win over earlier ones."""

    quantity: str
    settings: Mapping[str, Any]
    site: str | None = None
    point: str | None = None
    device: str | None = None

    def selects(self, site: str, device: str, quantity: str, point: Point | None) -> bool:
        return (
            self.quantity == quantity
            and self.site in (None, site)
            and self.device in (None, device)
            and (self.point is None or (point is not None and point.id == self.point))
        )


SeriesRules = Callable[[str, str, str, Point | None], Validity]
_VALIDITY_FIELDS = {f.name for f in fields(Validity)}


def rules_from(default: Validity = Validity(), overrides: Sequence[Override] = ()) -> SeriesRules:
    def resolve(site: str, device: str, quantity: str, point: Point | None) -> Validity:
        settings: dict[str, Any] = {}
        for override in overrides:
            if override.selects(site, device, quantity, point):
                settings.update({k: v for k, v in override.settings.items() if v is not None})
        if not settings:
            return default
        unknown = set(settings) - _VALIDITY_FIELDS
        if unknown:
            raise ValueError(f"unknown aggregation settings {sorted(unknown)}")
        return Validity(**{**default.__dict__, **settings})

    return resolve


@dataclass(frozen=True)
class _Series:
    """What the aggregator knows of one series, resolved once."""

    rules: Validity
    point: Point | None
    is_flow: bool
    cal: Calendar


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
    hours: list[list[Any]] = field(default_factory=list)  # day: [start, avg, valid, low, high, volume, cou]
    sample: int = 0  # ts of the newest valid value (the sample time, for a cycle)
    carry: list[Any] | None = None  # a cyclic series' hour: [ts, value] of the last measurement before it

    def add(self, r: Reading) -> None:
        self.count += 1
        if r.flag is not Flag.N:
            self.flags[r.flag.value] = self.flags.get(r.flag.value, 0) + 1
            return
        self.valid_count += 1
        self.total += r.value
        self.low = r.value if self.low is None else min(self.low, r.value)
        self.high = r.value if self.high is None else max(self.high, r.value)
        self.minutes |= 1 << ((r.ts - self.start) // MINUTE_NS)
        self.sample = r.ts if r.ts > self.sample else self.sample  # max() costs a call per reading


Key = tuple[str, str, str]  # site, device, quantity
MAX_AHEAD_NS = 300 * NS  # a reading stamped later than this ahead of the daemon's clock is not aggregated


class Aggregator:
    def __init__(
        self,
        zones: Mapping[str, str],
        windows: Iterable[str] = ("1m", "1h", "1d"),
        grace_s: float = 120.0,
        validity: Validity = Validity(),
        rules: SeriesRules | None = None,
        points: Points | None = None,
        flow_weighted_daily: bool = True,
        external: Iterable[tuple[str, str]] = (),
    ) -> None:
        # (site, device) of sources that send their own windows (HJ 212 stations): not aggregated
        # here, or their hours would be counted twice and stored over the station's own.
        self.external = frozenset(external)
        self._cals = {site: calendar(zone) for site, zone in zones.items()}
        self.points = points if points is not None else Points.from_config(zones, ())
        self.windows = [w for w in ("1m", "1h", "1d") if w in set(windows)]
        # Days are built from closed hours, so hours are kept whenever days are wanted.
        self._levels = [w for w in ("1m", "1h") if w in self.windows or (w == "1h" and "1d" in self.windows)]
        self._closed_until: dict[str, int] = {}
        self.grace = int(grace_s * NS)
        self._rules = rules if rules is not None else rules_from(validity)
        self.flow_weighted = flow_weighted_daily
        self._open: dict[str, dict[Key, dict[int, _Acc]]] = {w: {} for w in ("1m", "1h", "1d")}
        self._flow_volume: dict[tuple[str, str, int], float] = {}  # (point, window, start) -> m3
        self._samples: dict[Key, tuple[int, float, str]] = {}  # cyclic series: the last valid measurement
        self._series_cache: dict[Key, _Series] = {}
        self.late = 0  # readings that arrived after their window closed
        self.held = 0  # readings of a cyclic series repeating a measurement already taken
        self.future = 0  # readings stamped too far ahead of the daemon's clock

    def _series(self, key: Key) -> _Series:
        found = self._series_cache.get(key)
        if found is None:
            site, device, quantity = key
            point = self.points.point_of(site, device, quantity)
            is_flow = point.is_flow(device, quantity) if point is not None else quantity == self.points.flow_quantity
            found = _Series(self._rules(site, device, quantity, point), point, is_flow, self.calendar(site))
            if len(self._series_cache) > 200_000:  # series names come from topics others control
                self._series_cache.clear()
            self._series_cache[key] = found
        return found

    def calendar(self, site: str) -> Calendar:
        return self._cals.get(site) or calendar()

    def cycle_of(self, key: Key) -> tuple[float, bool]:
        """A series' measuring cycle in seconds (0: continuous) and whether its readings carry
        the analyzer's sample time (for the uplink's freshness and ``SampleTime``)."""
        rules = self._series(key).rules
        return rules.cycle_s, rules.sampled

    def closed_through(self, window: str) -> int:
        """Every window of this size ending at or before this time has closed."""
        return self._closed_until.get(window, 0) - self.grace

    def add(self, readings: Iterable[Reading], now_ns: int | None = None) -> None:
        """Readings into their windows. With ``now_ns`` (the daemon's clock), a reading stamped
        more than ``MAX_AHEAD_NS`` later is left out and counted: a device clock running ahead
        must not open tomorrow's windows, nor make an analyzer's next results look old."""
        cache = self._series_cache
        ahead = now_ns + MAX_AHEAD_NS if now_ns is not None else None
        if self.external:
            readings = [r for r in readings if (r.site, r.device) not in self.external]
        for reading in readings:
            r = reading
            if ahead is not None and r.ts > ahead:
                self.future += 1
                continue
            key = (r.site, r.device, r.quantity)
            series = cache.get(key) or self._series(key)
            rules = series.rules
            if r.flag is Flag.N and (rules.cycle_s or rules.detection_limit is not None):  # most series: neither
                if rules.cycle_s and not self._new_measurement(key, r, series):
                    self.held += 1
                    if "1h" in self._levels:  # a held value still says the analyzer answered that hour
                        self._acc(key, "1h", series.cal.start("1h", r.ts), r.unit, rules, count=True)
                    continue
                if _below(rules, r.value):
                    r = r._replace(value=_below_detection(rules))
            offset = series.cal.offset(r.ts)
            late = False
            for window in self._levels:
                size = FIXED_NS[window]
                acc = self._acc(key, window, (r.ts + offset) // size * size - offset, r.unit, rules)
                if acc is None:
                    late = True
                else:
                    acc.add(r)
            self.late += late

    def _acc(self, key: Key, window: str, start: int, unit: str, rules: Validity, count: bool = False) -> _Acc | None:
        """The open window of this series starting at ``start``, opened if need be; None when it has
        closed already. A cyclic series' hour remembers the last measurement before it (readings
        come in time order), which it carries if it gets none of its own."""
        if start + FIXED_NS[window] + self.grace <= self._closed_until.get(window, 0):
            return None
        opened = self._open[window].setdefault(key, {})
        acc = opened.get(start)
        if acc is None:
            acc = opened[start] = _Acc(start, unit)
            if window == "1h" and rules.cycle_s and (last := self._samples.get(key)) is not None:
                acc.carry = list(last)
        if count:
            acc.count += 1
        return acc

    def _new_measurement(self, key: Key, r: Reading, series: _Series) -> bool:
        """Whether a valid reading of a cyclic series is a new measurement, not the held one again."""
        rules = series.rules
        last = self._samples.get(key)
        if last is not None:
            ts, value, _ = last
            if r.ts <= ts:
                return False  # the same sample time again (or older)
            if not rules.sampled and r.value == value and r.ts - ts < rules.cycle_s * NS:
                return False  # unchanged within the cycle: the register still holds the last result
            self._open_carried(key, series, ts, series.cal.start("1h", r.ts))  # the hours in between
        self._samples[key] = (r.ts, r.value, r.unit)
        return True

    def _open_carried(self, key: Key, series: _Series, measured: int, until: int) -> None:
        """Open the hours after a measurement that its cycle (longer than an hour) covers, up to
        ``until``, so they close carrying it even when no reading falls in them: with a sample-time
        register every poll carries the sample's time, so later hours see no reading at all."""
        rules = series.rules
        if rules.hour_value != "carry" or rules.cycle_s * NS <= HOUR_NS or "1h" not in self._levels:
            return
        unit = self._samples[key][2]
        start = series.cal.start("1h", measured) + HOUR_NS
        while start + HOUR_NS - measured <= rules.cycle_s * NS and start < until:
            self._acc(key, "1h", start, unit, rules)
            start += HOUR_NS

    def advance(self, now_ns: int) -> list[Aggregate]:
        """Close every window whose end + grace has passed; minute, then hour, then day."""
        for key, (measured, _, _) in self._samples.items():  # hours the last measurement covers, now due
            self._open_carried(key, self._series(key), measured, now_ns - self.grace - HOUR_NS + 1)
        out: list[Aggregate] = []
        for window in [*self._levels, "1d"]:
            due: list[tuple[Key, _Acc]] = []
            latest = now_ns - self.grace - FIXED_NS.get(window, 0)  # minutes and hours: a fixed length
            for key, series in self._open[window].items():
                if window in FIXED_NS:
                    starts = [s for s in series if s <= latest]
                else:  # a day ends at the next local midnight
                    cal = self._series(key).cal
                    starts = [s for s in series if cal.end(window, s) + self.grace <= now_ns]
                for start in starts:
                    due.append((key, series.pop(start)))
            # Flow first: a pollutant's mass and its day's weights need the same window's flow volume.
            due.sort(key=lambda item: (not self._series(item[0]).is_flow, item[1].start, item[0]))
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
        series = self._series(key)
        rules = series.rules
        if window == "1d":
            return self._close_day(key, acc, series)
        avg = acc.total / acc.valid_count if acc.valid_count else None
        low, high = acc.low, acc.high
        sample = acc.sample or None
        method = ""
        if window == "1m":
            valid = acc.valid_count > 0
        elif rules.cycle_s:
            method = "cycles"
            valid = acc.valid_count >= rules.hour_min_measurements
            carry = acc.carry
            if (
                not acc.valid_count
                and not acc.flags  # an hour the analyzer flagged (fault, maintenance) is no normal hour
                and rules.hour_value == "carry"
                and rules.cycle_s * NS > HOUR_NS
                and carry is not None
                and carry[0] < acc.start
                and acc.start + HOUR_NS - carry[0] <= rules.cycle_s * NS
            ):
                sample, value = int(carry[0]), float(carry[1])
                avg = _below_detection(rules) if _below(rules, value) else value
                low = high = avg
                valid, method = True, "carried"
        else:
            method = "minutes"
            valid = acc.minutes.bit_count() >= rules.hour_min_valid_minutes
        size = FIXED_NS[window]
        # An O2-corrected concentration has no mass: the mass is the measured one's.
        cou = None if measured_of(quantity) else self._cou(series, window, acc.start, acc.unit, avg, size)
        agg = Aggregate(
            acc.start,
            window,
            site,
            device,
            quantity,
            acc.unit,
            low,
            avg,
            high,
            acc.count,
            acc.valid_count,
            valid,
            cou,
            Flag.N if valid else worst_flag(acc.flags),
            series.point.id if series.point else "",
            method,
            sample if rules.cycle_s else None,
        )
        if window == "1h" and "1d" in self.windows:
            self._feed_day(key, agg)
        return agg

    def _cou(self, series: _Series, window: str, start: int, unit: str, avg: float | None, size: int) -> float | None:
        if avg is None:
            return None
        point = series.point
        if series.is_flow:
            rate = units.m3_per_hour(unit)
            if rate is None:
                return None  # a flow without a known unit has no volume: never guessed
            volume = max(avg, 0.0) * rate * size / HOUR_NS
            if point is not None:
                self._flow_volume[(point.id, window, start)] = volume
            return volume
        factor = units.kg_per_unit_m3(unit)
        flow = self._flow_volume.get((point.id, window, start)) if point is not None else None
        if flow is None or factor is None:
            return None
        return max(avg, 0.0) * flow * factor  # a negative reading (analyzer offset) is no negative mass

    def _feed_day(self, key: Key, hour: Aggregate) -> None:
        series = self._series(key)
        start = series.cal.day_start(hour.ts)
        opened = self._open["1d"].setdefault(key, {})
        acc = opened.get(start) or opened.setdefault(start, _Acc(start, hour.unit))
        acc.count += hour.count
        acc.valid_count += hour.valid_count
        for flag in (hour.flag,) if hour.flag is not Flag.N else ():
            acc.flags[flag.value] = acc.flags.get(flag.value, 0) + 1
        point = series.point
        volume = self._flow_volume.get((point.id, "1h", hour.ts)) if point is not None else None
        acc.hours.append([hour.ts, hour.avg, hour.valid, hour.min, hour.max, volume, hour.cou])

    def _close_day(self, key: Key, acc: _Acc, series: _Series) -> Aggregate:
        site, device, quantity = key
        valid_hours = [h for h in acc.hours if h[2] and h[1] is not None]
        valid = len(valid_hours) >= series.rules.day_min_valid_hours
        avg = None
        method = ""
        if valid_hours:
            with_volume = [h for h in valid_hours if h[5] is not None]
            volume = sum(h[5] for h in with_volume)
            point = series.point
            # Water: flow-weighted (HJ 356 as commonly read); a stack's day is the plain mean of its
            # valid hours (HJ 75). Hours without a volume (the flow meter was down) weigh nothing.
            if self.flow_weighted and not series.is_flow and point is not None and point.kind == "water" and volume > 0:
                avg = sum(h[1] * h[5] for h in with_volume) / volume
                method = "flow" if len(with_volume) == len(valid_hours) else "flow_partial"
            else:
                avg = sum(h[1] for h in valid_hours) / len(valid_hours)
                method = "arithmetic"
        lows = [h[3] for h in valid_hours if h[3] is not None]
        highs = [h[4] for h in valid_hours if h[4] is not None]
        parts = [h[6] for h in acc.hours if h[6] is not None]
        cou = sum(parts) if parts else None
        if series.is_flow and cou is not None and series.point is not None:
            self._flow_volume[(series.point.id, "1d", acc.start)] = cou
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
            Flag.N if valid else worst_flag(acc.flags),
            series.point.id if series.point else "",
            method,
        )

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
        buf += b',"samples":' + orjson.dumps([[k, v] for k, v in self._samples.items()])
        buf += b',"closed_until":' + orjson.dumps(self._closed_until) + b"}"
        return bytes(buf)

    def restore(self, data: Mapping[str, Any]) -> None:
        for window, entries in data.get("open", {}).items():
            for key, start, acc in entries:
                self._open[window].setdefault(tuple(key), {})[int(start)] = _acc_from(acc)
        self._flow_volume = {tuple(k): v for k, v in data.get("flow", [])}
        self._samples = {tuple(k): (int(t), float(v), str(u)) for k, (t, v, u) in data.get("samples", [])}
        self._closed_until = {k: int(v) for k, v in data.get("closed_until", {}).items()}

    def sites(self) -> set[str]:
        """Configured sites and any an open window belongs to."""
        return set(self._cals) | {key[0] for series in self._open.values() for key in series}

    def adoptable_hours_since(self) -> int | None:
        """After a restore: the earliest start of an hour that closed after the snapshot (its
        day window does not hold it yet), or None when no days are aggregated."""
        if "1d" not in self.windows:
            return None
        return self._closed_until.get("1h", 0) - HOUR_NS - self.grace + 1

    def adopt_hours(self, hours: Iterable[Aggregate]) -> None:
        """Hours closed and stored after the snapshot (see ``adoptable_hours_since``) go into
        their day windows as they did when they closed (flow first: pollutant days are
        weighted by hourly flow)."""
        keyed = [((h.site, h.device, h.quantity), h) for h in hours]
        for key, hour in sorted(keyed, key=lambda kh: (not self._series(kh[0]).is_flow, kh[1].ts)):
            series = self._series(key)
            if series.is_flow and hour.cou is not None and series.point is not None:
                self._flow_volume[(series.point.id, "1h", hour.ts)] = hour.cou
            self._feed_day(key, hour)

    def committed(self, window: str, last_start: int, site: str | None = None) -> int:
        """After a restore: windows of this size starting at or before ``last_start`` were closed
        and stored after the snapshot was taken (windows close by time, all series at once).
        Forget them, and treat their readings as late, instead of closing them again with only
        the readings the snapshot held, over the complete aggregates. Returns how many went."""
        end = self.calendar(site or "").end(window, last_start)
        self._closed_until[window] = max(self._closed_until.get(window, 0), end + self.grace)
        dropped = 0
        for series in self._open[window].values():
            for start in [s for s in series if s <= last_start]:
                del series[start]
                dropped += 1
        return dropped

    def prune(self, before_ns: int) -> None:
        """Forget flow volumes of windows that started before ``before_ns`` (they closed long ago),
        and the measurements of cyclic series silent since then."""
        self._flow_volume = {k: v for k, v in self._flow_volume.items() if k[2] >= before_ns}
        self._samples = {k: last for k, last in self._samples.items() if last[0] >= before_ns}


def _below(rules: Validity, value: float) -> bool:
    return rules.detection_limit is not None and value < rules.detection_limit and rules.below_detection != "keep"


def _below_detection(rules: Validity) -> float:
    limit = rules.detection_limit or 0.0
    return {"half": limit / 2, "limit": limit, "zero": 0.0}[rules.below_detection]


def worst_flag(flags: Mapping[str, int]) -> Flag:
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
