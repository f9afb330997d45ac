"""The durable hand-off between sources and consumers (SQLite in WAL mode).

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
import itertools
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from telemetry.errors import OutboxError, OutboxFull, OutboxFullDisk
from telemetry.model import Aggregate, AlertEvent, Reading, Record, Rejected

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a cursor never skips
    kind TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    consumer TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deadletter (  -- inputs that could not become readings, newest kept
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ns INTEGER NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (  -- closed aggregate windows, for the HJ 212 uplink
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    window TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    body BLOB NOT NULL,
    point TEXT NOT NULL DEFAULT '',  -- the monitoring point ('' in rows stored before points existed)
    PRIMARY KEY (site, device, quantity, window, start_ns)
);
CREATE INDEX IF NOT EXISTS windows_by_site ON windows (site, window, start_ns);
CREATE TABLE IF NOT EXISTS hj212_acked (  -- periods a platform acknowledged: never sent again
    platform TEXT NOT NULL,
    cn TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    acked_ns INTEGER NOT NULL,
    PRIMARY KEY (platform, cn, start_ns)
);
CREATE TABLE IF NOT EXISTS state (  -- snapshots of in-memory state (open windows, ...) by name
    name TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (  -- requests from the CLI or HTTP (ack, silence) for the daemon
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    at_ns INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS deliveries (  -- every notification attempt's outcome, newest kept
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ns INTEGER NOT NULL,
    channel TEXT NOT NULL,
    alerts TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    consumer TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    at_ns INTEGER NOT NULL
);
"""

_KINDS: dict[type, str] = {Reading: "reading", AlertEvent: "alert", Aggregate: "agg"}
log = logging.getLogger(__name__)
RESERVE_BYTES = 1 << 20  # kept free beside the database: deleting delivered records needs room too
MIN_FREE_BYTES = 64 << 20  # default: below this much free disk, commits wait (back-pressure) instead of failing
WAL_CHECKPOINT_PAGES = 1000  # SQLite's default; fewer when min_free is small (see Outbox.__init__)
RECENT_MAX = 20_000  # committed records also kept in memory, so caught-up consumers skip the read-back
DEADLETTER_PAYLOAD_MAX = 4096  # bytes kept of a rejected payload: enough to see what was wrong


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


