"""``Outbox``: the one SQLite connection, and the commit that every part of it shares.

Guarantee: ``append()`` returns only after the records are committed (with
``synchronous=FULL`` the commit survives power loss as well as ``kill -9``).
Each consumer reads through its own cursor; ``end()`` advances it only for a
batch the consumer has finished (accepted, or rejected into quarantine), so
delivery is at-least-once. Consumers make that idempotent (InfluxDB overwrites
a point with the same series and timestamp).

Not thread-safe by design: the pipeline calls it from one dedicated thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path

from telemetry.errors import OutboxError, OutboxFull, OutboxFullDisk
from telemetry.model import Aggregate, AlertEvent, AlertState, Record, Rejected
from telemetry.outbox.budget import MIN_FREE_BYTES, WAL_CHECKPOINT_PAGES, Budget
from telemetry.outbox.records import RECENT_MAX, Batch, RecordQueue, decode, encode
from telemetry.outbox.schema import SCHEMA, make_private, migrate
from telemetry.outbox.side import Retention, SideStores


class Outbox(RecordQueue, SideStores, Budget):
    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "full",
        max_bytes: int | None = None,
        when_full: str = "drop_oldest",
        min_free: int = MIN_FREE_BYTES,
        retention: Retention | None = None,
    ) -> None:
        self.path = path
        self.retention = retention or Retention()
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.min_free = min_free  # more than a checkpoint can take: the file system never fills
        self._reclaimed_at = -1e9
        self.dropped = 0  # records deleted by the disk budget before every consumer took them
        self.deleted: Counter[tuple[str, str]] = Counter()
        try:
            make_private(path)
        except OSError as err:
            raise OutboxError(f"cannot create outbox {path}: {err.strerror}") from err
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Pages of delivered records go back to the file system on demand (new databases only:
            # SQLite fixes this when the first table is made).
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA journal_size_limit=16777216")  # the WAL shrinks back after a burst
            # A checkpoint copies the WAL into the database file: keep it well under min_free, so
            # it never takes the last bytes of a disk. Not smaller than needed: each checkpoint
            # is an fsync inside some commit, which shows in alert latency.
            self._page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._checkpoint_pages = max(64, min(WAL_CHECKPOINT_PAGES, min_free // 4 // self._page))
            self._db.execute(f"PRAGMA wal_autocheckpoint={self._checkpoint_pages}")
            self._db.execute("PRAGMA busy_timeout=5000")  # the CLI may write a command meanwhile
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            self._db.executescript(SCHEMA)
            migrate(self._db)
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()
            seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        except sqlite3.Error as err:
            raise OutboxError(f"cannot open outbox {path}: {err}") from err
        self._last_id = max(int(row[0]), int(seq[0]) if seq else 0)
        self._cursors: dict[str, int] = {}
        self._keep_records = True  # until ``set_consumers`` says no sink will read them
        # The newest committed records with their ids, in id order and without gaps: a sink
        # that keeps up takes its batches from here instead of selecting and decoding them.
        self._recent: deque[tuple[int, Record]] = deque(maxlen=RECENT_MAX)
        # A full disk would leave no room for the very writes that free space (cursor moves and
        # deletes go through the WAL too): a reserve file is given up when that happens.
        self._reserve = Path(f"{path}.reserve") if path != ":memory:" else None
        self._make_reserve()

    def append(self, records: Sequence[Record], rejected: Sequence[Rejected] = ()) -> int:
        """Commit ``records`` (and dead letters) in one transaction; returns the last record id.

        Closed windows also go to the ``windows`` table. Over the disk budget, side data is
        shed first; then ``when_full: block`` raises OutboxFull before writing (the caller
        waits for the sinks to make room) and ``drop_oldest`` writes, then deletes the oldest
        records until the outbox is back under 90 % of the budget.
        """
        if not records and not rejected:
            return self._last_id
        if self.when_full == "block" and self.over_budget():
            self.make_room(drop_records=False)
            if self.over_budget():
                raise OutboxFull(f"outbox {self.path} is over its budget of {self.max_bytes} bytes")
        if (free := self.room()) < self.min_free:
            raise OutboxFull(
                f"disk under outbox {self.path} nearly full ({free} bytes free): holding new readings back"
            )
        encoded = [encode(r) for r in records]
        windows = [
            (r.site, r.device, r.quantity, r.window, r.ts, body, r.point)
            for r, (_, body) in zip(records, encoded, strict=True)
            if isinstance(r, Aggregate)
        ]
        rows = encoded if self._keep_records else []  # no sink: nothing would read them back
        transitions = [
            (r.ts, r.site, r.state.value, body)
            for r, (_, body) in zip(records, encoded, strict=True)
            if isinstance(r, AlertEvent) and r.state is not AlertState.INSUFFICIENT
        ]
        last = self._last_id
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if rows:
                self._db.executemany("INSERT INTO records (kind, body) VALUES (?, ?)", rows)
                last = self._db.execute("SELECT last_insert_rowid()").fetchone()[0]
            if rejected:
                self._dead_letters(rejected)
            if transitions:
                self._db.executemany("INSERT INTO alert_log (at_ns, site, kind, body) VALUES (?, ?, ?, ?)", transitions)
            if windows:
                self._db.executemany(
                    "INSERT OR REPLACE INTO windows (site, device, quantity, window, start_ns, body, point)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    windows,
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            self._rollback()
            raise OutboxError(f"cannot append to outbox {self.path}: {err}") from err
        self._last_id = int(last)
        if rows:
            self._remember(list(records))
        if self.when_full == "drop_oldest" and self.over_budget():
            self.make_room(drop_records=True)
        return self._last_id

    def end(self, batch: Batch) -> None:
        """Finish ``batch``: quarantine its rejected records and advance the cursor.

        On a full disk, the reserve file is deleted and the step tried once more, so
        delivered records can still be deleted and new ones committed again."""
        now = time.time_ns()
        try:
            self._end(batch, now)
        except OutboxFullDisk:
            if not self._release_reserve():
                raise
            self._end(batch, now)
        caught_up = min(self._cursors.values()) >= self._last_id  # (no COUNT(*) over a big backlog)
        if caught_up and self._reserve is not None and not self._reserve.exists():
            self._make_reserve()  # take the reserve back for the next time

    def quarantined(self, consumer: str | None = None) -> list[tuple[str, Record, str]]:
        query = "SELECT consumer, kind, body, reason FROM quarantine"
        args: tuple[str, ...] = ()
        if consumer is not None:
            query += " WHERE consumer = ?"
            args = (consumer,)
        return [(c, decode(k, b), r) for c, k, b, r in self._db.execute(query + " ORDER BY id", args)]

    def close(self) -> None:
        self._db.close()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # nothing open: the failure came before BEGIN
            self._db.execute("ROLLBACK")
