"""The outbox's disk: its budget (``max_bytes``), the free space it leaves (``min_free``) and
the reserve that keeps a full disk recoverable.

Over the budget, room is made in this order, stopping as soon as the outbox is back under
90 % of it: side data first (diagnostics down to their newest rows, then windows and
acknowledgements older than the oldest record a sink has not taken), and only then the
oldest records, counted as dropped. Side data never costs a reading while older side data
could go first. Under ``when_full: block`` the records are never dropped: commits wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from telemetry.errors import OutboxError
from telemetry.model import Record

log = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 20  # kept free beside the database: deleting delivered records needs room too
MIN_FREE_BYTES = 64 << 20  # default: below this much free disk, commits wait (back-pressure) instead of failing
WAL_CHECKPOINT_PAGES = 1000  # SQLite's default; fewer when min_free is small (see Outbox.__init__)


class Budget:
    """Bytes used and free, and making room (mixed into ``Outbox``)."""

    path: str
    max_bytes: int | None
    min_free: int
    dropped: int
    _db: sqlite3.Connection
    _page: int
    _checkpoint_pages: int
    _reclaimed_at: float
    _reserve: Path | None
    _recent: deque[tuple[int, Record]]

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages not on the free list)."""
        count = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((count - free) * self._page)

    def disk_free(self) -> int:
        """Bytes free on the outbox's file system (``:memory:``: unlimited)."""
        if self.path == ":memory:":
            return 1 << 62
        st = os.statvfs(Path(self.path).parent)
        return st.f_bavail * st.f_frsize

    def room(self) -> int:
        """Bytes free on the disk; when short of ``min_free``, after giving back what it can."""
        free = self.disk_free()
        if free < 2 * self.min_free and time.monotonic() - self._reclaimed_at >= 5.0:
            self._reclaimed_at = time.monotonic()  # a checkpoint per commit would slow ingest to a crawl
            self._reclaim()
            free = self.disk_free()
        return free

    def _reclaim(self) -> None:
        """Give the file system back what delivered records left: the WAL beyond its last
        checkpoint, and the database's free pages. Best effort on a nearly full disk."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            # In steps the WAL can hold (executescript runs each to completion; execute would
            # free one page), each checkpointed so the file shrinks before the next.
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            while free:  # (an outbox made before auto_vacuum was set frees nothing: the loop ends)
                self._db.executescript(f"PRAGMA incremental_vacuum({self._checkpoint_pages // 2});")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                left = self._db.execute("PRAGMA freelist_count").fetchone()[0]
                if left >= free:
                    break
                free = left

    def over_budget(self, fraction: float = 1.0) -> bool:
        return self.max_bytes is not None and self.used_bytes() > self.max_bytes * fraction

    def make_room(self, drop_records: bool) -> None:
        """Back under 90 % of the budget: side data first, then (``drop_records``) the oldest records."""
        if not self.over_budget(0.9):
            return
        oldest = self.oldest_pending_ts()
        shed = self.shed(oldest if oldest is not None else time.time_ns() - 2 * 86400 * 1_000_000_000)
        if shed:
            log.warning("outbox %s over 90 %% of its budget: shed side data %s", self.path, shed)
        if drop_records:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Delete the oldest records until under 90 % of the budget; they are counted as dropped."""
        assert self.max_bytes is not None
        while self.over_budget(0.9):
            rows = self.count()
            if rows == 0:
                return  # the budget is taken by side data that is still needed: nothing to drop
            excess = self.used_bytes() - self.max_bytes * 0.9
            n = max(1, min(rows, int(excess / max(1.0, self.used_bytes() / rows)) + 1))
            try:
                self._db.execute("BEGIN IMMEDIATE")
                deleted = self._db.execute(
                    "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?)", (n,)
                ).rowcount
                self._recent.clear()  # what was dropped must not be delivered from memory either
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise OutboxError(f"cannot drop old records from outbox {self.path}: {err}") from err
            self.dropped += deleted

    def _make_reserve(self) -> None:
        if self._reserve is None or self._reserve.exists():
            return
        try:
            fd = os.open(self._reserve, os.O_CREAT | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as f:  # the write reserves the blocks; no fsync on the start-up path
                f.write(bytes(RESERVE_BYTES))
        except OSError:  # no room for it now: try again when the outbox is empty
            self._reserve.unlink(missing_ok=True)

    def _release_reserve(self) -> bool:
        if self._reserve is None or not self._reserve.exists():
            return False
        self._reserve.unlink()
        log.error(
            "outbox %s: disk full; released its %d-byte reserve to delete what was delivered", self.path, RESERVE_BYTES
        )
        return True

    # Provided by the other parts of ``Outbox``:
    oldest_pending_ts: Callable[[], int | None]
    shed: Callable[[int], dict[str, int]]
    count: Callable[[], int]
    _rollback: Callable[[], None]
