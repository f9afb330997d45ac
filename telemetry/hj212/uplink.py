"""HJ 212 uplink: one monitoring point's connection to one environmental monitoring platform.

Guarantee: every minute (2051, per MinInterval), hour (2061) and day (2031)
period of the point's closed aggregate windows within ``backfill`` is sent
until the platform acknowledges it (9014 with the same QN), oldest first, so
after an outage or a restart the holes fill in order before live data catches
up. A period goes up only once every window in it has closed (the aggregator's
grace may be longer than the platform's). What was acknowledged is recorded in
SQLite and never sent again. An invalid window goes up with its flag, never
with a made-up value; values go in the units their codes prescribe
(``periods``). Real-time data (2011) is sent at ``rtd_interval`` from the
latest readings still fresh, and is not back-filled; readings relayed from a
data acquisition unit keep its DataTime, flags, ``SampleTime`` and ``EFlag``.

The parts: ``schedule`` (what is due), ``periods`` (packets: CP items, units,
codes), ``commands`` (the platform's commands and their answers), ``session``
(framing, acknowledgements, QNs; shared with the input driver ``drivers.hj212``).
This module holds the connection: connect, send, listen, reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from telemetry.calendar import NS
from telemetry.hj212 import units
from telemetry.hj212.codec import Packet, encode, flag_value
from telemetry.hj212.commands import Control_, PlatformCommands, stored_password
from telemetry.hj212.config import Platform
from telemetry.hj212.extras import Extras
from telemetry.hj212.periods import CN_KIND, Key, PointEncoder
from telemetry.hj212.schedule import RESCAN_S, DuePeriods
from telemetry.hj212.session import NotAcked, QnClock, Session
from telemetry.metrics import Metrics
from telemetry.model import AlertEvent, AlertState, Measure, Reading
from telemetry.outbox import Outbox
from telemetry.points import Point
from telemetry.protocols import Db
from telemetry.timing import Backoff, wait_event

log = logging.getLogger(__name__)

__all__ = ["RESCAN_S", "NotAcked", "Uplink"]


class Uplink(DuePeriods, PlatformCommands):
    def __init__(
        self,
        cfg: Platform,
        point: Point,
        metrics: Metrics,
        on_alert: Callable[[AlertEvent], None] | None = None,
        site_zone: str = "Asia/Shanghai",
        extras: Extras | None = None,
        station_windows: frozenset[str] = frozenset(),
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.point = point
        self._metrics = metrics
        self.on_alert = on_alert
        self.encoder = PointEncoder(cfg, point, site_zone, unit_error=self._unit_error, extras=extras)
        self.station_windows = station_windows  # a station's own minute data stored for this site (``schedule``)
        self._st = cfg.st or ("31" if point.kind == "gas" else "32")
        self._pw = cfg.pw.get_secret_value()  # until a platform's 1072 sets another (``commands``)
        self._latest: dict[str, tuple[Reading, int]] = {}  # quantity -> (newest reading, when it arrived)
        self._status: dict[tuple[str, str], Reading] = {}  # equipment status series -> newest reading
        self._equipment = {(e.device, e.quantity) for e in cfg.equipment}  # the status series observed
        self._unit_errors: set[tuple[str, str]] = set()
        # Windows ending at or before this have all closed (set by the pipeline from its aggregator).
        self.closed_through: Callable[[str], int] = lambda window: time.time_ns()
        self.now: Callable[[], int] = time.time_ns  # the pipeline's wall clock (a fake one in long-run tests)
        self.started_ns = time.time_ns()  # RestartTime (2081)
        self.control: Control_ | None = None  # a remote-control write (3011-3021), set by the app
        self.wake = asyncio.Event()  # set by the pipeline when closed windows were committed
        self._checks = 0  # looks for due periods started ...
        self._settled_at = 0  # ... and the latest of them that found none
        self._checked = asyncio.Condition()
        self._session_now: Session | None = None
        self._db: Db | None = None
        self._outbox: Outbox | None = None
        self._acked: set[tuple[str, int]] = set()
        # What ``_due`` has read: per kind, each unacknowledged period in the back-fill horizon
        # with the newest window start seen in it, and the newest window start read at all.
        self._periods: dict[str, dict[int, int]] = {}
        self._newest: dict[str, int] = {}
        self._scanned_at: int | None = None  # when the last full look ran (None: never)
        self._scanned_minutes = 0  # the MinInterval it ran with (a 1064 changes the 2051 periods)
        self._rtd_on = "rtd" in cfg.send
        self._status_on = False  # 2021 .. 2022
        self._rtd_interval = cfg.rtd_interval
        self._overtime, self._recount = cfg.overtime, cfg.recount
        self._refused: AlertEvent | None = None
        self._qns = QnClock(self.encoder.platform_cal.zone)
        self._restart_sent = False
        self.connected = asyncio.Event()
        self._closed_errors = 0
        self._tasks: set[asyncio.Future[None]] = set()
        self._refused_cns: set[str] = set()

    @property
    def reader_errors(self) -> int:
        """Garbage and garbled frames read from the platform, over every connection."""
        current = self._session_now.errors if self._session_now is not None else 0
        return self._closed_errors + current

    def attach(self, db: Db, outbox: Outbox) -> None:
        self._db, self._outbox = db, outbox

    def attach_aggregator(
        self, closed_through: Callable[[str], int], cycle_of: Callable[[Key], tuple[float, bool]]
    ) -> None:
        """Which windows have closed, and each series' measuring cycle, from the aggregator."""
        self.closed_through = closed_through
        self.encoder.cycle_of = cycle_of

    def observe(self, readings: Sequence[Reading]) -> None:
        """Keep the point's newest reading per quantity with the time it arrived. Old readings (a
        back-filled outage) are not real-time; a sample time may be up to one cycle old."""
        now = self.now()
        window = max(60.0, 3 * self._rtd_interval)
        equipment = self._equipment
        for r in readings:
            if equipment and r.site == self.point.site and (r.device, r.quantity) in equipment:
                held = self._status.get((r.device, r.quantity))
                if held is None or r.ts >= held.ts:  # a back-filled reading is not the current status
                    self._status[(r.device, r.quantity)] = r
            if not self.encoder.holds(r.site, r.device, r.quantity):
                continue
            cycle = self.encoder.cycle_of((r.site, r.device, r.quantity))[0]
            if r.ts < now - int((window + cycle) * NS):
                continue
            current = self._latest.get(r.quantity)
            if current is None or r.ts >= current[0].ts:
                self._latest[r.quantity] = (r, now)

    # -- connection ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        assert self._db is not None
        assert self._outbox is not None
        self._acked = await self._db(self._outbox.hj212_acked, self.name)
        stored = stored_password(self._pw, await self._db(self._outbox.load_state, f"hj212_pw/{self.name}"))
        if stored is not None:
            self._pw = stored
            log.info("hj212 %s: using the password the platform set (1072)", self.name)
        backoff = Backoff(initial=1.0, maximum=60.0)
        down_logged = False
        while not stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.cfg.host, self.cfg.port), 10)
            except (OSError, TimeoutError) as err:
                self._metrics.hj212_up.labels(self.name).set(0)
                if not down_logged:
                    log.error(
                        "hj212 %s: platform %s:%d unreachable (%s); retrying",
                        self.name,
                        self.cfg.host,
                        self.cfg.port,
                        type(err).__name__,
                    )
                    down_logged = True
                await self._due(self.now())  # what waits is shown while the platform is away too
                await wait_event(stop, backoff.next())
                continue
            log.info("hj212 %s: connected to %s:%d", self.name, self.cfg.host, self.cfg.port)
            down_logged = False
            backoff.reset()
            session = self._session_now = Session(reader, writer, self._metrics, "hj212", name=self.name)
            self.connected.set()
            self._metrics.hj212_up.labels(self.name).set(1)
            listener = asyncio.create_task(self._listen(session))
            try:
                await self._session(stop, listener)
            except (NotAcked, OSError, ConnectionError, TimeoutError) as err:
                log.warning("hj212 %s: connection dropped (%s); pending data waits for the next one", self.name, err)
            finally:
                self.connected.clear()
                self._metrics.hj212_up.labels(self.name).set(0)
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
                self._closed_errors += session.errors
                self._session_now = None
                writer.close()
            if not stop.is_set():
                await wait_event(stop, backoff.next())

    async def _session(self, stop: asyncio.Event, listener: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        next_rtd = next_beat = loop.time()
        if not self._restart_sent:  # the station says when it (re)started, once per start
            await self._write_packet(self._packet("2081", self.restart_items(), ack=False))
            self._restart_sent = True
        while not stop.is_set() and not listener.done():
            now = loop.time()
            if now >= next_rtd:
                if self._rtd_on and self._latest:
                    await self._send_rtd()
                if self._status_on and (items := self.status_items()) is not None:
                    await self._write_packet(self._packet("2021", items, ack=False))
                next_rtd = now + self._rtd_interval
            if self.cfg.version == "2025" and now >= next_beat:
                await self._send(self._packet("9015", []))
                next_beat = now + self.cfg.heartbeat
            sent = await self._send_due(self.now())
            if not sent:
                await wait_event(self.wake, 1.0)  # new windows wake it at once; stop within a second
                self.wake.clear()
        if listener.done() and not stop.is_set():
            raise ConnectionError("platform closed the connection")

    async def _send_rtd(self) -> None:
        items = self.encoder.rtd_items(self._latest.values(), self.now())
        if items is not None:
            await self._send(self._packet("2011", items))

    def _unit_error(self, code: str, unit: str) -> None:
        self._metrics.errors.labels("hj212", "convert", "unit").inc()
        if (code, unit) not in self._unit_errors:
            self._unit_errors.add((code, unit))
            log.error(
                "hj212 %s: point %s: %s cannot be sent from unit %r (expected a unit convertible to %s); left out",
                self.name,
                self.point.id,
                code,
                unit,
                units.wire_unit(code),
            )

    # -- sending ---------------------------------------------------------------------------------

    def _packet(self, cn: str, cp: list[dict[str, str]], qn: str = "", st: str = "", ack: bool | None = None) -> Packet:
        wants = self.cfg.ack if ack is None else ack
        return Packet(
            qn or self._qns.next(),
            st or self._st,
            cn,
            self._pw,
            self.cfg.mn,
            flag_value(self.cfg.version, wants and cn in CN_KIND),
            None,
            None,
            cp,
        )

    async def _send(self, packet: Packet) -> None:
        session = self._session_now
        if session is None:
            raise ConnectionError("not connected")
        # A packet whose flag asks for no 9014 is written once, whatever ``recount`` says.
        await session.send_acked(packet, self._overtime, self._recount, self._counted(packet.cn))

    def _counted(self, cn: str) -> Callable[[str], None]:
        def count(result: str) -> None:
            self._metrics.hj212_packets.labels(self.name, cn, result).inc()
            if result == "acked":
                self._clear_refusal()

        return count

    async def _write_packet(self, packet: Packet) -> None:
        session = self._session_now
        if session is None:
            raise ConnectionError("not connected")
        await session.write(encode(packet))

    # -- what the platform says -------------------------------------------------------------------

    async def _listen(self, session: Session) -> None:
        async for packet in session.packets():
            await self._handle(packet)

    # -- refusals as alerts ---------------------------------------------------------------------

    def _refusal(self, why: str) -> None:
        self._metrics.errors.labels("hj212", "refused", why.split(" (", maxsplit=1)[0].replace(" ", "_")).inc()
        if self._refused is not None:
            return
        log.error("hj212 %s: platform refuses the station: %s", self.name, why)
        self._refused = AlertEvent(
            time.time_ns(),
            self.point.site,
            f"hj212_{self.name}_refused",
            "critical",
            AlertState.FIRING,
            f"HJ 212 platform {self.name} refuses the station: {why}",
            1.0,
            0.0,
            {"device": "hj212", "quantity": self.name, "point": self.point.id},
            Measure.STATE,
        )
        if self.on_alert is not None:
            self.on_alert(self._refused)

    def _clear_refusal(self) -> None:
        if self._refused is not None and self.on_alert is not None:
            self.on_alert(
                replace(
                    self._refused,
                    ts=time.time_ns(),
                    state=AlertState.RESOLVED,
                    message=f"HJ 212 platform {self.name} accepts the station again",
                )
            )
        self._refused = None
