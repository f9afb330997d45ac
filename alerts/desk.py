"""The alert desk: rule transitions in, notifications out, state kept across restarts.

Ties the rules engine's transitions to the alert manager (lifecycle, grouping,
silences, inhibition, escalation) and the notifier (delivery), applies commands
from the CLI and HTTP (ack, silence), and saves the manager's and the rules'
state in the outbox database after every change, so a restart re-sends nothing
that was sent and forgets nothing pending or firing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from alerts.alert import Message, Silence
from alerts.daily import DailyReports
from alerts.lifecycle import AlertManager
from alerts.notify import Notifier
from alerts.rules import RulesEngine
from telemetry.marks import check_times
from telemetry.metrics import Metrics
from telemetry.model import Aggregate, AlertEvent, Reading
from telemetry.outbox import Outbox
from telemetry.protocols import Db

log = logging.getLogger(__name__)

NS = 1_000_000_000


class AlertDesk:
    """The alert path the pipeline sees (``telemetry.protocols.AlertPath``)."""

    def __init__(
        self,
        manager: AlertManager,
        notifier: Notifier,
        rules: RulesEngine,
        metrics: Metrics,
        outbox: Outbox | None = None,
        db: Db | None = None,
        reports: DailyReports | None = None,
    ) -> None:
        self.manager = manager
        self.notifier = notifier
        self.rules = rules
        self._metrics = metrics
        rules.on_error = lambda stage, error_type: metrics.errors.labels("rules", stage, error_type).inc()
        self._dirty = False
        self._pending: set[asyncio.Task[None]] = set()
        notifier.on_result = self._on_result
        self.reports = reports
        if reports is not None:
            reports.on_change = self._changed
        if outbox is not None and db is not None:
            self.attach(db, outbox)

    def attach(self, db: Db, outbox: Outbox) -> None:
        self._outbox = outbox
        self._db = db

    def feed(self, readings: Sequence[Reading]) -> list[AlertEvent]:
        return self.rules.feed(readings)

    def on_windows(self, windows: Sequence[Aggregate]) -> list[AlertEvent]:
        return self.rules.on_windows(windows)

    def use_clock(self, now: Callable[[], int]) -> None:
        self.rules.use_clock(now)

    def tick_rules(self, now_ns: int) -> list[AlertEvent]:
        return self.rules.tick(now_ns)

    def status_readings(self, now_ns: int) -> list[Reading]:
        return self.rules.status_readings(now_ns)

    def counts(self) -> dict[tuple[str, str], int]:
        return self.rules.counts()

    async def save_rules(self) -> None:
        await self._db(self._outbox.save_state, "rules", orjson.dumps(self.rules.snapshot()))

    async def run(self, stop: asyncio.Event) -> None:
        await self.notifier.run(stop)

    def _changed(self) -> None:
        self._dirty = True

    async def restore(self) -> None:
        targets: list[tuple[str, Any]] = [("alerts", self.manager), ("rules", self.rules)]
        for name, target in targets + ([("reports", self.reports)] if self.reports is not None else []):
            saved = await self._db(self._outbox.load_state, name)
            if saved:
                target.restore(orjson.loads(saved))
        firing = sum(a.state == "firing" for a in self.manager.alerts.values())
        if firing:
            log.info("resumed %d firing alerts", firing)

    def events(self, events: list[AlertEvent]) -> None:
        if self.manager.ingest(events) or events:
            self._dirty = True
            # What is due goes out now, not at the next tick: with ``group_wait: 0`` a breach
            # reaches the supervisors in milliseconds. The notifier drops what is in flight.
            for message in self.manager.due(time.time_ns()):
                self.notifier.submit(message)

    async def tick(self, now_ns: int) -> None:
        """Apply commands, send what is due, save what changed."""
        for kind, body in await self._db(self._outbox.take_commands):
            self._apply(kind, body, now_ns)
            acked = self.manager.alerts.get(str(body.get("id"))) if kind == "ack" else None
            if acked is not None and acked.acked_ns == now_ns:  # the daily report lists who acknowledged
                await self._db(self._outbox.log_ack, acked.site, acked.id, acked.rule, acked.acked_by or "", now_ns)
        for message in self.manager.due(now_ns):
            self.notifier.submit(message)
        self.manager.prune(now_ns)
        self._metrics.alerts_undelivered.set(len(self.manager.undelivered()))
        if self.reports is not None:
            await self.reports.tick(now_ns, self._db, self._outbox)
        if self._dirty:
            await self.save()

    def clock_stepped(self, delta_ns: int) -> None:
        """Rule and notification timers move with a host clock step, and are saved so that a
        restart (which cannot see a step made before it) keeps them moved."""
        self.rules.clock_stepped(delta_ns)
        self.manager.clock_stepped(delta_ns)
        self._dirty = True

    async def save(self) -> None:
        self._dirty = False
        await self._db(self._outbox.save_state, "alerts", orjson.dumps(self.manager.snapshot()))
        if self.reports is not None:
            await self._db(self._outbox.save_state, "reports", orjson.dumps(self.reports.dump()))
        await self.save_rules()

    def _apply(self, kind: str, body: dict[str, Any], now: int) -> None:
        if kind == "ack":
            ok = self.manager.ack(body["id"], body.get("by", "cli"), now)
            log.info(
                "alert %s acknowledged by %s" if ok else "ack for unknown alert %s by %s",
                body["id"],
                body.get("by"),
            )
        elif kind == "silence":
            sid = body.get("id") or uuid.uuid4().hex[:8]
            starts = int(body.get("starts_ns", now))
            silence = Silence(
                sid,
                body["matchers"],
                starts,
                starts + int(body["seconds"] * NS),
                body.get("reason", ""),
                body.get("by", "cli"),
            )
            self.manager.add_silence(silence)
            log.info("silence %s added for %s until %s: %s", sid, silence.matchers, silence.ends_ns, silence.reason)
        elif kind == "expire":
            self.manager.expire_silence(body["id"], now)
        elif kind in ("mark", "mark_end"):
            self._mark(kind, body, now)
        self._dirty = True

    def _mark(self, kind: str, body: dict[str, Any], now: int) -> None:
        """A furnace's operating mark from the CLI or HTTP; a bad one is logged and dropped."""
        marks = self.rules.marks
        try:
            furnace = str(body["furnace"])
            if kind == "mark_end":
                at = int(body.get("at_ns", now))
                check_times(now, end=at)
                ended = marks.end(furnace, at)
                log.info("furnace %s: %s", furnace, f"mark {ended.kind} ended" if ended else "no open mark to end")
                return
            start = int(body.get("start_ns", now))
            end = int(body["end_ns"]) if body.get("end_ns") is not None else None
            check_times(now, start, end)
            mark = marks.add(
                furnace, str(body["kind"]), start, end, str(body.get("by", "cli")), str(body.get("note", ""))
            )
            log.info("furnace %s marked %s by %s", furnace, mark.label(), mark.by)
        except (KeyError, TypeError, ValueError) as err:
            log.warning("furnace mark refused (%s): %s", body.get("by", "?"), err)

    def _on_result(self, message: Message, ok: bool, detail: str) -> None:
        now = time.time_ns()
        self.manager.record(message, ok, now)
        ids = ",".join(a.id for a in message.firing + message.resolved)
        self._dirty = True
        task = asyncio.ensure_future(self._after_result(message.channel, ids, ok, detail))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Finish recording deliveries and save, before the outbox closes."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.save()

    async def _after_result(self, channel: str, ids: str, ok: bool, detail: str) -> None:
        await self._db(self._outbox.log_delivery, channel, ids, ok, detail)
        await self.save()
