"""The daily compliance report (日报) of one site for one local day: what a supervisor reads at 8 a.m.

Computed from what the daemon stored (the outbox's closed windows, its alert log and the HJ 212
acknowledgements) or from a replay of recorded readings (``telemetry report daily --input``),
never from InfluxDB: the figures are the ones the rules judged. Pure: the caller gathers the
inputs (``telemetry.cli``, the scheduler) and renders the result (``telemetry.report_render``).

Per monitoring point and regulated quantity (one with an hourly or daily limit at that point):
- the daily mean against the daily limit: ``pass``, ``exceeded``, ``insufficient`` (the day
  window invalid or missing) or ``no_limit`` (only an hourly limit);
- the valid hours above the hourly limit, and the day's hourly means for the chart;
- completeness: readings received against expected (minutes of the day for a continuous
  analyzer; hours for one with a measuring cycle), valid against received, and their product,
  the "effective transmission rate" regulators track. How HJ 356 defines these rates and the
  90 % threshold are unverified (DOMAIN-incinerator.md B5): the thresholds are settings.
Per site: capacity use (each ``capacity`` rule's day total against its design, each ``stock``
rule's last hour against its cap), the alerts active during the day with their durations and
who acknowledged them, and per HJ 212 platform the periods it acknowledged against those due.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from telemetry.calendar import HOUR_NS, MINUTE_NS, NS, calendar
from telemetry.marks import judged_day
from telemetry.model import Aggregate


@dataclass(frozen=True)
class Limits:
    """A regulated quantity's limits at one point (from the rules' limits and standards)."""

    daily_above: float | None = None
    daily_below: float | None = None
    hourly_above: float | None = None
    hourly_below: float | None = None

    def breaks(self, value: float, window: str) -> bool:
        above, below = (
            (self.daily_above, self.daily_below) if window == "1d" else (self.hourly_above, self.hourly_below)
        )
        return (above is not None and value > above) or (below is not None and value < below)

    def has(self, window: str) -> bool:
        if window == "1d":
            return self.daily_above is not None or self.daily_below is not None
        return self.hourly_above is not None or self.hourly_below is not None


@dataclass(frozen=True)
class Capacity:
    name: str
    quantity: str
    design: float  # per day, in the rate's unit without /h (t/h -> t)
    source: str = "rate"  # or "totalizer"
    device: str | None = None  # the rule's device filter


@dataclass(frozen=True)
class Stock:
    name: str
    quantity: str
    capacity: float
    above_fraction: float
    device: str | None = None


@dataclass(frozen=True)
class Platform:
    name: str
    point: str
    send: tuple[str, ...]
    min_interval_minutes: int


@dataclass(frozen=True)
class Thresholds:
    """Rates below these are marked (unverified figures: DOMAIN-incinerator.md B5)."""

    transmission: float = 0.9
    validity: float = 0.9
    effective: float = 0.9


@dataclass(frozen=True)
class SiteSetup:
    """What the configuration says about one site, for its report."""

    site: str
    name: str
    zone: str
    limits: Mapping[tuple[str, str], Limits]  # (point, quantity) -> limits
    capacities: Sequence[Capacity] = ()
    stocks: Sequence[Stock] = ()
    platforms: Sequence[Platform] = ()
    thresholds: Thresholds = Thresholds()
    # (point, device, quantity) the configuration declares: reported even with no data at all
    expected: frozenset[tuple[str, str, str]] = frozenset()
    cycle_of: Callable[[str, str], float] = lambda device, quantity: 0.0  # an analyzer's measuring cycle (s)
    day_min_valid_hours: int = 20  # the aggregation's: the share of the hours a judged day must keep


@dataclass
class QuantityDay:
    point: str
    device: str
    quantity: str
    unit: str
    mean: float | None
    limit: float | None  # the daily limit it was judged against (the nearer bound)
    verdict: str  # pass, exceeded, insufficient, no_limit
    hours_above: int
    hourly_limit: float | None
    hours: list[tuple[int, float | None, bool]]  # (start ns, mean, valid) of each hour
    expected: int
    received: int
    valid: int
    basis: str  # "minutes" or "hours" (an analyzer with a measuring cycle)
    transmission: float
    validity: float
    effective: float
    below_threshold: bool
    exempt_hours: int = 0  # hours a furnace's marks exempt from the daily mean (within its budget)


@dataclass
class CapacityDay:
    name: str
    device: str
    quantity: str
    unit: str
    total: float | None
    design: float
    use: float | None  # total / design
    hours_with_data: int


@dataclass
class StockDay:
    name: str
    device: str
    quantity: str
    unit: str
    last: float | None
    capacity: float
    fraction: float | None
    cap_fraction: float


@dataclass
class AlertDay:
    id: str
    rule: str
    severity: str
    message: str
    started_ns: int
    resolved_ns: int | None  # None: still firing at the day's end
    seconds: float  # of it within the day
    acked_by: str
    acked_ns: int | None


@dataclass
class UplinkDay:
    platform: str
    point: str
    acked: dict[str, int]
    due: dict[str, int]


@dataclass
class DailyReport:
    site: str
    name: str
    day: str  # ISO date, local
    zone: str
    start_ns: int
    end_ns: int
    quantities: list[QuantityDay] = field(default_factory=list)
    capacities: list[CapacityDay] = field(default_factory=list)
    stocks: list[StockDay] = field(default_factory=list)
    alerts: list[AlertDay] = field(default_factory=list)
    uplinks: list[UplinkDay] | None = None  # None: not known (a replay)
    thresholds: Thresholds = Thresholds()

    def has_data(self) -> bool:
        """Whether anything was stored for the day (a regulated reading, a capacity figure, an alert)."""
        return (
            any(q.received or q.hours for q in self.quantities)
            or any(c.hours_with_data for c in self.capacities)
            or any(s.last is not None for s in self.stocks)
            or bool(self.alerts)
        )

    def summary(self) -> dict[str, int]:
        verdicts = [q.verdict for q in self.quantities]
        return {
            "exceeded": verdicts.count("exceeded"),
            "insufficient": verdicts.count("insufficient"),
            "passed": verdicts.count("pass"),
            "alerts": len(self.alerts),
            "low_completeness": sum(q.below_threshold for q in self.quantities),
        }


def day_bounds(zone: str, day: date) -> tuple[int, int]:
    """UTC ns of the local day's start and end (23 or 25 hours on a DST day)."""
    cal = calendar(zone)
    start = int(datetime.combine(day, time(), tzinfo=cal.zone).timestamp()) * NS
    return start, cal.end("1d", start)


