"""``telemetry demo``: the simulated plant and the daemon together on loopback.

Starts the Diaoyushan analyzers (pymodbus server), the Chenxing weighbridge on
MQTT when a broker answers, the Haizhou station's data acquisition unit (HJ 212
to the daemon's listener, relayed to the city platform), and a local receiver
standing in for the supervisors' chat robot; runs the daemon on ``config/demo.yaml``; prints the
latest values every few seconds and every alert and notification as it happens.
With no InfluxDB reachable, everything stays in the local outbox, and says so.

Environment knobs (besides the ``${VAR}`` of the demo YAML): DEMO_EXCURSION_AT
(seconds until the COD excursion, default 60), DEMO_DIP_AT (seconds until the furnace
temperature dips below 850 degC, default 240), DEMO_RECEIVER_PORT (18099).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from telemetry import app
from telemetry.config import Deployment
from telemetry.config_base import host_port
from telemetry.errors import ConfigError
from telemetry.hj212.stations import Station
from telemetry.model import AlertEvent, AlertState, Flag, Reading
from telemetry.pipeline import Pipeline
from telemetry.sim.dau import SimulatedDau
from telemetry.sim.notifications import NotificationReceiver
from telemetry.sim.plant import (
    IncineratorLine,
    LeachateInlet,
    LeachateStation,
    ModbusAnalyzer,
    MqttPublisher,
    demo_sources,
)
from telemetry.sim.platform import Receiver
from telemetry.timing import wait_event

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
REFRESH_S = 10.0


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _say(text: str) -> None:
    print(f"{datetime.now():%H:%M:%S}  {text}", flush=True)


class LiveView:
    """Latest value per site and quantity, alert transitions as they happen."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Reading]] = {}  # "site/device" -> quantity -> newest
        self.readings = 0

    def observe(self, readings: Sequence[Reading], events: Sequence[AlertEvent]) -> None:
        for r in readings:
            self.latest.setdefault(f"{r.site}/{r.device}", {})[r.quantity] = r
        self.readings += len(readings)
        for e in events:
            word = "ALERT FIRING " if e.state is AlertState.FIRING else "ALERT RESOLVED"
            _say(f"*** {word} {e.site} {e.rule} [{e.severity}]: {e.message}")

    def render(self, pipeline: Pipeline | None, influx_note: str, platform: Receiver | None = None) -> None:
        _say(f"readings committed: {self.readings}")
        for site, values in sorted(self.latest.items()):
            row = "  ".join(
                f"{q} {r.value:.2f} {r.unit}".rstrip() + ("" if r.flag is Flag.N else f" [{r.flag.value}]")
                for q, r in sorted(values.items())
            )
            print(f"          {site:<30} {row}", flush=True)
        if pipeline is not None:
            waiting = ", ".join(f"{c}: {n}" for c, n in sorted(pipeline.outbox.backlog().items()))
            print(f"          outbox      {waiting or 'no sink'} waiting  ({influx_note})", flush=True)
        if platform is not None:
            counts = Counter(p.cn for p in platform.packets)
            got = ", ".join(f"{cn} x{n}" for cn, n in sorted(counts.items())) or "nothing yet"
            print(f"          HJ 212      city platform received: {got}", flush=True)


