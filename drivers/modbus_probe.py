"""Commissioning probe: read registers once and show them decoded every way.

Vendors' register maps often get the byte order wrong; printing every type in
all four byte orders at every start address lets an integrator spot the
reading that matches the analyzer's display, and the alignment with it.
"""

from __future__ import annotations

import dataclasses
import math

from drivers.modbus_config import ModbusConfig
from drivers.modbus_decode import BYTE_ORDERS, NUMERIC_TYPES, TYPES, Table, decode, decode_string
from drivers.modbus_link import DeviceException, DeviceTimeout, Link, LinkDown, LinkSpec, Transport
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


async def read_or_hint(spec: LinkSpec, unit: int, table: Table, address: int, count: int) -> tuple[list[int], str]:
    """Read once; on no answer over TCP, try the other framing: a serial gateway in transparent
    mode answers RTU frames only, a Modbus TCP device only MBAP ones, and either stays silent to
    the wrong kind. Returns the words and, when the other framing answered, what to use."""
    try:
        return await read_once(spec, unit, table, address, count), ""
    except DeviceTimeout:
        if spec.transport == "rtu":
            raise
        other: Transport = "rtu_over_tcp" if spec.transport == "tcp" else "tcp"
        try:
            words = await read_once(dataclasses.replace(spec, transport=other), unit, table, address, count)
        except (DeviceTimeout, DeviceException, LinkDown):
            raise DeviceTimeout(
                f"no answer within {spec.timeout:g}s with {FRAMING[spec.transport]} framing, nor with"
                f" {FRAMING[other]}: check the unit id (--unit), the address and the wiring"
            ) from None
        flag = "--rtu-over-tcp" if other == "rtu_over_tcp" else "no --rtu-over-tcp"
        hint = (
            f"framing mismatch: no answer with {FRAMING[spec.transport]} framing, but {FRAMING[other]} framing"
            f" answered: use {flag} here, and transport: {other} in the config"
        )
        return words, hint


FRAMING = {"tcp": "Modbus TCP (MBAP)", "rtu_over_tcp": "RTU-over-TCP", "rtu": "RTU"}


def matches(value: float, expect: str) -> bool:
    """The value reads as ``expect`` to the decimals given (41.5 matches 41.46, not 41.4)."""
    target = float(expect)
    decimals = len(expect.split(".", 1)[1]) if "." in expect else 0
    return math.isfinite(value) and abs(value - target) <= 0.5 * 10**-decimals + 1e-12 * abs(target)


def render(words: list[int], address: int, types: list[str] | None = None, expect: str | None = None) -> str:
    """Raw registers, then each type x byte order decoded at every start address that fits;
    with ``expect``, the cells that read as that value are starred and listed at the end."""
    lines = ["addr   " + "  ".join(f"{address + i:>10}" for i in range(len(words)))]
    lines.append("hex    " + "  ".join(f"    0x{w:04X}" for w in words))
    lines.append("uint16 " + "  ".join(f"{w:>10}" for w in words))
    lines.append("")
    lines.append(f"{'type':<8} {'order':<5}  value at each start address")
    found: list[str] = []
    for type_name in types or list(NUMERIC_TYPES):
        width = TYPES[type_name].registers
        for order in BYTE_ORDERS:
            cells = []
            hit = False
            for start in range(len(words) - width + 1):
                value = decode(words[start : start + width], type_name, order)
                star = "*" if expect is not None and matches(value, expect) else ""
                if star:
                    hit = True
                    found.append(f"{type_name} {order} at address {address + start} = {_fmt(value, type_name)}")
                cells.append(f"{star}@{address + start}={_fmt(value, type_name)}")
            if cells:
                lines.append(f"{type_name:<8} {order:<5}  " + "  ".join(cells) + (f"   <== {expect}" if hit else ""))
    text = decode_string(words, "ABCD")
    swapped = decode_string(words, "BADC")
    lines.append(f"{'string':<8} {'ABCD':<5}  {text!r}")
    lines.append(f"{'string':<8} {'BADC':<5}  {swapped!r}")
    if expect is not None:
        lines.append("")
        lines.append(f"reads as {expect}: " + ("; ".join(found) if found else "nothing (scale? another address?)"))
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
