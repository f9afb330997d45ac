"""The ``telemetry`` command: what each subcommand does (``cli_parser`` declares them).

Exit codes: 0 success, 2 invalid configuration (every problem printed as
``FILE:LINE: path: message``), 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import pathlib
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime

from alerts.replay import read_csv, replay
from alerts.rules import RulesEngine
from drivers import modbus_probe
from drivers.modbus_config import ModbusConfig
from drivers.modbus_decode import NUMERIC_TYPES
from drivers.modbus_link import DeviceException, DeviceTimeout, LinkDown, LinkSpec, Transport
from telemetry import __version__, app, cli_marks, cli_parser, cli_report, cli_status
from telemetry.aggregate import Aggregator
from telemetry.calendar import calendar
from telemetry.config import Deployment, KnownSeries
from telemetry.config_base import parse_duration
from telemetry.derive import converted
from telemetry.errors import ConfigError, OutboxError, TaskFailed
from telemetry.furnaces import FURNACE_TEMP, FurnaceConfig
from telemetry.hj212 import codec as hj212
from telemetry.hj212 import units
from telemetry.hj212.config import Platform
from telemetry.hj212.periods import KINDS, PointEncoder
from telemetry.lineproto import line
from telemetry.model import Aggregate, AlertState
from telemetry.outbox import (
    Status,
    add_command,
    read_dead_letters,
    read_deliveries,
    read_quarantine,
    read_state,
    read_status,
)
from telemetry.points import Point
from telemetry.sim.platform import Receiver
from telemetry.times import TimeError, parse_timestamp
from telemetry.yamlsource import StandIns

log = logging.getLogger("telemetry")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; output piped into ``head`` that closes early ends it quietly."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader has gone (``telemetry alerts list | head -3``): what it wanted it has. Python
        # would flush stdout again at exit and print a traceback; point it at /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = cli_parser.parser().parse_args(argv)

    if args.command == "demo":
        from telemetry.sim import demo as demo_mod  # noqa: PLC0415 - only the demo needs the simulators

        return demo_mod.main(args.config, args.minutes)
    if args.command == "probe" and args.config is None:
        return _probe_address(args)
    if args.command == "hj212":
        return _hj212(args)
    if args.command == "schema":
        print(json.dumps(app.schema(), indent=2, ensure_ascii=False))
        return 0
    try:
        dep = app.load(args.config, StandIns(os.environ) if args.command == "status" else None)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"{len(err.problems)} problem(s) in {args.config}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](dep, args)


def _check(dep: Deployment, _args: argparse.Namespace) -> int:
    print(summary(dep))
    return 0


def _run(dep: Deployment, args: argparse.Namespace) -> int:
    _setup_logging(dep.config.log_level, args.log_format)
    for module, level in dep.config.log_levels.items():
        logging.getLogger(module).setLevel(level)
    return run_until_signal(dep)


def _probe_config(dep: Deployment, _args: argparse.Namespace) -> int:
    _quiet_library()
    return asyncio.run(app.probe(dep, print))


def _quiet_library() -> None:
    """pymodbus logs every failed connect and read; a probe says what went wrong itself, and the
    library's lines would bury its answer."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)


def _probe_address(args: argparse.Namespace) -> int:
    if args.protocol != "modbus" or not args.target:
        print(
            "usage: telemetry probe modbus HOST[:PORT] --address A --count C, or telemetry probe -c FILE",
            file=sys.stderr,
        )
        return 2
    unknown = [t for t in args.types or [] if t not in NUMERIC_TYPES]
    if unknown or not 1 <= args.count <= 125:
        print(f"expected --type among {', '.join(NUMERIC_TYPES)} and --count 1..125", file=sys.stderr)
        return 2
    if args.expect is not None:
        try:
            float(args.expect)
        except ValueError:
            print(f"expected --expect to be a number as the analyzer shows it, found {args.expect!r}", file=sys.stderr)
            return 2
    _quiet_library()
    transport: Transport = "rtu" if args.rtu else "rtu_over_tcp" if args.rtu_over_tcp else "tcp"
    host, port = (args.target, 0) if args.rtu else modbus_probe.parse_target(args.target)
    spec = LinkSpec(
        transport,
        host,
        port,
        baudrate=args.baudrate,
        bytesize=args.bytesize,
        parity=args.parity,
        stopbits=args.stopbits,
        timeout=args.timeout,
        retries=0,
    )
    last = args.address + args.count - 1
    print(f"{spec.describe()} unit {args.unit}, {args.table} registers {args.address}..{last}")
    try:
        words, hint = asyncio.run(modbus_probe.read_or_hint(spec, args.unit, args.table, args.address, args.count))
    except (LinkDown, DeviceTimeout, DeviceException) as err:
        print(f"cannot read: {err}", file=sys.stderr)
        return 1
    if hint:
        print(hint)
    print(modbus_probe.render(words, args.address, args.types, args.expect))
    return 0


