"""HJ 212 (2017 and 2025) frames, data segments and CP items.

Frame: ``##`` + 4-digit decimal length of the data segment + data segment + 4 hex
CRC + CR LF. The CRC is HJ 212's own (start 0xFFFF; per byte ``crc = (crc >> 8) ^ b``
then eight shifts with 0xA001), not CRC-16/MODBUS; some field devices send the
MODBUS CRC anyway, which the decoder accepts when told to (``accept_modbus_crc``).

Data segment: ``QN=...;ST=..;CN=....;PW=......;MN=........;Flag=.;[PNUM=..;PNO=..;]CP=&&...&&``.
CP: items separated by ``;``, values of one item by ``,``, each ``key=value``.
Flag: bits 7..2 the version (1 = 2017, 2 = 2025), bit 1 = packet split (PNUM/PNO),
bit 0 = acknowledgement wanted.

The decoder is strict by default and tolerant where fielded devices are sloppy
(lower-case CRC digits, a trailing ``;`` before the closing ``&&``); any other
fault raises FrameError saying what is wrong, never anything else.

``lenient=True`` also accepts what field devices send (frames captured from data
acquisition units, and what peer implementations accept): CRC-16/MODBUS written high
byte first or low byte first, the HJ/T 212-2005 layout without ``QN`` and ``Flag``, a
3-digit ``ST`` (2005 captures; most carry 2 digits, which strict accepts too), and GBK
text. Every deviation a frame needed, lower-case CRC digits included, is named in
``Packet.deviations`` (a bounded set of labels, ``DEVIATIONS``), so a listener counts
them by kind and ``telemetry hj212 decode --lenient`` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

MAX_SEGMENT = 1024  # data segment characters the standard allows in one packet
MAX_CP = 950  # CP characters in one packet
MAX_LENGTH_FIELD = 9999
VERSIONS = {"2017": 1, "2025": 2}
HEADER_FIELDS = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
# What a frame may deviate by and still be decoded (the lower-case CRC in strict mode too).
DEVIATIONS = (
    "crc_lowercase",
    "crc_modbus",  # CRC-16/MODBUS instead of HJ 212's, written high byte first
    "crc_modbus_swapped",  # ... written low byte first (as Modbus RTU puts it on the wire)
    "no_qn",  # the 2005 layout: no QN ...
    "no_flag",  # ... and no Flag (no acknowledgement wanted)
    "st_3digit",
    "gbk",  # text in GBK rather than UTF-8
)


class FrameError(ValueError):
    """A frame or data segment that cannot be used; ``reason`` is a bounded label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def qn_now() -> str:
    """A QN (request id) for now: local time yyyyMMddHHmmssSSS."""
    return datetime.now().strftime("%Y%m%d%H%M%S%f")[:17]


def _shift8(value: int) -> int:
    """Eight steps of the reflected 0xA001 polynomial, as DESIGN.md's CRC runs them per byte."""
    for _ in range(8):
        value = (value >> 1) ^ 0xA001 if value & 1 else value >> 1
    return value


# Eight steps on a 16-bit value v are (v >> 8) ^ _TABLE[v & 0xFF]: the high byte only shifts down,
# the low byte alone decides what is XORed in. One lookup per byte instead of eight branches:
# every frame is checked twice (sent and acknowledged), and this was a third of the uplink's CPU.
_TABLE = [_shift8(i) for i in range(256)]