AlertLog = Sequence[tuple[int, str, Mapping[str, Any]]]  # (time, firing/resolved/acknowledged, body)


def build(
    setup: SiteSetup,
    day: date,
    windows: Iterable[Aggregate],
    alert_log: AlertLog,
    alert_id: Callable[[Mapping[str, Any]], str],
    uplink_acked: Mapping[str, Mapping[str, int]] | None = None,
    recent: Iterable[tuple[str, str, str]] = (),
    exempt_hour: Callable[[str, int, int], bool] | None = None,
) -> DailyReport:
    """The report of ``setup.site`` for the local ``day``. ``windows``: the site's closed 1m, 1h
    and 1d windows of the day; ``alert_log``: its alert transitions up to the day's end (those
    before it say which alerts were already firing); ``alert_id``: an event's alert id;
    ``uplink_acked``: per platform, the periods acknowledged per CN (None: unknown);
    ``exempt_hour``: whether an hour of a point is exempt (a furnace's marks within budget): the
    day is then judged without those hours, as the rule judges it."""
    start, end = day_bounds(setup.zone, day)
    report = DailyReport(setup.site, setup.name, day.isoformat(), setup.zone, start, end, thresholds=setup.thresholds)
    mine = [w for w in windows if w.site == setup.site and start <= w.ts < end]
    by_series: dict[tuple[str, str, str], dict[str, list[Aggregate]]] = {}
    for w in mine:
        by_series.setdefault((w.point, w.device, w.quantity), {}).setdefault(w.window, []).append(w)
    for series in {*setup.expected, *recent}:  # a regulated analyzer silent all day is reported as such
        if (series[0], series[2]) in setup.limits:
            by_series.setdefault(series, {})
    for (point, device, quantity), sizes in sorted(by_series.items()):
        limits = setup.limits.get((point, quantity))
        if limits is not None:
            cycle = setup.cycle_of(device, quantity)
            q = _quantity(point, device, quantity, sizes, limits, start, end, setup.thresholds, cycle)
            if exempt_hour is not None and limits.has("1d"):
                _without_exempt(q, sizes, limits, exempt_hour, end, setup.day_min_valid_hours)
            report.quantities.append(q)
    for capacity in setup.capacities:
        report.capacities += _capacity(capacity, mine, end)
    for stock in setup.stocks:
        report.stocks += _stock(stock, mine)
    report.alerts = _alerts(alert_log, alert_id, start, end)
    if uplink_acked is not None:
        report.uplinks = [
            UplinkDay(p.name, p.point, dict(uplink_acked.get(p.name, {})), _due(p, start, end)) for p in setup.platforms
        ]
    return report


