"""One HJ 212 TCP connection, from either side: reading frames, writing them, answering.

The station (``telemetry.hj212.uplink``, a TCP client of each platform) and the
platform side (``drivers.hj212``, a TCP server data acquisition units connect to)
share this: the framing of a byte stream into packets (bounded, garbage skipped and
counted, strict or lenient decoding with each deviation reported), serialized writes
bounded in time (a peer that stops reading cannot hold a writer forever), the
acknowledgement handshake (send, wait for the 9014 with the same QN, resend up to
ReCount times), the answers (9011 QnRtn, 9012 ExeRtn, 9013, 9014, each with the
request's QN) and unique QNs.

Nothing here decides what a packet means: the uplink answers platform commands, the
input driver turns uploads into readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from telemetry.hj212.codec import MAX_LENGTH_FIELD, FrameError, FrameReader, Packet, decode_frame, encode, split
from telemetry.metrics import Metrics

log = logging.getLogger(__name__)

READ_CHUNK = 4096
WRITE_TIMEOUT_S = 10.0  # a peer that reads nothing fills the socket buffer; then the connection goes
ANSWERS = frozenset({"9011", "9012", "9013", "9014"})


class NotAcked(Exception):
    """The peer did not acknowledge a packet after ReCount resends."""


class Idle(Exception):
    """No complete frame arrived within the idle time (a silent, half-open or dribbling peer)."""


class QnClock:
    """QNs (request ids) in a zone's local time, yyyyMMddHHmmssSSS, unique per clock (ms steps)."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._last = 0

    def next(self) -> str:
        now = max(time.time_ns() // 1_000_000, self._last + 1)
        self._last = now
        return datetime.fromtimestamp(now / 1000, self.zone).strftime("%Y%m%d%H%M%S%f")[:17]


def answer(
    request: Packet,
    cn: str,
    cp: list[dict[str, str]] | None = None,
    *,
    mn: str | None = None,
    pw: str | None = None,
    flag: int | None = None,
    qn: str = "",
) -> Packet:
    """An answer to ``request`` (9011, 9012, 9013, 9014): the same QN (a fresh ``qn`` when it had
    none, as 2005 frames do), ST 91, no acknowledgement wanted. The station answers with its own
    MN and PW; a platform echoes the station's."""
    return Packet(
        request.qn or qn,
        "91",
        cn,
        request.pw if pw is None else pw,
        request.mn if mn is None else mn,
        (request.flag & ~3) if flag is None else flag,
        None,
        None,
        cp if cp is not None else [],
    )


class Session:
    """Frames in and out of one connection. ``component`` labels its error counters
    (``telemetry_errors_total{component, stage="read"|"decode", error_type}``)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        metrics: Metrics,
        component: str,
        *,
        lenient: bool = False,
        max_length: int = MAX_LENGTH_FIELD,
        name: str = "",
        on_deviations: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self.reader, self.writer = reader, writer
        self._metrics = metrics
        self.component = component
        self.lenient = lenient
        self.name = name
        self.frames = FrameReader(max_length)
        self.errors = 0  # garbage, oversized or garbled frames read on this connection
        self.last_raw = b""  # the frame of the packet ``packets`` yielded last (for a dead letter)
        self._on_deviations = on_deviations
        self._lock = asyncio.Lock()
        self._acks: dict[str, asyncio.Future[None]] = {}
        self._logged: set[str] = set()

    # -- reading -------------------------------------------------------------------------------

    async def packets(self, idle: float | None = None) -> AsyncIterator[Packet]:
        """Packets as they arrive, until the peer closes. With ``idle``, raises ``Idle`` when no
        complete frame arrived for that long: bytes that never make a frame keep nothing open."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + idle if idle is not None else None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                data = await asyncio.wait_for(self.reader.read(READ_CHUNK), timeout)
            except TimeoutError:
                raise Idle(f"no complete frame for {idle:g}s") from None
            if not data:
                return
            for raw, packet in self._feed(data):
                if deadline is not None and idle is not None:
                    deadline = loop.time() + idle
                self.last_raw = raw
                yield packet

    def _feed(self, data: bytes) -> list[tuple[bytes, Packet]]:
        skipped, oversized = self.frames.skipped, self.frames.oversized
        raw_frames = self.frames.feed(data)
        if self.frames.oversized > oversized:
            self._error("read", "oversized", self.frames.oversized - oversized)
        if self.frames.skipped > skipped:  # bytes between frames: garbage from the line or the peer
            self._error("read", "garbage", self.frames.skipped - skipped)
        out: list[tuple[bytes, Packet]] = []
        for raw in raw_frames:
            try:
                packet = self.decode(raw)
            except FrameError as err:
                self._error("decode", err.reason)
                if err.reason not in self._logged:  # once per kind and connection; counted always
                    self._logged.add(err.reason)
                    log.warning("hj212 %s: garbled frame (%s): %s", self.name, err.reason, err)
                continue
            if packet.deviations and self._on_deviations is not None:
                self._on_deviations(packet.deviations)
            if packet.cn == "9014" and self._acked(packet):
                continue
            out.append((raw, packet))
        return out

    def decode(self, raw: bytes) -> Packet:
        return decode_frame(raw, lenient=self.lenient)

    def _error(self, stage: str, error_type: str, n: int = 1) -> None:
        self.errors += 1
        self._metrics.errors.labels(self.component, stage, error_type).inc(n)

    # -- writing -------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Write and drain, one writer at a time; a peer that does not read for
        ``WRITE_TIMEOUT_S`` costs the connection (TimeoutError), never a hung task."""
        async with self._lock:
            if self.writer.is_closing():
                raise ConnectionError("connection closed")
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)

    async def send(self, packet: Packet) -> None:
        for part in split(packet):
            await self.write(encode(part))

    async def send_acked(
        self, packet: Packet, overtime: float, recount: int, on_attempt: Callable[[str], None] | None = None
    ) -> None:
        """Send ``packet`` (split as needed); each part that asks for an acknowledgement is sent
        again after ``overtime`` without a 9014 of its QN, up to ``recount`` times; then NotAcked.
        ``on_attempt`` hears ``sent``, ``resent``, ``acked`` or ``unacked``."""
        for part in split(packet):
            await self._send_one(part, bool(part.flag & 1), overtime, recount, on_attempt or _ignore)

    async def _send_one(
        self, packet: Packet, ack: bool, overtime: float, recount: int, on_attempt: Callable[[str], None]
    ) -> None:
        data = encode(packet)
        for attempt in range(recount + 1):
            waiter = asyncio.get_running_loop().create_future() if ack else None
            if waiter is not None:
                self._acks[packet.qn] = waiter
            await self.write(data)
            on_attempt("sent" if attempt == 0 else "resent")
            if waiter is None:
                return
            try:
                await asyncio.wait_for(waiter, overtime)
            except TimeoutError:
                continue
            finally:
                self._acks.pop(packet.qn, None)
            on_attempt("acked")
            return
        on_attempt("unacked")
        raise NotAcked(f"no 9014 for {packet.cn} QN {packet.qn} after {recount + 1} attempts")

    def _acked(self, packet: Packet) -> bool:
        """A 9014 someone waits for (by QN) resolves the wait; True when it was expected."""
        waiter = self._acks.get(packet.qn)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
            return True
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError, ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


def _ignore(_result: str) -> None:
    return None
