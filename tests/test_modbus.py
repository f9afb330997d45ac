"""Modbus driver against real pymodbus servers (Modbus TCP and RTU framing over TCP)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from drivers.modbus import ModbusDriver
from drivers.modbus_config import ModbusConfig
from drivers.modbus_decode import BYTE_ORDERS, TYPES, decode
from drivers.modbus_link import LinkPool
from telemetry.errors import OutboxError
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, Flag, Reading, Rejected
from telemetry.sim.plant import RegisterServer
from tests.services import free_port, telemetry_cli


def wire(value: float, fmt: str, order: str) -> list[int]:
    """Registers a device in byte order ``order`` holds for ``value``; written independently
    of the driver's codec: big-endian bytes, then the byte permutation the order names."""
    be = struct.pack(">" + fmt, value)
    n = len(be)
    perm = {
        "ABCD": list(range(n)),
        "DCBA": list(range(n))[::-1],
        "BADC": [i ^ 1 for i in range(n)],
        "CDAB": [(n - 2 - (i - i % 2)) + i % 2 for i in range(n)],
    }[order]
    data = bytes(be[p] for p in perm)
    return [data[i] << 8 | data[i + 1] for i in range(0, n, 2)]


def device(port: int, points: list[dict[str, Any]], **kw: Any) -> ModbusConfig:
    base: dict[str, Any] = {
        "id": kw.pop("id", "an-1"),
        "kind": "modbus",
        "site": "s",
        "host": "127.0.0.1",
        "port": port,
        "unit_id": 1,
        "interval": "1s",
        "timeout": "200ms",
        "retries": 0,
        "points": points,
    }
    return ModbusConfig.model_validate(base | kw)