def _quantity(
    point: str,
    device: str,
    quantity: str,
    sizes: Mapping[str, list[Aggregate]],
    limits: Limits,
    start: int,
    end: int,
    thresholds: Thresholds,
    cycle_s: float = 0.0,
) -> QuantityDay:
    hours = sorted(sizes.get("1h", []), key=lambda w: w.ts)
    days = sizes.get("1d", [])
    day = days[0] if days else None
    unit = next((w.unit for ws in sizes.values() for w in ws if w.unit), "")
    mean = day.avg if day is not None else None
    bound = limits.daily_above if limits.daily_above is not None else limits.daily_below
    if not limits.has("1d"):
        verdict = "no_limit"
    elif day is None or not day.valid or mean is None:
        verdict = "insufficient"
    else:
        verdict = "exceeded" if limits.breaks(mean, "1d") else "pass"
        if limits.daily_above is not None and limits.daily_below is not None:
            bound = limits.daily_above if mean > limits.daily_below else limits.daily_below
    above = sum(1 for h in hours if h.valid and h.avg is not None and limits.breaks(h.avg, "1h"))
    cyclic = cycle_s > 0
    if cyclic:  # one result per measuring cycle; a carried hour holds no new one
        expected = math.ceil((end - start) / (cycle_s * NS))
        measured = [h for h in hours if h.method == "cycles"]
        received = sum(h.count for h in measured)
        valid = sum(h.valid_count for h in measured)
    else:
        minutes = sizes.get("1m", [])
        expected = round((end - start) / MINUTE_NS)
        received = sum(1 for m in minutes if m.count > 0)
        valid = sum(1 for m in minutes if m.valid)
    transmission = min(1.0, received / expected) if expected else 0.0
    validity = valid / received if received else 0.0
    effective = transmission * validity
    low = transmission < thresholds.transmission or validity < thresholds.validity or effective < thresholds.effective
    hourly = limits.hourly_above if limits.hourly_above is not None else limits.hourly_below
    return QuantityDay(
        point,
        device,
        quantity,
        unit,
        mean,
        bound,
        verdict,
        above,
        hourly,
        [(h.ts, h.avg, h.valid) for h in hours],
        expected,
        received,
        valid,
        "hours" if cyclic else "minutes",
        transmission,
        validity,
        effective,
        low,
    )


def _without_exempt(
    q: QuantityDay,
    sizes: Mapping[str, list[Aggregate]],
    limits: Limits,
    exempt_hour: Callable[[str, int, int], bool],
    end: int,
    day_min_valid_hours: int,
) -> None:
    """The day as ``alerts.kinds.limits`` judges it with a furnace's exempt hours
    (``telemetry.marks.judged_day``)."""
    days = sizes.get("1d", [])
    marked = [(h.avg, h.valid, exempt_hour(q.point, h.ts, h.ts + HOUR_NS)) for h in sizes.get("1h", [])]
    if not days or not any(is_exempt for _, _, is_exempt in marked):
        return
    day_hours = round((end - days[0].ts) / HOUR_NS)
    q.mean, enough, _, q.exempt_hours = judged_day(marked, day_hours, day_min_valid_hours)
    if not days[0].valid or not enough or q.mean is None:
        q.verdict = "insufficient"
    else:
        q.verdict = "exceeded" if limits.breaks(q.mean, "1d") else "pass"