def _deadletters(dep: Deployment, args: argparse.Namespace) -> int:
    try:
        letters = read_dead_letters(dep.config.outbox.path, args.limit)
    except OutboxError as err:
        print(err, file=sys.stderr)
        return 1
    for r in letters:
        when = _local(r.ts)
        sample = r.payload[:120].decode("utf-8", errors="replace")
        print(f"{when}  {r.source}  {r.topic!r}  {r.reason}: {r.detail}")
        print(f"    payload ({len(r.payload)} B): {sample!r}")
    print(f"{len(letters)} dead letter(s) shown, newest first")
    return 0


def _hj212(args: argparse.Namespace) -> int:
    if args.action == "receiver":
        request = (args.request, args.begin, args.end) if args.request else None
        return asyncio.run(_hj212_receiver(args.listen, args.port, request))
    try:
        if args.action == "crc":
            print(f"{hj212.crc16((args.data or '').encode()):04X}")
        elif args.action == "decode":
            frame = os.fsencode(args.data or "")  # the bytes as given: GBK text stays GBK
            packet = hj212.decode_frame(frame, accept_modbus_crc=args.modbus_crc, lenient=args.lenient)
            print(
                json.dumps(
                    dataclasses.asdict(packet) | {"version": packet.version, "ack": packet.wants_ack},
                    ensure_ascii=False,
                    indent=2,
                )
            )
        else:
            qn = args.qn or hj212.qn_now()
            packet = hj212.Packet(
                qn,
                args.st,
                args.cn,
                args.pw,
                args.mn,
                hj212.flag_value(args.hj_version, args.ack),
                None,
                None,
                hj212.decode_cp(args.cp),
            )
            for part in hj212.split(packet):
                print(hj212.encode(part).decode().rstrip())
    except hj212.FrameError as err:
        print(f"invalid ({err.reason}): {err}", file=sys.stderr)
        return 1
    return 0


async def _hj212_receiver(host: str, port: int, request: tuple[str, str, str] | None) -> int:
    """A platform stand-in: prints each packet a station sends and acknowledges it (9014);
    with ``request``, asks the first station that connects for that history."""
    receiver = Receiver(host, port, echo=lambda line: print(line, flush=True))
    await receiver.start()
    print(f"HJ 212 receiver on {host}:{receiver.port}; Ctrl-C to stop", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if request is not None:
        first = await receiver.wait_for(bool, 24 * 3600)
        cn, begin, end = request
        ask = hj212.Packet(
            hj212.qn_now(),
            first[0].st,
            cn,
            first[0].pw,
            first[0].mn,
            first[0].flag | 1,
            None,
            None,
            [{"BeginTime": begin, "EndTime": end}],
        )
        print(f"-> history request {cn} {begin}..{end}", flush=True)
        await receiver.send(ask)
    await stop.wait()
    await receiver.stop()
    print(f"{len(receiver.packets)} packets, {receiver.garbled} garbled", flush=True)
    return 0


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        _JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler])
    # These libraries log every failed attempt; the daemon logs a device or sink going
    # down and coming back itself, once each.
    logging.getLogger("urllib3").setLevel(max(logging.ERROR, logging.getLevelName(level)))
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("apprise").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def run_until_signal(dep: Deployment) -> int:
    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("telemetry %s starting with %s", __version__, dep.file)
        await app.serve(dep, stop)
        log.info("telemetry stopped")

    try:
        asyncio.run(go())
    except TaskFailed as err:  # logged with its traceback where it happened
        log.critical("telemetry stopped because %s; exit code 1, for the supervisor to restart it", err)
        return 1
    except Exception:
        log.exception("telemetry failed")
        return 1
    return 0


