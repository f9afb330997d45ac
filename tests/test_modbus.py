"""Modbus TCP driver against a real pymodbus server on loopback."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus import ModbusConfig, ModbusDriver
from telemetry.metrics import Metrics
from tests.services import free_port


def words(fmt: str, value: float) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    return list(struct.unpack(f">{len(raw) // 2}H", raw))


REGISTERS = (
    words("f", 41.5)  # 0-1 float32 big-endian words
    + words("f", 12.25)[::-1]  # 2-3 float32 little-endian word order
    + words("h", -7)  # 4 int16
    + words("H", 65000)  # 5 uint16
    + words("i", -100000)  # 6-7 int32
    + words("H", 1234)  # 8 uint16 with scale
)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    port = free_port()
    device = SimDevice(id=3, simdata=[SimData(address=0, values=REGISTERS, datatype=DataType.REGISTERS)])
    srv = ModbusTcpServer(device, address=("127.0.0.1", port))
    await srv.serve_forever(background=True)
    yield port
    await srv.shutdown()


def driver(port: int, points: list[dict[str, Any]], unit_id: int = 3) -> tuple[ModbusDriver, Metrics]:
    cfg = ModbusConfig.model_validate(
        {
            "id": "an-1",
            "kind": "modbus",
            "site": "s",
            "host": "127.0.0.1",
            "port": port,
            "unit_id": unit_id,
            "interval": "1s",
            "timeout": "0.5s",
            "points": points,
        }
    )
    metrics = Metrics(CollectorRegistry())
    return ModbusDriver(cfg, metrics), metrics


async def test_types_word_order_and_scale(server: int) -> None:
    drv, metrics = driver(
        server,
        [
            {"quantity": "cod", "address": 0, "type": "float32", "unit": "mg/L"},
            {"quantity": "nh3n", "address": 2, "type": "float32", "word_order": "little"},
            {"quantity": "a", "address": 4, "type": "int16"},
            {"quantity": "b", "address": 5, "type": "uint16"},
            {"quantity": "c", "address": 6, "type": "int32"},
            {"quantity": "flow", "address": 8, "type": "uint16", "scale": 0.01, "offset": 1},
            {"quantity": "ph", "address": 0, "table": "input", "type": "float32"},
        ],
    )
    readings = await drv.poll()
    got = {r.quantity: r.value for r in readings}
    assert got == {
        "cod": 41.5,
        "nh3n": 12.25,
        "a": -7,
        "b": 65000,
        "c": -100000,
        "flow": pytest.approx(13.34),
        "ph": 41.5,
    }
    assert {(r.site, r.device) for r in readings} == {("s", "an-1")}
    assert readings[0].unit == "mg/L"
    assert len({r.ts for r in readings}) == 1  # one poll, one timestamp
    assert metrics.registry.get_sample_value("telemetry_device_up", {"device": "an-1"}) == 1
    drv._client.close()


async def test_exception_on_one_point_keeps_the_others(server: int, caplog: pytest.LogCaptureFixture) -> None:
    drv, metrics = driver(
        server,
        [{"quantity": "cod", "address": 0}, {"quantity": "ghost", "address": 500}],
    )
    with caplog.at_level(logging.ERROR):
        first = await drv.poll()
        second = await drv.poll()
    assert [r.quantity for r in first] == [r.quantity for r in second] == ["cod"]
    assert len([m for m in caplog.messages if "register 500" in m]) == 1  # logged once, not per poll
    errors = {"component": "modbus", "stage": "read", "error_type": "exception_response"}
    assert metrics.registry.get_sample_value("telemetry_errors_total", errors) == 2
    drv._client.close()


async def test_device_down_is_logged_once_and_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    drv, metrics = driver(port, [{"quantity": "cod", "address": 0}])
    with caplog.at_level(logging.INFO, logger="drivers.modbus"):
        assert await drv.poll() == []
        assert await drv.poll() == []
        assert metrics.registry.get_sample_value("telemetry_device_up", {"device": "an-1"}) == 0
        device = SimDevice(id=3, simdata=[SimData(address=0, values=REGISTERS, datatype=DataType.REGISTERS)])
        srv = ModbusTcpServer(device, address=("127.0.0.1", port))
        await srv.serve_forever(background=True)
        try:
            assert [r.value for r in await drv.poll()] == [41.5]
        finally:
            drv._client.close()
            await srv.shutdown()
    downs = [m for m in caplog.messages if "device down" in m]
    ups = [m for m in caplog.messages if "answering again" in m]
    assert len(downs) == 1
    assert len(ups) == 1
    assert "127.0.0.1" in downs[0]
    assert "an-1" in downs[0]


async def test_run_emits_each_interval_until_stopped(server: int) -> None:
    drv, _ = driver(server, [{"quantity": "cod", "address": 0}])
    got: list[float] = []
    stop = asyncio.Event()

    async def emit(readings: Any) -> None:
        got.extend(r.value for r in readings)
        stop.set()

    await asyncio.wait_for(drv.run(emit, stop), 5)
    assert got == [41.5]