def main(config_path: str | None, minutes: float | None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("telemetry.pipeline").setLevel(logging.ERROR)  # the live view shows alerts
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    path = config_path or os.environ.get("DEMO_CONFIG") or str(DEFAULT_CONFIG)
    receiver = None
    if "ALERT_URL" not in os.environ:
        try:
            receiver = NotificationReceiver(port=int(os.environ.get("DEMO_RECEIVER_PORT", "18099"))).start()
        except OSError as err:
            print(f"cannot start the local notification receiver: {err}", file=sys.stderr)
            return 1
    try:
        dep = app.load(path)
    except ConfigError as err:
        print("\n".join(err.problems), file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(dep, minutes, receiver))
    finally:
        if receiver is not None:
            receiver.stop()


async def _run(dep: Deployment, minutes: float | None, receiver: NotificationReceiver | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    view = LiveView()
    station = LeachateStation(excursion_at=float(os.environ.get("DEMO_EXCURSION_AT", "60")))
    modbus = next(d for d in dep.devices if d.kind == "modbus")
    line = IncineratorLine(dip_at=float(os.environ.get("DEMO_DIP_AT", "240")))
    analyzer = ModbusAnalyzer(
        station,
        getattr(modbus, "host", "127.0.0.1"),
        getattr(modbus, "port", 15020),
        inlet=LeachateInlet(),
        incinerator=line,
    )
    try:
        await analyzer.start()
    except (OSError, RuntimeError) as err:
        print(f"cannot start the simulated analyzers: {err}", file=sys.stderr)
        return 1
    _say(
        f"simulated Diaoyushan analyzers on modbus tcp {analyzer.host}:{analyzer.port}"
        f" (COD excursion above 100 mg/L in ~{station.excursion_at:.0f}s,"
        f" calibration flagged [C] in ~{station.calibration_at:.0f}s)"
    )
    _say(
        f"simulated Chenxing line 1 CEMS and DCS on the same server (units 3, 4): start-up marked 启炉 for"
        f" {line.startup_for:.0f}s, the furnace dipping below 850 degC in ~{line.dip_at:.0f}s"
    )

    tasks: list[asyncio.Task[None]] = [asyncio.create_task(dau.run(stop)) for dau in _daus(dep)]
    publisher = _mqtt_publisher(dep, stop)
    if publisher is not None:
        tasks.append(asyncio.create_task(publisher))
    platform = await _platform(dep)
    influx_note = _influx_note(dep)
    _say(influx_note)
    if receiver is not None:
        _say(f"alert notifications go to a local receiver at {receiver.url}")
    _say("press Ctrl-C to stop" + (f"; stopping after {minutes:g} min" if minutes else ""))

    ready: asyncio.Future[Pipeline] = loop.create_future()
    daemon = asyncio.create_task(app.serve(dep, stop, observer=view.observe, pipeline_ready=ready))
    tasks.append(asyncio.create_task(_printer(view, ready, influx_note, receiver, stop, platform)))
    if minutes:
        tasks.append(asyncio.create_task(_stop_after(stop, minutes * 60)))
    try:
        await daemon
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await analyzer.stop()
        if platform is not None:
            await platform.stop()
    _say("demo stopped; readings not yet in InfluxDB stay in the outbox for the next run")
    return 0


def _daus(dep: Deployment) -> list[SimulatedDau]:
    """A simulated data acquisition unit for the first station of each HJ 212 listener."""
    out = []
    for device in dep.devices:
        stations: list[Station] = getattr(device, "stations", [])
        if device.kind == "hj212" and stations:
            listen = str(getattr(device, "listen", ""))
            host, port = host_port(listen)
            station = stations[0]
            out.append(SimulatedDau(host, port, station.mn, station.pw.get_secret_value()))
            _say(f"simulated data acquisition unit of {station.site} (HJ 212, MN {station.mn}) -> {listen}")
    return out


def _mqtt_publisher(dep: Deployment, stop: asyncio.Event) -> Coroutine[Any, Any, None] | None:
    """The weighbridges and the pond on MQTT, when a broker answers; else the MQTT part is off."""
    mqtt = next((d for d in dep.devices if d.kind == "mqtt"), None)
    if mqtt is None:
        return None
    host, port = getattr(mqtt, "host", "127.0.0.1"), getattr(mqtt, "port", 1883)
    if not _reachable(host, port):
        dep.devices = [d for d in dep.devices if d.kind != "mqtt"]
        _say(f"no MQTT broker at {host}:{port}: the incinerator and pond part of the demo is off")
        return None
    _say(f"simulated weighbridges (Chenxing, Donghai, Ganyu) and Shuangdian pond on mqtt {host}:{port}")
    return MqttPublisher(host, port, demo_sources()).run(stop)


async def _platform(dep: Deployment) -> Receiver | None:
    """A stand-in for the city platform, unless HJ212_HOST points at a real one."""
    if "HJ212_HOST" in os.environ or not dep.config.hj212:
        return None
    platform = Receiver(port=dep.config.hj212[0].port)
    try:
        await platform.start()
    except OSError as err:
        _say(f"cannot start the HJ 212 platform stand-in: {err}")
        return None
    _say(f"city platform stand-in (HJ 212 receiver) on 127.0.0.1:{platform.port}")
    return platform


def _influx_note(dep: Deployment) -> str:
    note = "no InfluxDB configured"
    for sink in dep.config.influxdb:
        url = urlsplit(sink.url)
        if _reachable(url.hostname or "127.0.0.1", url.port or 8086):
            note = f"writing to InfluxDB at {sink.url}"
        else:
            note = f"InfluxDB at {sink.url} not reachable: buffering in {dep.config.outbox.path}"
    return note


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await wait_event(stop, seconds)
    stop.set()


async def _printer(
    view: LiveView,
    ready: asyncio.Future[Pipeline],
    influx_note: str,
    receiver: NotificationReceiver | None,
    stop: asyncio.Event,
    platform: Receiver | None = None,
) -> None:
    pipeline: Pipeline | None = None
    seen = 0
    next_render = time.monotonic() + 3.0
    while not stop.is_set():
        if pipeline is None and ready.done():
            with contextlib.suppress(Exception):
                pipeline = ready.result()
        if receiver is not None and len(receiver.messages) > seen:
            for msg in receiver.messages[seen:]:
                _say(f"--> notification received by the supervisors' robot: {msg.get('title', '')}")
            seen = len(receiver.messages)
        if time.monotonic() >= next_render:
            view.render(pipeline, influx_note, platform)
            next_render = time.monotonic() + REFRESH_S
        await wait_event(stop, 0.5)
