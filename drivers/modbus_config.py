"""Configuration of a Modbus device: transport, register map, status → flags, profile.

A ``profile`` (``drivers/profiles/NAME.yaml``) gives a register map for an
analyzer family; the device's own ``points`` and ``status`` replace profile
entries of the same quantity and add new ones, and its other keys override the
profile's. Addresses are PDU addresses (``addressing: 0``, the default), register
numbers counted from 1 (``addressing: 1``), or Modicon numbers such as 40001 and
30010 (``addressing: modicon``, which implies the table); a quoted Modicon
string like ``"4x0001"`` is accepted in any mode.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from drivers.modbus_decode import BIT_TABLES, NUMERIC_TYPES, TYPES, ByteOrder, Table, parse_modicon
from drivers.modbus_link import LinkSpec
from drivers.modbus_plan import MAX_REGISTERS, Block, Span, plan
from telemetry.config import DeviceConfig, Duration, KnownSeries, Model, Name
from telemetry.config_base import TimeZone
from telemetry.model import Flag

PROFILE_DIR = Path(__file__).parent / "profiles"

PointType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"]


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise PydanticCustomError(
            "profile", "expected a profile name ({names})", {"names": ", ".join(profiles()), "at": "profile"}
        )
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.pop("description", None)
    return dict(data)


SAMPLE_TIME_REGISTERS = {"epoch": 2, "ymdhms": 6, "ymdhms_bcd": 3}


class SampleTime(Model):
    """Where an analyzer with a measuring cycle keeps the sample time of the result a point holds.

    ``epoch``: seconds since 1970 (UTC) as uint32; ``ymdhms``: six registers year, month, day,
    hour, minute, second of the analyzer's clock in ``timezone``; ``ymdhms_bcd``: three
    registers 0xYYMM, 0xDDhh, 0xmmss. A time later than the poll (+5 min) or older than
    ``max_age`` is not believed: the reading then takes the poll's time (counted, logged once).
    """

    address: int | str
    table: Table | None = None
    format: Literal["epoch", "ymdhms", "ymdhms_bcd"] = "ymdhms"
    byte_order: ByteOrder | None = None
    timezone: TimeZone = "Asia/Shanghai"
    max_age: Duration = 86400.0


class ModbusPoint(Model):
    quantity: Name
    address: int | str
    table: Table | None = None
    type: PointType = "float32"
    byte_order: ByteOrder | None = None
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    sample_time: SampleTime | None = None


class StatusRegister(Model):
    """A status register whose value (``values``) or bits (``bits``) map to HJ 212 flags.

    The first matching entry in the order written wins, so list the most severe
    first. ``applies_to`` names the quantities it flags (default: all of the device).
    With ``values``, a value neither listed nor ``normal`` is an analyzer state nobody mapped:
    its readings are flagged ``D`` (fault), never passed as valid data.
    """

    address: int | str
    table: Table | None = None
    type: Literal["int16", "uint16", "int32", "uint32"] = "uint16"
    byte_order: ByteOrder | None = None
    values: dict[int, Flag] = {}
    bits: dict[Annotated[int, Field(ge=0, le=31)], Flag] = {}
    applies_to: list[Name] = []
    normal: list[int] = [0]  # with ``values``: the values that mean normal operation (flag N)

    @model_validator(mode="after")
    def _has_mapping(self) -> StatusRegister:
        if not self.values and not self.bits:
            raise PydanticCustomError("status", "expected 'values' or 'bits' mapping to flags")
        return self

    def flag(self, raw: int) -> Flag:
        for value, flag in self.values.items():
            if raw == value:
                return flag
        for bit, flag in self.bits.items():
            if raw >> bit & 1:
                return flag
        return Flag.D if self.unmapped(raw) else Flag.N

    def unmapped(self, raw: int) -> bool:
        """A value the map does not know (``values`` only: bits may carry information)."""
        return bool(self.values) and raw not in self.values and raw not in self.normal


class ModbusConfig(DeviceConfig):
    """One Modbus device (a unit id on a link) and the registers to poll."""

    kind: Literal["modbus"]
    site: Name
    transport: Literal["tcp", "rtu_over_tcp", "rtu"] = "tcp"
    host: str = ""
    port: Annotated[int, Field(gt=0, lt=65536)] = 502
    serial_port: str = ""
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    unit_id: Annotated[int, Field(ge=0, le=255)] = 1
    addressing: Literal[0, 1, "modicon"] = 0
    byte_order: ByteOrder = "ABCD"
    interval: Duration = 10.0
    timeout: Duration = 3.0
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    pause: Duration = 0.0
    max_gap: Annotated[int, Field(ge=0, le=MAX_REGISTERS)] = 8
    max_registers: Annotated[int, Field(ge=1, le=MAX_REGISTERS)] = MAX_REGISTERS
    profile: str | None = None
    points: list[ModbusPoint] = []
    status: list[StatusRegister] = []

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("profile"), str):
            return data
        base = load_profile(data["profile"])
        merged = {**base, **{k: v for k, v in data.items() if k not in ("points", "status")}}
        merged["points"] = _merge_by(base.get("points", []), data.get("points", []), "quantity")
        merged["status"] = list(base.get("status", [])) + list(data.get("status", []))
        return merged

    @model_validator(mode="after")
    def _check(self) -> ModbusConfig:
        if self.interval <= 0:
            raise PydanticCustomError("interval", "expected an interval above 0s", {"at": "interval"})
        budget = self.timeout * (self.retries + 1)
        if budget >= self.interval:
            raise PydanticCustomError(
                "timeout",
                "expected timeout x (retries + 1) = {budget}s shorter than interval ({interval}s)",
                {"budget": round(budget, 3), "interval": self.interval, "at": "timeout"},
            )
        if self.transport == "rtu" and not self.serial_port:
            raise PydanticCustomError(
                "serial", "expected serial_port (e.g. /dev/ttyUSB0) for rtu", {"at": "serial_port"}
            )
        if self.transport != "rtu" and not self.host:
            raise PydanticCustomError("host", "expected host for {t}", {"t": self.transport, "at": "host"})
        if not self.points:
            raise PydanticCustomError("points", "expected at least one point (or a profile)", {"at": "points"})
        quantities = [p.quantity for p in self.points]
        for i, point in enumerate(self.points):
            self._check_point(i, point, quantities)
        for i, status in enumerate(self.status):
            table, _ = self.resolve(status.address, status.table, f"status.{i}")
            if table in BIT_TABLES:
                raise PydanticCustomError(
                    "status", "expected a holding or input register for status", {"at": f"status.{i}.address"}
                )
            for quantity in status.applies_to:
                if quantity not in quantities:
                    raise PydanticCustomError(
                        "status",
                        "expected a quantity of this device, found {q}",
                        {"q": quantity, "at": f"status.{i}"},
                    )
        return self

    def _check_point(self, i: int, point: ModbusPoint, quantities: list[str]) -> None:
        self.resolve(point.address, point.table, f"points.{i}")
        if quantities.index(point.quantity) != i:
            raise PydanticCustomError(
                "dup", "expected each quantity once, found {q} again", {"q": point.quantity, "at": f"points.{i}"}
            )
        if point.bit is not None and point.type != "bool":
            raise PydanticCustomError("bit", "expected 'bit' only with type bool", {"at": f"points.{i}.bit"})
        if point.sample_time is not None:
            self._check_sample_time(point.sample_time, f"points.{i}.sample_time")

    def _check_sample_time(self, sample: SampleTime, at: str) -> None:
        table, _ = self.resolve(sample.address, sample.table, at)
        if table in BIT_TABLES:
            raise PydanticCustomError(
                "sample_time", "expected a holding or input register for the sample time", {"at": f"{at}.address"}
            )

    def describe(self) -> str:
        profile = f", profile {self.profile}" if self.profile else ""
        return (
            f"{self.link().describe()} unit {self.unit_id}, {len(self.points)} points "
            f"in {len(self.blocks())} requests every {self.interval:g}s{profile}"
        )

    def blocks(self) -> list[Block]:
        return plan(self.spans(), self.max_gap, self.max_registers)

    def known_series(self) -> list[KnownSeries]:
        return [KnownSeries(self.site, self.id, p.quantity, p.unit, ("points",)) for p in self.points]

    def sampled_series(self) -> list[KnownSeries]:
        return [
            KnownSeries(self.site, self.id, p.quantity, p.unit, ("points",))
            for p in self.points
            if p.sample_time is not None
        ]

    def warnings(self) -> list[str]:
        """Wiring mistakes ``check`` can see: Modicon register numbers under PDU addressing,
        registers read for two things, and a value and its sample time read in different
        requests (they can tear: a new sample time beside the old value)."""
        return self._modicon_looking() + self._overlaps() + self._torn_sample_times()

    def _named(self) -> list[tuple[str, int | str, int]]:
        """(what, configured address, span key) of every register range this device reads."""
        out: list[tuple[str, int | str, int]] = [
            (f"points[{i}] ({p.quantity})", p.address, i) for i, p in enumerate(self.points)
        ]
        out += [(f"status[{i}]", s.address, len(self.points) + i) for i, s in enumerate(self.status)]
        for index, key in self.sample_time_keys().items():
            sample = self.points[index].sample_time
            assert sample is not None
            out.append((f"points[{index}].sample_time", sample.address, key))
        return out

    def _modicon_looking(self) -> list[str]:
        if self.addressing == "modicon":
            return []
        return [
            f"device {self.id}: {what} address {address} looks like a Modicon register number"
            f" ({'input' if address < 40000 else 'holding'} register {address % 10000}); under addressing:"
            f" {self.addressing} it is read as register {address}, which an analyzer answers with exception 2."
            " Did you mean addressing: modicon?"
            for what, address, _ in self._named()
            if isinstance(address, int) and (30001 <= address <= 39999 or 40001 <= address <= 49999)
        ]

    def _overlaps(self) -> list[str]:
        spans = {span.key: span for span in self.spans()}
        named = [(what, spans[key]) for what, _, key in self._named()]
        bits = {i for i, p in enumerate(self.points) if p.type == "bool" and p.bit is not None}
        out = []
        for n, (what, span) in enumerate(named):
            for other, second in named[:n]:
                if span.key in bits and second.key in bits:
                    continue  # bits of one register: read once, meant to share it
                if (
                    span.table == second.table
                    and span.address < second.address + second.count
                    and (second.address < span.address + span.count)
                ):
                    out.append(
                        f"device {self.id}: {what} and {other} read the same {span.table} register(s)"
                        f" {max(span.address, second.address)}: one of the addresses is likely wrong"
                    )
        return out

    def _torn_sample_times(self) -> list[str]:
        spans = {span.key: block for block in self.blocks() for span in block.spans}
        return [
            f"device {self.id}: {self.points[point].quantity} and its sample time are read in separate"
            " requests; raise max_gap (or move the registers) so one request holds both"
            for point, key in self.sample_time_keys().items()
            if spans[point] is not spans[key]
        ]

    def sample_time_keys(self) -> dict[int, int]:
        """Point index -> span key of its sample-time registers (keys after the status registers')."""
        first = len(self.points) + len(self.status)
        indexes = [i for i, p in enumerate(self.points) if p.sample_time is not None]
        return {point: first + n for n, point in enumerate(indexes)}

    @classmethod
    def cross_check(cls, devices: list[DeviceConfig]) -> list[tuple[DeviceConfig, str, str]]:
        """Devices on one link must agree on its settings, and not repeat a unit id."""
        problems: list[tuple[DeviceConfig, str, str]] = []
        first: dict[tuple[str, str, int], ModbusConfig] = {}
        units: dict[tuple[tuple[str, str, int], int], ModbusConfig] = {}
        for device in devices:
            assert isinstance(device, ModbusConfig)
            spec = device.link()
            other = first.setdefault(spec.key, device)
            if other is not device and dataclasses.replace(spec, host=other.link().host) != other.link():
                problems.append(
                    (
                        device,
                        "transport",
                        f"expected the same timeout, retries, pause and serial settings as "
                        f"device {other.id!r}, which shares the link {spec.describe()}",
                    )
                )
            twin = units.setdefault((spec.key, device.unit_id), device)
            if twin is not device:
                problems.append(
                    (
                        device,
                        "unit_id",
                        f"expected a unit id not already polled on {spec.describe()}, "
                        f"found {device.unit_id} (also device {twin.id!r})",
                    )
                )
        return problems

    def resolve(self, address: int | str, table: Table | None, at: str = "") -> tuple[Table, int]:
        """(table, PDU address) of a configured address under this device's addressing."""
        where = {"at": f"{at}.address"}
        if isinstance(address, str) or self.addressing == "modicon":
            try:
                found, pdu = parse_modicon(str(address))
            except ValueError as err:
                raise PydanticCustomError("address", str(err), where) from None
            if table is not None and table != found:
                raise PydanticCustomError(
                    "address",
                    "expected table {t} for Modicon address {a}",
                    {"t": found, "a": address, **where},
                )
            return found, _in_range(pdu, where)
        if self.addressing == 1:
            if address < 1:
                raise PydanticCustomError("address", "expected a register number from 1 (addressing: 1)", where)
            return table or "holding", _in_range(address - 1, where)
        return table or "holding", _in_range(address, where)

    def link(self) -> LinkSpec:
        return LinkSpec(
            transport=self.transport,
            host=self.serial_port if self.transport == "rtu" else self.host,
            port=self.port,
            baudrate=self.baudrate,
            bytesize=self.bytesize,
            parity=self.parity,
            stopbits=self.stopbits,
            timeout=self.timeout,
            retries=self.retries,
            pause=self.pause,
        )

    def spans(self) -> list[Span]:
        """Where every point and status register lives; status keys follow the points'."""
        out = []
        for key, point in enumerate(self.points):
            table, address = self.resolve(point.address, point.table)
            count = 1 if table in BIT_TABLES else TYPES[point.type].registers
            out.append(Span(key, table, address, count))
        for i, status in enumerate(self.status):
            table, address = self.resolve(status.address, status.table)
            out.append(Span(len(self.points) + i, table, address, TYPES[status.type].registers))
        for index, key in self.sample_time_keys().items():
            sample = self.points[index].sample_time
            assert sample is not None
            table, address = self.resolve(sample.address, sample.table)
            out.append(Span(key, table, address, SAMPLE_TIME_REGISTERS[sample.format]))
        return out


def _in_range(address: int, where: dict[str, str]) -> int:
    if not 0 <= address <= 65535:
        raise PydanticCustomError("address", "expected an address within 0..65535", where)
    return address


def _merge_by(base: list[Any], override: list[Any], key: str) -> list[Any]:
    out = {item.get(key) if isinstance(item, dict) else id(item): item for item in base}
    for item in override:
        out[item.get(key) if isinstance(item, dict) else id(item)] = item
    return list(out.values())


assert set(NUMERIC_TYPES) | {"bool"} >= set(PointType.__args__)  # type: ignore[attr-defined]