def crc16(data: bytes) -> int:
    """HJ 212's CRC: per byte, crc = (crc >> 8) ^ byte, then eight steps of 0xA001."""
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ byte
        crc = (crc >> 8) ^ table[crc & 0xFF]
    return crc


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS, which some field devices send instead: per byte, crc ^= byte, then eight steps."""
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        crc ^= byte
        crc = (crc >> 8) ^ table[crc & 0xFF]
    return crc


def flag_value(version: str, ack: bool, split: bool = False) -> int:
    return VERSIONS[version] << 2 | (2 if split else 0) | (1 if ack else 0)


def flag_version(flag: int) -> str | None:
    number = flag >> 2
    return next((name for name, v in VERSIONS.items() if v == number), None)


@dataclass
class Packet:
    """One data segment, decoded. ``cp`` keeps item order: list of {key: value} dicts."""

    qn: str = ""
    st: str = ""
    cn: str = ""
    pw: str = ""
    mn: str = ""
    flag: int = 4
    pnum: int | None = None
    pno: int | None = None
    cp: list[dict[str, str]] = field(default_factory=list)
    deviations: tuple[str, ...] = field(default=(), compare=False)  # what decoding had to tolerate

    @property
    def wants_ack(self) -> bool:
        return bool(self.flag & 1)

    @property
    def version(self) -> str | None:
        return flag_version(self.flag)

    def get(self, key: str) -> str | None:
        return next((item[key] for item in self.cp if key in item), None)


def encode_cp(items: list[dict[str, str]]) -> str:
    return "&&" + ";".join(",".join(f"{k}={v}" for k, v in item.items()) for item in items) + "&&"


def encode_segment(p: Packet) -> str:
    parts = [f"QN={p.qn}", f"ST={p.st}", f"CN={p.cn}", f"PW={p.pw}", f"MN={p.mn}", f"Flag={p.flag}"]
    if p.pnum is not None and p.pno is not None:
        parts += [f"PNUM={p.pnum}", f"PNO={p.pno}"]
    return ";".join(parts) + ";CP=" + encode_cp(p.cp)


def frame(segment: str) -> bytes:
    data = segment.encode("utf-8")
    if len(data) > MAX_LENGTH_FIELD:
        raise FrameError("too_long", f"data segment of {len(data)} bytes does not fit a 4-digit length")
    return b"##%04d" % len(data) + data + b"%04X" % crc16(data) + b"\r\n"


def encode(p: Packet) -> bytes:
    return frame(encode_segment(p))


def split(p: Packet, max_cp: int = MAX_CP) -> list[Packet]:
    """Packets for ``p``: one when its CP fits, else PNUM/PNO packets of whole CP items.

    DataTime (the first item, when present) is repeated in every packet, so each
    packet stands alone for the platform."""
    probe = Packet(p.qn, p.st, p.cn, p.pw, p.mn, p.flag | 2, 99, 99, [])
    max_cp = min(max_cp, MAX_SEGMENT - len(encode_segment(probe)) + len(encode_cp([])))
    if len(encode_segment(p)) <= MAX_SEGMENT and len(encode_cp(p.cp)) <= max_cp:
        return [p]
    head = [p.cp[0]] if p.cp and "DataTime" in p.cp[0] else []
    rest = p.cp[len(head) :]
    chunks: list[list[dict[str, str]]] = []
    current: list[dict[str, str]] = []
    for item in rest:
        if current and len(encode_cp(head + current + [item])) > max_cp:
            chunks.append(current)
            current = []
        current.append(item)
        if len(encode_cp(head + current)) > max_cp:
            raise FrameError("item_too_long", f"one CP item is longer than {max_cp} characters")
    if current:
        chunks.append(current)
    flag = p.flag | 2
    return [
        Packet(p.qn, p.st, p.cn, p.pw, p.mn, flag, len(chunks), i + 1, head + chunk) for i, chunk in enumerate(chunks)
    ]


def reassemble(packets: list[Packet]) -> Packet:
    """One packet from the PNUM/PNO parts of a split (any order; duplicates ignored)."""
    if not packets:
        raise FrameError("empty", "no packets to reassemble")
    first = packets[0]
    total = first.pnum or 1
    by_number = {p.pno: p for p in packets if p.qn == first.qn and p.pno is not None}
    if sorted(by_number) != list(range(1, total + 1)):
        raise FrameError("incomplete", f"have parts {sorted(by_number)} of {total}")
    head = [first.cp[0]] if first.cp and "DataTime" in first.cp[0] else []
    items = list(head)
    for number in range(1, total + 1):
        part = by_number[number]
        items += part.cp[len(head) :] if head else part.cp
    return Packet(first.qn, first.st, first.cn, first.pw, first.mn, first.flag & ~2, None, None, items)


def decode_frame(raw: bytes, *, accept_modbus_crc: bool = False, lenient: bool = False) -> Packet:
    """A packet from one frame (with or without the trailing CR LF). ``accept_modbus_crc``
    accepts a CRC-16/MODBUS too; ``lenient`` accepts every deviation in ``DEVIATIONS``."""
    data = raw.rstrip(b"\r\n")
    if not data.startswith(b"##"):
        raise FrameError("no_header", "frame does not start with ##")
    length_field = data[2:6]
    if len(length_field) < 4 or not length_field.isdigit():
        raise FrameError("bad_length", f"length field {length_field!r} is not 4 digits")
    length = int(length_field)
    segment, crc_field = data[6 : 6 + length], data[6 + length :]
    if len(segment) != length:
        raise FrameError("truncated", f"length field says {length} bytes, only {len(segment)} follow")
    if len(crc_field) != 4:
        raise FrameError("bad_length", f"after {length} data bytes expected 4 CRC digits, found {len(crc_field)} bytes")
    deviations = _crc_deviations(segment, crc_field, accept_modbus_crc or lenient)
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError:
        if not lenient:
            raise FrameError("bad_encoding", "data segment is not UTF-8 (GBK is accepted in lenient mode)") from None
        try:
            text = segment.decode("gbk")
        except UnicodeDecodeError:
            raise FrameError("bad_encoding", "data segment is neither UTF-8 nor GBK") from None
        deviations.append("gbk")
    return decode_segment(text, lenient=lenient, deviations=deviations)


def _crc_deviations(segment: bytes, crc_field: bytes, modbus: bool) -> list[str]:
    try:
        given = int(crc_field, 16)
    except ValueError:
        raise FrameError("bad_crc", f"CRC field {crc_field!r} is not hex") from None
    deviations = ["crc_lowercase"] if crc_field != crc_field.upper() else []
    expected = crc16(segment)
    if given == expected:
        return deviations
    if modbus:
        other = crc16_modbus(segment)
        if given == other:
            return [*deviations, "crc_modbus"]
        if given == ((other & 0xFF) << 8 | other >> 8):
            return [*deviations, "crc_modbus_swapped"]
    raise FrameError("bad_crc", f"CRC {crc_field.decode(errors='replace')} does not match {expected:04X}")


def decode_segment(text: str, *, lenient: bool = False, deviations: list[str] | None = None) -> Packet:
    found = list(deviations or [])
    head, sep, cp = text.partition("CP=")
    if not sep:
        raise FrameError("no_cp", "data segment has no CP=")
    if not (cp.startswith("&&") and cp.endswith("&&") and len(cp) >= 4):
        raise FrameError("bad_cp", "CP must be enclosed in && ... &&")
    fields = _header(head)
    for required in ("ST", "CN", "MN"):
        if required not in fields:
            raise FrameError("missing_field", f"data segment has no {required}")
    for optional, label in (("QN", "no_qn"), ("Flag", "no_flag")):  # the 2005 layout has neither
        if optional not in fields:
            if not lenient:
                raise FrameError("missing_field", f"data segment has no {optional} (lenient mode accepts that)")
            found.append(label)
    st = fields["ST"]
    if not (st.isdigit() and len(st) in (2, 3)) or (len(st) == 3 and not lenient):
        raise FrameError("bad_field", f"ST {st[:8]!r} is not 2 digits (lenient mode accepts 3)")
    if len(st) == 3:
        found.append("st_3digit")
    try:
        flag = int(fields.get("Flag", "0"))
        pnum = int(fields["PNUM"]) if "PNUM" in fields else None
        pno = int(fields["PNO"]) if "PNO" in fields else None
    except ValueError:
        raise FrameError("bad_field", "Flag, PNUM and PNO must be integers") from None
    return Packet(
        fields.get("QN", ""),
        st,
        fields["CN"],
        fields.get("PW", ""),
        fields["MN"],
        flag,
        pnum,
        pno,
        decode_cp(cp[2:-2]),
        tuple(found),
    )


def _header(head: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in head.rstrip(";").split(";"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or key not in HEADER_FIELDS:
            raise FrameError("bad_field", f"unexpected data segment field {part[:30]!r}")
        fields[key] = value
    return fields


def decode_cp(body: str) -> list[dict[str, str]]:
    items: list[dict[str, str]] = []
    for chunk in body.rstrip(";").split(";"):  # tolerant: a trailing ';' before '&&'
        if not chunk:
            continue
        item: dict[str, str] = {}
        for pair in chunk.split(","):
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise FrameError("bad_cp", f"CP item {pair[:30]!r} is not key=value")
            item[key] = value
        items.append(item)
    return items


class FrameReader:
    """Splits a TCP byte stream into frames; garbage between frames is skipped and counted.

    The buffer is bounded: it holds at most one frame (``max_length`` data bytes, a 4-digit
    length field's 9999 at most, plus 12) and the last read. A frame announcing a longer data
    segment than ``max_length`` is skipped as ``oversized`` (counted), and the search for the
    next ``##`` goes on from there."""

    def __init__(self, max_length: int = MAX_LENGTH_FIELD) -> None:
        self._buffer = bytearray()
        self.max_length = max_length
        self.skipped = 0
        self.oversized = 0

    @property
    def pending(self) -> int:
        """Bytes held of a frame not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while True:
            start = self._buffer.find(b"##")
            if start < 0:
                self.skipped += max(0, len(self._buffer) - 1)
                del self._buffer[: max(0, len(self._buffer) - 1)]
                return out
            if start:
                self.skipped += start
                del self._buffer[:start]
            if len(self._buffer) < 6:
                return out
            header = bytes(self._buffer[2:6])
            if not header.isdigit() or int(header) > self.max_length:
                if header.isdigit():
                    self.oversized += 1
                self.skipped += 1  # one byte: "###0101..." still holds a frame
                del self._buffer[:1]
                continue
            body = 6 + int(header) + 4
            if len(self._buffer) < body + 2:
                return out
            end = body + 2 if self._buffer[body : body + 2] == b"\r\n" else body  # tolerate a missing CR LF
            out.append(bytes(self._buffer[:end]))
            del self._buffer[:end]
