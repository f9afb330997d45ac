"""Simulated plants for the demo and the tests.

- A generic register server (real pymodbus, Modbus TCP or RTU over TCP) for the
  tests, the probe and the benchmarks.
- The Diaoyushan leachate station's effluent analyzers on it: COD, NH3-N, TP,
  pH, flow and totalised flow as float32 (big-endian words) in holding
  registers and a status word, with a daily cycle, noise, and one COD excursion
  above the 100 mg/L limit of GB 16889-2008 table 2 a little after start.
- The Chenxing incinerator's weighbridge publishing throughput over MQTT, and its line 1:
  the stack's CEMS and the furnace's DCS (thermocouples, feeder, marking register) on Modbus.

Values are computed when a client reads, so the server never runs a timer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from telemetry.timing import wait_event

log = logging.getLogger(__name__)

# quantity -> first holding register (float32, two registers, big-endian word order)
LEACHATE_REGISTERS: dict[str, int] = {"cod": 0, "nh3n": 2, "tp": 4, "ph": 6, "flow": 8, "flow_total": 10}
LEACHATE_UNITS: dict[str, str] = {
    "cod": "mg/L",
    "nh3n": "mg/L",
    "tp": "mg/L",
    "ph": "pH",
    "flow": "m3/h",
    "flow_total": "m3",
}
LEACHATE_STATUS = 20  # uint16: 0 normal, 1 maintenance, 2 calibration, 3 fault (the analyzer profiles' codes)
_BEIJING = 8 * 3600


def _daily(t: float, peak_hour: float) -> float:
    """-1..1 over the local (UTC+8) day, highest at ``peak_hour``."""
    hour = ((t + _BEIJING) % 86400) / 3600
    return math.cos(2 * math.pi * (hour - peak_hour) / 24)


@dataclass
class LeachateStation:
    """Effluent of a 50 t/d leachate station; ``excursion_at`` seconds after start COD breaks 100 mg/L."""

    started: float = field(default_factory=time.time)
    excursion_at: float = 60.0
    excursion_for: float = 120.0
    seed: int = 212
    calibration_at: float = 240.0
    calibration_for: float = 60.0
    overrides: dict[str, float] = field(default_factory=dict)
    status: int | None = None  # set to force the status word; None follows the calibration schedule

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._total = 18_250.0  # m3 since commissioning
        self._last = self.started

    def values(self, now: float | None = None) -> dict[str, float]:
        t = time.time() if now is None else now
        noise = self._rng.gauss
        cod = 62 + 12 * _daily(t, 14) + noise(0, 1.5) + self._excursion(t - self.started)
        flow = max(0.0, 2.08 + 0.35 * _daily(t, 11) + noise(0, 0.03))  # 50 t/d is about 2.08 m3/h
        self._total += flow * max(0.0, t - self._last) / 3600
        self._last = t
        out = {
            "cod": max(0.0, cod),
            "nh3n": max(0.0, 9.0 + 3.0 * _daily(t, 15) + noise(0, 0.4)),
            "tp": max(0.0, 0.9 + 0.2 * _daily(t, 13) + noise(0, 0.03)),
            "ph": 7.3 + 0.15 * _daily(t, 16) + noise(0, 0.02),
            "flow": flow,
            "flow_total": self._total,
        }
        out.update(self.overrides)
        return out

    def status_word(self, now: float | None = None) -> int:
        """0 normal, 2 during the scheduled calibration (then the analyzer reads its standard)."""
        if self.status is not None:
            return self.status
        since = (time.time() if now is None else now) - self.started - self.calibration_at
        return 2 if 0 <= since < self.calibration_for else 0

    def _excursion(self, since_start: float) -> float:
        """A trapezoid up to +70 mg/L (a membrane breakthrough): 10 s rise, hold, 10 s fall."""
        x = since_start - self.excursion_at
        if x < 0 or x > self.excursion_for:
            return 0.0
        return 70.0 * min(1.0, x / 10, (self.excursion_for - x) / 10)


@dataclass
class LeachateInlet:
    """Raw leachate entering the same station: two orders of magnitude above the effluent, never
    regulated, and measured by its own analyzers and flow meter (Modbus unit 2 in the demo)."""

    seed: int = 2017

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def values(self, now: float | None = None) -> dict[str, float]:
        t = time.time() if now is None else now
        noise = self._rng.gauss
        return {
            "cod": max(0.0, 9800 + 900 * _daily(t, 10) + noise(0, 120)),
            "nh3n": max(0.0, 1500 + 150 * _daily(t, 10) + noise(0, 20)),
            "flow": max(0.0, 2.25 + 0.3 * _daily(t, 9) + noise(0, 0.03)),
        }

    def status_word(self, now: float | None = None) -> int:
        return 0


# The Chenxing incinerator's line 1: its stack's CEMS (unit 3) and its DCS (unit 4).
CEMS_REGISTERS: dict[str, int] = {"o2": 0, "so2": 2, "nox": 4, "dust": 6, "hcl": 8, "co": 10, "flue_flow": 12}
DCS_REGISTERS: dict[str, int] = {"t_up1": 0, "t_up2": 2, "t_up3": 4, "t_mid1": 6, "t_mid2": 8, "feeder": 10}
DCS_STATUS = 20  # uint16: 0 normal operation, 1 drying (烘炉), 2 start-up (启炉), the furnace's marking register


@dataclass
class IncineratorLine:
    """A grate line of 750 t/d: a start-up first (marked 启炉 by its status register, the furnace
    heating from 700 to 920 degC, waste fed once it passes 850), then normal operation, and a
    dip of the furnace temperature to ~835 degC (wet waste) ``dip_at`` seconds after start for
    ``dip_for`` seconds: a few 5-minute means below 850, each an event of the furnace rule."""

    started: float = field(default_factory=time.time)
    startup_for: float = 90.0
    dip_at: float = 240.0
    dip_for: float = 600.0
    seed: int = 18485

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def furnace(self, now: float | None = None) -> float:
        """The furnace's temperature around which the thermocouples read."""
        since = (time.time() if now is None else now) - self.started
        if since < self.startup_for:
            return 700.0 + 220.0 * since / self.startup_for
        x = since - self.dip_at
        if 0 <= x <= self.dip_for:
            return 920.0 - 85.0 * min(1.0, x / 60, (self.dip_for - x) / 60)
        return 920.0

    def cems(self, now: float | None = None) -> dict[str, float]:
        t = time.time() if now is None else now
        noise = self._rng.gauss
        return {
            "o2": min(19.5, max(4.0, 8.5 + 0.8 * _daily(t, 3) + noise(0, 0.2))),
            "so2": max(0.0, 42 + 8 * _daily(t, 12) + noise(0, 2)),
            "nox": max(0.0, 180 + 25 * _daily(t, 14) + noise(0, 5)),
            "dust": max(0.0, 6 + noise(0, 0.5)),
            "hcl": max(0.0, 18 + noise(0, 1.5)),
            "co": max(0.0, 22 + noise(0, 3)),
            "flue_flow": max(0.0, 38 + 3 * _daily(t, 11) + noise(0, 0.4)),  # m3/s
        }

    def dcs(self, now: float | None = None) -> dict[str, float]:
        t = time.time() if now is None else now
        furnace = self.furnace(t)
        noise = self._rng.gauss
        out = {q: furnace + offset + noise(0, 3) for q, offset in (("t_up1", 15), ("t_up2", 5), ("t_up3", 25))}
        out.update({q: furnace + offset + noise(0, 3) for q, offset in (("t_mid1", -20), ("t_mid2", -10))})
        out["feeder"] = 1.0 if t - self.started >= self.startup_for * 0.8 else 0.0  # fed from ~876 degC
        return out

    def status_word(self, now: float | None = None) -> int:
        since = (time.time() if now is None else now) - self.started
        return 2 if since < self.startup_for else 0


