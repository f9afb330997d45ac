"""Register codecs: data types, byte orders and address notations.

The data-type table drives validation, decoding, the probe and the simulator,
so a type is declared once. Byte orders name where the bytes A (most
significant) to D land in the registers as they arrive: ``ABCD`` big-endian,
``CDAB`` word-swapped (the common "float inverse"), ``BADC`` byte-swapped
within each word, ``DCBA`` little-endian. For 64-bit values the same two swaps
apply to four words; for 16-bit values only the byte swap matters.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Literal

ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
BYTE_ORDERS: tuple[ByteOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
Table = Literal["holding", "input", "coil", "discrete"]
BIT_TABLES = ("coil", "discrete")


@dataclass(frozen=True)
class DataType:
    """``registers``: how many 16-bit registers a value spans (0: set by ``length``)."""

    registers: int
    fmt: str  # struct format, big-endian; "" for bool and string


TYPES: dict[str, DataType] = {
    "int16": DataType(1, "h"),
    "uint16": DataType(1, "H"),
    "int32": DataType(2, "i"),
    "uint32": DataType(2, "I"),
    "int64": DataType(4, "q"),
    "uint64": DataType(4, "Q"),
    "float32": DataType(2, "f"),
    "float64": DataType(4, "d"),
    "bool": DataType(1, ""),
    "string": DataType(0, ""),
}
NUMERIC_TYPES = tuple(name for name, t in TYPES.items() if t.fmt)


def order_bytes(registers: list[int], order: ByteOrder) -> bytes:
    """The value's bytes, most significant first, from registers in ``order``."""
    words = registers[::-1] if order in ("CDAB", "DCBA") else registers
    swap = order in ("BADC", "DCBA")
    out = bytearray()
    for word in words:
        hi, lo = (word >> 8) & 0xFF, word & 0xFF
        out += bytes((lo, hi)) if swap else bytes((hi, lo))
    return bytes(out)


def to_registers(data: bytes, order: ByteOrder) -> list[int]:
    """Inverse of ``order_bytes``: registers a device with ``order`` would hold."""
    swap = order in ("BADC", "DCBA")
    words = [(data[i + 1] << 8 | data[i]) if swap else (data[i] << 8 | data[i + 1]) for i in range(0, len(data), 2)]
    return words[::-1] if order in ("CDAB", "DCBA") else words


def decode(registers: list[int], type_name: str, order: ByteOrder = "ABCD", bit: int | None = None) -> float:
    """A numeric value from the registers of one point."""
    spec = TYPES[type_name]
    if type_name == "bool":
        word = registers[0]
        if order in ("BADC", "DCBA"):
            word = ((word & 0xFF) << 8) | (word >> 8)
        return float((word >> (bit or 0)) & 1) if bit is not None else float(word != 0)
    if not spec.fmt:
        raise ValueError(f"type {type_name} is not numeric")
    data = order_bytes(registers[: spec.registers], order)
    if spec.fmt == "f":
        return shortest_float32(data)
    return float(struct.unpack(">" + spec.fmt, data)[0])


def shortest_float32(data: bytes) -> float:
    """A float32 as the shortest decimal that reads back as the same float32: 0.42, not
    0.41999998688697815 (what the analyzer sent is 0.42 to its precision; the rest is noise of
    the widening to a double)."""
    value = struct.unpack(">f", data)[0]
    if not math.isfinite(value) or value == int(value):
        return float(value)  # a whole number (a totalizer) is exact as it is
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        shorter = float(f"{value:.{digits}g}")
        if struct.pack(">f", shorter) == data:
            return shorter
    return float(value)


def decode_string(registers: list[int], order: ByteOrder = "ABCD") -> str:
    data = order_bytes(registers, "BADC" if order in ("BADC", "DCBA") else "ABCD")
    return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()


def encode(value: float, type_name: str, order: ByteOrder = "ABCD") -> list[int]:
    """Registers holding ``value`` as ``type_name`` in ``order`` (simulators and tests)."""
    spec = TYPES[type_name]
    if type_name == "bool":
        return to_registers(struct.pack(">H", 1 if value else 0), order)
    cast: float | int = value if spec.fmt in "fd" else int(value)
    return to_registers(struct.pack(">" + spec.fmt, cast), order)


_MODICON = re.compile(r"^([0134])x?(\d{4,5})$")
_MODICON_TABLES: dict[str, Table] = {"0": "coil", "1": "discrete", "3": "input", "4": "holding"}


def parse_modicon(text: str) -> tuple[Table, int]:
    """``40001``/``400001``/``4x0001`` → ("holding", 0); 3xxxx input, 1xxxx discrete, 0xxxx coil."""
    match = _MODICON.match(text.strip().lower())
    if not match:
        raise ValueError("expected Modicon notation such as 40001, 400001 or 4x0001")
    number = int(match.group(2))
    if number < 1:
        raise ValueError("Modicon register numbers start at 1")
    return _MODICON_TABLES[match.group(1)], number - 1
