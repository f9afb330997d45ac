"""A simulated data acquisition unit (数采仪) for the demo: a small leachate station's analyzers
behind a unit that speaks HJ 212 to the daemon's listener (``kind: hj212``).

Every ``interval`` it uploads real-time data (2011: COD, NH3-N, flow) and waits for the 9014;
every MinInterval it uploads the period (2051: min, average, max of what it sent, flow volume
as ``-Cou``). What is not acknowledged is kept and sent again after a reconnect, as units do.
It uses the project's codec: it shows the daemon's input side, it does not test it (the tests
have their own unit, ``tests/dau.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime
from zoneinfo import ZoneInfo

from telemetry.hj212.codec import FrameReader, Packet, decode_frame, encode, flag_value
from telemetry.hj212.session import QnClock
from telemetry.timing import Backoff, wait_event

log = logging.getLogger(__name__)
CODES = {"cod": "w01018", "nh3n": "w21003", "flow": "w00000"}  # flow in L/s, as HJ 212 prescribes


class SimulatedDau:
    def __init__(
        self, host: str, port: int, mn: str, pw: str, interval: float = 10.0, min_interval_minutes: int = 10
    ) -> None:
        self.host, self.port, self.mn, self.pw = host, port, mn, pw
        self.interval = interval
        self.minutes = min_interval_minutes
        self.zone = ZoneInfo("Asia/Shanghai")
        self._qns = QnClock(self.zone)
        self._rng = random.Random(2005)
        self._period: dict[str, list[float]] = {q: [] for q in CODES}
        self._period_start: datetime | None = None
        self.unacked: list[Packet] = []
        self.acked = 0

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(initial=1.0, maximum=15.0)
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await wait_event(stop, backoff.next())
                continue
            backoff.reset()
            try:
                await self._session(reader, writer, stop)
            except (OSError, ConnectionError, TimeoutError) as err:
                log.info("simulated DAU %s: connection lost (%s); reconnecting", self.mn, err)
            finally:
                writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
        frames = FrameReader()
        while not stop.is_set():
            self.unacked += self._uploads()
            while self.unacked:  # oldest first; each waits for its 9014 (HJ 212's OverTime of 5 s)
                packet = self.unacked[0]
                writer.write(encode(packet))
                await writer.drain()
                await asyncio.wait_for(self._ack(reader, frames, packet.qn), 5.0)
                self.unacked.pop(0)
                self.acked += 1
            await wait_event(stop, self.interval)

    async def _ack(self, reader: asyncio.StreamReader, frames: FrameReader, qn: str) -> None:
        while True:
            data = await reader.read(4096)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            for raw in frames.feed(data):
                with contextlib.suppress(ValueError):
                    answer = decode_frame(raw)
                    if answer.cn == "9014" and answer.qn == qn:
                        return

    def _packet(self, cn: str, cp: list[dict[str, str]]) -> Packet:
        return Packet(self._qns.next(), "32", cn, self.pw, self.mn, flag_value("2017", True), None, None, cp)

    def _uploads(self) -> list[Packet]:
        """Real-time data for now, after the 2051 of the MinInterval period that just ended."""
        now = datetime.now(self.zone).replace(microsecond=0)
        start = now.replace(minute=now.minute - now.minute % self.minutes, second=0)
        out = []
        if self._period_start is not None and start != self._period_start:
            out.append(self._minutes(self._period_start))
        self._period_start = start
        hour = now.hour + now.minute / 60
        values = {
            "cod": max(0.0, 55 + 8 * (hour / 24) + self._rng.gauss(0, 2)),
            "nh3n": max(0.0, 6 + self._rng.gauss(0, 0.5)),
            "flow": max(0.0, 0.15 + self._rng.gauss(0, 0.01)),  # L/s: 13 t/d
        }
        for quantity, value in values.items():
            self._period[quantity].append(value)
        items: list[dict[str, str]] = [{"DataTime": now.strftime("%Y%m%d%H%M%S")}]
        items += [{f"{CODES[q]}-Rtd": f"{v:.3f}", f"{CODES[q]}-Flag": "N"} for q, v in values.items()]
        return [*out, self._packet("2011", items)]

    def _minutes(self, start: datetime) -> Packet:
        """The 2051 of a MinInterval period: min, average and max of what was sent in it."""
        items: list[dict[str, str]] = [{"DataTime": start.strftime("%Y%m%d%H%M%S")}]
        for quantity, values in self._period.items():
            if not values:
                continue
            code = CODES[quantity]
            item = {f"{code}-Min": f"{min(values):.3f}", f"{code}-Avg": f"{sum(values) / len(values):.3f}"}
            item[f"{code}-Max"] = f"{max(values):.3f}"
            if quantity == "flow":  # the period's volume: L/s x seconds / 1000
                item[f"{code}-Cou"] = f"{sum(values) / len(values) * self.minutes * 60 / 1000:.3f}"
            items.append(item | {f"{code}-Flag": "N"})
        self._period = {q: [] for q in CODES}
        return self._packet("2051", items)
