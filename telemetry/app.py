"""Composition root: turns a validated deployment into a running pipeline.

The only module that imports concrete drivers, sinks and alert stages together;
``cli`` and ``demo`` call it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from alerts.daily import DailyReports
from alerts.desk import AlertDesk
from alerts.lifecycle import AlertManager
from alerts.notify import Notifier
from alerts.rule_config import CapacityRule, LimitRule, StockRule
from alerts.rules import RulesEngine
from drivers import DRIVERS, modbus_probe
from drivers.modbus import ModbusConfig, ModbusDriver
from telemetry import config, http, report, sinks
from telemetry.aggregate import Aggregator, Override, Validity, rules_from
from telemetry.hj212.config import Control, Platform
from telemetry.hj212.extras import Extras
from telemetry.hj212.uplink import Uplink
from telemetry.metrics import Metrics
from telemetry.outbox import Outbox, Retention
from telemetry.pipeline import Observer, Pipeline
from telemetry.times import parse_timestamp

log = logging.getLogger(__name__)


def load(path: str, environ: Mapping[str, str] | None = None) -> config.Deployment:
    """Load and validate a deployment file against the registered drivers."""
    return config.load(path, {kind: d.config for kind, d in DRIVERS.items()}, environ)


def build(dep: config.Deployment, metrics: Metrics, observer: Observer | None = None) -> Pipeline:
    cfg = dep.config
    extras = Extras()  # SampleTime/EFlag of relayed HJ 212 values: from the input drivers to the uplinks
    # What drivers share: relayed HJ 212 extras; the configured sites (a topic level names only these).
    shared: dict[str, Any] = {
        "hj212.extras": extras,
        "sites": frozenset(s.id for s in cfg.sites),
        "zones": {s.id: s.timezone for s in cfg.sites},  # of a gateway's zone-less timestamps
    }
    drivers = [DRIVERS[d.kind].build(d, metrics, shared) for d in dep.devices]
    uplinks = [uplink(dep, platform, metrics, extras) for platform in cfg.hj212]
    for link in uplinks:
        link.control = _control(drivers, link.name)
    return Pipeline(
        outbox=outbox(cfg),
        drivers=drivers,
        sinks=[sinks.build(s) for s in cfg.influxdb],
        alerts=alert_desk(dep, metrics),
        metrics=metrics,
        commit_max=cfg.outbox.commit_max,
        observer=observer,
        aggregator=aggregator(dep) if cfg.aggregation.enabled else None,
        uplinks=uplinks,
        snapshot_s=cfg.outbox.snapshot_interval,
        derive=deriver if (deriver := dep.deriver()) else None,
    )


def alert_desk(dep: config.Deployment, metrics: Metrics) -> AlertDesk:
    """The alert path: rules, the alerts' lifecycle, their notification."""
    cfg = dep.config
    zones = {s.id: s.timezone for s in cfg.sites}
    engine = RulesEngine(dep.rules, zones, dep.points, cfg.furnaces, cfg.aggregation.day_min_valid_hours)
    daily = cfg.reports.daily
    reports = None
    if daily.routes:
        routes = {r.name: r for r in cfg.notify.routes}
        cycles = aggregator(dep)  # one, for every site's measuring cycles
        setups = {s.id: report_setup(dep, s.id, cycles) for s in cfg.sites}
        reports = DailyReports(daily, setups, routes, grace_s=cfg.aggregation.grace)
        reports.exempt_hour = engine.exempt_hour
    notifier = Notifier(cfg.notify.routes, metrics, zones, cfg.notify.grafana_url)
    notifier.console_url = cfg.notify.console_url
    return AlertDesk(
        AlertManager(cfg.notify, parse_time=parse_timestamp),
        notifier,
        engine,
        metrics,
        reports=reports,
    )


def outbox(cfg: config.Config) -> Outbox:
    return Outbox(
        cfg.outbox.path,
        synchronous=cfg.outbox.synchronous,
        max_bytes=cfg.outbox.max_bytes,
        min_free=cfg.outbox.min_free,
        when_full=cfg.outbox.when_full,
        retention=retention(cfg),
    )