def driver(cfg: ModbusConfig, shared: dict[str, Any] | None = None) -> tuple[ModbusDriver, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return ModbusDriver(cfg, metrics, shared), metrics


@pytest.fixture
def server() -> Iterator[RegisterServer]:
    srv = RegisterServer(units=(1, 2)).start()
    yield srv
    srv.stop()


@pytest.fixture
def rtu_server() -> Iterator[RegisterServer]:
    srv = RegisterServer(units=(1, 2), framer="rtu").start()
    yield srv
    srv.stop()


async def poll(cfg: ModbusConfig) -> list[Reading]:
    drv, _ = driver(cfg)
    try:
        return await drv.poll()
    finally:
        drv.close()


NUMERIC = [name for name, t in TYPES.items() if t.fmt]
LIMITS = {"h": 2**15, "H": 2**16, "i": 2**31, "I": 2**32, "q": 2**63, "Q": 2**64}


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[str, str, float]:
    type_name = draw(st.sampled_from(NUMERIC))
    order = draw(st.sampled_from(BYTE_ORDERS))
    fmt = TYPES[type_name].fmt
    if fmt == "f":
        value = draw(st.floats(width=32, allow_nan=False, allow_infinity=False))
    elif fmt == "d":
        value = draw(st.floats(allow_nan=False, allow_infinity=False))
    else:
        unsigned = fmt.isupper()
        top = LIMITS[fmt]
        value = draw(st.integers(0 if unsigned else -top, top - 1))
    return type_name, order, value


@given(st.lists(typed_values(), min_size=1, max_size=8))
@settings(max_examples=30, deadline=None)
def test_every_type_and_byte_order_decodes_what_the_server_holds(cases: list[tuple[str, str, float]]) -> None:
    srv = RegisterServer(units=(1,)).start()
    try:
        points = []
        address = 0
        for i, (type_name, order, value) in enumerate(cases):
            srv.set(1, "holding", address, wire(value, TYPES[type_name].fmt, order))
            points.append({"quantity": f"q{i}", "address": address, "type": type_name, "byte_order": order})
            address += TYPES[type_name].registers + 3  # gaps: the plan still merges them
        readings = asyncio.run(poll(device(srv.port, points)))
    finally:
        srv.stop()
    got = {r.quantity: r.value for r in readings}
    for i, (type_name, _, value) in enumerate(cases):
        expected = float(value)
        if TYPES[type_name].fmt == "f":  # the same float32, at its own precision (see below)
            same = struct.pack(">f", got[f"q{i}"]) == struct.pack(">f", value)
            assert same or got[f"q{i}"] == value == 0, (type_name, value)  # -0.0 + offset 0 is 0.0
            continue
        assert got[f"q{i}"] == expected or math.isclose(got[f"q{i}"], expected, rel_tol=1e-15), (
            type_name,
            value,
        )


async def test_scale_offset_bits_coils_strings_of_table_and_addressing(server: RegisterServer) -> None:
    server.set(1, "holding", 0, [1234])
    server.set(1, "holding", 1, [0b1010_0000_0000_0100])
    server.set(1, "input", 9, wire(7.5, "f", "ABCD"))
    readings = await poll(
        device(
            server.port,
            [
                {
                    "quantity": "flow",
                    "address": 1,
                    "type": "uint16",
                    "scale": 0.01,
                    "offset": 1,
                    "unit": "m3/h",
                },
                {"quantity": "pump", "address": 2, "type": "bool", "bit": 2},
                {"quantity": "valve", "address": 2, "type": "bool", "bit": 3},
                {"quantity": "ph", "address": "30010", "type": "float32"},
            ],
            addressing=1,
        )
    )
    assert {r.quantity: r.value for r in readings} == {
        "flow": pytest.approx(13.34),
        "pump": 1.0,
        "valve": 0.0,
        "ph": 7.5,
    }
    modicon = await poll(
        device(server.port, [{"quantity": "cod", "address": 40001, "type": "uint16"}], addressing="modicon")
    )
    assert [r.value for r in modicon] == [1234]
    string_form = await poll(device(server.port, [{"quantity": "cod", "address": "4x0001", "type": "uint16"}]))
    assert [r.value for r in string_form] == [1234]


async def test_coils_and_discrete_inputs() -> None:
    srv = RegisterServer(units=(1,), coils={3: True, 5: True})
    await srv.start_async()
    try:
        readings = await poll(
            device(
                srv.port,
                [
                    {"quantity": "pump1", "address": 3, "table": "coil", "type": "bool"},
                    {"quantity": "pump2", "address": 4, "table": "coil", "type": "bool"},
                    {"quantity": "door", "address": 5, "table": "discrete", "type": "bool"},
                ],
            )
        )
    finally:
        await srv.stop_async()
    assert {r.quantity: r.value for r in readings} == {"pump1": 1.0, "pump2": 0.0, "door": 1.0}


async def test_coalescing_sends_the_minimum_number_of_requests(server: RegisterServer) -> None:
    points = [
        {"quantity": "a", "address": 0},  # 0-1
        {"quantity": "b", "address": 2},  # 2-3
        {"quantity": "c", "address": 10},  # gap of 6 <= max_gap 8: same block
        {"quantity": "d", "address": 40},  # gap of 28: a new block
        {"quantity": "e", "address": 0, "table": "input"},  # another table: a new block
        {"quantity": "f", "address": 200},  # 160 after d: a new block
    ]
    drv, _ = driver(device(server.port, points))
    try:
        assert [(b.table, b.address, b.count) for b in drv.blocks] == [
            ("holding", 0, 12),
            ("holding", 40, 2),
            ("holding", 200, 2),
            ("input", 0, 2),
        ]
        readings = await drv.poll()
        assert len(readings) == 6
        assert server.requests[1] == 4
    finally:
        drv.close()


async def test_block_limit_splits_at_125_registers(server: RegisterServer) -> None:
    points = [{"quantity": f"q{i}", "address": i * 2} for i in range(100)]  # 200 registers, no gaps
    drv, _ = driver(device(server.port, points))
    try:
        assert [b.count for b in drv.blocks] == [124, 76]
        assert len(await drv.poll()) == 100
        assert server.requests[1] == 2
    finally:
        drv.close()


async def test_illegal_address_splits_the_block_once_and_for_all(
    server: RegisterServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.holes.add(("holding", 5))  # inside the gap between the two points
    server.set(1, "holding", 0, wire(1.5, "f", "ABCD"))
    server.set(1, "holding", 8, wire(2.5, "f", "ABCD"))
    drv, _ = driver(device(server.port, [{"quantity": "a", "address": 0}, {"quantity": "b", "address": 8}]))
    try:
        with caplog.at_level(logging.INFO, logger="drivers.modbus"):
            first = await drv.poll()
        assert [r.value for r in first] == [1.5, 2.5]
        assert server.requests[1] == 3  # merged read refused, then one per point
        second = await drv.poll()
        assert [r.value for r in second] == [1.5, 2.5]
        assert server.requests[1] == 5
        assert sum("refused a merged read" in m for m in caplog.messages) == 1
    finally:
        drv.close()


async def test_exception_on_one_point_keeps_the_others(
    server: RegisterServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.holes.add(("holding", 500))
    server.set(1, "holding", 0, wire(41.5, "f", "ABCD"))
    drv, metrics = driver(
        device(server.port, [{"quantity": "cod", "address": 0}, {"quantity": "ghost", "address": 500}])
    )
    try:
        with caplog.at_level(logging.ERROR):
            first = await drv.poll()
            second = await drv.poll()
    finally:
        drv.close()
    assert [r.quantity for r in first] == [r.quantity for r in second] == ["cod"]
    assert len([m for m in caplog.messages if "ghost" in m]) == 1  # logged once, not per poll
    assert (
        metrics.registry.get_sample_value(
            "telemetry_device_errors_total", {"device": "an-1", "error_type": "exception"}
        )
        == 2
    )


async def test_status_register_maps_to_flags(server: RegisterServer) -> None:
    server.set(1, "holding", 0, wire(41.5, "f", "ABCD"))
    server.set(1, "holding", 2, wire(8.0, "f", "ABCD"))
    cfg = device(
        server.port,
        [{"quantity": "cod", "address": 0}, {"quantity": "nh3n", "address": 2}],
        status=[
            {"address": 10, "values": {1: "M", 2: "C", 3: "D"}, "applies_to": ["cod"]},
            {"address": 11, "bits": {0: "F", 4: "T"}},
        ],
    )
    drv, _ = driver(cfg)
    try:
        flags = {}
        for status, bits, expect in [
            (0, 0, ("N", "N")),
            (2, 0, ("C", "N")),
            (1, 0b10000, ("M", "T")),
            (0, 1, ("F", "F")),
        ]:
            server.set(1, "holding", 10, [status])
            server.set(1, "holding", 11, [bits])
            flags = {r.quantity: r.flag.value for r in await drv.poll()}
            assert (flags["cod"], flags["nh3n"]) == expect
    finally:
        drv.close()


async def test_a_status_value_outside_the_map_is_a_fault_counted_and_logged_once(
    rtu_server: RegisterServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Over RTU framing on a serial link (pyserial's socket:// URL standing in for the port)."""
    rtu_server.set(1, "holding", 0, wire(41.5, "f", "CDAB"))
    cfg = device(
        502,
        [{"quantity": "cod", "address": 0}],
        transport="rtu",
        serial_port=f"socket://127.0.0.1:{rtu_server.port}",
        byte_order="CDAB",
        status=[{"address": 20, "values": {1: "M", 2: "C"}}],
    )
    drv, metrics = driver(cfg)
    try:
        flags = []
        with caplog.at_level(logging.WARNING, logger="drivers.modbus"):
            for status in (0, 1, 4, 4, 4, 2, 7, 0):
                rtu_server.set(1, "holding", 20, [status])
                flags += [r.flag.value for r in await drv.poll()]
    finally:
        drv.close()
    assert flags == ["N", "M", "D", "D", "D", "C", "D", "N"]  # 4 and 7: nobody mapped them
    unmapped = metrics.registry.get_sample_value(
        "telemetry_errors_total", {"component": "modbus", "stage": "status", "error_type": "unmapped"}
    )
    assert unmapped == 4
    logged = [m for m in caplog.messages if "values do not map" in m]
    assert len(logged) == 2  # once for 4, once for 7
    assert "reads 4" in logged[0]


async def test_comm_loss_gives_no_reading_then_flag_b_then_normal(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    cfg = device(port, [{"quantity": "cod", "address": 0}])
    drv, metrics = driver(cfg)
    srv = RegisterServer(port=port, units=(1,))
    try:
        await srv.start_async()
        srv.set(1, "holding", 0, wire(41.5, "f", "ABCD"))
        assert [r.flag for r in await drv.poll()] == [Flag.N]
        await srv.stop_async()
        with caplog.at_level(logging.INFO, logger="drivers.modbus"):
            assert await drv.poll() == []  # missing, never fabricated
            assert await drv.poll() == []
            assert metrics.registry.get_sample_value("telemetry_device_up", {"device": "an-1"}) == 0
            srv = RegisterServer(port=port, units=(1,))
            srv.set(1, "holding", 0, wire(42.0, "f", "ABCD"))
            await srv.start_async()
            drv.link._retry_at = 0  # skip the reconnect back-off: the test is about flags, not timing
            after = await drv.poll()
        assert [(r.value, r.flag) for r in after] == [(42.0, Flag.B)]
        assert [r.flag for r in await drv.poll()] == [Flag.N]
        assert sum("device down" in m for m in caplog.messages) == 1
        assert sum("answering again" in m for m in caplog.messages) == 1
    finally:
        drv.close()
        await srv.stop_async()


async def test_rtu_framing_over_tcp_and_two_units_share_one_link(rtu_server: RegisterServer) -> None:
    rtu_server.set(1, "holding", 0, wire(1.25, "f", "CDAB"))
    rtu_server.set(2, "holding", 0, wire(2.5, "f", "CDAB"))
    shared: dict[str, Any] = {}
    a, _ = driver(
        device(
            rtu_server.port,
            [{"quantity": "cod"} | {"address": 0}],
            transport="rtu_over_tcp",
            byte_order="CDAB",
        ),
        shared,
    )
    b, _ = driver(
        device(
            rtu_server.port,
            [{"quantity": "nh3n", "address": 0}],
            transport="rtu_over_tcp",
            byte_order="CDAB",
            unit_id=2,
            id="an-2",
        ),
        shared,
    )
    try:
        assert a.link is b.link
        results = await asyncio.gather(a.poll(), b.poll())
        assert [[r.value for r in rs] for rs in results] == [[1.25], [2.5]]
    finally:
        a.close()
        b.close()
    assert shared["modbus.links"]._links == {}


async def test_rtu_serial_transport_through_a_socket_url(rtu_server: RegisterServer) -> None:
    """The serial code path, with pyserial's socket:// URL standing in for /dev/ttyUSB0."""
    rtu_server.set(1, "holding", 0, wire(3.5, "f", "ABCD"))
    cfg = device(
        0 + 502,
        [{"quantity": "tp", "address": 0}],
        transport="rtu",
        serial_port=f"socket://127.0.0.1:{rtu_server.port}",
    )
    assert [r.value for r in await poll(cfg)] == [3.5]


class SilentDevice:
    """Accepts TCP connections and never answers: a hung analyzer or a dead gateway port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(1024):
                pass
            writer.close()

        self._server = await asyncio.start_server(swallow, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def twenty_devices() -> AsyncIterator[tuple[list[RegisterServer], SilentDevice]]:
    servers = [RegisterServer(units=(1,)) for _ in range(19)]
    for srv in servers:
        await srv.start_async()
        srv.set(1, "holding", 0, wire(1.0, "f", "ABCD"))
    servers[0].failing.add(1)
    silent = SilentDevice()
    await silent.start()
    yield servers, silent
    for srv in servers:
        await srv.stop_async()
    await silent.stop()


async def test_a_dead_and_a_failing_device_do_not_delay_the_other_eighteen(
    twenty_devices: tuple[list[RegisterServer], SilentDevice],
) -> None:
    servers, silent = twenty_devices
    interval = 0.5
    ports = [silent.port] + [s.port for s in servers]
    drivers = [
        driver(device(port, [{"quantity": "cod", "address": 0}], id=f"d{i}", interval=interval, timeout="400ms"))[0]
        for i, port in enumerate(ports)
    ]
    stamps: dict[str, list[int]] = {d.name: [] for d in drivers}
    stop = asyncio.Event()

    async def emit(readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()) -> None:
        for r in readings:
            stamps[r.device].append(r.ts)
        if all(len(stamps[f"d{i}"]) >= 8 for i in range(2, 20)):
            stop.set()

    await asyncio.wait_for(asyncio.gather(*(d.run(emit, stop) for d in drivers)), 30)
    assert stamps["d0"] == []  # dead: no readings, never fabricated
    assert stamps["d1"] == []  # failing with exceptions: likewise
    for name in (f"d{i}" for i in range(2, 20)):
        gaps = [(b - a) / 1e9 for a, b in zip(stamps[name], stamps[name][1:], strict=False)]
        assert all(abs(g - interval) <= 0.1 * interval for g in gaps), (name, gaps)


def test_probe_shows_a_cdab_float_in_the_cdab_row(server: RegisterServer, capsys: pytest.CaptureFixture[str]) -> None:
    from telemetry.cli import main  # noqa: PLC0415 - the command under test

    server.set(1, "holding", 100, wire(123.456, "f", "CDAB"))
    code = main(["probe", "modbus", f"127.0.0.1:{server.port}", "--unit", "1", "--address", "100", "--count", "4"])
    out = capsys.readouterr().out
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("float32") and " CDAB " in line)
    assert "123.456" in row
    abcd = next(line for line in out.splitlines() if line.startswith("float32") and " ABCD " in line)
    assert "123.456" not in abcd


def test_probe_reports_an_unreachable_device(capsys: pytest.CaptureFixture[str]) -> None:
    from telemetry.cli import main  # noqa: PLC0415 - the command under test

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["probe", "modbus", f"127.0.0.1:{port}", "--address", "0", "--count", "2", "--timeout", "0.3"])
    assert code == 1
    assert "cannot read" in capsys.readouterr().err


def test_a_serial_port_and_a_link_to_it_are_one_link(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB0"
    port.touch()
    by_id = tmp_path / "usb-FTDI_RS485-if00-port0"
    by_id.symlink_to(port)
    one = device(502, [{"quantity": "a", "address": 0}], transport="rtu", serial_port=str(by_id))
    two = device(502, [{"quantity": "b", "address": 0}], transport="rtu", serial_port=str(port), unit_id=2)
    assert one.link().key == two.link().key  # the pool shares one connection
    assert one.link().host == str(by_id)  # and opens the name given
    assert ModbusConfig.cross_check([one, two]) == []  # the same settings: no mismatch for the name


async def test_link_pool_shares_by_key() -> None:
    pool = LinkPool()
    cfg = device(1502, [{"quantity": "a", "address": 0}])
    one = pool.acquire(cfg.link())
    two = pool.acquire(device(1502, [{"quantity": "b", "address": 0}], unit_id=2).link())
    three = pool.acquire(device(1503, [{"quantity": "c", "address": 0}]).link())
    assert one is two
    assert three is not one
    for link in (one, two, three):
        pool.release(link)


def test_probe_config_polls_each_device_once(
    server: RegisterServer, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from telemetry.cli import main  # noqa: PLC0415 - the command under test

    server.set(1, "holding", 0, wire(41.5, "f", "ABCD"))
    server.set(1, "holding", 10, [2])
    config = tmp_path / "site.yaml"
    config.write_text(
        f"""
sites: [{{id: s}}]
devices:
  - {{id: good, kind: modbus, site: s, host: 127.0.0.1, port: {server.port}, timeout: 300ms, profile: cod-analyzer}}
  - {{id: dead, kind: modbus, site: s, host: 127.0.0.1, port: {free_port()}, timeout: 300ms,
     points: [{{quantity: tp, address: 0}}]}}
"""
    )
    code = main(["probe", "-c", str(config)])
    out = capsys.readouterr().out
    assert code == 1
    good = out[out.index("good") : out.index("dead")]
    assert "cod=41.5 mg/L [C]" in good
    assert "problem" not in good
    dead = out[out.index("dead") :]
    assert "no readings" in dead
    assert "problem: connection refused or timed out" in dead


async def test_a_failed_commit_is_retried_and_polling_waits_for_it(server: RegisterServer) -> None:
    drv, metrics = driver(device(server.port, [{"quantity": "cod", "address": 0}], interval="300ms"))
    stop = asyncio.Event()
    attempts: list[list[int]] = []
    committed: list[int] = []

    async def emit(readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()) -> None:
        attempts.append([r.ts for r in readings])
        if len(attempts) <= 2:
            raise OutboxError("disk I/O error")  # a broken disk, twice
        committed.extend(r.ts for r in readings)
        if len(committed) >= 2:
            stop.set()

    await asyncio.wait_for(drv.run(emit, stop), 15)
    assert attempts[0] == attempts[1] == attempts[2]  # the same poll, not a new one each time
    assert committed[0] == attempts[0][0]
    assert committed[1] > committed[0]  # polling went on afterwards
    assert (
        metrics.registry.get_sample_value(
            "telemetry_errors_total", {"component": "modbus", "stage": "commit", "error_type": "outbox"}
        )
        == 2
    )


def bcd(n: int) -> int:
    return int(str(n), 16)


async def test_a_sample_time_register_stamps_every_poll_of_one_result_alike(server: RegisterServer) -> None:
    """An hourly analyzer: its result and the time it was sampled. Polls of one result carry that
    time (so it enters aggregation once); a new sample time gives a new stamp; a time ahead of the
    host or older than max_age is not believed: the poll's time, counted."""
    from datetime import datetime, timedelta, timezone  # noqa: PLC0415 - this test's own clock arithmetic

    bj = timezone(timedelta(hours=8))
    points = [
        {"quantity": "cod", "address": 0, "unit": "mg/L", "sample_time": {"address": 10, "format": "ymdhms"}},
        {"quantity": "tp", "address": 2, "unit": "mg/L", "sample_time": {"address": 20, "format": "ymdhms_bcd"}},
        {"quantity": "nh3n", "address": 4, "unit": "mg/L", "sample_time": {"address": 30, "format": "epoch"}},
    ]
    drv, metrics = driver(device(server.port, points))
    sampled = datetime.now(bj).replace(microsecond=0) - timedelta(minutes=90)
    server.set(1, "holding", 0, wire(41.5, "f", "ABCD"))
    server.set(
        1, "holding", 10, [sampled.year, sampled.month, sampled.day, sampled.hour, sampled.minute, sampled.second]
    )
    server.set(1, "holding", 2, wire(0.9, "f", "ABCD"))
    yy = sampled.year % 100
    server.set(
        1,
        "holding",
        20,
        [
            bcd(yy) << 8 | bcd(sampled.month),
            bcd(sampled.day) << 8 | bcd(sampled.hour),
            bcd(sampled.minute) << 8 | bcd(sampled.second),
        ],
    )
    server.set(1, "holding", 4, wire(5.0, "f", "ABCD"))
    epoch = int(sampled.timestamp())
    server.set(1, "holding", 30, [epoch >> 16, epoch & 0xFFFF])
    try:
        first = {r.quantity: r for r in await drv.poll()}
        again = {r.quantity: r for r in await drv.poll()}
        later = sampled + timedelta(hours=1)
        server.set(1, "holding", 10, [later.year, later.month, later.day, later.hour, later.minute, later.second])
        ahead = datetime.now(bj) + timedelta(hours=2)  # the analyzer's clock runs two hours fast
        epoch_ahead = int(ahead.timestamp())
        server.set(1, "holding", 30, [epoch_ahead >> 16, epoch_ahead & 0xFFFF])
        third = {r.quantity: r for r in await drv.poll()}
    finally:
        drv.close()
    stamp = int(sampled.timestamp()) * 1_000_000_000
    assert {q: r.ts for q, r in first.items()} == {"cod": stamp, "tp": stamp, "nh3n": stamp}
    assert {q: r.ts for q, r in again.items()} == {"cod": stamp, "tp": stamp, "nh3n": stamp}
    assert third["cod"].ts == int(later.timestamp()) * 1_000_000_000  # a new result, its own time
    assert third["tp"].ts == stamp  # unchanged registers: the same result
    assert third["nh3n"].ts > stamp + 3600 * 1_000_000_000  # not believed: the poll's own time ...
    assert third["nh3n"].ts < epoch_ahead * 1_000_000_000  # ... never the clock two hours ahead
    errors = metrics.registry.get_sample_value(
        "telemetry_device_errors_total", {"device": "an-1", "error_type": "sample_time"}
    )
    assert errors == 1


def test_sample_time_formats_decode_and_garbage_is_not_a_time() -> None:
    from drivers.modbus import decode_sample_time  # noqa: PLC0415

    assert decode_sample_time([2026, 11, 30, 10, 35, 0], "ymdhms", "ABCD", "Asia/Shanghai") == 1_796_006_100 * 10**9
    assert decode_sample_time([0x2611, 0x3010, 0x3500], "ymdhms_bcd", "ABCD", "Asia/Shanghai") == 1_796_006_100 * 10**9
    assert decode_sample_time([0x6929, 0x9D54], "epoch", "ABCD", "UTC") == 0x69299D54 * 10**9
    assert decode_sample_time([2026, 13, 30, 10, 35, 0], "ymdhms", "ABCD", "Asia/Shanghai") is None  # month 13
    assert decode_sample_time([0x26AB, 0x3010, 0x3500], "ymdhms_bcd", "ABCD", "Asia/Shanghai") is None  # not BCD
    assert decode_sample_time([2026, 11], "ymdhms", "ABCD", "Asia/Shanghai") is None
    assert decode_sample_time(None, "epoch", "ABCD", "UTC") is None


async def test_an_unbelievable_sample_time_stamps_each_new_result_with_its_first_poll(server: RegisterServer) -> None:
    """The sample-time registers read all zeros for ever: each result still enters once, stamped
    with the poll that first shows it; every such poll is counted."""
    points = [{"quantity": "cod", "address": 0, "unit": "mg/L", "sample_time": {"address": 10}}]
    drv, metrics = driver(device(server.port, points))
    server.set(1, "holding", 10, [0, 0, 0, 0, 0, 0])
    stamps = []
    try:
        for value in (40.0, 40.0, 41.0, 41.0, 42.0):
            server.set(1, "holding", 0, wire(value, "f", "ABCD"))
            [reading] = await drv.poll()
            stamps.append(reading.ts)
    finally:
        drv.close()
    assert stamps[0] == stamps[1] < stamps[2] == stamps[3] < stamps[4]  # one stamp per result
    errors = metrics.registry.get_sample_value(
        "telemetry_device_errors_total", {"device": "an-1", "error_type": "sample_time"}
    )
    assert errors == 5


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_a_float32_is_kept_at_its_own_precision(bits: int) -> None:
    data = bits.to_bytes(4, "big")
    value = struct.unpack(">f", data)[0]
    got = decode([bits >> 16, bits & 0xFFFF], "float32")
    if not math.isfinite(value):
        assert math.isnan(got) if math.isnan(value) else got == value
        return
    assert struct.pack(">f", got) == data  # the same float32
    if value == int(value):
        assert got == value  # a whole number stays exact (a totalizer's 61050152, not 61050150)
        return
    # and the shortest decimal that is: no fewer significant digits would do (straight search)
    fewer = next((d for d in range(1, 10) if struct.pack(">f", float(f"{value:.{d}g}")) == data), None)
    assert fewer is not None
    assert got == float(f"{value:.{fewer}g}")


def test_a_float32_of_0_42_reads_as_0_42() -> None:
    assert decode(wire(0.42, "f", "CDAB"), "float32", "CDAB") == 0.42


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return telemetry_cli("probe", "modbus", *args)


def test_probe_names_a_framing_mismatch_and_stars_the_expected_value(rtu_server: RegisterServer) -> None:
    rtu_server.set(1, "holding", 0, wire(41.5, "f", "CDAB"))
    done = _probe(f"127.0.0.1:{rtu_server.port}", "--count", "4", "--timeout", "0.5", "--expect", "41.5")
    assert done.returncode == 0, done.stderr
    assert (
        "framing mismatch: no answer with Modbus TCP (MBAP) framing, but RTU-over-TCP framing answered" in done.stdout
    )
    assert "use --rtu-over-tcp" in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("float32") and " CDAB " in line)
    assert "*@0=41.5" in row
    assert row.endswith("<== 41.5")
    summary = next(line for line in done.stdout.splitlines() if line.startswith("reads as 41.5: "))
    assert "float32 CDAB at address 0 = 41.5" in summary  # (and ABCD one register on: the alignment)
    assert done.stderr == ""  # no library lines


def test_probe_names_the_exception_code(rtu_server: RegisterServer) -> None:
    done = _probe(f"127.0.0.1:{rtu_server.port}", "--rtu-over-tcp", "--address", "60000", "--count", "2")
    assert done.returncode == 1
    assert "Modbus exception 2 (illegal data address: no such register" in done.stderr


def test_probe_names_a_serial_port_held_by_another_process() -> None:
    import serial  # noqa: PLC0415 - only here

    controller, port_fd = os.openpty()
    path = os.ttyname(port_fd)
    held = serial.Serial(path, exclusive=True)  # as the running daemon holds its bus
    try:
        done = _probe(path, "--rtu", "--bytesize", "7", "--parity", "E", "--stopbits", "1", "--timeout", "0.3")
    finally:
        held.close()
        os.close(controller)
        os.close(port_fd)
    assert done.returncode == 1
    assert f"rtu {path} 9600 7E1" in done.stdout  # every serial setting is the probe's to set
    assert f"serial port {path} is held by another process" in done.stderr
    assert "pymodbus" not in done.stderr


async def test_a_status_register_that_cannot_be_read_leaves_its_values_of_unknown_state(
    rtu_server: RegisterServer,
) -> None:
    rtu_server.set(1, "holding", 0, wire(41.5, "f", "ABCD"))
    rtu_server.set(1, "holding", 2, [57])
    cfg = device(
        rtu_server.port,
        [{"quantity": "cod", "address": 0}, {"quantity": "nh3n", "address": 2, "type": "uint16", "scale": 0.01}],
        transport="rtu_over_tcp",
        status=[{"address": 60000, "values": {1: "M"}, "applies_to": ["cod"]}],  # answers exception 2
    )
    drv, _ = driver(cfg)
    try:
        got = {r.quantity: (r.value, r.flag.value) for r in await drv.poll()}
    finally:
        drv.close()
    assert got == {"cod": (41.5, "D"), "nh3n": (0.57, "N")}  # and 0.57, not 0.5700000000000001
