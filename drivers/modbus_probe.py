"""Commissioning probe: read registers once and show them decoded every way.

Vendors' register maps often get the byte order wrong; printing every type in
all four byte orders at every start address lets an integrator spot the
reading that matches the analyzer's display, and the alignment with it.
"""

from __future__ import annotations

import math

from drivers.modbus_config import ModbusConfig
from drivers.modbus_decode import BYTE_ORDERS, NUMERIC_TYPES, TYPES, Table, decode, decode_string
from drivers.modbus_link import Link, LinkSpec
from telemetry.model import Reading


def parse_target(target: str, default_port: int = 502) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep:
        return target, default_port
    if not port.isdigit():
        raise ValueError(f"expected HOST[:PORT], found {target!r}")
    return host.strip("[]"), int(port)


async def read_once(spec: LinkSpec, unit: int, table: Table, address: int, count: int) -> list[int]:
    link = Link(spec)
    try:
        return await link.read(unit, table, address, count)
    finally:
        link.close()


def render(words: list[int], address: int, types: list[str] | None = None) -> str:
    """Raw registers, then each type x byte order decoded at every start address that fits."""
    lines = ["addr   " + "  ".join(f"{address + i:>10}" for i in range(len(words)))]
    lines.append("hex    " + "  ".join(f"    0x{w:04X}" for w in words))
    lines.append("uint16 " + "  ".join(f"{w:>10}" for w in words))
    lines.append("")
    lines.append(f"{'type':<8} {'order':<5}  value at each start address")
    for type_name in types or list(NUMERIC_TYPES):
        width = TYPES[type_name].registers
        for order in BYTE_ORDERS:
            cells = []
            for start in range(len(words) - width + 1):
                value = decode(words[start : start + width], type_name, order)
                cells.append(f"@{address + start}={_fmt(value, type_name)}")
            if cells:
                lines.append(f"{type_name:<8} {order:<5}  " + "  ".join(cells))
    text = decode_string(words, "ABCD")
    swapped = decode_string(words, "BADC")
    lines.append(f"{'string':<8} {'ABCD':<5}  {text!r}")
    lines.append(f"{'string':<8} {'BADC':<5}  {swapped!r}")
    return "\n".join(lines)


def _fmt(value: float, type_name: str) -> str:
    if type_name == "float32":
        return f"{value:.7g}" if math.isfinite(value) else str(value)
    if type_name == "float64":
        return f"{value:.15g}" if math.isfinite(value) else str(value)
    return str(int(value))


def describe_readings(cfg: ModbusConfig, readings: list[Reading]) -> str:
    if not readings:
        return "no readings"
    return ", ".join(f"{r.quantity}={r.value:g}{(' ' + r.unit) if r.unit else ''} [{r.flag.value}]" for r in readings)
