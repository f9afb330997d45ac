"""Drains the outbox into one sink through that sink's own cursor.

Guarantee: a batch's cursor advances only after the server accepted every line
of it, or refused a line as invalid (that line goes to the quarantine table
with the server's message, and only that line). Refused lines are isolated in
few requests where the server says which or how many it refused, and logged
once per batch with the counts. Network errors, 5xx and 429 are
retried with back-off for as long as it takes; nothing is dropped. A slow or
dead sink holds only its own cursor: drivers and other sinks carry on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telemetry.commits import CommitLog
from telemetry.errors import OutboxError, SinkError
from telemetry.lineproto import line
from telemetry.metrics import Metrics
from telemetry.outbox import Batch, Outbox
from telemetry.sinks import Sink
from telemetry.timing import Backoff, wait_event

log = logging.getLogger(__name__)

DbCall = Callable[..., Awaitable[Any]]
"""Runs an outbox method on the outbox's own thread: ``await db(outbox.begin, name, n)``."""


class Delivery:
    def __init__(
        self,
        sink: Sink,
        outbox: Outbox,
        db: DbCall,
        metrics: Metrics,
        wake: asyncio.Event,
        backoff: Backoff | None = None,
        progress: asyncio.Event | None = None,
        commits: CommitLog | None = None,
    ) -> None:
        self.sink = sink
        self.consumer = f"influx:{sink.name}"
        self._outbox = outbox
        self._db = db
        self._metrics = metrics
        self._wake = wake
        self._backoff = backoff or Backoff(initial=1.0, maximum=60.0)
        self._failing = False
        self._delay = 1.0
        self._progress = progress
        self._commits = commits if commits is not None else CommitLog()
        self.cursor = 0  # the last record the sink has taken (the pipeline sets it from the outbox)

    async def check(self) -> bool:
        """The sink's health check at start-up, run beside the drivers and never before them:
        a stopped or hung sink must not delay a single poll. Bounded by the sink's ``timeout``;
        a sink that is down is reported once (as the first failed write would be) and counted,
        and nothing else changes: readings are committed and delivery retries from the outbox."""
        try:
            # The request has the sink's timeout; the wait is bounded as well, in case a client
            # ignores it (its thread then finishes on its own).
            await asyncio.wait_for(asyncio.to_thread(self.sink.healthcheck), self.sink.timeout + 1.0)
        except SinkError as err:
            error_type, why = err.reason, str(err).removeprefix(f"{self.sink.name}: ")
        except TimeoutError:
            error_type, why = "timeout", f"no answer within {self.sink.timeout:g}s"
        else:
            log.info("sink %s: reachable", self.sink.name)
            return True
        self._metrics.errors.labels("sink", "healthcheck", error_type).inc()
        if not self._failing:
            log.error("sink %s: not reachable at start-up (%s); readings wait in the outbox", self.sink.name, why)
            self._failing = True
        return False

    async def run(self, stop: asyncio.Event) -> None:
        size = self.sink.batch_size
        # Behind a full batch there is likely another: it is read (and decoded) on the outbox
        # thread while this one is written, and taken if this one was accepted.
        ahead: asyncio.Future[Batch] | None = None
        while not stop.is_set():
            self._wake.clear()
            batch: Batch = await (ahead or self._db(self._outbox.begin, self.consumer, size))
            ahead = None
            if not batch:
                await _wait_any(self._wake, stop, 5.0)
                continue
            if len(batch) < size and not stop.is_set():
                await self._fill(stop)
                batch = await self._db(self._outbox.begin, self.consumer, size)
            if len(batch) == size:
                ahead = asyncio.ensure_future(self._db(self._outbox.begin, self.consumer, size, batch.last_id))
            if not await self.deliver(batch):
                if ahead is not None:
                    await ahead  # read for nothing: after a failure the cursor decides what goes next
                    ahead = None
                await wait_event(stop, self._delay)
        if ahead is not None:
            await ahead  # not delivered: the final flush starts again from the cursor
        await self._final_flush()

    async def _fill(self, stop: asyncio.Event) -> None:
        """Let a batch fill for up to flush_interval (fewer, larger requests), but no longer than
        it takes to fill: under load a full batch goes at once instead of after a fixed pause."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sink.flush_interval
        # backlog() reads two counters the outbox thread keeps; no need to queue behind a commit.
        while not stop.is_set() and self._outbox.backlog().get(self.consumer, 0) < self.sink.batch_size:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake.clear()  # set by every commit
            await _wait_any(self._wake, stop, left)

    async def _final_flush(self, budget: float = 10.0) -> None:
        """At shutdown, send what is still pending while the sink accepts it, for a bounded time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        while not self._failing and loop.time() < deadline:
            batch = await self._db(self._outbox.begin, self.consumer, self.sink.batch_size)
            if not batch or not await self.deliver(batch):
                return

    def lag_seconds(self) -> float:
        """How long the oldest record this sink has not taken has waited since its commit, on
        the daemon's clock (not the reading's own timestamp); 0 when it has taken everything.

        A backlog that no accepted write has reduced for some time shows as well: its oldest
        record has waited at least that long. Records committed before a restart count from
        the start (``CommitLog``)."""
        if not self._outbox.backlog().get(self.consumer, 0):
            return 0.0
        return max(0.0, self._commits.now() - self._commits.since(self.cursor + 1))

    async def deliver(self, batch: Batch) -> bool:
        """Write one batch and advance the cursor; False if it must be retried later."""
        try:
            await asyncio.to_thread(self._write, batch)
        except SinkError as err:
            self._metrics.sink_errors.labels(self.sink.name, err.reason).inc()
            self._metrics.sink_retries.labels(self.sink.name).inc()
            self._delay = self._backoff.next(err.retry_after)
            if not self._failing:
                log.error(
                    "sink %s: write failed, keeping %d records in the outbox and retrying: %s",
                    self.sink.name,
                    len(batch),
                    err,
                )
                self._failing = True
            else:
                log.debug("sink %s: still failing: %s", self.sink.name, err)
            return False
        try:
            await self._db(self._outbox.end, batch)
        except OutboxError as err:
            # Written but not marked: the batch goes again later, harmlessly (InfluxDB overwrites
            # the same points). A full disk must not stop the one thing that frees it.
            self._metrics.errors.labels("outbox", "advance", "sqlite").inc()
            self._delay = self._backoff.next()
            if not self._failing:
                log.error("sink %s: written, but the outbox could not record it; retrying: %s", self.sink.name, err)
                self._failing = True
            return False
        self.cursor = batch.last_id
        if self._progress is not None:
            self._progress.set()
        accepted = len(batch) - len(batch.rejected)
        self._metrics.sink_written.labels(self.sink.name).inc(accepted)
        self._metrics.sink_last_success.labels(self.sink.name).set(time.time())
        if batch.rejected:
            self._metrics.sink_rejected.labels(self.sink.name).inc(len(batch.rejected))
        if self._failing:
            attempts = self._backoff.attempts
            log.info(
                "sink %s: writing again%s", self.sink.name, f" after {attempts} failed attempts" if attempts else ""
            )
            self._failing = False
        self._backoff.reset()
        return True

    def _write(self, batch: Batch) -> None:
        lines = [(rid, line(rec)) for rid, rec in batch.items]
        batch.rejected = []
        requests = self._write_isolating(lines, batch.rejected)
        if batch.rejected:  # one line per batch, however many points were refused
            first_id, first_reason = batch.rejected[0]
            first_line = next(text for rid, text in lines if rid == first_id)
            log.warning(
                "sink %s: server refused %d of %d points, quarantined (%d requests); first: %s | %s",
                self.sink.name,
                len(batch.rejected),
                len(lines),
                requests,
                first_reason,
                first_line[:200],
            )

    def _write_isolating(self, lines: list[tuple[int, str]], rejected: list[tuple[int, str]]) -> int:
        """Write ``lines``, setting aside the points the server refuses as bad; the requests made.

        A refused part is settled without splitting when the server's answer settles it: the
        lines it names are set aside and the rest goes again in one request; a part whose
        every point the server counts as dropped is set aside whole. Otherwise the part is
        halved. So a batch the server refuses whole costs one request (not 2N-1), a cluster of
        refused points O(log N) when the server counts them, and only a server that says
        nothing but 400 costs a request per refused point (nothing less can tell which).
        Every line not set aside is written; each set-aside line keeps the server's words."""
        requests = 0
        todo = [lines]
        while todo:
            part = todo.pop()
            requests += 1
            started = time.perf_counter()
            try:
                self.sink.write([text for _, text in part])
            except SinkError as err:
                if err.retryable:
                    raise
                # Counted per refused request: a refusal worked around must still show in the metrics.
                self._metrics.sink_errors.labels(self.sink.name, err.reason).inc()
                if len(part) == 1 or err.dropped == len(part):
                    rejected += [(rid, err.named.get(i, str(err))) for i, (rid, _) in enumerate(part)]
                elif err.named:
                    rejected += [(part[i][0], words) for i, words in sorted(err.named.items())]
                    rest = [item for i, item in enumerate(part) if i not in err.named]
                    if rest:
                        todo.append(rest)
                else:
                    half = len(part) // 2
                    todo += [part[half:], part[:half]]  # the first half goes first
                continue
            self._metrics.sink_write_seconds.labels(self.sink.name).observe(time.perf_counter() - started)
        return requests


async def _wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    tasks = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