def _outbox(dep: Deployment, args: argparse.Namespace) -> int:
    path = dep.config.outbox.path
    try:
        if args.action == "status":
            print(outbox_status(dep, read_status(path)))
        else:
            entries = read_quarantine(path, args.limit)
            for at_ns, consumer, record, reason in entries:
                print(f"{_local(at_ns)}  {consumer}  {line(record)}\n    refused: {reason}")
            print(f"{len(entries)} quarantined record(s) shown, newest first")
    except OutboxError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def outbox_status(dep: Deployment, status: Status) -> str:
    configured = {f"influx:{s.name}" for s in dep.config.influxdb}
    budget = dep.config.outbox.max_bytes
    out = [f"outbox {dep.config.outbox.path}"]
    out.append(
        f"  records {status.records}, in use {status.used_bytes / 1e6:.1f} MB"
        + (f" of {budget / 1e6:.1f} MB budget ({dep.config.outbox.when_full} when full)" if budget else "")
        + f", files {status.file_bytes / 1e6:.1f} MB"
    )
    keep = app.retention(dep.config)
    out.append(
        f"  closed windows {status.windows} and HJ 212 acknowledgements {status.hj212_acked}"
        f" (kept {keep.windows / 86400:g} days), quarantined {status.quarantined}, dead letters {status.dead_letters}"
    )
    for c in status.consumers:
        oldest = f"oldest pending {_local(c.oldest_pending_ns)}" if c.oldest_pending_ns else "caught up"
        note = "" if c.consumer in configured else "  (not in this config: ignored)"
        out.append(f"  {c.consumer:<24} backlog {c.backlog:>9}  {oldest}{note}")
    return "\n".join(out)


def _local(ns: int, zone: str | None = None) -> str:
    """A time as ISO 8601 in ``zone`` (a site's, as supervisors read it), else the host's."""
    if zone is None:
        return datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec="seconds")
    return calendar(zone).local(ns).isoformat(timespec="seconds")


def _rules_test(dep: Deployment, args: argparse.Namespace) -> int:
    try:
        until = parse_timestamp(args.at) if args.at else None
    except TimeError as err:
        print(f"--at: expected epoch seconds or ISO 8601 with a zone, found {args.at!r}: {err}", file=sys.stderr)
        return 2
    try:
        readings = read_csv(pathlib.Path(args.input), parse_timestamp)
    except OSError as err:
        print(f"cannot read {args.input}: {err.strerror}", file=sys.stderr)
        return 2
    except ValueError as err:  # FILE:LINE: what is wrong with that line
        print(err, file=sys.stderr)
        return 2
    platform = next((p for p in dep.config.hj212 if p.name == args.hj212), None)
    if args.hj212 and platform is None:
        print(f"no hj212 platform {args.hj212!r} in {dep.file}", file=sys.stderr)
        return 2
    zones = {s.id: s.timezone for s in dep.config.sites}
    aggregator = app.aggregator(dep) if dep.config.aggregation.enabled else None
    windows: list[Aggregate] = []
    engine = RulesEngine(dep.rules, zones, dep.points, dep.config.furnaces, dep.config.aggregation.day_min_valid_hours)
    problem = cli_marks.replay_marks(args.marks, engine.marks) if args.marks else None
    if problem:
        print(problem, file=sys.stderr)
        return 2
    events = replay(engine, aggregator, readings, until, windows, dep.deriver())
    for e in sorted(events, key=lambda e: e.ts):
        severity = e.severity if e.state is not AlertState.INSUFFICIENT else "-"
        when = _local(e.ts, dep.zone(e.site))
        print(f"{when}  {e.state.value:<17} {e.rule:<28} {severity:<8} {e.site:<12} {e.message}")
    shown = {w.strip() for w in args.windows.split(",") if w.strip()}
    for w in sorted(windows, key=lambda w: (w.window, w.ts, w.point, w.device, w.quantity)):
        if w.window in shown:
            print(window_line(w, zones.get(w.site)))
    if platform is not None and aggregator is not None:
        for line in hj212_lines(dep, platform, aggregator, windows):
            print(line)
    firing = sum(e.state is AlertState.FIRING for e in events)
    print(f"{len(readings)} readings replayed: {len(events)} events, {firing} firing")
    return 0