class Outbox:
    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "full",
        deadletter_max: int = 10_000,
        max_bytes: int | None = None,
        when_full: str = "drop_oldest",
        min_free: int = MIN_FREE_BYTES,
    ) -> None:
        self.path = path
        self.deadletter_max = deadletter_max
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.min_free = min_free  # more than a checkpoint can take: the file system never fills
        self._reclaimed_at = -1e9
        self.dropped = 0  # records deleted by the disk budget before every consumer took them
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
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
            self._db.executescript(_SCHEMA)
            _migrate(self._db)
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()
            seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        except sqlite3.Error as err:
            raise OutboxError(f"cannot open outbox {path}: {err}") from err
        self._last_id = max(int(row[0]), int(seq[0]) if seq else 0)
        self._cursors: dict[str, int] = {}
        # The newest committed records with their ids, in id order and without gaps: a sink
        # that keeps up takes its batches from here instead of selecting and decoding them.
        self._recent: deque[tuple[int, Record]] = deque(maxlen=RECENT_MAX)
        # A full disk would leave no room for the very writes that free space (cursor moves and
        # deletes go through the WAL too): a reserve file is given up when that happens.
        self._reserve = Path(f"{path}.reserve") if path != ":memory:" else None
        self._make_reserve()

    def register(self, consumer: str) -> int:
        """Make ``consumer`` known; returns its cursor (resumed after a restart)."""
        row = self._db.execute("SELECT last_id FROM cursors WHERE consumer = ?", (consumer,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO cursors (consumer, last_id) VALUES (?, 0)", (consumer,))
            cursor = 0
        else:
            cursor = int(row[0])
        self._cursors[consumer] = cursor
        return cursor

    def append(self, records: Sequence[Record], rejected: Sequence[Rejected] = ()) -> int:
        """Commit ``records`` (and dead letters) in one transaction; returns the last record id.

        Over the disk budget, ``when_full: block`` raises OutboxFull before writing
        (the caller waits for the sinks to make room); ``drop_oldest`` writes, then
        deletes the oldest records until the outbox is back under 90 % of the budget.
        """
        if not records and not rejected:
            return self._last_id
        if self.when_full == "block" and self.over_budget():
            raise OutboxFull(f"outbox {self.path} is over its budget of {self.max_bytes} bytes")
        if (free := self.room()) < self.min_free:
            raise OutboxFull(
                f"disk under outbox {self.path} nearly full ({free} bytes free): holding new readings back"
            )
        rows = [encode(r) for r in records]
        last = self._last_id
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if rows:
                self._db.executemany("INSERT INTO records (kind, body) VALUES (?, ?)", rows)
                last = self._db.execute("SELECT last_insert_rowid()").fetchone()[0]
            if rejected:
                self._dead_letters(rejected)
            windows = [
                (r.site, r.device, r.quantity, r.window, r.ts, b, r.point)
                for r, (_, b) in zip(records, rows, strict=True)
                if isinstance(r, Aggregate)
            ]
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
            # One writer holds the lock (BEGIN IMMEDIATE), so AUTOINCREMENT ids of one
            # executemany are consecutive and end at ``last``.
            first = self._last_id - len(rows) + 1
            if self._recent and self._recent[-1][0] != first - 1:
                self._recent.clear()
            self._recent.extend(zip(range(first, self._last_id + 1), records, strict=True))
        if self.when_full == "drop_oldest" and self.over_budget():
            self._drop_oldest()
        return self._last_id

    def windows(
        self, site: str, window: str, start_ns: int, end_ns: int, points: Sequence[str] | None = None
    ) -> list[Aggregate]:
        """Closed windows of a site (of these monitoring points) starting in [start_ns, end_ns), oldest first."""
        rows = self._db.execute(
            "SELECT body FROM windows WHERE site = ? AND window = ? AND start_ns >= ? AND start_ns < ?"  # noqa: S608
            f" AND {_POINTS} ORDER BY start_ns, device, quantity",  # a constant clause: no input in the text
            (site, window, start_ns, end_ns, *_points(points)),
        ).fetchall()
        return [Aggregate.from_dict(orjson.loads(body)) for (body,) in rows]

    def window_starts(self, site: str, window: str, since_ns: int, points: Sequence[str] | None = None) -> list[int]:
        rows = self._db.execute(
            f"SELECT DISTINCT start_ns FROM windows WHERE site = ? AND window = ? AND start_ns >= ? AND {_POINTS}",  # noqa: S608
            (site, window, since_ns, *_points(points)),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def last_window_start(self, site: str, window: str) -> int | None:
        """Start of the newest closed ``window`` stored for ``site`` (None: none stored)."""
        row = self._db.execute(
            "SELECT MAX(start_ns) FROM windows WHERE site = ? AND window = ?", (site, window)
        ).fetchone()
        return int(row[0]) if row[0] is not None else None

    def hj212_acked(self, platform: str) -> set[tuple[str, int]]:
        rows = self._db.execute("SELECT cn, start_ns FROM hj212_acked WHERE platform = ?", (platform,)).fetchall()
        return {(str(cn), int(start)) for cn, start in rows}

    def hj212_mark_acked(self, platform: str, cn: str, start_ns: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO hj212_acked VALUES (?, ?, ?, ?)", (platform, cn, start_ns, time.time_ns())
        )

    def save_state(self, name: str, body: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO state (name, body) VALUES (?, ?)", (name, body))

    def load_state(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT body FROM state WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def take_commands(self) -> list[tuple[str, dict[str, Any]]]:
        """Pending commands (ack, silence ...), oldest first, marked done."""
        rows = self._db.execute("SELECT id, kind, body FROM commands WHERE done = 0 ORDER BY id").fetchall()
        if rows:
            self._db.execute("UPDATE commands SET done = 1 WHERE id <= ?", (rows[-1][0],))
        return [(kind, orjson.loads(body)) for _, kind, body in rows]

    def log_delivery(self, channel: str, alerts: str, ok: bool, detail: str, keep: int = 10_000) -> None:
        self._db.execute(
            "INSERT INTO deliveries (at_ns, channel, alerts, ok, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time_ns(), channel, alerts, int(ok), detail),
        )
        self._db.execute("DELETE FROM deliveries WHERE id <= (SELECT MAX(id) FROM deliveries) - ?", (keep,))

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

    def _drop_oldest(self) -> None:
        """Delete the oldest records until under 90 % of the budget; they are counted as dropped."""
        assert self.max_bytes is not None
        while self.over_budget(0.9):
            rows = self.count()
            if rows == 0:
                return  # the budget is taken by other tables (dead letters, quarantine): nothing to drop
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

    def end(self, batch: Batch) -> None:
        """Finish ``batch``: quarantine its rejected records and advance the cursor.

        On a full disk, the reserve file is deleted and the step tried once more, so
        delivered records can still be deleted and new ones committed again."""
        try:
            self._end(batch)
        except OutboxFullDisk:
            if not self._release_reserve():
                raise
            self._end(batch)
        caught_up = min(self._cursors.values()) >= self._last_id  # (no COUNT(*) over a big backlog)
        if caught_up and self._reserve is not None and not self._reserve.exists():
            self._make_reserve()  # take the reserve back for the next time

    def _end(self, batch: Batch) -> None:
        refused = {rid for rid, _ in batch.rejected}
        bodies = {rid: encode(rec) for rid, rec in batch.items if rid in refused}
        now = time.time_ns()
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

    def _make_reserve(self) -> None:
        if self._reserve is None or self._reserve.exists():
            return
        try:
            with self._reserve.open("wb") as f:  # the write reserves the blocks; no fsync on the start-up path
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

    def _dead_letters(self, rejected: Sequence[Rejected]) -> None:
        self._db.executemany(
            "INSERT INTO deadletter (at_ns, source, topic, reason, detail, payload) VALUES (?, ?, ?, ?, ?, ?)",
            [(r.ts, r.source, r.topic, r.reason, r.detail[:500], r.payload[:DEADLETTER_PAYLOAD_MAX]) for r in rejected],
        )
        self._db.execute(
            "DELETE FROM deadletter WHERE id <= (SELECT MAX(id) FROM deadletter) - ?", (self.deadletter_max,)
        )

    def dead_letters(self, limit: int = 50) -> list[Rejected]:
        """The newest dead letters, newest first."""
        return _dead_letters(self._db, limit)

    def backlog(self) -> dict[str, int]:
        """Records each consumer has not taken yet (ids are never reused, so a difference)."""
        return {c: max(0, self._last_id - v) for c, v in self._cursors.items()}

    def quarantined(self, consumer: str | None = None) -> list[tuple[str, Record, str]]:
        query = "SELECT consumer, kind, body, reason FROM quarantine"
        args: Iterable[str] = ()
        if consumer is not None:
            query += " WHERE consumer = ?"
            args = (consumer,)
        return [(c, decode(k, b), r) for c, k, b, r in self._db.execute(query + " ORDER BY id", tuple(args))]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # nothing open: the failure came before BEGIN
            self._db.execute("ROLLBACK")


_POINTS = "(? IS NULL OR point IN (?, ?))"  # any point, or one of (at most) two


def _points(points: Sequence[str] | None) -> tuple[str | None, str | None, str | None]:
    if not points:
        return None, None, None
    if len(points) > 2:
        raise ValueError("at most two point names")
    return points[0], points[0], points[-1]


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a database written by an earlier version up to this schema."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(windows)")}
    if "point" not in columns:  # before monitoring points: every row belongs to its site's inferred point
        db.execute("ALTER TABLE windows ADD COLUMN point TEXT NOT NULL DEFAULT ''")


def _dead_letters(db: sqlite3.Connection, limit: int) -> list[Rejected]:
    rows = db.execute(
        "SELECT at_ns, source, topic, reason, detail, payload FROM deadletter ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [Rejected(int(a), s, t, r, d, bytes(p)) for a, s, t, r, d, p in rows]


def read_dead_letters(path: str, limit: int = 50) -> list[Rejected]:
    """Dead letters of an outbox file, read-only: safe while the daemon writes to it."""
    db = _read_only(path)
    try:
        return _dead_letters(db, limit)
    except sqlite3.Error as err:
        raise OutboxError(f"cannot read dead letters from {path}: {err}") from err
    finally:
        db.close()


@dataclass
class ConsumerStatus:
    consumer: str
    cursor: int
    backlog: int
    oldest_pending_ns: int | None


@dataclass
class Status:
    consumers: list[ConsumerStatus]
    records: int
    used_bytes: int
    file_bytes: int
    quarantined: int
    dead_letters: int


def _read_only(path: str) -> sqlite3.Connection:
    if not Path(path).exists():
        raise OutboxError(f"no outbox at {path}")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def read_status(path: str) -> Status:
    """What ``telemetry outbox status`` shows; read-only, safe while the daemon runs."""
    db = _read_only(path)
    try:
        consumers = []
        for consumer, cursor in db.execute("SELECT consumer, last_id FROM cursors ORDER BY consumer"):
            backlog = db.execute("SELECT COUNT(*) FROM records WHERE id > ?", (cursor,)).fetchone()[0]
            first = db.execute("SELECT kind, body FROM records WHERE id > ? ORDER BY id LIMIT 1", (cursor,)).fetchone()
            oldest = decode(first[0], first[1]).ts if first else None
            consumers.append(ConsumerStatus(consumer, int(cursor), int(backlog), oldest))
        page = db.execute("PRAGMA page_size").fetchone()[0]
        used = (
            db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        ) * page
        files = sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))
        return Status(
            consumers=consumers,
            records=int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0]),
            used_bytes=int(used),
            file_bytes=int(files),
            quarantined=int(db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]),
            dead_letters=int(db.execute("SELECT COUNT(*) FROM deadletter").fetchone()[0]),
        )
    except sqlite3.Error as err:
        raise OutboxError(f"cannot read outbox {path}: {err}") from err
    finally:
        db.close()


