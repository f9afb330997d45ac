"""Modbus TCP polling of holding and input registers.

Guarantee: one poll produces at most one reading per configured point, stamped
with the poll's start time; a poll counts as taken once ``emit`` returns, i.e.
once the readings are committed to the outbox. A device that does not answer is
logged when it goes down and when it comes back, not on every poll; a Modbus
exception on one point never stops the device's other points.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from telemetry.config import DeviceConfig, Duration, Model, Name
from telemetry.metrics import Metrics
from telemetry.model import InvalidReading, Reading
from telemetry.protocols import Emit
from telemetry.timing import wait_event

log = logging.getLogger(__name__)

_DT = AsyncModbusTcpClient.DATATYPE

# Register type -> (pymodbus data type, registers it spans).
TYPES: dict[str, tuple[Any, int]] = {
    "int16": (_DT.INT16, 1),
    "uint16": (_DT.UINT16, 1),
    "int32": (_DT.INT32, 2),
    "uint32": (_DT.UINT32, 2),
    "float32": (_DT.FLOAT32, 2),
}


class ModbusPoint(Model):
    quantity: Name
    address: Annotated[int, Field(ge=0, le=65535)]
    table: Literal["holding", "input"] = "holding"
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "float32"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""


class ModbusConfig(DeviceConfig):
    """One Modbus TCP device (host + unit id) and the registers to poll."""

    kind: Literal["modbus"]
    site: Name
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 502
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    interval: Duration = 10.0
    timeout: Duration = 3.0
    points: Annotated[list[ModbusPoint], Field(min_length=1)]

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> ModbusConfig:
        if self.interval <= 0:
            raise PydanticCustomError("interval", "expected an interval above 0s")
        if self.timeout >= self.interval:
            raise PydanticCustomError(
                "timeout",
                "expected timeout ({timeout}s) shorter than interval ({interval}s)",
                {"timeout": self.timeout, "interval": self.interval},
            )
        return self


class ModbusDriver:
    def __init__(self, cfg: ModbusConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.name = cfg.id
        self._metrics = metrics
        self._client = AsyncModbusTcpClient(
            cfg.host, port=cfg.port, timeout=cfg.timeout, retries=0, reconnect_delay=0
        )
        self._down: str | None = None
        self._bad_points: set[str] = set()

    @property
    def where(self) -> str:
        return f"{self.cfg.site}/{self.cfg.id} ({self.cfg.host}:{self.cfg.port} unit {self.cfg.unit_id})"

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while not stop.is_set():
                readings = await self.poll()
                if readings:
                    await emit(readings)
                next_at += self.cfg.interval
                now = loop.time()
                if next_at < now:  # a slow poll: skip the slots it overran, keep the phase
                    next_at += ((now - next_at) // self.cfg.interval + 1) * self.cfg.interval
                await wait_event(stop, next_at - now)
        finally:
            self._client.close()

    async def poll(self) -> list[Reading]:
        """Read every point once. Never raises for device trouble: it is logged and counted."""
        ts = time.time_ns()
        try:
            if not self._client.connected and not await self._client.connect():
                raise ModbusException("connection refused or timed out")
            readings = [r for p in self.cfg.points if (r := await self._read(p, ts)) is not None]
        except (ModbusException, OSError) as err:
            self._client.close()
            self._went_down(type(err).__name__, err)
            return []
        self._came_up()
        return readings

    async def _read(self, point: ModbusPoint, ts: int) -> Reading | None:
        data_type, count = TYPES[point.type]
        if point.table == "holding":
            rr = await self._client.read_holding_registers(
                point.address, count=count, device_id=self.cfg.unit_id
            )
        else:
            rr = await self._client.read_input_registers(
                point.address, count=count, device_id=self.cfg.unit_id
            )
        key = f"{point.table}:{point.address}"
        if rr.isError():
            self._metrics.errors.labels("modbus", "read", "exception_response").inc()
            if key not in self._bad_points:
                self._bad_points.add(key)
                log.error(
                    "%s: %s register %d (%s) answered Modbus exception %s",
                    self.where,
                    point.table,
                    point.address,
                    point.quantity,
                    getattr(rr, "exception_code", "?"),
                )
            return None
        raw = self._client.convert_from_registers(rr.registers, data_type, word_order=point.word_order)
        assert isinstance(raw, int | float)
        try:
            reading = Reading(
                ts=ts,
                site=self.cfg.site,
                device=self.cfg.id,
                quantity=point.quantity,
                value=float(raw) * point.scale + point.offset,
                unit=point.unit,
            ).check()
        except InvalidReading as err:
            self._metrics.rejected.labels(self.cfg.id, "invalid_value").inc()
            if key not in self._bad_points:
                self._bad_points.add(key)
                log.error(
                    "%s: %s register %d (%s): %s", self.where, point.table, point.address, point.quantity, err
                )
            return None
        if key in self._bad_points:
            self._bad_points.discard(key)
            log.info(
                "%s: %s register %d (%s) reads again", self.where, point.table, point.address, point.quantity
            )
        return reading

    def _went_down(self, error_type: str, err: BaseException) -> None:
        self._metrics.errors.labels("modbus", "poll", error_type).inc()
        self._metrics.device_up.labels(self.cfg.id).set(0)
        if self._down is None:
            log.error("%s: device down: %s", self.where, err)
        else:
            log.debug("%s: still down: %s", self.where, err)
        self._down = error_type

    def _came_up(self) -> None:
        self._metrics.device_up.labels(self.cfg.id).set(1)
        if self._down is not None:
            log.info("%s: device answering again", self.where)
            self._down = None