def _capacity(capacity: Capacity, windows: Sequence[Aggregate], end: int) -> list[CapacityDay]:
    """Per device the rule watches (its ``device``, or each one measuring the quantity): a rate's
    hourly means over their hours; a totalizer's rises from hour to hour (a fall, a reset or a
    replaced meter, adds nothing: the rule's own rollover handling is not repeated here)."""
    by_device: dict[str, list[Aggregate]] = {}
    for w in windows:
        if w.window == "1h" and w.quantity == capacity.quantity and capacity.device in (None, w.device):
            by_device.setdefault(w.device, []).append(w)
    out = []
    for device, hours in sorted(by_device.items()):
        hours.sort(key=lambda w: w.ts)
        with_data = [h for h in hours if h.avg is not None]
        unit = next((h.unit for h in hours if h.unit), "").removesuffix("/h")
        total: float | None = None
        if capacity.source == "totalizer":
            highs = [(h.min, h.max) for h in with_data if h.min is not None and h.max is not None]
            if highs:
                total = highs[0][1] - highs[0][0]
                total += sum(max(0.0, b[1] - a[1]) for a, b in itertools.pairwise(highs))
        elif with_data:
            total = sum((h.avg or 0.0) * (min(end, h.ts + HOUR_NS) - h.ts) / HOUR_NS for h in with_data)
        use = total / capacity.design if total is not None else None
        out.append(
            CapacityDay(capacity.name, device, capacity.quantity, unit, total, capacity.design, use, len(with_data))
        )
    return out


def _stock(stock: Stock, windows: Sequence[Aggregate]) -> list[StockDay]:
    by_device: dict[str, list[Aggregate]] = {}
    for w in windows:
        if w.window == "1h" and w.quantity == stock.quantity and w.avg is not None and stock.device in (None, w.device):
            by_device.setdefault(w.device, []).append(w)
    out = []
    for device, hours in sorted(by_device.items()):
        last = max(hours, key=lambda w: w.ts)
        value = last.avg
        out.append(
            StockDay(
                stock.name,
                device,
                stock.quantity,
                last.unit,
                value,
                stock.capacity,
                value / stock.capacity if value is not None else None,
                stock.above_fraction,
            )
        )
    return out


def _alerts(log: AlertLog, alert_id: Callable[[Mapping[str, Any]], str], start: int, end: int) -> list[AlertDay]:
    """Every alert firing at some time of the day: from its firing (perhaps before the day) to
    its resolve (perhaps after), with who acknowledged it."""
    episodes: dict[str, AlertDay] = {}
    done: list[AlertDay] = []
    for at, kind, body in sorted(log, key=lambda e: e[0]):
        if at >= end and kind != "acknowledged":
            continue  # after the day: only who acknowledged the day's alerts still counts
        if kind == "acknowledged":
            episode = episodes.get(str(body.get("id")))
            if episode is not None and not episode.acked_by:
                episode.acked_by, episode.acked_ns = str(body.get("by", "")), at
            continue
        aid = alert_id(body)
        if kind == "firing":
            if aid in episodes:
                continue  # already firing (a restart's repeat): one episode
            episodes[aid] = AlertDay(
                aid, str(body["rule"]), str(body["severity"]), str(body["message"]), at, None, 0.0, "", None
            )
        elif kind == "resolved" and aid in episodes:
            episode = episodes.pop(aid)
            episode.resolved_ns = at
            if at > start:
                done.append(episode)
    out = done + list(episodes.values())
    for a in out:
        a.seconds = (min(a.resolved_ns or end, end) - max(a.started_ns, start)) / NS
    return sorted(out, key=lambda a: (a.started_ns, a.rule))


def _due(platform: Platform, start: int, end: int) -> dict[str, int]:
    hours = round((end - start) / HOUR_NS)
    due = {
        "2051": hours * 60 // platform.min_interval_minutes if "min" in platform.send else 0,
        "2061": hours if "hour" in platform.send else 0,
        "2031": 1 if "day" in platform.send else 0,
    }
    return {cn: n for cn, n in due.items() if n}
