"""The record queue: readings, alert events and closed windows, read by each sink through its cursor.

Retention: a record lives until every sink consumer has taken it (its cursor has passed it),
and no longer. What "taken" means for each consumer:
- an InfluxDB sink: the server accepted the batch, or refused a line into quarantine;
- the aggregator, the rules engine and the HJ 212 uplink's real-time data: they read
  the readings from memory right after the commit, so a record is theirs once committed
  (the uplink's periods come from the ``windows`` table, not from records).
With no sink configured, records are therefore not kept at all (and any left by an earlier
configuration are released at start): nothing else would ever read them back.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson

from telemetry.errors import OutboxError, OutboxFullDisk
from telemetry.model import Aggregate, AlertEvent, Reading, Record

RECENT_MAX = 20_000  # committed records also kept in memory, so caught-up consumers skip the read-back
_KINDS: dict[type, str] = {Reading: "reading", AlertEvent: "alert", Aggregate: "agg"}


def encode(record: Record) -> tuple[str, bytes]:
    if type(record) is Reading:  # most records: the compact row
        return "reading", orjson.dumps(record.to_row())
    return _KINDS[type(record)], orjson.dumps(record.to_dict())


def decode(kind: str, body: bytes) -> Record:
    data = orjson.loads(body)
    if kind == "reading":
        # An object is a reading committed before rows were used (an outbox kept over an upgrade).
        return Reading.from_row(data) if type(data) is list else Reading.from_dict(data)
    if kind == "alert":
        return AlertEvent.from_dict(data)
    if kind == "agg":
        return Aggregate.from_dict(data)
    raise OutboxError(f"unknown record kind {kind!r} in outbox")


@dataclass
class Batch:
    """Records handed to one consumer; ``last_id`` is where its cursor moves on ``end``."""

    consumer: str
    items: list[tuple[int, Record]]
    last_id: int
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


class RecordQueue:
    """Cursors, batches and the in-memory tail of the queue (mixed into ``Outbox``)."""

    path: str
    _db: sqlite3.Connection
    _last_id: int
    _cursors: dict[str, int]
    _recent: deque[tuple[int, Record]]
    _keep_records: bool

    def register(self, consumer: str) -> int:
        """Make ``consumer`` known; returns its cursor (resumed after a restart)."""
        row = self._db.execute("SELECT last_id FROM cursors WHERE consumer = ?", (consumer,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO cursors (consumer, last_id) VALUES (?, 0)", (consumer,))
            cursor = 0
        else:
            cursor = int(row[0])
        self._cursors[consumer] = cursor
        self._keep_records = True
        return cursor

    def set_consumers(self, consumers: Iterable[str]) -> list[str]:
        """The daemon's sink consumers, all of them: each is registered, the cursors of sinks no
        longer configured are forgotten, and records every consumer has taken are released (all of
        them when there is no sink). Returns the consumers forgotten."""
        wanted = list(consumers)
        for consumer in wanted:
            self.register(consumer)
        stale = [str(c) for (c,) in self._db.execute("SELECT consumer FROM cursors") if c not in wanted]
        for consumer in stale:
            self._db.execute("DELETE FROM cursors WHERE consumer = ?", (consumer,))
            self._cursors.pop(consumer, None)
        self._keep_records = bool(wanted)
        self._release(min(self._cursors.values()) if self._cursors else self._last_id)
        return stale

    def _release(self, floor: int) -> None:
        self._db.execute("DELETE FROM records WHERE id <= ?", (floor,))
        if not self._cursors:
            self._recent.clear()

    def begin(self, consumer: str, limit: int, after: int | None = None) -> Batch:
        """Up to ``limit`` records after ``consumer``'s cursor (or after record ``after``: the
        batch that follows one not yet ended), oldest first."""
        cursor = self._cursors[consumer] if after is None else after
        recent = self._recent
        if recent and recent[0][0] <= cursor + 1 and recent[-1][0] == self._last_id:
            start = cursor + 1 - recent[0][0]
            items = list(itertools.islice(recent, start, start + limit))
            return Batch(consumer, items, items[-1][0] if items else cursor)
        rows = self._db.execute(
            "SELECT id, kind, body FROM records WHERE id > ? ORDER BY id LIMIT ?",
            (cursor, limit),
        ).fetchall()
        items = [(int(rid), decode(kind, body)) for rid, kind, body in rows]
        return Batch(consumer, items, items[-1][0] if items else cursor)

    def _end(self, batch: Batch, now: int) -> None:
        """Quarantine the batch's refused records, move its consumer's cursor, release what every
        consumer has taken: one transaction."""
        refused = {rid for rid, _ in batch.rejected}
        bodies = {rid: encode(rec) for rid, rec in batch.items if rid in refused}
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO quarantine (consumer, record_id, kind, body, reason, at_ns) VALUES (?, ?, ?, ?, ?, ?)",
                [(batch.consumer, rid, *bodies[rid], reason, now) for rid, reason in batch.rejected],
            )
            self._db.execute("UPDATE cursors SET last_id = ? WHERE consumer = ?", (batch.last_id, batch.consumer))
            floor = min(batch.last_id if c == batch.consumer else v for c, v in self._cursors.items())
            self._db.execute("DELETE FROM records WHERE id <= ?", (floor,))
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            kind = OutboxFullDisk if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL else OutboxError
            raise kind(f"cannot advance {batch.consumer} in outbox {self.path}: {err}") from err
        self._cursors[batch.consumer] = batch.last_id

    def _remember(self, records: list[Record]) -> None:
        """Keep what was just committed in memory (ids of one commit are consecutive: one writer
        holds the lock, so AUTOINCREMENT ids of one ``executemany`` end at ``_last_id``)."""
        first = self._last_id - len(records) + 1
        if self._recent and self._recent[-1][0] != first - 1:
            self._recent.clear()
        self._recent.extend(zip(range(first, self._last_id + 1), records, strict=True))

    def oldest_pending_ts(self) -> int | None:
        """Timestamp of the oldest record some consumer has not taken (None when none waits)."""
        if not self._cursors:
            return None
        row = self._db.execute(
            "SELECT kind, body FROM records WHERE id > ? ORDER BY id LIMIT 1", (min(self._cursors.values()),)
        ).fetchone()
        return decode(row[0], row[1]).ts if row else None

    def backlog(self) -> dict[str, int]:
        """Records each consumer has not taken yet (ids are never reused, so a difference)."""
        return {c: max(0, self._last_id - v) for c, v in self._cursors.items()}

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    _rollback: Callable[[], None]  # ``Outbox``'s