def retention(cfg: config.Config) -> Retention:
    """The outbox's retention; windows (and acknowledgements) for as long as a platform may still
    need them back-filled, a day more, and at least two days (a restart adopts today's hours)."""
    keep = cfg.outbox.retention
    backfill = max((p.backfill for p in cfg.hj212), default=0.0)
    return Retention(
        windows=keep.windows if keep.windows is not None else max(2 * 86400.0, backfill + 86400.0),
        quarantine=keep.quarantine,
        quarantine_max=keep.quarantine_max,
        deadletters=keep.deadletters,
        deadletter_max=cfg.outbox.deadletter_max,
        deliveries=keep.deliveries,
        deliveries_max=keep.deliveries_max,
        commands=keep.commands,
        commands_max=keep.commands_max,
    )


def uplink(dep: config.Deployment, platform: Platform, metrics: Metrics, extras: Extras | None = None) -> Uplink:
    """A platform connection for its monitoring point, on that point's site calendar; it relays
    the minute data of stations at the point's site that send their own (``station_windows``)."""
    point = dep.platform_point(platform)
    own = frozenset(w.minutes for d in dep.devices for w in d.own_windows() if w.site == point.site)
    return Uplink(platform, point, metrics, site_zone=dep.zone(point.site), extras=extras, station_windows=own)


def _control(drivers: list[Any], platform: str) -> Callable[[Control], Awaitable[None]]:
    """A platform's allowed remote-control command (``controls``) as the Modbus write it maps to."""

    async def write(control: Control) -> None:
        target = next((d for d in drivers if isinstance(d, ModbusDriver) and d.name == control.device), None)
        if target is None:
            raise LookupError(f"no modbus device {control.device!r}")
        log.info("hj212 %s: writing %d to register %d of %s", platform, control.value, control.address, target.name)
        await target.write_register(control.address, control.value)

    return write


def aggregator(dep: config.Deployment) -> Aggregator:
    agg = dep.config.aggregation
    default = Validity(agg.hour_min_valid_minutes, agg.day_min_valid_hours)
    # Sample-time registers first: what the aggregation section says explicitly wins.
    overrides = [
        Override(s.quantity, {"sampled": True}, site=s.site, device=s.device)
        for d in dep.devices
        for s in d.sampled_series()
    ]
    overrides += [o.override() for o in agg.overrides]
    return Aggregator(
        {s.id: s.timezone for s in dep.config.sites},
        windows=agg.windows,
        grace_s=agg.grace,
        rules=rules_from(default, overrides),
        points=dep.points,
        flow_weighted_daily=agg.flow_weighted_daily,
        external=[(w.site, w.device) for d in dep.devices for w in d.own_windows()],
    )


async def serve(
    dep: config.Deployment,
    stop: asyncio.Event,
    observer: Observer | None = None,
    registry: CollectorRegistry | None = None,
    pipeline_ready: asyncio.Future[Pipeline] | None = None,
) -> None:
    """Run the daemon until ``stop`` is set."""
    for warning in dep.warnings:
        log.warning("%s", warning)
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    stop_http = None
    current: list[Pipeline] = []

    def readiness() -> tuple[bool, dict[str, Any]]:
        if not current:
            return False, {"pipeline": "starting"}
        return current[0].readiness(dep.config.metrics.ready_sink_age)

    if dep.config.metrics.enabled:
        ack_token = dep.config.metrics.ack_token.get_secret_value()
        furnaces = [f.id for f in dep.config.furnaces]
        zones = {s.id: s.timezone for s in dep.config.sites}
        stop_http = http.serve(
            metrics,
            dep.config.metrics.listen,
            dep.config.outbox.path,
            ack_token,
            readiness,
            furnaces,
            zones,
            status=lambda: current[0].status() if current else None,
        )
        log.info("metrics on http://%s/metrics", dep.config.metrics.listen)
    try:
        pipeline = build(dep, metrics, observer)
        current.append(pipeline)
        if pipeline_ready is not None:
            pipeline_ready.set_result(pipeline)
        await pipeline.run(stop)
    finally:
        if stop_http is not None:
            stop_http()


