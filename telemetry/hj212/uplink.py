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
latest readings still fresh, and is not back-filled. The platform's commands on
the same connection are answered: 1000, 1011/1012, 1061-1064, history requests
(2031/2051/2061 with BeginTime and EndTime: 9011, the packets, 9012), 2012;
anything else gets 9011 QnRtn=8. A refusal (QnRtn 3 wrong PW, 4 wrong MN) raises
an alert instead of looping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from telemetry.calendar import NS
from telemetry.hj212 import units
from telemetry.hj212.codec import FrameError, FrameReader, Packet, decode_frame, encode, flag_value, split
from telemetry.hj212.config import Platform
from telemetry.hj212.periods import CN_KIND, KINDS, Key, PointEncoder
from telemetry.metrics import Metrics
from telemetry.model import AlertEvent, AlertState, Reading
from telemetry.outbox import Outbox
from telemetry.points import Point
from telemetry.timing import Backoff, wait_event

log = logging.getLogger(__name__)

MAX_RTD_INTERVAL_S = 86400.0  # what a platform may set (1062): a day; beyond that a command is refused
RESCAN_S = 300.0  # a full look at the back-fill horizon this often, for windows stored late
REFUSALS = {"3": "wrong password (PW)", "4": "wrong station id (MN)", "5": "wrong ST", "6": "wrong Flag"}
Db = Callable[..., Awaitable[Any]]


class NotAcked(Exception):
    """The platform did not acknowledge a packet after ReCount resends."""