class RegisterServer:
    """A real pymodbus server (Modbus TCP, or RTU framing over TCP) whose units read plain dicts.

    ``memory[unit][table][address]`` holds 16-bit register values (absent: 0) for
    ``holding`` and ``input``; coils and discrete inputs are fixed at start.
    ``holes`` are (table, address) pairs the device refuses with "illegal data
    address"; ``failing`` units answer every request with a device-failure
    exception. ``requests`` counts the requests each unit received; ``writes`` lists the
    register writes, which reads then find. Runs in the caller's event loop
    (``start_async``) or in a thread of its own (``start``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        units: tuple[int, ...] = (1,),
        framer: str = "socket",
        size: int = 10_000,
        coils: dict[int, bool] | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.host, self.port = host, port or _free_port()
        self.memory: dict[int, dict[str, dict[int, int]]] = {u: {"holding": {}, "input": {}} for u in units}
        self.holes: set[tuple[str, int]] = set()
        self.failing: set[int] = set()
        self.requests: dict[int, int] = dict.fromkeys(units, 0)
        self.writes: list[tuple[int, int, list[int]]] = []  # (unit, address, values) of each write
        self._on_read = on_read
        bits = [bool((coils or {}).get(a, False)) for a in range(256)]
        self._devices = [
            SimDevice(
                id=unit,
                simdata=(
                    [SimData(address=0, values=bits, datatype=DataType.BITS)],
                    [SimData(address=0, values=bits, datatype=DataType.BITS)],
                    [SimData(address=0, count=size, values=0, datatype=DataType.REGISTERS)],
                    [SimData(address=0, count=size, values=0, datatype=DataType.REGISTERS)],
                ),
                action=partial(self._serve, unit),
            )
            for unit in units
        ]
        self._framer = FramerType(framer)
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _serve(
        self, unit: int, fc: int, start: int, address: int, count: int, registers: list[int], values: object
    ) -> ExcCodes | None:
        self.requests[unit] += 1
        if unit in self.failing:
            return ExcCodes.DEVICE_FAILURE
        if fc in (6, 16) and isinstance(values, list):  # a write: kept where reads find it, and noted
            self.set(unit, "holding", address, [int(v) for v in values])
            self.writes.append((unit, address, [int(v) for v in values]))
            return None
        table = {3: "holding", 4: "input"}.get(fc)
        if table is None:
            return None  # coils and discrete inputs: the values given at start
        if any((table, a) in self.holes for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        if self._on_read is not None:
            self._on_read(unit)
        memory = self.memory[unit][table]
        for a in range(address, address + count):
            registers[a - start] = memory.get(a, 0) & 0xFFFF
        return None

    def set(self, unit: int, table: str, address: int, words: list[int]) -> None:
        for i, word in enumerate(words):
            self.memory[unit][table][address + i] = word

    async def start_async(self) -> None:
        # pymodbus binds the server to the running loop when it is built, so build it here.
        self._server = ModbusTcpServer(self._devices, address=(self.host, self.port), framer=self._framer)
        await self._server.serve_forever(background=True)

    async def stop_async(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]

    def start(self) -> RegisterServer:
        """Serve from a thread with its own event loop (for synchronous callers)."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.start_async())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=main, name=f"modbus-sim-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class ModbusAnalyzer:
    """The leachate station's analyzers: float32 values refreshed from the model on every read.
    The effluent is unit ``unit_id``; an ``inlet`` model, when given, answers as ``inlet_unit``."""

    def __init__(
        self,
        station: LeachateStation,
        host: str = "127.0.0.1",
        port: int = 15020,
        unit_id: int = 1,
        inlet: LeachateInlet | None = None,
        inlet_unit: int = 2,
        incinerator: IncineratorLine | None = None,
        cems_unit: int = 3,
        dcs_unit: int = 4,
    ) -> None:
        self.station = station
        self.unit_id = unit_id
        self._models: dict[int, LeachateStation | LeachateInlet] = {unit_id: station}
        if inlet is not None:
            self._models[inlet_unit] = inlet
        self._line = incinerator
        self._line_units = {cems_unit: "cems", dcs_unit: "dcs"} if incinerator is not None else {}
        units = tuple(self._models) + tuple(self._line_units)
        self.server = RegisterServer(host, port, units=units, on_read=self._refresh)
        self.host, self.port = self.server.host, self.server.port

    def _refresh(self, unit: int) -> None:
        if unit in self._line_units:
            self._refresh_line(unit, self._line_units[unit])
            return
        model = self._models[unit]
        for quantity, value in model.values().items():
            words = list(struct.unpack(">HH", struct.pack(">f", value)))  # float32, ABCD
            self.server.set(unit, "holding", LEACHATE_REGISTERS[quantity], words)
        self.server.set(unit, "holding", LEACHATE_STATUS, [model.status_word()])

    def _refresh_line(self, unit: int, part: str) -> None:
        assert self._line is not None
        values, registers = (self._line.cems(), CEMS_REGISTERS) if part == "cems" else (self._line.dcs(), DCS_REGISTERS)
        for quantity, value in values.items():
            self.server.set(unit, "holding", registers[quantity], list(struct.unpack(">HH", struct.pack(">f", value))))
        if part == "dcs":
            self.server.set(unit, "holding", DCS_STATUS, [self._line.status_word()])

    async def start(self) -> None:
        await self.server.start_async()

    async def stop(self) -> None:
        await self.server.stop_async()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class IncineratorScale:
    """A grate furnace's feed: throughput in t/h and tonnes since local midnight.

    ``load`` is the fraction of design it runs at (1.0 at design; above 1 overloads)."""

    site: str = "chenxing"
    device: str = "weighbridge"
    design_t_per_day: float = 750.0
    load: float = 1.0
    seed: int = 750

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def values(self, now: float) -> dict[str, tuple[float, str]]:
        hourly = self.design_t_per_day * self.load / 24
        rate = hourly * (1 + 0.06 * _daily(now, 10)) + self._rng.gauss(0, 0.6)
        hours_today = ((now + _BEIJING) % 86400) / 3600
        return {
            "throughput": (max(0.0, rate), "t/h"),
            "throughput_total": (hourly * hours_today, "t"),
        }


