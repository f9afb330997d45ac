"""Read-only views of an outbox file for the CLI and the HTTP endpoint, and the command queue
they write to: safe while the daemon runs (SQLite's WAL lets readers in beside the writer)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from telemetry.errors import OutboxError
from telemetry.model import Aggregate, Record, Rejected
from telemetry.outbox.records import decode
from telemetry.outbox.schema import SCHEMA
from telemetry.outbox.side import alert_log, dead_letters, hj212_acked_counts, side_rows, windows


def read_dead_letters(path: str, limit: int = 50) -> list[Rejected]:
    """Dead letters of an outbox file, read-only: safe while the daemon writes to it."""
    db = _read_only(path)
    try:
        return dead_letters(db, limit)
    except sqlite3.Error as err:
        raise OutboxError(f"cannot read dead letters from {path}: {err}") from err
    finally:
        db.close()


T = TypeVar("T")


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
    windows: int = 0
    hj212_acked: int = 0


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
        side = side_rows(db)
        return Status(
            consumers=consumers,
            records=int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0]),
            used_bytes=int(used),
            file_bytes=int(files),
            quarantined=side["quarantine"],
            dead_letters=side["deadletter"],
            windows=side["windows"],
            hj212_acked=side["hj212_acked"],
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
        db.executescript(SCHEMA)
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


def _read(path: str, what: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(db, *args)`` on a read-only connection, an SQLite error as an OutboxError naming ``what``."""
    db = _read_only(path)
    try:
        return fn(db, *args)
    except sqlite3.Error as err:
        raise OutboxError(f"cannot read {what} of {path}: {err}") from err
    finally:
        db.close()


def read_alert_log(path: str, site: str, start_ns: int, end_ns: int) -> list[tuple[int, str, dict[str, Any]]]:
    """A site's alert transitions and acknowledgements in [start_ns, end_ns), oldest first, as
    (time, kind, body): what the daily report lists (read-only, safe while the daemon runs)."""
    return _read(path, "the alert log", alert_log, site, start_ns, end_ns)


def read_windows(path: str, site: str, window: str, start_ns: int, end_ns: int) -> list[Aggregate]:
    """A site's closed windows of one size starting in [start_ns, end_ns) (read-only)."""
    return _read(path, "the windows", windows, site, window, start_ns, end_ns)


def read_hj212_acked(path: str, platform: str, start_ns: int, end_ns: int) -> dict[str, int]:
    """Periods of each CN a platform acknowledged that start in [start_ns, end_ns) (read-only)."""
    return _read(path, "the acknowledgements", hj212_acked_counts, platform, start_ns, end_ns)


class ReadOnlyOutbox:
    """The outbox's side tables the daily report reads, as the daemon's ``Outbox`` offers them,
    each call on a read-only connection (``telemetry report daily`` while the daemon runs)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def windows(self, site: str, window: str, start_ns: int, end_ns: int) -> list[Aggregate]:
        return read_windows(self.path, site, window, start_ns, end_ns)

    def alert_log(self, site: str, start_ns: int, end_ns: int) -> list[tuple[int, str, dict[str, Any]]]:
        return read_alert_log(self.path, site, start_ns, end_ns)

    def hj212_acked_counts(self, platform: str, start_ns: int, end_ns: int) -> dict[str, int]:
        return read_hj212_acked(self.path, platform, start_ns, end_ns)


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