class Uplink:
    def __init__(
        self,
        cfg: Platform,
        point: Point,
        metrics: Metrics,
        on_alert: Callable[[AlertEvent], None] | None = None,
        site_zone: str = "Asia/Shanghai",
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.point = point
        self._metrics = metrics
        self.on_alert = on_alert
        self.encoder = PointEncoder(cfg, point, site_zone, unit_error=self._unit_error)
        self._st = cfg.st or ("31" if point.kind == "gas" else "32")
        self._latest: dict[str, tuple[Reading, int]] = {}  # quantity -> (newest reading, when it arrived)
        self._unit_errors: set[tuple[str, str]] = set()
        # Windows ending at or before this have all closed (set by the pipeline from its aggregator).
        self.closed_through: Callable[[str], int] = lambda window: time.time_ns()
        self.now: Callable[[], int] = time.time_ns  # the pipeline's wall clock (a fake one in long-run tests)
        self.wake = asyncio.Event()  # set by the pipeline when closed windows were committed
        self._checks = 0  # looks for due periods started ...
        self._settled_at = 0  # ... and the latest of them that found none
        self._checked = asyncio.Condition()
        self._acks: dict[str, asyncio.Future[None]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._write_lock = asyncio.Lock()
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
        self._rtd_interval = cfg.rtd_interval
        self._overtime, self._recount = cfg.overtime, cfg.recount
        self._refused: AlertEvent | None = None
        self._qn_last = 0
        self.connected = asyncio.Event()
        self.reader_errors = 0
        self._tasks: set[asyncio.Future[None]] = set()

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
        for r in readings:
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
            self._writer = writer
            self.connected.set()
            self._metrics.hj212_up.labels(self.name).set(1)
            listener = asyncio.create_task(self._listen(reader))
            try:
                await self._session(stop, listener)
            except (NotAcked, OSError, ConnectionError) as err:
                log.warning("hj212 %s: connection dropped (%s); pending data waits for the next one", self.name, err)
            finally:
                self.connected.clear()
                self._metrics.hj212_up.labels(self.name).set(0)
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
                writer.close()
                self._writer = None
            if not stop.is_set():
                await wait_event(stop, backoff.next())

    async def _session(self, stop: asyncio.Event, listener: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        next_rtd = next_beat = loop.time()
        while not stop.is_set() and not listener.done():
            now = loop.time()
            if self._rtd_on and self._latest and now >= next_rtd:
                await self._send_rtd()
                next_rtd = now + self._rtd_interval
            if self.cfg.version == "2025" and now >= next_beat:
                await self._send(self._packet("9015", []), ack=False)
                next_beat = now + self.cfg.heartbeat
            sent = await self._send_due(self.now())
            if not sent:
                await wait_event(self.wake, 1.0)  # new windows wake it at once; stop within a second
                self.wake.clear()
        if listener.done() and not stop.is_set():
            raise ConnectionError("platform closed the connection")

    # -- what is due ------------------------------------------------------------------------------

    async def _send_due(self, now: int, limit: int = 50) -> int:
        """Send up to ``limit`` unacknowledged periods, oldest first; returns how many."""
        assert self._db is not None
        assert self._outbox is not None
        self._checks += 1
        check = self._checks
        due = await self._due(now)
        if not due:
            async with self._checked:
                self._settled_at = check
                self._checked.notify_all()
        for start, cn in due[:limit]:
            packet = await self._period_packet(cn, start)
            if packet is not None:
                await self._send(packet, ack=self.cfg.ack)
            # A period with nothing of this point's codes (an inlet-only hour) is done too.
            self._acked.add((cn, start))
            await self._db(self._outbox.hj212_mark_acked, self.name, cn, start)
        return min(len(due), limit)

    async def settled(self) -> None:
        """Until a look for due periods that began after this call finds none: everything
        committed before it has gone up (or the platform is away and it waits)."""
        after = self._checks
        self.wake.set()
        async with self._checked:
            await self._checked.wait_for(lambda: self._settled_at > after)

    async def _due(self, now: int) -> list[tuple[int, str]]:
        """Complete periods not acknowledged yet, oldest first, as (start, CN); sets the pending
        gauges, which matter most while the platform is away. A period is complete once every
        window in it has closed and the platform's grace has passed.

        Runs every second on the outbox's thread, which also does every commit, so it reads
        only windows from the newest start it has already seen on: a few rows, however long
        the history (a full look at 7 days x 12 quantities took ~40 ms a call). A window
        stored later with an older start (a device's back-filled outage) is found by the full
        look at the whole horizon every ``RESCAN_S`` (and at start, or after a MinInterval
        change), so at worst it goes up that much later."""
        assert self._db is not None
        assert self._outbox is not None
        since = now - int(self.cfg.backfill * NS)
        full = (
            self._scanned_at is None
            or not 0 <= now - self._scanned_at < RESCAN_S * NS  # (a clock stepped back rescans too)
            or self._scanned_minutes != self.encoder.min_minutes
        )
        if full:
            self._scanned_at, self._scanned_minutes = now, self.encoder.min_minutes
            self._periods, self._newest = {}, {}
            # Periods older than the horizon are never looked at again: their marks can go.
            self._acked = {(cn, start) for cn, start in self._acked if start >= since - 86400 * NS}
        due: list[tuple[int, str]] = []
        for kind in ("min", "hour", "day"):
            if kind not in self.cfg.send:
                continue
            cn, window = KINDS[kind]
            periods = self._periods.setdefault(kind, {})
            after = max(since, self._newest.get(kind, since))
            starts = await self._db(self._outbox.window_starts, self.point.site, window, after, self._stored_points)
            for s in starts:
                start = self.encoder.period(kind, s)
                if periods.get(start, s - 1) < s:
                    periods[start] = s
            if starts:
                self._newest[kind] = max(after, *starts)
            for start in [p for p, newest in periods.items() if newest < since or (cn, p) in self._acked]:
                del periods[start]  # out of the horizon (as the full look would leave it), or done
            closed_through = self.closed_through(window)
            for start in periods:
                end = self.encoder.end(kind, start)
                if end + int(self.cfg.grace * NS) <= now and end <= closed_through:
                    due.append((start, cn))
        self._metrics.hj212_pending.labels(self.name).set(len(due))
        oldest = min((s for s, _ in due), default=None)
        self._metrics.hj212_pending_age.labels(self.name).set((now - oldest) / NS if oldest else 0)
        return sorted(due)

    @property
    def _stored_points(self) -> tuple[str, ...]:
        """The ``point`` of this point's stored windows, and "" of windows stored before points
        existed: those belong to the point that holds their series now (``PointEncoder.holds``)."""
        return (self.point.id, "")

    async def _period_packet(self, cn: str, start: int) -> Packet | None:
        assert self._db is not None
        assert self._outbox is not None
        kind = CN_KIND[cn]
        window = KINDS[kind][1]
        end = self.encoder.end(kind, start)
        windows = await self._db(self._outbox.windows, self.point.site, window, start, end, self._stored_points)
        items = self.encoder.period_items(kind, start, windows)
        return self._packet(cn, items) if items is not None else None

    async def _send_rtd(self) -> None:
        items = self.encoder.rtd_items(self._latest.values(), self.now())
        if items is not None:
            await self._send(self._packet("2011", items), ack=False)

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

    def _qn(self) -> str:
        now = max(time.time_ns() // 1_000_000, self._qn_last + 1)  # unique per connection, ms resolution
        self._qn_last = now
        zone = self.encoder.platform_cal.zone
        return datetime.fromtimestamp(now / 1000, zone).strftime("%Y%m%d%H%M%S%f")[:17]

    def _packet(self, cn: str, cp: list[dict[str, str]], qn: str = "", st: str = "", ack: bool | None = None) -> Packet:
        wants = self.cfg.ack if ack is None else ack
        return Packet(
            qn or self._qn(),
            st or self._st,
            cn,
            self.cfg.pw.get_secret_value(),
            self.cfg.mn,
            flag_value(self.cfg.version, wants and cn in CN_KIND),
            None,
            None,
            cp,
        )

    async def _send(self, packet: Packet, ack: bool) -> None:
        for part in split(packet):
            await self._send_one(part, ack and bool(part.flag & 1))

    async def _send_one(self, packet: Packet, ack: bool) -> None:
        data = encode(packet)
        for attempt in range(self._recount + 1):
            waiter = asyncio.get_running_loop().create_future() if ack else None
            if waiter is not None:
                self._acks[packet.qn] = waiter
            await self._write(data)
            result = "sent" if attempt == 0 else "resent"
            self._metrics.hj212_packets.labels(self.name, packet.cn, result).inc()
            if waiter is None:
                return
            try:
                await asyncio.wait_for(waiter, self._overtime)
            except TimeoutError:
                continue
            finally:
                self._acks.pop(packet.qn, None)
            self._metrics.hj212_packets.labels(self.name, packet.cn, "acked").inc()
            self._clear_refusal()
            return
        self._metrics.hj212_packets.labels(self.name, packet.cn, "unacked").inc()
        raise NotAcked(f"no 9014 for {packet.cn} QN {packet.qn} after {self._recount + 1} attempts")

    async def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectionError("not connected")
        async with self._write_lock:
            writer.write(data)
            await writer.drain()

    # -- what the platform says -------------------------------------------------------------------

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        frames = FrameReader()
        while True:
            data = await reader.read(4096)
            if not data:
                return
            skipped = frames.skipped
            received = frames.feed(data)
            if frames.skipped > skipped:  # bytes between frames: garbage from the line or the platform
                self.reader_errors += 1
                self._metrics.errors.labels("hj212", "read", "garbage").inc(frames.skipped - skipped)
            for raw in received:
                try:
                    packet = decode_frame(raw)
                except FrameError as err:
                    self.reader_errors += 1
                    self._metrics.errors.labels("hj212", "decode", err.reason).inc()
                    log.debug("hj212 %s: garbled frame from the platform: %s", self.name, err)
                    continue
                await self._handle(packet)

    async def _handle(self, p: Packet) -> None:
        if p.cn == "9014":
            waiter = self._acks.get(p.qn)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        if p.cn == "9011":
            code = p.get("QnRtn") or ""
            if code in REFUSALS:
                self._refusal(REFUSALS[code])
            return
        handler = {
            "1000": self._set_timeouts,
            "1011": self._get_time,
            "1012": self._set_time,
            "1061": self._get_rtd,
            "1062": self._set_rtd,
            "1063": self._get_min,
            "1064": self._set_min,
            "2012": self._stop_rtd,
            "2011": self._start_rtd,
        }.get(p.cn)
        if p.cn in CN_KIND and p.get("BeginTime"):
            task = asyncio.ensure_future(self._history(p))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif handler is not None:
            await self._reply(p, "1")
            await handler(p)
        elif p.cn not in ("9013", "9012"):
            await self._reply(p, "8")

    async def _reply(self, request: Packet, qn_rtn: str) -> None:
        await self._write(encode(self._packet("9011", [{"QnRtn": qn_rtn}], qn=request.qn, st="91", ack=False)))

    async def _result(self, request: Packet, exe_rtn: str) -> None:
        await self._write(encode(self._packet("9012", [{"ExeRtn": exe_rtn}], qn=request.qn, st="91", ack=False)))

    async def _history(self, p: Packet) -> None:
        """Answer a history request: 9011, each stored period in the range (acked), 9012."""
        try:
            await self._reply(p, "1")
            begin = self.encoder.parse_local(p.get("BeginTime") or "")
            end = self.encoder.parse_local(p.get("EndTime") or "")
            kind = CN_KIND[p.cn]
            assert self._db is not None
            assert self._outbox is not None
            window = KINDS[kind][1]
            starts = await self._db(self._outbox.window_starts, self.point.site, window, begin, self._stored_points)
            periods = sorted({self.encoder.period(kind, s) for s in starts if s <= end})
            sent = 0
            for start in periods:
                packet = await self._period_packet(p.cn, start)
                if packet is not None:
                    await self._send(packet, ack=self.cfg.ack)
                    sent += 1
            await self._result(p, "1" if sent else "100")
        except (NotAcked, ConnectionError, OSError, ValueError) as err:
            log.warning("hj212 %s: history request %s failed: %s", self.name, p.qn, err)

    async def _set_timeouts(self, p: Packet) -> None:
        """OverTime 1-600 s and ReCount 0-10, as the configuration allows; anything else is refused."""
        overtime, recount = p.get("OverTime"), p.get("ReCount")
        try:
            seconds = float(overtime) if overtime else self._overtime
            count = int(recount) if recount else self._recount
        except ValueError:
            seconds, count = math.nan, -1
        ok = 1.0 <= seconds <= 600.0 and 0 <= count <= 10
        if ok:
            self._overtime, self._recount = seconds, count
        await self._result(p, "1" if ok else "3")

    async def _get_time(self, p: Packet) -> None:
        now = self.encoder.local(time.time_ns())
        await self._send(self._packet("1011", [{"SystemTime": now}], qn=p.qn, ack=False), False)
        await self._result(p, "1")

    async def _set_time(self, p: Packet) -> None:
        log.warning(
            "hj212 %s: platform asked to set the clock to %s; the daemon uses the host clock (NTP)",
            self.name,
            p.get("SystemTime"),
        )
        await self._result(p, "3")

    async def _get_rtd(self, p: Packet) -> None:
        await self._send(
            self._packet("1061", [{"RtdInterval": str(int(self._rtd_interval))}], qn=p.qn, ack=False), False
        )
        await self._result(p, "1")

    async def _set_rtd(self, p: Packet) -> None:
        try:
            seconds = float(p.get("RtdInterval") or "")
        except ValueError:
            seconds = math.nan
        ok = 1.0 <= seconds <= MAX_RTD_INTERVAL_S  # NaN and inf fail too: the platform is not trusted
        if ok:
            self._rtd_interval = seconds
        await self._result(p, "1" if ok else "3")

    async def _get_min(self, p: Packet) -> None:
        minutes = str(self.encoder.min_minutes)
        await self._send(self._packet("1063", [{"MinInterval": minutes}], qn=p.qn, ack=False), False)
        await self._result(p, "1")

    async def _set_min(self, p: Packet) -> None:
        text = p.get("MinInterval") or ""
        minutes = int(text) if text.isdigit() else 0
        ok = 1 <= minutes <= 60 and 60 % minutes == 0
        if ok:
            self.encoder.min_minutes = minutes
        await self._result(p, "1" if ok else "3")

    async def _stop_rtd(self, p: Packet) -> None:
        self._rtd_on = False
        await self._result(p, "1")

    async def _start_rtd(self, p: Packet) -> None:
        self._rtd_on = True
        await self._result(p, "1")

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
        )
        if self.on_alert is not None:
            self.on_alert(self._refused)

    def _clear_refusal(self) -> None:
        if self._refused is not None and self.on_alert is not None:
            from dataclasses import replace  # noqa: PLC0415 - rare path

            self.on_alert(
                replace(
                    self._refused,
                    ts=time.time_ns(),
                    state=AlertState.RESOLVED,
                    message=f"HJ 212 platform {self.name} accepts the station again",
                )
            )
        self._refused = None