def read_quarantine(path: str, limit: int = 50) -> list[tuple[int, str, Record, str]]:
    """The newest quarantined records (at_ns, consumer, record, server's message), newest first."""
    db = _read_only(path)
    try:
        rows = db.execute(
            "SELECT at_ns, consumer, kind, body, reason FROM quarantine ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(int(a), c, decode(k, b), r) for a, c, k, b, r in rows]
    except sqlite3.Error as err:
        raise OutboxError(f"cannot read quarantine of {path}: {err}") from err
    finally:
        db.close()


def add_command(path: str, kind: str, body: dict[str, Any]) -> None:
    """Queue a command for the running daemon (it applies them within a second)."""
    if not Path(path).exists():
        raise OutboxError(f"no outbox at {path}: is the daemon configured with this file?")
    db = sqlite3.connect(path, timeout=5)
    try:
        db.executescript(_SCHEMA)
        with db:
            db.execute(
                "INSERT INTO commands (kind, body, at_ns) VALUES (?, ?, ?)",
                (kind, orjson.dumps(body), time.time_ns()),
            )
    except sqlite3.Error as err:
        raise OutboxError(f"cannot queue a command in {path}: {err}") from err
    finally:
        db.close()


def read_state(path: str, name: str) -> Any:
    """A saved snapshot (alerts, rules, ...) of the daemon, read-only; None if there is none."""
    db = _read_only(path)
    try:
        row = db.execute("SELECT body FROM state WHERE name = ?", (name,)).fetchone()
    except sqlite3.Error as err:
        raise OutboxError(f"cannot read {name} from {path}: {err}") from err
    finally:
        db.close()
    return orjson.loads(row[0]) if row else None


def read_deliveries(path: str, limit: int = 50) -> list[tuple[int, str, str, bool, str]]:
    db = _read_only(path)
    try:
        rows = db.execute(
            "SELECT at_ns, channel, alerts, ok, detail FROM deliveries ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
    except sqlite3.Error as err:
        raise OutboxError(f"cannot read deliveries from {path}: {err}") from err
    finally:
        db.close()
    return [(int(a), c, al, bool(o), d) for a, c, al, o, d in rows]