def report_setup(dep: config.Deployment, site: str, cycles: Aggregator | None = None) -> report.SiteSetup:
    """What the configuration says one site's report covers: its points' limits, capacity rules,
    platforms."""
    points = [p.id for p in dep.points.of_site(site)]
    limits = _report_limits(dep, site, points)
    mine = [r for r in dep.rules if getattr(r, "site", None) in (None, site)]
    platforms = []
    for p in dep.config.hj212:
        uploaded = dep.platform_point(p)
        if uploaded.site == site:
            platforms.append(report.Platform(p.name, uploaded.id, tuple(p.send), p.min_interval_minutes))
    cfg = dep.site(site)
    daily = dep.config.reports.daily
    expected = set()
    for device in dep.devices:
        for series in device.known_series():
            holder = dep.points.point_of(series.site, series.device, series.quantity)
            if series.site == site and holder is not None and (holder.id, series.quantity) in limits:
                expected.add((holder.id, series.device, series.quantity))
    return report.SiteSetup(
        site,
        cfg.name,
        cfg.timezone,
        {key: report.Limits(**values) for key, values in limits.items()},
        [
            report.Capacity(r.name, r.quantity, r.design, r.source, r.device)
            for r in mine
            if isinstance(r, CapacityRule)
        ],
        [
            report.Stock(r.name, r.quantity, r.capacity, r.above_fraction, r.device)
            for r in mine
            if isinstance(r, StockRule)
        ],
        platforms,
        report.Thresholds(daily.transmission, daily.validity, daily.effective),
        frozenset(expected),
        functools.partial(_cycle_of, cycles or aggregator(dep), site),
        dep.config.aggregation.day_min_valid_hours,
    )


def _report_limits(dep: config.Deployment, site: str, points: list[str]) -> dict[tuple[str, str], dict[str, float]]:
    """Per point, quantity and bound: the limit of the most severe rule (a warning at 80 is an
    early warning, the critical 100 the standard's), the loosest of equals. Rules of one device
    are left out: the report judges a point's series, not one analyzer's alarm settings."""
    rank = {"info": 0, "warning": 1, "critical": 2}
    chosen: dict[tuple[str, str, str], tuple[int, float]] = {}
    for rule in dep.rules:
        if not isinstance(rule, LimitRule) or rule.window not in ("1h", "1d") or rule.site not in (None, site):
            continue
        targets = [rule.point] if rule.point else points
        for point in [p for p in targets if p in points and rule.device is None]:
            prefix = "daily" if rule.window == "1d" else "hourly"
            for side, value in (("above", rule.above), ("below", rule.below)):
                if value is None:
                    continue
                key = (point, rule.quantity, f"{prefix}_{side}")
                loose = value if side == "above" else -value
                if key not in chosen or (rank[rule.severity], loose) > chosen[key]:
                    chosen[key] = (rank[rule.severity], loose)
    limits: dict[tuple[str, str], dict[str, float]] = {}
    for (point, quantity, bound), (_, loose) in chosen.items():
        limits.setdefault((point, quantity), {})[bound] = loose if bound.endswith("above") else -loose
    return limits


def _cycle_of(agg: Aggregator, site: str, device: str, quantity: str) -> float:
    return agg.cycle_of((site, device, quantity))[0]


def schema() -> dict[str, Any]:
    """JSON Schema of a deployment file, device kinds included (for editors' completion)."""
    root = config.Config.model_json_schema(by_alias=True)
    kinds = [d.config.model_json_schema(by_alias=True, ref_template="#/$defs/{model}") for d in DRIVERS.values()]
    defs = root.setdefault("$defs", {})
    for kind in kinds:
        for name, definition in kind.pop("$defs", {}).items():
            # One name, one model: a clash would validate one section against another's rules.
            if defs.setdefault(name, definition) != definition:
                raise TypeError(f"two models named {name} in the configuration schema")
    root["properties"]["devices"]["items"] = {"oneOf": kinds}
    root["title"] = "plant telemetry deployment"
    return root


async def probe(dep: config.Deployment, out: Callable[[str], None]) -> int:
    """Poll each Modbus device once and say what it read or why it could not; 1 if any failed."""
    metrics = Metrics(CollectorRegistry())
    shared: dict[str, Any] = {}
    failed = 0
    for device in dep.devices:
        if not isinstance(device, ModbusConfig):
            out(f"{device.id:<20} {device.kind}: not probed (only Modbus devices are polled once)")
            continue
        driver = ModbusDriver(device, metrics, shared)
        try:
            readings = await driver.poll()
        finally:
            driver.close()
        problem = driver.last_error
        failed += bool(problem)
        result = modbus_probe.describe_readings(device, readings)
        out(
            f"{device.id:<20} {device.describe()}\n{'':<20} {result}"
            + (f"\n{'':<20} problem: {problem}" if problem else "")
        )
    return 1 if failed else 0
