"""``telemetry status``: what the running daemon reads now, per site, device and quantity.

Read-only: from the daemon's ``GET /status`` (``metrics.listen``), or, when its listener is
off or unreachable, from the status it saves with its snapshots in the outbox (at most
``outbox.snapshot_interval`` old, said so). Times are each site's local time with its offset.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from telemetry.calendar import calendar
from telemetry.config import Deployment
from telemetry.config_base import host_port
from telemetry.errors import OutboxError
from telemetry.outbox import read_state
from telemetry.times import spoken

SERIES_KEYS = ("site", "device", "quantity", "value", "unit", "flag", "age_s")


def fetch(dep: Deployment) -> tuple[dict[str, Any], str]:
    """The daemon's status and where it came from; raises OSError when there is none."""
    metrics = dep.config.metrics
    if metrics.enabled:
        host, port = host_port(metrics.listen)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104 - mapped away
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/status"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read()), url
        except (OSError, ValueError):
            pass  # not running, or its listener is elsewhere: the last snapshot may still say
    try:
        saved = read_state(dep.config.outbox.path, "status")
    except OutboxError as err:
        raise OSError(f"the daemon is not reachable and its outbox cannot be read ({err})") from None
    if saved is None:
        raise OSError("the daemon is not reachable, and has saved no status yet (is it running?)")
    return dict(saved), "the outbox's last snapshot"


def series_rows(body: dict[str, Any], now_s: float) -> list[dict[str, Any]]:
    """One object per series, ``age_s`` from now (the body may be a snapshot's)."""
    links = {d["device"]: d for d in body.get("devices", [])}
    rows = []
    for s in body.get("series", []):
        link = links.get(s["device"], {})
        row = {k: s.get(k) for k in SERIES_KEYS} | {"age_s": round(now_s - s["ts"], 1), "ts": s["ts"]}
        row |= {"link_up": link.get("up"), "last_error": link.get("last_error")}
        rows.append(row)
    return rows


def render(dep: Deployment, body: dict[str, Any], source: str, now_s: float) -> str:
    out = [f"status from {source}, {_at(dep, None, now_s)}"]
    rows = series_rows(body, now_s)
    links = {d["device"]: d for d in body.get("devices", [])}
    by_site: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        by_site.setdefault(row["site"], {}).setdefault(row["device"], []).append(row)
    for site in sorted(by_site):
        out.append(f"\n{site}")
        for device, series in sorted(by_site[site].items()):
            link = links.get(device)
            state = "" if link is None else ("  link up" if link.get("up") else "  LINK DOWN")
            error = f"  last error: {link['last_error']}" if link and link.get("last_error") else ""
            out.append(f"  {device}{state}{error}")
            for row in series:
                value = f"{row['value']:.10g}"
                unit = row["unit"] or ""
                out.append(
                    f"    {row['quantity']:<18} {value:>12} {unit:<8} {row['flag']}  {spoken(row['age_s']):>8} ago"
                    f"  ({_at(dep, site, row['ts'])})"
                )
    # Every configured source, with its link: an MQTT broker's or a listener's readings are
    # under the devices its topics and stations name, and a device that never read shows here.
    out.append("\nlinks")
    for d in body.get("devices", []):
        state = "up" if d.get("up") else "DOWN" if d.get("up") is False else "unknown"
        error = f"  last error: {d['last_error']}" if d.get("last_error") else ""
        kind = f" ({d['kind']})" if d.get("kind") else ""
        out.append(f"  {d['device']}{kind}  {state}{error}")
    subs = body.get("subscriptions", [])
    if subs:
        out.append("\nMQTT subscriptions")
        for s in subs:
            heard = s.get("last_message_ts")
            when = "never since start" if heard is None else f"{spoken(now_s - heard)} ago ({_at(dep, None, heard)})"
            flag = "  SILENT" if s.get("silent") else ""
            out.append(f"  {s['device']}  {s['subscription']}  last message {when}{flag}")
    return "\n".join(out)


def command(dep: Deployment, args: argparse.Namespace) -> int:
    if args.watch:
        # Ctrl-C ends it even where it was started with SIGINT ignored (a background job of a
        # script inherits that, and Python then never raises KeyboardInterrupt).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _show(dep, args)
    except KeyboardInterrupt:  # Ctrl-C ends --watch, whatever it was doing
        return 0


def _show(dep: Deployment, args: argparse.Namespace) -> int:
    while True:
        try:
            body, source = fetch(dep)
        except OSError as err:
            print(f"telemetry status: {err}", file=sys.stderr)
            return 1
        now_s = time.time()
        if args.json:
            text = json.dumps(series_rows(body, now_s), ensure_ascii=False, indent=1)
        else:
            text = render(dep, body, source, now_s)
        if args.watch:
            print("\033[H\033[2J", end="")  # clear the terminal, as watch(1) does
        print(text, flush=True)
        if not args.watch:
            return 0
        time.sleep(args.watch)  # the refresh period of a terminal view


def _at(dep: Deployment, site: str | None, ts_s: float) -> str:
    """Local time with its offset: the site's, else the host's."""
    zone = dep.zone(site) if site else None
    if zone is None:
        return time.strftime("%Y-%m-%d %H:%M:%S%z", time.localtime(ts_s))
    return calendar(zone).local(int(ts_s * 1e9)).isoformat(timespec="seconds")
