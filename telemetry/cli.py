"""``telemetry`` command: run, check, demo, --version.

Exit codes: 0 success, 2 invalid configuration (every problem printed as
``FILE:LINE: path: message``), 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from telemetry import __version__, app
from telemetry.config import Deployment
from telemetry.errors import ConfigError

log = logging.getLogger("telemetry")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="telemetry", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version=f"telemetry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, help="deployment YAML file")
    check = sub.add_parser("check", help="validate a configuration and print a summary")
    check.add_argument("-c", "--config", required=True, help="deployment YAML file")
    demo = sub.add_parser("demo", help="simulated plant + daemon on loopback, with a live view")
    demo.add_argument("-c", "--config", default=None, help="demo YAML (default: config/demo.yaml)")
    demo.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from telemetry import demo as demo_mod  # noqa: PLC0415 - only the demo needs the simulators

        return demo_mod.main(args.config, args.minutes)
    try:
        dep = app.load(args.config)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        print(f"{len(err.problems)} problem(s) in {args.config}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(summary(dep))
        return 0
    _setup_logging(dep.config.log_level)
    return run_until_signal(dep)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # These libraries log every failed attempt; the daemon logs a device or sink going
    # down and coming back itself, once each.
    for noisy in ("pymodbus", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLevelName(level)))
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
    except Exception:
        log.exception("telemetry failed")
        return 1
    return 0


def summary(dep: Deployment) -> str:
    cfg = dep.config
    out = [f"{dep.file}: valid"]
    out.append(f"sites ({len(cfg.sites)}):")
    out += [f"  {s.id:<20} {s.timezone:<16} {s.name}" for s in cfg.sites]
    out.append(f"devices ({len(dep.devices)}):")
    for d in dep.devices:
        raw = d.model_dump()
        if d.kind == "modbus":
            what = (
                f"{raw['host']}:{raw['port']} unit {raw['unit_id']}, "
                f"{len(raw['points'])} points every {raw['interval']:g}s"
            )
        else:
            what = f"{raw['host']}:{raw['port']}, topics " + ", ".join(
                s["topic"] for s in raw["subscriptions"]
            )
        out.append(f"  {d.id:<20} {d.kind:<7} site {d.site or '(from topic)'}: {what}")
    out.append(f"influxdb sinks ({len(cfg.influxdb)}):")
    for s in cfg.influxdb:
        target = f"db {s.database}" if s.api == "v1" else f"bucket {s.bucket}"
        out.append(f"  {s.name:<20} {s.api} {s.url} {target}")
    out.append(f"rules ({len(cfg.rules)}):")
    for r in cfg.rules:
        limits = " ".join(
            x
            for x in (
                f"> {r.above:g}" if r.above is not None else "",
                f"< {r.below:g}" if r.below is not None else "",
            )
            if x
        )
        out.append(
            f"  {r.name:<20} {r.site or '*'}/{r.device or '*'}/{r.quantity} {limits}"
            f" for {r.for_:g}s [{r.severity}]"
        )
    out.append(f"notification routes ({len(cfg.notify.routes)}):")
    for route in cfg.notify.routes:
        out.append(
            f"  {route.name:<20} {len(route.urls)} url(s), sites {','.join(route.sites) or '*'},"
            f" resolved {'yes' if route.send_resolved else 'no'}"
        )
    out.append(f"metrics: {'http://' + cfg.metrics.listen + '/metrics' if cfg.metrics.enabled else 'off'}")
    out.append(f"outbox: {cfg.outbox.path}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
