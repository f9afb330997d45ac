"""A simulated data acquisition unit (数采仪) for the tests, written from the standard's text
(DESIGN.md and DOMAIN.md), not from the daemon's codec: its frames, CRCs and parsing are its
own, so a mistake in ``telemetry.hj212.codec`` cannot hide behind the same mistake here.

It sends what field devices send: the standard frame, CRC-16/MODBUS written high byte or low
byte first, lower-case CRC digits, the HJ/T 212-2005 layout (no QN, no Flag, a 3-digit ST)
and GBK text. Like a real unit it waits OverTime for the 9014 of each upload's QN, sends it
again up to ReCount times, and keeps what was never acknowledged to send again after it
reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

VARIANTS = ("standard", "modbus", "modbus_swapped", "lowercase", "v2005", "gbk")


def hj212_crc(data: bytes) -> int:
    """HJ 212's CRC as DESIGN.md states it: start 0xFFFF; per byte, crc = (crc >> 8) ^ b, then
    eight shifts with 0xA001 when the low bit is set."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


def modbus_crc(data: bytes) -> int:
    """CRC-16/MODBUS (init 0xFFFF, reflected polynomial 0xA001): the byte is XORed into the low byte."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


assert (
    f"{hj212_crc(b'QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&'):04X}"
    == "1C80"
)


def wrap(segment: bytes, variant: str = "standard") -> bytes:
    """``##`` + length + segment + CRC + CR LF, the CRC as the variant writes it."""
    if variant in ("modbus", "modbus_swapped"):
        crc = modbus_crc(segment)
        text = f"{crc:04X}" if variant == "modbus" else f"{(crc & 0xFF) << 8 | crc >> 8:04X}"
    else:
        text = f"{hj212_crc(segment):04X}"
        if variant == "lowercase":
            text = text.lower()
    return b"##" + f"{len(segment):04d}".encode() + segment + text.encode() + b"\r\n"


def parse(frame: bytes) -> dict[str, str]:
    """The header fields and CP items of an answer, flat (what a DAU reads of a 9011/9014)."""
    text = frame[6:-6].decode("utf-8", errors="replace")
    head, _, cp = text.partition("CP=&&")
    out = dict(part.split("=", 1) for part in head.strip(";").split(";") if "=" in part)
    for item in cp.removesuffix("&&").replace(",", ";").split(";"):
        if "=" in item:
            key, value = item.split("=", 1)
            out[key] = value
    return out


@dataclass
class Upload:
    qn: str
    frame: bytes


@dataclass
class Dau:
    host: str
    port: int
    mn: str
    pw: str
    variant: str = "standard"
    st: str = "32"
    overtime: float = 1.0
    recount: int = 3
    answers: list[dict[str, str]] = field(default_factory=list)
    unacked: dict[str, Upload] = field(default_factory=dict)  # QN -> upload kept until its 9014
    _qn: int = 0
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _listener: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._listener = asyncio.create_task(self._listen(self._reader))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)

    def qn(self) -> str:
        self._qn += 1
        return datetime.now().strftime("%Y%m%d%H%M%S") + f"{self._qn % 1000:03d}"

    def frame(self, cn: str, cp: str, ack: bool = True, qn: str | None = None) -> tuple[str, bytes]:
        """One upload's frame as this unit's variant writes it (the 2005 layout has no QN or Flag)."""
        if self.variant == "v2005":
            segment = f"ST=101;CN={cn};PW={self.pw};MN={self.mn};CP=&&{cp}&&"  # 3-digit ST, as captured
            return "", wrap(segment.encode(), self.variant)
        given = qn
        while True:
            qn = given or self.qn()
            flag = 5 if ack else 4
            segment = f"QN={qn};ST={self.st};CN={cn};PW={self.pw};MN={self.mn};Flag={flag};CP=&&{cp}&&"
            data = segment.encode("gbk" if self.variant == "gbk" else "utf-8")
            framed = wrap(data, self.variant)
            # A lowercase CRC of digits only reads as upper case: the next QN, so the variant shows.
            if self.variant != "lowercase" or given or any(c in b"abcdef" for c in framed[-6:-2]):
                return qn, framed

    async def send_raw(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def upload(self, cn: str, cp: str, ack: bool = True) -> str:
        """Send one upload; with ``ack``, wait for its 9014 (resending after OverTime, ReCount
        times) and keep it for after a reconnect if none came. Returns its QN."""
        qn, data = self.frame(cn, cp, ack and self.variant != "v2005")
        wants = ack and bool(qn)
        if wants:
            self.unacked[qn] = Upload(qn, data)
        await self.send_raw(data)
        if wants:
            await self.until_acked(qn)
        return qn

    async def until_acked(self, qn: str) -> bool:
        """Wait OverTime for the 9014 of ``qn``, sending the upload again ReCount times."""
        upload = self.unacked[qn]
        for attempt in range(self.recount + 1):
            if attempt:
                with contextlib.suppress(OSError, ConnectionError):
                    await self.send_raw(upload.frame)
            try:
                await self.wait_for(lambda: self.answer("9014", qn) is not None, self.overtime)
            except TimeoutError:
                continue
            del self.unacked[qn]
            return True
        return False

    async def resend_unacked(self) -> None:
        """After a reconnect: what was never acknowledged, oldest first."""
        for qn in list(self.unacked):
            await self.send_raw(self.unacked[qn].frame)
            await self.until_acked(qn)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    def answer(self, cn: str, qn: str | None = None) -> dict[str, str] | None:
        return next((a for a in self.answers if a.get("CN") == cn and (qn is None or a.get("QN") == qn)), None)

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        while data := await reader.read(4096):
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                if line.startswith(b"##"):
                    async with self._changed:
                        self.answers.append(parse(line + b"\r\n"))
                        self._changed.notify_all()
        async with self._changed:
            self.answers.append({"CN": "closed"})
            self._changed.notify_all()


def rtd_cp(when: datetime, values: dict[str, tuple[float, str]], extra: str = "") -> str:
    """A 2011 CP: DataTime and ``code-Rtd,code-Flag`` per code."""
    items = [f"DataTime={when:%Y%m%d%H%M%S}"]
    items += [f"{code}-Rtd={value},{code}-Flag={flag}" for code, (value, flag) in values.items()]
    return ";".join(items) + (f";{extra}" if extra else "")


def period_cp(
    start: datetime, values: dict[str, tuple[float, float, float, str]], cou: dict[str, float] | None = None
) -> str:
    """A 2051/2061/2031 CP: DataTime and ``code-Min,-Avg,-Max,-Flag`` (and ``-Cou``) per code."""
    items = [f"DataTime={start:%Y%m%d%H%M%S}"]
    for code, (low, avg, high, flag) in values.items():
        item = f"{code}-Min={low},{code}-Avg={avg},{code}-Max={high}"
        if cou and code in cou:
            item += f",{code}-Cou={cou[code]}"
        items.append(item + f",{code}-Flag={flag}")
    return ";".join(items)
