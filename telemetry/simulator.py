"""Simulated plants for the demo and the tests.

- The Diaoyushan leachate station's effluent analyzers as a real pymodbus TCP
  server: COD, NH3-N, TP, pH, flow and totalised flow as float32 (big-endian
  words) in holding registers, with a daily cycle, noise, and one COD excursion
  above the 100 mg/L limit of GB 16889-2008 table 2 a little after start.
- The Chenxing incinerator's weighbridge publishing throughput over MQTT.

Values are computed when a client reads, so the server never runs a timer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient
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
_REGISTER_COUNT = 64
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
    overrides: dict[str, float] = field(default_factory=dict)

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

    def _excursion(self, since_start: float) -> float:
        """A trapezoid up to +70 mg/L (a membrane breakthrough): 10 s rise, hold, 10 s fall."""
        x = since_start - self.excursion_at
        if x < 0 or x > self.excursion_for:
            return 0.0
        return 70.0 * min(1.0, x / 10, (self.excursion_for - x) / 10)


class ModbusAnalyzer:
    """A pymodbus TCP server whose holding registers hold a station's current values."""

    def __init__(
        self, station: LeachateStation, host: str = "127.0.0.1", port: int = 15020, unit_id: int = 1
    ) -> None:
        self.station = station
        self.host = host
        self.port = port
        device = SimDevice(
            id=unit_id,
            simdata=[SimData(address=0, count=_REGISTER_COUNT, values=0, datatype=DataType.REGISTERS)],
            action=self._refresh,
        )
        self._server = ModbusTcpServer(device, address=(host, port))

    async def _refresh(
        self, _fc: int, start: int, _address: int, _count: int, registers: list[int], _values: object
    ) -> None:
        """Called by pymodbus on every request: write the current values into the registers."""
        for quantity, value in self.station.values().items():
            words = AsyncModbusTcpClient.convert_to_registers(value, AsyncModbusTcpClient.DATATYPE.FLOAT32)
            offset = LEACHATE_REGISTERS[quantity] - start
            registers[offset : offset + 2] = words

    async def start(self) -> None:
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        await self._server.shutdown()  # type: ignore[no-untyped-call]


@dataclass
class IncineratorScale:
    """A 750 t/d grate furnace's feed: throughput in t/h and tonnes since local midnight."""

    design_t_per_day: float = 750.0
    seed: int = 750

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def values(self, now: float) -> dict[str, tuple[float, str]]:
        rate = self.design_t_per_day / 24 * (1 + 0.06 * _daily(now, 10)) + self._rng.gauss(0, 0.6)
        hours_today = ((now + _BEIJING) % 86400) / 3600
        return {
            "throughput": (max(0.0, rate), "t/h"),
            "throughput_total": (self.design_t_per_day / 24 * hours_today, "t"),
        }


class MqttPublisher:
    """Publishes the incinerator scale every ``interval`` seconds as JSON with a ms timestamp."""

    def __init__(
        self,
        host: str,
        port: int,
        site: str = "chenxing",
        device: str = "weighbridge",
        interval: float = 5.0,
        scale: IncineratorScale | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site, self.device, self.interval = site, device, interval
        self.scale = scale or IncineratorScale()
        self._clock = clock
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-{site}-{device}")
        self._host, self._port = host, port

    async def run(self, stop: asyncio.Event) -> None:
        self._client.connect_async(self._host, self._port)
        self._client.loop_start()
        try:
            while not stop.is_set():
                now = self._clock()
                for quantity, (value, unit) in self.scale.values(now).items():
                    body = orjson.dumps({"value": round(value, 3), "unit": unit, "ts": int(now * 1000)})
                    self._client.publish(f"plants/{self.site}/{self.device}/{quantity}", body, qos=1)
                await wait_event(stop, self.interval)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