def window_line(w: Aggregate, zone: str | None) -> str:
    """One closed window as ``key=value`` fields, its start in the site's local time."""
    start = calendar(zone).local(w.ts).isoformat()

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.10g}"

    return (
        f"window {w.window} {start} point={w.point or '-'} series={w.site}/{w.device}/{w.quantity}"
        f" avg={num(w.avg)} min={num(w.min)} max={num(w.max)} unit={w.unit or '-'} count={w.count}"
        f" valid_count={w.valid_count} valid={'yes' if w.valid else 'no'} flag={w.flag.value}"
        f" method={w.method or '-'} cou={num(w.cou)}"
    )


def hj212_lines(dep: Deployment, platform: Platform, aggregator: Aggregator, windows: list[Aggregate]) -> list[str]:
    """The periods (2051/2061/2031) the platform would receive from these windows, as CP text."""
    point = dep.platform_point(platform)
    encoder = PointEncoder(platform, point, dep.zone(point.site), aggregator.cycle_of)
    out = []
    for kind in encoder.kinds():
        cn, window = KINDS[kind]
        periods: dict[int, list[Aggregate]] = {}
        for w in windows:
            if w.window == window:
                periods.setdefault(encoder.period(kind, w.ts), []).append(w)
        for start, group in sorted(periods.items()):
            items = encoder.period_items(kind, start, group)
            if items is not None:
                out.append(f"hj212 {platform.name} MN={platform.mn} CN={cn} CP={hj212.encode_cp(items)}")
    return out


def _alerts(dep: Deployment, args: argparse.Namespace) -> int:
    path = dep.config.outbox.path
    try:
        if args.action == "ack":  # ID is required by the parser
            add_command(path, "ack", {"id": args.id, "by": args.by})
            print(f"acknowledgement of {args.id} queued; the daemon applies it within a second")
            return 0
        state = read_state(path, "alerts") or {}
        deliveries = read_deliveries(path, 200)
    except OutboxError as err:
        print(err, file=sys.stderr)
        return 1
    alerts = sorted(state.get("alerts", []), key=lambda a: (a["state"] != "firing", -a["started_ns"]))
    for a in alerts:
        told = ", ".join(sorted(a["sent_firing"])) or "nobody yet"
        failed = f"  DELIVERY FAILED: {', '.join(sorted(a['failed']))}" if a["failed"] else ""
        acked = f"  acked by {a['acked_by']}" if a["acked_by"] else ""
        print(
            f"{a['id']}  {a['state']:<8} {_local(a['started_ns'], dep.zone(a['site']))}  {a['site']}/{a['rule']}"
            f" [{a['severity']}]"
            f"  told: {told}{acked}{failed}\n    {a['message']}"
        )
    failures = [d for d in deliveries if not d[3]]
    print(f"{len(alerts)} alert(s); {len(failures)} failed delivery attempt(s) among the last {len(deliveries)}")
    site_of = {a["id"]: a["site"] for a in alerts}
    for at, channel, ids, _, detail in failures[:5]:
        print(f"  {_local(at, dep.zone(site_of.get(ids.split(',')[0], '')))}  {channel}  {ids}: {detail}")
    return 0


