"""One connection per physical link, shared by every device behind it.

A link is a Modbus TCP socket, an RTU-framed TCP socket to a serial server or
DTU, or a serial port. A serial bus carries one request at a time, and so do
most gateways, so requests on a link are serialized by a lock, with an optional
pause after each (the RTU inter-frame silence some converters need). A device
that does not answer (timeout) is that device's failure, not the link's: only a
connection error makes the link reconnect, with exponential back-off and jitter.
A "busy" exception (code 6) is retried in place once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import serial
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.modbus_decode import Table
from telemetry.timing import Backoff

Transport = Literal["tcp", "rtu_over_tcp", "rtu"]
ILLEGAL_ADDRESS = 2
BUSY = 6


# What each Modbus exception code means, as an integrator needs to read it.
EXCEPTION_NAMES = {
    1: "illegal function: the device does not serve this table or function",
    2: "illegal data address: no such register at this address (addressing? table?)",
    3: "illegal data value: count or value out of range",
    4: "server device failure",
    5: "acknowledge: the device is working on it",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond: wrong unit id, or the device behind it is off",
}


class DeviceException(Exception):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        name = EXCEPTION_NAMES.get(code)
        super().__init__(f"Modbus exception {code}" + (f" ({name})" if name else ""))


class DeviceTimeout(Exception):
    """No (valid) answer within the timeout: the device, not the link, is at fault."""


class LinkDown(Exception):
    """The connection itself failed; the link reconnects with back-off."""


@dataclass(frozen=True)
class LinkSpec:
    transport: Transport
    host: str
    port: int
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1
    timeout: float = 3.0
    retries: int = 1
    pause: float = 0.0

    @property
    def key(self) -> tuple[str, str, int]:
        """Devices with the same key share one connection. A serial port is one port however it
        is named (``/dev/serial/by-id/...`` and the ``/dev/ttyUSB0`` it points to); the link
        still opens the name given, which survives the adapter being plugged in elsewhere."""
        if self.transport == "rtu":
            return (self.transport, self.host if "://" in self.host else os.path.realpath(self.host), 0)
        return (self.transport, self.host, self.port)

    def describe(self) -> str:
        if self.transport == "rtu":
            return f"rtu {self.host} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"
        return f"{self.transport.replace('_', '-')} {self.host}:{self.port}"


class Link:
    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.lock = asyncio.Lock()
        self.requests = 0
        self._backoff = Backoff(initial=0.5, maximum=30.0)
        self._retry_at = 0.0
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if spec.transport == "rtu":
            self._client = AsyncModbusSerialClient(
                spec.host,
                framer=FramerType.RTU,
                baudrate=spec.baudrate,
                bytesize=spec.bytesize,
                parity=spec.parity,
                stopbits=spec.stopbits,
                timeout=spec.timeout,
                retries=spec.retries,
                reconnect_delay=0,
            )
        else:
            self._client = AsyncModbusTcpClient(
                spec.host,
                port=spec.port,
                framer=FramerType.RTU if spec.transport == "rtu_over_tcp" else FramerType.SOCKET,
                timeout=spec.timeout,
                retries=spec.retries,
                reconnect_delay=0,
            )

    async def read(self, unit: int, table: Table, address: int, count: int) -> list[int]:
        """Registers (or bits as 0/1) from one device; raises DeviceException, DeviceTimeout, LinkDown."""
        async with self.lock:
            await self._connect()
            for attempt in (1, 2):
                try:
                    rr = await self._request(unit, table, address, count)
                finally:
                    if self.spec.pause:
                        await asyncio.sleep(self.spec.pause)  # bus silence between frames, by design
                if not rr.isError():
                    values: list[Any] = rr.bits[:count] if table in ("coil", "discrete") else rr.registers
                    return [int(v) for v in values]
                code = int(getattr(rr, "exception_code", 0))
                if code != BUSY or attempt == 2:
                    raise DeviceException(code)
            raise AssertionError("unreachable")

    async def write_register(self, unit: int, address: int, value: int) -> None:
        """Write one holding register (function 6), in turn with the polls; raises as ``read``."""
        async with self.lock:
            await self._connect()
            self.requests += 1
            try:
                rr = await self._client.write_register(address, value, device_id=unit)
            except ConnectionException as err:
                self._lost()
                raise LinkDown(str(err)) from None
            except ModbusIOException:
                raise DeviceTimeout(f"no answer within {self.spec.timeout:g}s") from None
            except (ModbusException, OSError) as err:
                self._lost()
                raise LinkDown(f"{type(err).__name__}: {err}") from None
            if rr.isError():
                raise DeviceException(int(getattr(rr, "exception_code", 0)))

    async def _request(self, unit: int, table: Table, address: int, count: int) -> Any:
        client = self._client
        self.requests += 1
        try:
            if table == "holding":
                return await client.read_holding_registers(address, count=count, device_id=unit)
            if table == "input":
                return await client.read_input_registers(address, count=count, device_id=unit)
            if table == "coil":
                return await client.read_coils(address, count=count, device_id=unit)
            return await client.read_discrete_inputs(address, count=count, device_id=unit)
        except ConnectionException as err:
            self._lost()
            raise LinkDown(str(err)) from None
        except ModbusIOException as err:
            if not client.connected:
                self._lost()
                raise LinkDown(str(err)) from None
            raise DeviceTimeout(f"no answer within {self.spec.timeout:g}s") from None
        except (ModbusException, OSError) as err:
            self._lost()
            raise LinkDown(f"{type(err).__name__}: {err}") from None

    async def _connect(self) -> None:
        if self._client.connected:
            return
        now = time.monotonic()
        if now < self._retry_at:
            raise LinkDown(f"reconnecting in {self._retry_at - now:.1f}s")
        try:
            ok = await self._client.connect()
        except (ModbusException, OSError) as err:
            ok = False
            reason = f"{type(err).__name__}: {err}"
        else:
            found = serial_problem(self.spec.host) if self.spec.transport == "rtu" else None
            reason = found or "connection refused or timed out"
        if not ok:
            self._lost()
            raise LinkDown(reason)
        self._backoff.reset()

    def _lost(self) -> None:
        self._client.close()
        self._retry_at = time.monotonic() + self._backoff.next()

    def close(self) -> None:
        self._client.close()


def serial_problem(port: str) -> str | None:
    """Why a serial port cannot be opened, in words (pymodbus only logs it): held by another
    process, missing, or not permitted. None when it opens (or is not a local device)."""
    if "://" in port:
        return None
    try:
        handle = serial.Serial(port, exclusive=True)
    except serial.SerialException as err:
        text = str(err)
        if "lock" in text or "busy" in text.lower() or getattr(err, "errno", None) == errno.EBUSY:
            return (
                f"serial port {port} is held by another process (the running daemon? `telemetry status`"
                " shows what it reads; stop it to probe the bus)"
            )
        if getattr(err, "errno", None) == errno.ENOENT or "No such file" in text:
            return f"no serial port {port} (is the adapter plugged in? ls /dev/ttyUSB* /dev/ttyS*)"
        if getattr(err, "errno", None) == errno.EACCES or "Permission denied" in text:
            return f"no permission to open {port} (add the user to the dialout group)"
        return f"cannot open {port}: {text}"
    handle.close()
    return None


class LinkPool:
    """The links of one pipeline, by key: devices naming the same link share it."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, str, int], Link] = {}
        self._users: dict[tuple[str, str, int], int] = {}

    def acquire(self, spec: LinkSpec) -> Link:
        link = self._links.get(spec.key)
        if link is None:
            link = self._links[spec.key] = Link(spec)
        self._users[spec.key] = self._users.get(spec.key, 0) + 1
        return link

    def release(self, link: Link) -> None:
        key = link.spec.key
        self._users[key] -= 1
        if self._users[key] == 0:
            link.close()
            del self._links[key], self._users[key]