@dataclass
class PondStock:
    """A landfill's leachate regulating pond: stored volume in m3, slowly falling."""

    site: str = "shuangdian"
    device: str = "pond"
    capacity_m3: float = 100_000.0
    fraction: float = 0.36
    seed: int = 1

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def values(self, now: float) -> dict[str, tuple[float, str]]:
        level = self.capacity_m3 * self.fraction * (1 + 0.01 * _daily(now, 6)) + self._rng.gauss(0, 20)
        return {"volume": (level, "m3")}


class MqttPublisher:
    """Publishes each source every ``interval`` seconds as JSON with a ms timestamp,
    on ``plants/SITE/DEVICE/QUANTITY``."""

    def __init__(
        self,
        host: str,
        port: int,
        sources: list[IncineratorScale | PondStock] | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.sources = sources if sources is not None else [IncineratorScale()]
        self._clock = clock
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-publisher-{port}")
        self._host, self._port = host, port

    async def run(self, stop: asyncio.Event) -> None:
        self._client.connect_async(self._host, self._port)
        self._client.loop_start()
        try:
            while not stop.is_set():
                now = self._clock()
                for source in self.sources:
                    for quantity, (value, unit) in source.values(now).items():
                        body = orjson.dumps({"value": round(value, 3), "unit": unit, "ts": int(now * 1000)})
                        self._client.publish(f"plants/{source.site}/{source.device}/{quantity}", body, qos=1)
                await wait_event(stop, self.interval)
        finally:
            self._client.disconnect()
            self._client.loop_stop()


def demo_sources() -> list[IncineratorScale | PondStock]:
    """The city's three incinerators (750, 600, 700 t/d; Donghai running 12 % over) and the
    Shuangdian pond above its one-third target."""
    return [
        IncineratorScale("chenxing", "weighbridge", 750.0, 1.0, seed=750),
        IncineratorScale("donghai", "weighbridge", 600.0, 1.12, seed=600),
        IncineratorScale("ganyu", "weighbridge", 700.0, 0.95, seed=700),
        PondStock(),
    ]