def _silence(dep: Deployment, args: argparse.Namespace) -> int:
    path = dep.config.outbox.path
    try:
        if args.action == "add":
            matchers = {k: v for k in ("site", "device", "rule", "severity") if (v := getattr(args, k))}
            if not matchers:
                print("a silence needs at least one of --site, --device, --rule, --severity", file=sys.stderr)
                return 2
            seconds = parse_duration(args.duration)
            sid = uuid.uuid4().hex[:8]
            body = {"id": sid, "matchers": matchers, "seconds": seconds, "reason": args.reason, "by": args.by}
            add_command(path, "silence", body)
            print(f"silence {sid} for {matchers} for {args.duration} queued: {args.reason}")
        elif args.action == "expire":
            add_command(path, "expire", {"id": args.id})
            print(f"expiry of silence {args.id} queued")
        else:
            state = read_state(path, "alerts") or {}
            now = time.time_ns()
            for s in state.get("silences", []):
                status = (
                    "active" if s["starts_ns"] <= now < s["ends_ns"] else "expired" if now >= s["ends_ns"] else "future"
                )
                print(
                    f"{s['id']}  {status:<7} {_local(s['starts_ns'])} -> {_local(s['ends_ns'])}  {s['matchers']}"
                    f"  by {s['created_by']}: {s['reason']}"
                )
            for i, s in enumerate(dep.config.notify.silences):
                print(f"config-{i}  {s.start} -> {s.end}  {s.matchers.model_dump(exclude_none=True)}: {s.reason}")
    except (OutboxError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    return 0


COMMANDS = {
    "check": _check,
    "status": cli_status.command,
    "mark": cli_marks.command,
    "report": cli_report.command,
    "run": _run,
    "probe": _probe_config,
    "deadletter": _deadletters,
    "outbox": _outbox,
    "rules": _rules_test,
    "alerts": _alerts,
    "silence": _silence,
}


def _shared_series(dep: Deployment) -> list[str]:
    """Series written by more than one source (they would overwrite each other in InfluxDB)."""
    notes = []
    writers: dict[tuple[str, str, str], list[str]] = {}
    for device in dep.devices:
        for point in getattr(device, "points", []):
            writers.setdefault((device.site or "", device.id, point.quantity), []).append(device.id)
        for sub in getattr(device, "subscriptions", []):
            if sub.site and sub.device and sub.quantity:
                writers.setdefault((sub.site, sub.device, sub.quantity), []).append(device.id)
    for (site, dev, quantity), ids in sorted(writers.items()):
        if len(ids) > 1:
            notes.append(f"series {site}/{dev}/{quantity} is written by {len(ids)} sources ({', '.join(ids)})")
    return notes


def likely_mistakes(dep: Deployment) -> list[str]:
    """Valid but probably wrong: rules nobody feeds, devices nobody watches."""
    produced: dict[str, set[str]] = {}  # site -> quantities known to be produced
    for device in dep.devices:
        for series in device.known_series():
            produced.setdefault(series.site, set()).add(series.quantity)
    used = _derived_inputs(dep)
    for where, derived in used.values():
        produced.setdefault(where, set()).add(derived)
    # where topics, payloads or HJ 212 codes name quantities at run time (None: any site)
    open_sites = {site for device in dep.devices for site in device.open_quantities()}
    notes = []
    for rule in dep.rules:
        quantity = getattr(rule, "quantity", None)
        sites = [rule.site] if rule.site else list(produced)
        # a quantity named at run time where the rule looks (anywhere, for a rule of every site)
        unknown = None in open_sites or rule.site in open_sites if rule.site else bool(open_sites)
        if quantity and not unknown and not any(quantity in produced.get(s, set()) for s in sites):
            notes.append(f"rule {rule.name}: no device produces {quantity!r} at {rule.site or 'any site'}")
    notes += _shared_series(dep)
    notes += _point_mistakes(dep)
    stacks = {f.point for f in dep.config.furnaces if f.point}
    for platform in dep.config.hj212:
        point = dep.platform_point(platform)
        if point.id in stacks and platform.version == "2017" and platform.min_interval_minutes != 5:
            notes.append(
                f"hj212 {platform.name}: the furnace temperature goes up as a01901 in the minute data, as"
                f" {platform.min_interval_minutes}-minute means: set min_interval_minutes: 5 for the 5-minute"
                " means the 850 degC rule judges"
            )
    notes += [note for device in dep.devices for note in device.warnings()]
    notes += _bus_budgets(dep)
    watched = {(r.site, getattr(r, "quantity", None)) for r in dep.rules}
    watched |= {(site, source) for (site, source), derived in used.items() if (None, derived[1]) in watched}
    watched |= {(f.site, q) for f in dep.config.furnaces for q in _furnace_inputs(f)}  # audited by the furnace watch
    for device in dep.devices:
        quantities = {p.quantity for p in getattr(device, "points", [])}
        if quantities and not any(
            (site in (None, device.site)) and (q is None or q in quantities) for site, q in watched
        ):
            notes.append(f"device {device.id}: no rule watches its {', '.join(sorted(quantities))}")
    notes += _held_unwatched(dep)
    return notes


def _held_unwatched(dep: Deployment) -> list[str]:
    """A ``nodata`` rule stays quiet while an analyzer reports maintenance or calibration; with
    no ``maintenance_too_long`` rule for those sites, an analyzer left in maintenance is never
    told of."""
    holding = [r for r in dep.rules if r.kind == "nodata" and getattr(r, "hold_flags", None)]
    long_sites = {r.site for r in dep.rules if r.kind == "maintenance_too_long"}
    if not holding or None in long_sites:
        return []
    return [
        f"rule {r.name}: quiet while an analyzer reports maintenance or calibration, and no"
        f" maintenance_too_long rule covers {r.site or 'every site'}: an analyzer left in maintenance"
        " is never told of (add one, or hold_flags: [] to have nodata fire anyway)"
        for r in holding
        if r.site is None or r.site not in long_sites
    ]


def _bus_budgets(dep: Deployment) -> list[str]:
    """Devices sharing one link (a serial bus, a gateway) are polled one request at a time: when
    every request times out and is retried, a round takes the sum of theirs, and a device whose
    interval is shorter than that falls behind (and its neighbours with it)."""
    buses: dict[tuple[str, str, int], list[ModbusConfig]] = {}
    for device in dep.devices:
        if isinstance(device, ModbusConfig):
            buses.setdefault(device.link().key, []).append(device)  # as the link pool shares them
    notes = []
    for (_, where, _), devices in buses.items():
        if len(devices) < 2:
            continue
        worst = sum(len(d.blocks()) * (d.timeout * (d.retries + 1) + d.pause) for d in devices)
        short = [d for d in devices if d.interval < worst]
        if short:
            names = ", ".join(f"{d.id} every {d.interval:g}s" for d in short)
            notes.append(
                f"bus {where}: {len(devices)} devices take up to {worst:g}s a round when none answers"
                f" (requests x timeout x (retries + 1)); longer than the interval of {names}: lengthen the"
                " interval or shorten timeout/retries"
            )
    return notes


def _derived_inputs(dep: Deployment) -> dict[tuple[str, str], tuple[str, str]]:
    """(site, quantity) read -> (site, quantity) derived from it (``telemetry.derive``)."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for ref in dep.o2_references:
        site = dep.points.by_id[ref.point].site
        for quantity in ref.pollutants:
            out[(site, quantity)] = (site, converted(quantity))
    for furnace in dep.config.furnaces:
        for t in furnace.thermocouples:
            out[(furnace.site, t.quantity)] = (furnace.site, FURNACE_TEMP)
    return out


def _furnace_inputs(furnace: FurnaceConfig) -> set[str]:
    inputs = {FURNACE_TEMP} | {t.quantity for t in furnace.thermocouples}
    inputs |= {s.quantity for s in (furnace.feeding, furnace.status) if s is not None}
    return inputs


def furnace_line(f: FurnaceConfig) -> str:
    sections = ", ".join(f"{n} {s}" for s in f.sections if (n := sum(t.section == s for t in f.thermocouples)))
    source = f"{f.representative} of {sections} thermocouples" if f.thermocouples else "furnace_temp read as it is"
    return (
        f"{f.id:<20} stack {f.point or '-'}, temperature {f.device}/furnace_temp ({source}),"
        f" budget {f.budget_hours:g} h/year, feeding {'watched' if f.feeding else 'not wired'},"
        f" marks from {'the register and ' if f.status else ''}CLI/HTTP"
    )


def point_line(p: Point) -> str:
    devices = "every device of the site" if p.devices is None else ", ".join(sorted(p.devices))
    quantities = "" if p.quantities is None else f" ({', '.join(sorted(p.quantities))})"
    flow = f"{p.flow_device or '*'}/{p.flow_quantity}"
    origin = "inferred: the site declares no points" if p.inferred else "declared"
    return f"{p.id:<20} site {p.site}, {p.kind}: {devices}{quantities}; flow {flow} [{origin}]"


def _point_mistakes(dep: Deployment) -> list[str]:
    """Two flow meters in one inferred point (an inlet and an outlet), and point devices nobody produces."""
    notes = []
    known = [s for d in dep.devices for s in d.known_series()]
    named = {pair for d in dep.devices for pair in d.produces()}
    dynamic = any(device is None for _, device in named)  # an MQTT topic names devices at run time
    for point in dep.points.all:
        flows = sorted({s.device for s in known if s.site == point.site and point.is_flow(s.device, s.quantity)})
        if point.inferred and len(flows) > 1:
            notes.append(
                f"site {point.site}: {len(flows)} flow meters ({', '.join(flows)}) in its one inferred point;"
                " declare 'points' (an inlet and an outlet) so volumes and masses are not mixed"
            )
        for device in sorted(point.devices or ()):
            if not dynamic and (point.site, device) not in named:
                notes.append(f"point {point.id}: no configured device {device!r} at site {point.site}")
    return notes + _upload_mistakes(dep, known)


def _upload_mistakes(dep: Deployment, known: list[KnownSeries]) -> list[str]:
    """Uploaded series with no unit, and devices polled more slowly than real-time data stays fresh."""
    notes = []
    for platform in dep.config.hj212:
        point = dep.platform_point(platform)
        codes = platform.code_map(point.kind)
        stale = platform.stale_after or 3 * platform.rtd_interval
        for source in dep.devices:
            interval = getattr(source, "interval", None)
            uploaded = [s for s in source.known_series() if s.quantity in codes and point.holds(s.device, s.quantity)]
            if uploaded and interval is not None and interval > stale and source.site == point.site:
                notes.append(
                    f"device {source.id} is polled every {interval:g}s but hj212 {platform.name} leaves a value out"
                    f" of real-time data {stale:g}s after it arrived; set stale_after to at least {interval:g}s"
                )
        for s in known:
            code = codes.get(s.quantity)
            if (
                s.unit == ""
                and s.site == point.site
                and code
                and units.wire_unit(code)
                and point.holds(s.device, s.quantity)
            ):
                notes.append(
                    f"{s.site}/{s.device}/{s.quantity}: no unit, so hj212 {platform.name} sends it as if in"
                    f" {units.wire_unit(code)} ({code}); give the point its unit"
                )
    return notes


def summary(dep: Deployment) -> str:
    cfg = dep.config
    out = [f"{dep.file}: valid"]
    out.append(f"sites ({len(cfg.sites)}):")
    out += [f"  {s.id:<20} {s.timezone:<16} {s.name}" for s in cfg.sites]
    out.append(f"monitoring points ({len(dep.points.all)}):")
    out += [f"  {point_line(p)}" for p in dep.points.all]
    if dep.config.furnaces:
        out.append(f"furnaces ({len(dep.config.furnaces)}):")
        out += [f"  {furnace_line(f)}" for f in dep.config.furnaces]
    out.append(f"devices ({len(dep.devices)}):")
    for d in dep.devices:
        where = d.site or ("(from stations)" if d.kind == "hj212" else "(from topic)")
        out.append(f"  {d.id:<20} {d.kind:<7} site {where}: {d.describe()}")
    out.append(f"influxdb sinks ({len(cfg.influxdb)}):")
    for s in cfg.influxdb:
        target = f"db {s.database}" if s.api == "v1" else f"bucket {s.bucket}"
        out.append(f"  {s.name:<20} {s.api} {s.url} {target}")
    out.append(f"rules ({len(dep.rules)}, discharge standards expanded):")
    out += [f"  {r.name:<28} {r.describe()}" for r in dep.rules]
    out.append(f"notification routes ({len(cfg.notify.routes)}):")
    for route in cfg.notify.routes:
        out.append(
            f"  {route.name:<20} {len(route.urls)} url(s), sites {','.join(route.sites) or '*'},"
            f" resolved {'yes' if route.send_resolved else 'no'}"
        )
    out.append(f"metrics: {'http://' + cfg.metrics.listen + '/metrics' if cfg.metrics.enabled else 'off'}")
    out.append(f"outbox: {cfg.outbox.path}")
    out.append(f"hj212 platforms ({len(cfg.hj212)}):")
    out += [
        f"  {p.name:<20} {p.host}:{p.port} point {dep.platform_point(p).id} MN {p.mn} HJ 212-{p.version}"
        for p in cfg.hj212
    ]
    notes = dep.warnings + likely_mistakes(dep)
    out.append(f"warnings ({len(notes)}):")
    out += [f"  {note}" for note in notes]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
