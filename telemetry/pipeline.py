"""Where a reading goes: driver → emit → outbox commit → (sinks, rules → alerts).

``emit`` returns once the readings are committed. Commits are grouped: while one
commit is on disk, new readings queue, and the next commit takes them all (up to
``commit_max``), so the fsync cost is shared at high rates and latency stays low
at low rates. After each commit the sinks are woken and the rules engine sees
the readings; alert events it produces are committed too (for the ``alerts``
measurement) and handed to the notifier.

Shutdown order: drivers stop (their last emit completes), the committer drains
its queue, sinks make a last attempt, the notifier sends what is queued.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import orjson

from telemetry.aggregate import Aggregator
from telemetry.clock import ClockWatch
from telemetry.commits import CommitLog
from telemetry.delivery import Delivery
from telemetry.errors import OutboxError, OutboxFull, TaskFailed
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, AlertEvent, AlertState, Measure, Reading, Record, Rejected
from telemetry.outbox import Outbox
from telemetry.protocols import AlertPath, Consumer, Driver
from telemetry.sinks import Sink
from telemetry.status import Latest
from telemetry.status import body as status_body
from telemetry.timing import wait_event

log = logging.getLogger(__name__)
PRUNE_S = 600.0  # how often the outbox's retention runs


@dataclass
class _Item:
    records: Sequence[Record]
    future: asyncio.Future[None] | None
    rejected: Sequence[Rejected] = ()
    closed_through: Mapping[str, int] | None = None  # windows closed by a tick: published once committed


Observer = Callable[[Sequence[Reading], Sequence[AlertEvent]], None]


def _committer_gone() -> OutboxError:
    return OutboxError("the committer has stopped: not committed")


class Pipeline:
    def __init__(
        self,
        outbox: Outbox,
        drivers: Sequence[Driver],
        sinks: Sequence[Sink],
        alerts: AlertPath,
        metrics: Metrics,
        commit_max: int = 5000,
        observer: Observer | None = None,
        aggregator: Aggregator | None = None,
        uplinks: Sequence[Consumer] = (),
        tick_s: float = 1.0,
        snapshot_s: float = 30.0,
        clock: Callable[[], int] = time.time_ns,
        derive: Callable[[Sequence[Reading]], list[Reading]] | None = None,
    ) -> None:
        self.outbox = outbox
        self.derive = derive  # readings computed from each commit's readings, committed with them
        self.aggregator = aggregator
        self.uplinks = list(uplinks)
        for uplink in self.uplinks:
            uplink.now = clock
            uplink.attach(self.db, outbox)
            uplink.on_alert = self._record_event
            if aggregator is not None:
                uplink.attach_aggregator(self.closed_through, aggregator.cycle_of)
        self.tick_s = tick_s
        self.snapshot_s = snapshot_s
        self.now = clock  # the wall clock windows, periods and retention follow (a fake one in long-run tests)
        self.drivers = list(drivers)
        self.alerts = alerts
        alerts.attach(self.db, outbox)
        alerts.use_clock(clock)
        for driver in self.drivers:
            if hasattr(driver, "on_alert"):  # a driver that raises alerts (refused HJ 212 stations)
                driver.on_alert = self._record_event
        self.metrics = metrics
        self.commit_max = commit_max
        self.observer = observer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._wakes: list[asyncio.Event] = []
        self.deliveries: list[Delivery] = []
        self._progress = asyncio.Event()  # a sink advanced its cursor: the outbox may have room again
        self._stopping = False
        self.commits = CommitLog()  # when each record was committed: how long sinks keep them waiting
        for sink in sinks:
            wake = asyncio.Event()
            self._wakes.append(wake)
            self.deliveries.append(
                Delivery(sink, outbox, self.db, metrics, wake, progress=self._progress, commits=self.commits)
            )
        self._dropped_seen = 0
        self._failed_parts: set[str] = set()  # parts whose failure was logged at ERROR once
        self._budget_alert: AlertEvent | None = None
        self.started = asyncio.Event()
        self.commit_error: str | None = None  # the last commit's failure, cleared by a successful one
        self.clock = ClockWatch()
        self.sink_checks: list[asyncio.Task[bool]] = []  # start-up health checks, in the background
        self._committer: asyncio.Task[None] | None = None
        self._closed_through: dict[str, int] = {}  # per window size: closed and committed up to here
        self.latest = Latest()  # each series' newest reading: ``telemetry status``

    def closed_through(self, window: str) -> int:
        """Every window of this size ending at or before this time has closed and is committed:
        the HJ 212 uplink reads a period from the outbox only once all of it is there."""
        return self._closed_through.get(window, 0)

    def status(self) -> dict[str, Any]:
        """For ``GET /status`` and ``telemetry status`` (``telemetry.status``)."""
        return status_body(self.latest, self.drivers, self.metrics, self.now())

    def readiness(self, max_sink_age_s: float) -> tuple[bool, dict[str, Any]]:
        """For /readyz: drivers started, the outbox taking commits, sinks not stuck. A sink is
        stuck when the oldest record it has not taken was committed longer than ``max_sink_age_s``
        ago on the daemon's clock, whatever the readings' own timestamps say; that is also the
        case once it has a backlog and accepted no write for that long (``Delivery.lag_seconds``)."""
        lags = {d.consumer: d.lag_seconds() for d in self.deliveries}
        stuck = {consumer: round(lag) for consumer, lag in lags.items() if lag > max_sink_age_s}
        detail: dict[str, Any] = {
            "drivers_started": self.started.is_set(),
            "outbox_ok": self.commit_error is None,
            "sinks_stuck_seconds": stuck,
        }
        if self.commit_error:
            detail["outbox_error"] = self.commit_error
        return self.started.is_set() and self.commit_error is None and not stuck, detail

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run an outbox method on the outbox's own thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    async def emit(self, readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()) -> None:
        """Hand readings (and dead letters, and a source's own closed windows) over; returns once
        they are committed to the outbox."""
        if self._committer is not None and self._committer.done():
            raise _committer_gone()  # the daemon is shutting down: the source keeps its data
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(readings, future, rejected))
        await future

    async def run(self, stop: asyncio.Event) -> None:
        # Sink health checks run beside everything else: a sink that is down or hung at start-up
        # is reported, and readings are committed meanwhile (they wait in the outbox).
        self.sink_checks = [asyncio.create_task(d.check(), name=f"check:{d.sink.name}") for d in self.deliveries]
        forgotten = await self.db(self.outbox.set_consumers, [d.consumer for d in self.deliveries])
        for consumer in forgotten:
            log.warning("outbox: %s is no longer configured; its cursor is forgotten", consumer)
        for delivery in self.deliveries:
            delivery.cursor = await self.db(self.outbox.register, delivery.consumer)
        await self.alerts.restore()
        if self.aggregator is not None:
            saved = await self.db(self.outbox.load_state, "aggregator")
            if saved:
                await self._restore_aggregates(self.aggregator, orjson.loads(saved))
            self._closed_through = {w: self.aggregator.closed_through(w) for w in ("1m", "1h", "1d")}
        await self.prune()  # after the restore: it reads the windows closed since the last snapshot
        self.metrics.watch_outbox(self.outbox.backlog, lambda: {d.consumer: d.lag_seconds() for d in self.deliveries})
        self.metrics.watch_data(self.alerts.counts, self._aggregation_counts)
        self.metrics.watch_side(lambda: self.outbox.deleted)
        driver_stop = asyncio.Event()
        sink_stop = asyncio.Event()
        committer = self._committer = asyncio.create_task(self._commit_loop(), name="committer")
        drivers = [asyncio.create_task(d.run(self.emit, driver_stop), name=f"driver:{d.name}") for d in self.drivers]
        drivers.append(asyncio.create_task(self._ticker(driver_stop), name="ticker"))
        sinks = [asyncio.create_task(d.run(sink_stop), name=f"sink:{d.sink.name}") for d in self.deliveries]
        sinks += [asyncio.create_task(u.run(sink_stop), name=f"hj212:{u.name}") for u in self.uplinks]
        notifier = asyncio.create_task(self.alerts.run(sink_stop), name="notifier")
        self.started.set()
        failure: TaskFailed | None = None
        try:
            failure = await self._until_stopped(stop, [committer, *drivers, *sinks, notifier])
        finally:
            driver_stop.set()
            self._stopping = True
            self._progress.set()  # a commit waiting for room gives up: its messages stay unacknowledged
            if committer.done():  # nothing will commit what is queued: those emits fail, drivers stop
                self._fail_queued()
            await _settle(drivers, "driver", reported=failure)
            self._queue.put_nowait(None)
            await _settle([committer], "committer", reported=failure)
            await self._snapshot()
            sink_stop.set()
            for wake in self._wakes:
                wake.set()
            await _settle([*sinks, notifier], "sink", reported=failure)
            await self.alerts.close()
            await _settle(self.sink_checks, "sink check")  # each bounded by its sink's timeout
            for delivery in self.deliveries:
                await asyncio.to_thread(delivery.sink.close)
            await self.db(self.outbox.close)
            self._executor.shutdown(wait=True)
        if failure is not None:
            raise failure  # after the orderly shutdown: the exit code tells the supervisor

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and item.future is not None and not item.future.done():
                item.future.set_exception(_committer_gone())

    async def _restore_aggregates(self, aggregator: Aggregator, state: dict[str, Any]) -> None:
        """Open windows as of the last snapshot (every ``snapshot_s``), minus those closed and
        stored after it: after a SIGKILL those would otherwise close again with part of their
        readings and overwrite the complete aggregates (InfluxDB point and windows row)."""
        aggregator.restore(state)
        sites = aggregator.sites()
        dropped = 0
        for window in ("1m", "1h", "1d"):  # hours before days: a day takes the hours closed meanwhile
            starts = [(await self.db(self.outbox.last_window_start, site, window), site) for site in sites]
            known = [(s, site) for s, site in starts if s is not None]
            if not known:
                continue
            last, site_of_last = max(known)
            since = aggregator.adoptable_hours_since() if window == "1h" else None
            if since is not None:  # hours closed after the snapshot: not in their day windows yet
                for site in sites:
                    aggregator.adopt_hours(await self.db(self.outbox.windows, site, "1h", since, last + 1))
            dropped += aggregator.committed(window, last, site_of_last)
        log.info(
            "resumed %d open aggregate windows (%d already closed and stored after the snapshot: left as they are)",
            aggregator.open_windows(),
            dropped,
        )

    def _aggregation_counts(self) -> dict[str, int]:
        if self.aggregator is None:
            return {}
        return {"late": self.aggregator.late, "held": self.aggregator.held, "future": self.aggregator.future}

    async def _until_stopped(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> TaskFailed | None:
        """Wait for ``stop``. A task that ends on its own (raised, or returned while nobody asked
        it to stop) is logged with its traceback and stops the daemon; the failure is returned
        so that ``run`` raises it once everything is shut down and the process exits non-zero."""
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({stopper, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        failure: TaskFailed | None = None
        for task in sorted(done - {stopper}, key=lambda t: t.get_name()):
            err = task.exception() if not task.cancelled() else None
            why = repr(err) if err is not None else "cancelled" if task.cancelled() else "returned on its own"
            log.critical("%s stopped unexpectedly: %s; shutting down", task.get_name(), why, exc_info=err)
            if failure is None:
                failure = TaskFailed(task.get_name(), why)
                failure.__cause__ = err
        return failure

    async def _commit_loop(self) -> None:
        closing = False
        while not (closing and self._queue.empty()):
            first = await self._queue.get()
            items: list[_Item] = []
            count = 0
            item = first
            while True:
                if item is None:
                    closing = True
                else:
                    items.append(item)
                    count += len(item.records) + len(item.rejected)
                if count >= self.commit_max or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if items:
                await self._commit(items)

    async def _commit(self, items: list[_Item]) -> None:
        records = [r for item in items for r in item.records]
        rejected = [r for item in items for r in item.rejected]
        if self.derive is not None:
            measured = [r for r in records if isinstance(r, Reading)]
            records += self._contained("derive", self.derive, measured, component="derive") or []
        try:
            await self._append(records, rejected)
        except OutboxError as err:
            self.commit_error = str(err)
            log.error("outbox commit of %d records failed: %s", len(records), err)
            self.metrics.errors.labels("outbox", "commit", "sqlite").inc()
            for item in items:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(err)
            return
        self.commit_error = None
        self._committed(items)
        for wake in self._wakes:
            wake.set()
        readings = [r for r in records if isinstance(r, Reading)]
        self.latest.update(readings)
        for (site, device), n in Counter((r.site, r.device) for r in readings).items():
            self.metrics.readings.labels(site, device).inc(n)
        if self.aggregator is not None:
            self._contained("aggregator", self.aggregator.add, readings, self.now())
        # A source's own windows (an HJ 212 station's periods) are judged as the aggregator's are,
        # and may complete periods an uplink relays.
        own = [r for item in items if item.future is not None for r in item.records if isinstance(r, Aggregate)]
        for uplink in self.uplinks:
            self._contained(f"hj212 {uplink.name}", uplink.observe, readings)
            if own:
                uplink.wake.set()
        self._watch_clock()
        judged = self._not_ahead(self.clock.align(readings))
        events: list[AlertEvent] = self._contained("rules", self.alerts.feed, judged) or []
        if own:
            events += self._contained("rules", self.alerts.on_windows, own) or []
        for event in events:
            self._record_event(event)
        if self.observer is not None:
            self._contained("observer", self.observer, readings, events)
        await self._watch_budget()

    def _not_ahead(self, readings: Sequence[Reading]) -> Sequence[Reading]:
        """Readings as the rules judge them: none later than the daemon's clock. A device clock a
        few minutes ahead (within a source's allowed skew) would otherwise meet a limit's ``for``
        faster than real time passes; stored readings keep their own stamps."""
        now = self.now()
        if all(r.ts <= now for r in readings):
            return readings
        return [r._replace(ts=now) if r.ts > now else r for r in readings]

    def _contained(self, part: str, fn: Callable[..., Any], *args: Any, component: str = "pipeline") -> Any:
        """What a commit's readings go to besides the outbox (the deriver, the aggregator, the
        uplinks, the rules, an observer): an exception there costs that part this batch, never
        the commit or the commit loop (the readings are committed, the sinks have them). Counted,
        logged with its traceback once per part, then at DEBUG; None is returned."""
        try:
            return fn(*args)
        except Exception as err:  # contained: one part's bug must not stop every other
            self.metrics.errors.labels(component, part.split(maxsplit=1)[0], "exception").inc()
            level = logging.DEBUG if part in self._failed_parts else logging.ERROR
            self._failed_parts.add(part)
            log.log(level, "%s failed (the readings are committed all the same): %r", part, err, exc_info=err)
            return None

    def _committed(self, items: list[_Item]) -> None:
        """The emits return; windows a tick closed are published to the uplinks."""
        for item in items:
            if item.future is not None and not item.future.done():
                item.future.set_result(None)
            if item.closed_through is not None:
                self._closed_through.update(item.closed_through)
                for uplink in self.uplinks:
                    uplink.wake.set()  # periods may have become complete

    async def _append(self, records: list[Record], rejected: list[Rejected]) -> None:
        """Commit; while the outbox is full under ``when_full: block`` or its disk nearly full,
        wait for the sinks to make room (until shutdown: then the commit fails)."""
        if not records and not rejected:
            return  # a tick that closed nothing: only its closed-through marks go on
        while True:
            try:
                with self.metrics.commit_seconds.time():
                    last = await self.db(self.outbox.append, records, rejected)
                self.commits.committed(last, len(records))
                # Entries every sink has passed are not needed again (the HJ 212 uplinks keep their own).
                self.commits.release(min((d.cursor for d in self.deliveries), default=last))
                return
            except OutboxFull as err:
                if self._stopping:
                    raise
                self.commit_error = str(err)  # /readyz says so while it lasts
                self._budget_firing(str(err), 0)
                self._progress.clear()
                await wait_event(self._progress, 1.0)

    async def _watch_budget(self) -> None:
        """Count what the disk budget dropped; fire an alert on trouble, resolve it below half the budget.

        The committer and the ticker both call this: the alert is resolved only if it is still
        the one seen before the awaits (the other may have resolved it meanwhile)."""
        alert = self._budget_alert
        if self.outbox.max_bytes is None and alert is None:
            return
        dropped = self.outbox.dropped - self._dropped_seen
        if dropped:
            self._dropped_seen += dropped
            self.metrics.outbox_dropped.inc(dropped)
            log.error("outbox over its disk budget: dropped the %d oldest undelivered records", dropped)
            message = f"outbox over its disk budget: dropped {self._dropped_seen} oldest undelivered records"
            self._budget_firing(message, self._dropped_seen)
        elif (
            alert is not None
            and not await self.db(self.outbox.over_budget, 0.5)
            and await self.db(self.outbox.room) >= 2 * self.outbox.min_free
            and self._budget_alert is alert
        ):
            self._record_event(
                replace(
                    alert,
                    ts=self.now(),
                    state=AlertState.RESOLVED,
                    message="outbox back under half of its disk budget, with room on its disk",
                )
            )
            self._budget_alert = None

    def _budget_firing(self, message: str, dropped: int) -> None:
        """Its value: the records dropped (0 while commits wait for room); its limit the budget."""
        if self._budget_alert is not None:
            return
        self._budget_alert = AlertEvent(
            ts=self.now(),
            site="daemon",
            rule="outbox_full",
            severity="critical",
            state=AlertState.FIRING,
            message=message,
            value=float(dropped),
            limit=float(self.outbox.max_bytes or 0),
            measure=Measure.STATE,
        )
        self._record_event(self._budget_alert)

    def _record_event(self, event: AlertEvent) -> None:
        """Every transition goes to the outbox (InfluxDB ``alerts``); firing and resolved notify."""
        self.metrics.alert_events.labels(event.rule, event.state.value).inc()
        self._queue.put_nowait(_Item([event], None))
        if event.state is AlertState.INSUFFICIENT:
            log.info("rule %s at %s: %s", event.rule, event.site, event.message)
            return
        log.warning("alert %s %s at %s: %s", event.rule, event.state.value, event.site, event.message)
        self.metrics.alerts_firing.labels(event.site, event.rule).inc(1 if event.state is AlertState.FIRING else -1)
        self.alerts.events([event])

    async def _ticker(self, stop: asyncio.Event) -> None:
        """Close due aggregate windows, let time-based rules look and see whether the outbox
        has room again, every ``tick_s``."""
        loop = asyncio.get_running_loop()
        last_snapshot = last_prune = started = loop.time()
        # After a start, what sources kept meanwhile (an MQTT session's backlog) arrives first:
        # windows are not closed for one grace period, so an outage's windows close complete
        # instead of with whatever part of the backlog had arrived by the first tick.
        hold_s = self.aggregator.grace / 1e9 if self.aggregator is not None else 0.0
        while not await wait_event(stop, self.tick_s):
            self._watch_clock()
            now = self.now()
            self.tick(now, close_windows=loop.time() - started >= hold_s)
            await self.alerts.tick(now)
            if self._budget_alert is not None:
                await self._watch_budget()  # resolves it once there is room, even with nothing new to commit
            if loop.time() - last_snapshot >= self.snapshot_s:
                await self._snapshot()
                last_snapshot = loop.time()
            if loop.time() - last_prune >= PRUNE_S:
                await self.prune()
                last_prune = loop.time()

    def _watch_clock(self) -> None:
        """A step of the host clock moves rule and notification timers with it (``telemetry.clock``)."""
        delta = self.clock.check()
        if delta:
            log.warning("host clock stepped %+.1f s; rule and notification timers moved with it", delta / 1e9)
            self.metrics.clock_steps.inc()
            self.alerts.clock_stepped(delta)

    def tick(self, now_ns: int, close_windows: bool = True) -> list[AlertEvent]:
        """Close due windows (committed, judged by window rules) and run the time-based rules."""
        closed: list[Aggregate] = []
        if self.aggregator is not None and close_windows:
            # Contained like the commit's parts: a failure costs this tick's closing (tried again
            # at the next), never the ticker and with it the daemon.
            closed = self._contained("aggregator", self._close_windows, self.aggregator, now_ns) or []
        events: list[AlertEvent] = self._contained("rules", self.alerts.on_windows, closed) or []
        events += self._contained("rules", self.alerts.tick_rules, now_ns) or []
        for event in events:
            self._record_event(event)
        status = self._contained("rules", self.alerts.status_readings, now_ns)
        if status:
            self._queue.put_nowait(_Item(status, None))
        if self.observer is not None and events:
            self._contained("observer", self.observer, [], events)
        return events

    def _close_windows(self, aggregator: Aggregator, now_ns: int) -> list[Aggregate]:
        closed = aggregator.advance(now_ns)
        aggregator.prune(now_ns - 3 * 86400 * 1_000_000_000)
        through = {w: aggregator.closed_through(w) for w in ("1m", "1h", "1d")}
        self._queue.put_nowait(_Item(closed, None, closed_through=through))
        return closed

    async def drained(self) -> None:
        """Until every sink has taken everything committed so far."""
        while any(self.outbox.backlog().values()):
            self._progress.clear()
            for wake in self._wakes:
                wake.set()
            await self._progress.wait()

    async def _snapshot(self) -> None:
        """Open windows and rule state (a day's tonnage so far, ``for`` timers, silence and
        flatline baselines), so that a kill -9 costs at most ``snapshot_s`` of either."""
        if self.aggregator is not None:
            body = self.aggregator.snapshot()
            await self.db(self.outbox.save_state, "aggregator", body)
        await self.alerts.save_rules()
        await self.db(self.outbox.save_state, "status", orjson.dumps(self.status()))

    async def prune(self) -> None:
        """The outbox's retention (``telemetry.outbox.side``): old windows, acknowledgements,
        diagnostics and done commands go."""
        try:
            pruned = await self.db(self.outbox.prune, self.now())
        except sqlite3.Error as err:
            self.metrics.errors.labels("outbox", "prune", "sqlite").inc()
            log.error("outbox retention could not run: %s", err)
            return
        if pruned:
            log.info("outbox retention: deleted %s", pruned)


async def _settle(
    tasks: Sequence[asyncio.Task[Any]], what: str, timeout: float = 15.0, reported: TaskFailed | None = None
) -> None:
    """Wait for ``tasks`` to stop, cancelling those that take longer than ``timeout``; log each
    failure, except the one that stopped the daemon (``reported``: logged already)."""
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        log.warning("%s %s did not stop within %.0fs; cancelling", what, task.get_name(), timeout)
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if reported is not None and task.get_name() == reported.task:
            continue
        if not task.cancelled() and task.exception() is not None:
            log.error("%s %s failed: %r", what, task.get_name(), task.exception())
