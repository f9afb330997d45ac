"""HJ 212 listener: data acquisition units (数采仪) connect and upload, as to a platform.

Guarantee: a station's upload is acknowledged (9014 with its QN, when its Flag asks for
one) only after its readings, windows and dead letters are committed to the outbox: the
same contract as MQTT's ack after commit. A kill before the commit leaves the frame
unacknowledged, and the station sends it again (HJ 212's OverTime/ReCount, or its
re-upload after the reconnect); a copy acknowledged late is stored again idempotently
(InfluxDB and the windows table overwrite the same series and time). A commit that fails
is retried with back-off while the frame stays unacknowledged.

Each connection is its own task, isolated from the others: a bounded frame buffer (one
frame of ``max_frame_bytes`` and one read), an idle limit (no complete frame within
``idle_timeout`` closes it: silent, half-open and dribbling peers alike), writes bounded in
time, and ``max_connections`` in all; garbage, oversized and garbled frames are skipped and
counted (``telemetry_errors_total{component="hj212_input"}``). What a frame means, and which
stations are let in, is ``telemetry.hj212.inbound`` and ``telemetry.hj212.stations``; the
framing and answers are the uplink's ``telemetry.hj212.session``.

Notices: a heartbeat (9015), a restart time (2081) or a time-calibration request (1013) is
answered with 9013 when it asks; with ``calibrate_time`` a 1013 also gets a 1012 setting
the station's clock to the host's (off by default: the daemon changes nothing at a station
unless told to).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from drivers.mqtt_hj212 import StationTable, count_deviations, station_desk
from telemetry.calendar import calendar
from telemetry.config import DeviceConfig, Duration
from telemetry.config_base import Listen, host_port, loopback
from telemetry.hj212.codec import MAX_LENGTH_FIELD, Packet
from telemetry.hj212.inbound import UPLOADS, InboundError
from telemetry.hj212.session import ANSWERS, Idle, QnClock, Session, answer
from telemetry.hj212.stations import Refusal, Station, redact, shown_mn, station_series
from telemetry.metrics import Metrics
from telemetry.model import Rejected
from telemetry.protocols import Emit
from telemetry.timing import Backoff, until_committed, wait_event

log = logging.getLogger(__name__)

NOTICES = frozenset({"1013", "2081", "9015"})
_CN_LABELS = frozenset(UPLOADS) | NOTICES | ANSWERS  # what a metric label may say; anything else is "other"


class Hj212Config(StationTable):
    """A TCP listener for HJ 212 stations."""

    kind: Literal["hj212"]
    listen: Listen
    lenient: bool = False  # accept CRC-16/MODBUS, the 2005 layout, a 3-digit ST, GBK (each counted)
    stations: Annotated[list[Station], Field(min_length=1)]
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64
    idle_timeout: Annotated[Duration, Field(gt=0)] = 300.0  # no complete frame for this long: closed
    max_frame_bytes: Annotated[int, Field(ge=64, le=MAX_LENGTH_FIELD)] = MAX_LENGTH_FIELD  # data segment
    calibrate_time: bool = False  # answer a station's 1013 with 1012 (the host's time)

    @model_validator(mode="after")
    def _unique(self) -> Hj212Config:
        mns = [s.mn for s in self.stations]
        for i, station in enumerate(self.stations):
            if station.mn in mns[:i]:
                raise PydanticCustomError(
                    "mn",
                    "expected each station once, found MN {mn} again",
                    {"mn": station.mn, "at": f"stations.{i}.mn"},
                )
            key = (station.site, station.device_or(self.id))
            if any((s.site, s.device_or(self.id)) == key for s in self.stations[:i]):
                raise PydanticCustomError(
                    "device",
                    "expected a device per station of one site (their series must stay apart), found {device} again",
                    {"device": key[1], "at": f"stations.{i}.device"},
                )
        return self

    def describe(self) -> str:
        lenient = ", lenient" if self.lenient else ""
        sites = ", ".join(sorted({s.site for s in self.stations}))
        return f"hj212 listener {self.listen}, {len(self.stations)} station(s) at {sites}{lenient}"

    def produces(self) -> list[tuple[str | None, str | None]]:
        return station_series(self.stations, self.id)

    def open_quantities(self) -> list[str | None]:
        return [s.site for s in self.stations]

    def warnings(self) -> list[str]:
        if loopback(host_port(self.listen)[0]):
            return []
        return [f"{self.id}: HJ 212 carries the stations' passwords in clear text; listen on a private network only"]

    @classmethod
    def cross_check(cls, devices: list[DeviceConfig]) -> list[tuple[DeviceConfig, str, str]]:
        problems: list[tuple[DeviceConfig, str, str]] = []
        seen: dict[str, str] = {}
        listens: Counter[str] = Counter()
        for device in devices:
            assert isinstance(device, Hj212Config)
            listens[device.listen] += 1
            if listens[device.listen] == 2:
                problems.append((device, "listen", f"expected one listener per address, found {device.listen} again"))
            for station in device.stations:
                if station.mn in seen:
                    message = f"expected each MN at one listener, found {station.mn} at {seen[station.mn]} too"
                    problems.append((device, "stations", message))
                seen.setdefault(station.mn, device.id)
        return problems


@dataclass
class _Connection:
    writer: asyncio.StreamWriter
    busy: bool = False  # storing a frame: at a stop it finishes that first


class Hj212Driver:
    def __init__(self, cfg: Hj212Config, metrics: Metrics, shared: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.id
        self._metrics = metrics
        self.gate, self.inbound = station_desk(cfg, shared)
        self.listening = asyncio.Event()
        self.port = 0  # the bound port, once listening (``listen`` may say 0)
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._logged: set[tuple[str, str]] = set()
        self._qns = QnClock(calendar(cfg.timezone).zone)

    @property
    def on_alert(self) -> Any:
        return self.gate.on_alert

    @on_alert.setter
    def on_alert(self, hook: Any) -> None:
        """Refusals raise alerts through this (the pipeline sets it)."""
        self.gate.on_alert = hook

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        host, port = host_port(self.cfg.listen)
        backoff = Backoff(initial=1.0, maximum=30.0)
        server: asyncio.Server | None = None
        while server is None and not stop.is_set():
            try:
                server = await asyncio.start_server(partial(self._accept, emit, stop), host, port)
            except OSError as err:
                self._metrics.errors.labels("hj212_input", "listen", "bind").inc()
                if backoff.attempts == 0:
                    log.error("hj212 %s: cannot listen on %s (%s); retrying", self.name, self.cfg.listen, err.strerror)
                await wait_event(stop, backoff.next())
        if server is None:
            return
        self.port = int(server.sockets[0].getsockname()[1])
        self._metrics.device_up.labels(self.name).set(1)
        log.info("hj212 %s: listening on %s for %d station(s)", self.name, self.cfg.listen, len(self.cfg.stations))
        self.listening.set()
        try:
            await stop.wait()
        finally:
            server.close()
            for connection in list(self._connections.values()):
                if not connection.busy:  # waiting for a frame: closed (its read ends), nothing is lost
                    connection.writer.close()
            await asyncio.gather(*self._connections, return_exceptions=True)  # a frame being stored is finished
            await server.wait_closed()
            self._metrics.device_up.labels(self.name).set(0)

    async def _accept(
        self, emit: Emit, stop: asyncio.Event, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.cfg.max_connections or stop.is_set():
            self._metrics.errors.labels("hj212_input", "accept", "too_many_connections").inc()
            w.close()
            return
        connection = self._connections[task] = _Connection(w)
        self._metrics.hj212_connections.labels(self.name).inc()
        peer = w.get_extra_info("peername")
        session = Session(
            reader,
            w,
            self._metrics,
            "hj212_input",
            lenient=self.cfg.lenient,
            max_length=self.cfg.max_frame_bytes,
            name=f"{self.name} {peer[0] if peer else ''}",
            on_deviations=self._deviations,
        )
        try:
            async for packet in session.packets(idle=self.cfg.idle_timeout):
                connection.busy = True
                stored = await self._one(session, packet, emit, stop)
                connection.busy = False
                if not stored or stop.is_set():
                    break
        except Idle:
            self._metrics.errors.labels("hj212_input", "read", "idle_timeout").inc()
        except (ConnectionError, OSError, TimeoutError) as err:
            self._metrics.errors.labels("hj212_input", "connection", type(err).__name__).inc()
        finally:
            del self._connections[task]
            self._metrics.hj212_connections.labels(self.name).dec()
            await session.close()

    def _deviations(self, deviations: tuple[str, ...]) -> None:
        count_deviations(self._metrics, self.name, deviations)

    async def _one(self, session: Session, p: Packet, emit: Emit, stop: asyncio.Event) -> bool:
        """Handle one packet; False when the connection must go (a commit given up at shutdown)."""
        cn = p.cn if p.cn in _CN_LABELS else "other"
        if p.cn in ANSWERS:
            return True  # a station's answer to a 1012 the listener sent: nothing to store
        raw = session.last_raw
        checked = self.gate.check(p, self.cfg.lenient)
        if isinstance(checked, Refusal):
            return await self._refuse(session, p, checked, cn, emit, stop)
        if p.cn in NOTICES:
            await self._notice(session, checked, p, cn)
            return True
        station = checked
        now = time.time_ns()
        result = "acked" if p.wants_ack else "stored"
        try:
            decoded = self.inbound.decode(station, p, now)
        except InboundError as err:
            # Dead-lettered, and acknowledged once that is committed: a unit that keeps an
            # unacknowledged upload would otherwise send it forever, and may hold back the rest.
            result = "unsupported" if err.reason == "unsupported_cn" else "rejected"
            self._once(err.reason, p.mn, "upload not stored: %s", str(err))
            self._metrics.rejected.labels(self.name, err.reason).inc()
            records, rejected = [], [self._dead_letter(p, err.reason, str(err), raw, now)]
        else:
            records, rejected = decoded.records, []
            if decoded.problems:
                rejected.append(self._dead_letter(p, "bad_values", decoded.problem_summary, raw, now))
                self._metrics.rejected.labels(self.name, "bad_values").inc()
        if not await self._commit(emit, stop, records, rejected):
            return False
        if p.wants_ack:  # only now: what is acknowledged is committed
            await session.send(answer(p, "9014"))
        self._metrics.hj212_frames.labels(self.name, cn, result).inc()
        return True

    async def _refuse(
        self, session: Session, p: Packet, refusal: Refusal, cn: str, emit: Emit, stop: asyncio.Event
    ) -> bool:
        """Dead-letter the frame (its PW blanked), count, then answer 9011 with the refusal's QnRtn."""
        self._once(refusal.reason, p.mn, "refused: %s", refusal.detail)
        self._metrics.rejected.labels(self.name, refusal.reason).inc()
        self._metrics.hj212_frames.labels(self.name, cn, "refused").inc()
        if not await self._commit(emit, stop, [], [self.gate.dead_letter(refusal, p.mn, session.last_raw)]):
            return False
        await session.send(answer(p, "9011", [{"QnRtn": refusal.qn_rtn}], qn=self._qns.next()))
        return True

    async def _commit(self, emit: Emit, stop: asyncio.Event, records: list[Any], rejected: list[Rejected]) -> bool:
        failures = await until_committed(partial(emit, records, rejected), stop, self._commit_failed)
        return failures is not None

    def _commit_failed(self, err: BaseException, attempt: int) -> None:
        self._metrics.errors.labels("hj212_input", "commit", "outbox").inc()
        if attempt == 1:
            log.error("hj212 %s: could not commit a station's upload (%s); retrying, unacknowledged", self.name, err)

    async def _notice(self, session: Session, station: Station, p: Packet, cn: str) -> None:
        if p.cn == "2081":
            restart = (p.get("RestartTime") or "")[:14]
            log.info("hj212 %s: station %s (re)started at %s", self.name, station.mn, restart)
        if p.wants_ack or p.cn == "9015":
            await session.send(answer(p, "9013"))
        if p.cn == "1013" and self.cfg.calibrate_time:
            now = datetime.now(calendar(station.timezone or self.cfg.timezone).zone).strftime("%Y%m%d%H%M%S")
            flag = (p.flag & ~3) | 1
            command = Packet(self._qns.next(), p.st, "1012", p.pw, p.mn, flag, None, None, [{"SystemTime": now}])
            await session.send(command)
        self._metrics.hj212_frames.labels(self.name, cn, "notice").inc()

    def _dead_letter(self, p: Packet, reason: str, detail: str, raw: bytes, now: int) -> Rejected:
        return Rejected(now, self.name, f"hj212/{shown_mn(p.mn)}/{p.cn[:4]}", reason, detail, redact(raw))

    def _once(self, reason: str, mn: str, message: str, detail: str) -> None:
        """Log the first of each kind per station at WARNING, repeats at DEBUG (bounded)."""
        key = (reason, shown_mn(mn))
        first = key not in self._logged
        if first and len(self._logged) < 10_000:
            self._logged.add(key)
        log.log(logging.WARNING if first else logging.DEBUG, "hj212 %s: " + message, self.name, detail)
