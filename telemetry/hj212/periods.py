"""What one monitoring point sends to one platform: periods, CP items, units, flags.

Pure: no sockets, no database. The uplink sends what this builds; ``telemetry rules
test --hj212 NAME`` prints it for a replay, so an integrator sees before go-live what
the platform will receive.

Rules (documented in README; the water ones unverified against HJ 356-2019):
- each value in the unit its code prescribes (``telemetry.hj212.units``);
- a period's values combine the point's windows of each quantity within it; an hour
  (2061) or day (2031) is one window, whose own validity and flag go up;
- a minute period (2051, MinInterval minutes) of a continuous analyzer is valid (flag
  N) when at least ``min_valid_fraction`` (3/4: the share of an hour's 45 minutes) of
  its minutes are valid; of an analyzer with a measuring cycle, when it holds a valid
  measurement. Otherwise it carries the most frequent flag of its invalid minutes (F
  when minutes are missing), beside whatever valid values it has, never made-up ones;
- ``-SampleTime`` goes with the values of analyzers whose readings carry their sample time,
  and with values relayed from a data acquisition unit that sent one (``-EFlag`` too);
- a station's own period (a window of the period's length, ``method: station``) goes up
  with its own values and flag, never re-judged;
- real-time data (2011) leave out a value not refreshed within ``stale_after``: a
  silent analyzer's last value is not presented as fresh (no flag says "old value").
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime

from telemetry.aggregate import worst_flag
from telemetry.calendar import NS, Calendar, calendar
from telemetry.derive import converted
from telemetry.hj212 import units
from telemetry.hj212.config import Platform
from telemetry.hj212.extras import Extras
from telemetry.model import Aggregate, Flag, Reading
from telemetry.points import Point

KINDS = {"min": ("2051", "1m"), "hour": ("2061", "1h"), "day": ("2031", "1d"), "furnace": ("2111", "1m")}
FURNACE_CODE = "a01901"  # 2111: the furnace temperature's 5-minute means (2025 [V-code])
FURNACE_MINUTES = 5
CN_KIND = {cn: kind for kind, (cn, _) in KINDS.items()}
STATION = "station"  # ``Aggregate.method`` of a period a data acquisition unit sent (``drivers.hj212``)
Key = tuple[str, str, str]


def _no_cycle(key: Key) -> tuple[float, bool]:
    return 0.0, False


class PointEncoder:
    """Periods and CP items of one point for one platform."""

    def __init__(
        self,
        cfg: Platform,
        point: Point,
        site_zone: str,
        cycle_of: Callable[[Key], tuple[float, bool]] = _no_cycle,
        unit_error: Callable[[str, str], None] | None = None,
        extras: Extras | None = None,
    ) -> None:
        self.cfg = cfg
        self.point = point
        self.codes = cfg.code_map(point.kind)
        # A stack's O2-corrected series go up as their pollutant code's ``Zs`` values.
        self.converted = {converted(q): c for q, c in self.codes.items()} if point.kind == "gas" else {}
        self.min_minutes = cfg.min_interval_minutes
        # A 2025 platform takes a stack's furnace temperature as 5-minute means in their own
        # packets (CN 2111, DOMAIN-incinerator.md A4); a 2017 one in the minute data (2051).
        self.furnace_periods = cfg.version == "2025" and point.kind == "gas"
        self.site_cal = calendar(site_zone)
        self.platform_cal: Calendar = calendar(cfg.timezone)
        self.cycle_of = cycle_of  # (cycle seconds, readings carry the sample time) of a series
        self._unit_error = unit_error
        self.extras = extras  # SampleTime and EFlag of values relayed from a data acquisition unit

    # -- periods ------------------------------------------------------------------------------

    def holds(self, site: str, device: str, quantity: str, point: str | None = None) -> bool:
        """A series (or a window stored with ``point``) of this point that has a code."""
        if (quantity not in self.codes and quantity not in self.converted) or site != self.point.site:
            return False
        if point:
            return point == self.point.id
        return self.point.holds(device, quantity)

    def window(self, kind: str) -> str:
        """The period's length as a calendar window (``10m``, ``1h``, ``1d``)."""
        if kind == "furnace":
            return f"{FURNACE_MINUTES}m"
        return f"{self.min_minutes}m" if kind == "min" else KINDS[kind][1]

    def kinds(self) -> list[str]:
        """The period kinds this platform is sent, in the order they are looked at."""
        kinds = [k for k in ("min", "hour", "day") if k in self.cfg.send]
        return kinds + (["furnace"] if self.furnace_periods and "min" in self.cfg.send else [])

    def period(self, kind: str, window_start: int) -> int:
        return self.site_cal.start(self.window(kind), window_start)

    def end(self, kind: str, start: int) -> int:
        return self.site_cal.end(self.window(kind), start)

    # -- CP items -----------------------------------------------------------------------------

    def period_items(self, kind: str, start: int, windows: Iterable[Aggregate]) -> list[dict[str, str]] | None:
        """CP items of one period from the point's closed windows in it; None when it has none."""
        groups: dict[str, list[Aggregate]] = {}
        for w in windows:
            if self.holds(w.site, w.device, w.quantity, w.point):
                if kind == "furnace" and self.code_of(w.quantity) != (FURNACE_CODE, ""):
                    continue
                groups.setdefault(w.quantity, []).append(w)
        by_code: dict[str, dict[str, str]] = {}
        for quantity, group in sorted(groups.items()):
            code, zs = self.code_of(quantity)
            item = self._period_item(kind, code, group, zs)
            if kind == "furnace":  # 2111 carries the mean (and its flag) only
                item = {k: v for k, v in item.items() if k in (f"{code}-Avg", f"{code}-Flag")}
            _merge(by_code.setdefault(code, {}), item, code, zs)
        items: list[dict[str, str]] = [{"DataTime": self.local(start)}]
        items += [item for _, item in sorted(by_code.items()) if item]
        return items if len(items) > 1 else None

    def code_of(self, quantity: str) -> tuple[str, str]:
        """(pollutant code, field prefix): ``Zs`` for an O2-corrected series, else ""."""
        if quantity in self.codes:
            return self.codes[quantity], ""
        return self.converted[quantity], "Zs"

    def _period_item(self, kind: str, code: str, windows: list[Aggregate], zs: str = "") -> dict[str, str]:
        unit = windows[0].unit
        scale = units.factor(unit, code)
        item: dict[str, str] = {}
        valid = [w for w in windows if w.avg is not None]
        if valid and scale is not None:
            weight = sum(max(1, w.valid_count) for w in valid)
            avg = sum(w.avg * max(1, w.valid_count) for w in valid if w.avg is not None) / weight
            item[f"{code}-{zs}Min"] = _num(min(w.min for w in valid if w.min is not None) * scale)
            item[f"{code}-{zs}Avg"] = _num(avg * scale)
            item[f"{code}-{zs}Max"] = _num(max(w.max for w in valid if w.max is not None) * scale)
        elif valid:
            self._unit_problem(code, unit)
        cou = [w.cou for w in windows if w.cou is not None]
        if cou and scale is not None:
            item[f"{code}-Cou"] = _num(sum(cou))  # m3 for a flow, kg for a pollutant: the aggregator's units
        samples = [w.sample_ts for w in valid if w.sample_ts is not None]
        if samples and (self._sampled(windows[0]) or windows[0].method == STATION):
            item[f"{code}-SampleTime"] = self.local(max(samples))
        item[f"{code}-Flag"] = self._flag(kind, windows)
        return item

    def _flag(self, kind: str, windows: list[Aggregate]) -> str:
        if kind not in ("min", "furnace") or (len(windows) == 1 and windows[0].window == self.window(kind)):
            # an hour or a day; or a minute period that is one window: the daemon's 1-minute
            # window, or a station's own period of this length (relayed as the station judged it)
            return "N" if all(w.valid for w in windows) else _worst(w for w in windows if not w.valid)
        good = sum(w.valid for w in windows)
        cyclic = any(w.sample_ts is not None for w in windows)
        minutes = FURNACE_MINUTES if kind == "furnace" else self.min_minutes
        needed = 1 if cyclic else math.ceil(minutes * self.cfg.min_valid_fraction)
        if good >= needed:
            return "N"
        return _worst(w for w in windows if not w.valid)

    def rtd_items(self, latest: Iterable[tuple[Reading, int]], now: int) -> list[dict[str, str]] | None:
        """CP items of a real-time packet: the newest reading per quantity refreshed within
        ``stale_after`` (``latest`` holds each with the time it arrived)."""
        stale = int((self.cfg.stale_after or 3 * self.cfg.rtd_interval) * NS)
        fresh = [r for r, arrived in latest if now - arrived <= stale]
        if not fresh:
            return None
        items: list[dict[str, str]] = [{"DataTime": self.local(max(r.ts for r in fresh))}]
        by_code: dict[str, dict[str, str]] = {}
        for r in sorted(fresh, key=lambda r: r.quantity):
            code, zs = self.code_of(r.quantity)
            if zs and r.flag is not Flag.N:
                continue  # a converted value without a valid O2 is the measured one: not sent as Zs
            scale = units.factor(r.unit, code)
            if scale is None:
                self._unit_problem(code, r.unit)
                continue
            item = {f"{code}-{zs}Rtd": _num(r.value * scale), f"{code}-Flag": r.flag.value}
            if self.cycle_of((r.site, r.device, r.quantity))[1]:
                item[f"{code}-SampleTime"] = self.local(r.ts)
            extra = self.extras.get(r.site, r.device, r.quantity, r.ts) if self.extras is not None else None
            if extra is not None:
                if extra.sample_ts is not None:
                    item[f"{code}-SampleTime"] = self.local(extra.sample_ts)
                if extra.eflag:
                    item[f"{code}-EFlag"] = extra.eflag
            _merge(by_code.setdefault(code, {}), item, code, zs)
        items += [item for _, item in sorted(by_code.items())]
        return items if len(items) > 1 else None

    def _sampled(self, w: Aggregate) -> bool:
        return self.cycle_of((w.site, w.device, w.quantity))[1]

    def _unit_problem(self, code: str, unit: str) -> None:
        if self._unit_error is not None:
            self._unit_error(code, unit)

    # -- time ---------------------------------------------------------------------------------

    def local(self, ts: int) -> str:
        """Platform local time (Beijing for the city platforms), as QN and DataTime want it."""
        return datetime.fromtimestamp(ts / NS, self.platform_cal.zone).strftime("%Y%m%d%H%M%S")

    def parse_local(self, text: str) -> int:
        return self.platform_cal.parse_local(text)


def _merge(into: dict[str, str], item: dict[str, str], code: str, zs: str) -> None:
    """One CP item per code: the converted values beside the measured ones. The measured
    value's flag is the item's; a converted series' flag stands only without one."""
    flag = f"{code}-Flag"
    for key, value in item.items():
        if not (zs and key == flag and key in into):
            into[key] = value


def _worst(windows: Iterable[Aggregate]) -> str:
    return worst_flag(Counter(w.flag.value for w in windows if w.flag.value != "N")).value


def _num(value: float) -> str:
    return f"{value:.6g}"
