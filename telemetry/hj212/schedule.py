"""What an uplink owes its platform: the complete minute, hour and day periods not acknowledged yet.

A mixin of ``Uplink`` (``telemetry.hj212.uplink``): the schedule, apart from the
connection and the commands. A period is due once every window in it has closed
(``closed_through``) and the platform's grace has passed; acknowledged periods are
recorded in the outbox and never sent again.

A point fed by a data acquisition unit (``drivers.hj212`` with ``aggregates: station``)
has the station's own periods stored as windows of the period's length (``10m`` for a
MinInterval of 10): those go up as they are, with the station's DataTime, values and
flags, instead of being recomputed (``station_windows`` names the labels to read).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from telemetry.calendar import NS
from telemetry.hj212.codec import Packet
from telemetry.hj212.config import Platform
from telemetry.hj212.periods import CN_KIND, KINDS, PointEncoder
from telemetry.metrics import Metrics
from telemetry.outbox import Outbox
from telemetry.points import Point
from telemetry.protocols import Db

RESCAN_S = 300.0  # a full look at the back-fill horizon this often, for windows stored late


class DuePeriods:
    """The periods due (mixed into ``Uplink``, which sets these attributes)."""

    cfg: Platform
    name: str
    point: Point
    encoder: PointEncoder
    station_windows: frozenset[str]
    closed_through: Callable[[str], int]
    _metrics: Metrics
    _db: Db | None
    _outbox: Outbox | None
    _acked: set[tuple[str, int]]
    _periods: dict[str, dict[int, int]]
    _newest: dict[str, int]
    _scanned_at: int | None
    _scanned_minutes: int
    _checks: int
    _settled_at: int
    _checked: asyncio.Condition
    wake: asyncio.Event

    def _packet(self, cn: str, cp: list[dict[str, str]], qn: str = "", st: str = "", ack: bool | None = None) -> Packet:
        raise NotImplementedError

    async def _send(self, packet: Packet) -> None:
        raise NotImplementedError

    def windows_of(self, kind: str) -> list[str]:
        """The stored window sizes a period of this kind is made of: the daemon's own (``1m``,
        ``1h``, ``1d``) and, for minute periods, a station's own minute data of the period's length."""
        own = KINDS[kind][1]
        if kind != "min":
            return [own]
        period = self.encoder.window("min")
        return [own] + ([period] if period != own and period in self.station_windows else [])

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
                await self._send(packet)
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
        for kind in self.encoder.kinds():
            cn, window = KINDS[kind]
            periods = self._periods.setdefault(kind, {})
            after = max(since, self._newest.get(kind, since))
            starts: list[int] = []
            for stored in self.windows_of(kind):
                starts += await self._db(self._outbox.window_starts, self.point.site, stored, after, self.stored_points)
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
    def stored_points(self) -> tuple[str, ...]:
        """The ``point`` of this point's stored windows, and "" of windows stored before points
        existed: those belong to the point that holds their series now (``PointEncoder.holds``)."""
        return (self.point.id, "")

    async def _period_packet(self, cn: str, start: int) -> Packet | None:
        assert self._db is not None
        assert self._outbox is not None
        kind = CN_KIND[cn]
        end = self.encoder.end(kind, start)
        windows = []
        for stored in self.windows_of(kind):
            windows += await self._db(self._outbox.windows, self.point.site, stored, start, end, self.stored_points)
        items = self.encoder.period_items(kind, start, windows)
        return self._packet(cn, items) if items is not None else None

    async def periods_between(self, cn: str, begin: int, end: int) -> list[int]:
        """Starts of the stored periods of ``cn`` from ``begin`` to ``end`` (a history request)."""
        assert self._db is not None
        assert self._outbox is not None
        kind = CN_KIND[cn]
        starts: list[int] = []
        for stored in self.windows_of(kind):
            starts += await self._db(self._outbox.window_starts, self.point.site, stored, begin, self.stored_points)
        return sorted({self.encoder.period(kind, s) for s in starts if s <= end})
