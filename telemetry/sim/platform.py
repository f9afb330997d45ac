"""A platform-side HJ 212 receiver, for commissioning and for the tests.

Listens for stations, logs and keeps every packet, checks its CRC (a garbled
frame is counted, never fatal), answers 9014 to packets that ask for it, and can
send commands such as history requests to a connected station. ``ack`` off,
``wrong_qn``, ``hang_up`` (close the connection on every data packet) or ``refuse``
(a QnRtn code, e.g. "3" for a wrong password) make it misbehave the way real
platforms sometimes do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from telemetry.hj212.codec import FrameError, FrameReader, Packet, decode_frame, encode

log = logging.getLogger(__name__)


class Receiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, echo: Callable[[str], None] | None = None) -> None:
        self.host, self.port = host, port
        self.packets: list[Packet] = []
        self.garbled = 0
        self.ack = True
        self.wrong_qn = False
        self.hang_up = False
        self.refuse: str | None = None
        self._echo = echo
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()
            self._server = None
        self._writers.clear()

    async def wait_for(self, predicate: Callable[[list[Packet]], object], timeout: float) -> list[Packet]:
        """Until ``predicate(packets)`` is true (any truthy value); then every packet so far."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.packets)), timeout)
            return list(self.packets)

    async def send(self, *packets: Packet) -> None:
        """Send commands to every connected station, in one write (one TCP segment as a rule)."""
        for writer in self._writers:
            writer.write(b"".join(encode(p) for p in packets))
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        frames = FrameReader()
        try:
            while data := await reader.read(4096):
                for raw in frames.feed(data):
                    await self._one(raw, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            if writer in self._writers:
                self._writers.remove(writer)
            writer.close()

    async def _one(self, raw: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            packet = decode_frame(raw)
        except FrameError as err:
            self.garbled += 1
            log.warning("garbled frame (%s): %r", err, raw[:80])
            return
        if self._echo is not None:
            self._echo(f"{datetime.now():%H:%M:%S} <- {raw.decode(errors='replace').rstrip()}")
        if self.hang_up and packet.cn not in ("9011", "9012", "9013", "9014"):
            writer.close()  # as a platform that restarts or drops idle-looking stations does
        elif self.refuse and packet.cn not in ("9011", "9012", "9013", "9014"):
            writer.write(
                encode(Packet(packet.qn, "91", "9011", packet.pw, packet.mn, 4, None, None, [{"QnRtn": self.refuse}]))
            )
        elif packet.wants_ack and self.ack:
            qn = str(int(packet.qn) + 1) if self.wrong_qn else packet.qn
            writer.write(encode(Packet(qn, "91", "9014", packet.pw, packet.mn, packet.flag & ~1, None, None, [])))
        if not writer.is_closing():
            await writer.drain()
        async with self._changed:
            self.packets.append(packet)
            self._changed.notify_all()
