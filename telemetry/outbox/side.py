"""What the outbox keeps besides the record queue, each table with its retention.

- ``windows``: closed aggregate windows (HJ 212 periods, restarts): ``windows`` seconds (the
  longest platform back-fill + 1 day, at least 2 days);
- ``hj212_acked``: periods a platform acknowledged: as long as the windows;
- ``quarantine``: points a sink refused: ``quarantine`` (30 days), ``quarantine_max`` rows;
- ``deadletter``: inputs that could not become readings: ``deadletters`` (30 days), ``deadletter_max``;
- ``deliveries``: notification attempts: ``deliveries`` (90 days), ``deliveries_max`` rows;
- ``alert_log``: alert transitions and acknowledgements (the daily report's history): as
  long as ``deliveries``, ``deliveries_max`` x 10 rows;
- ``commands``: ack/silence requests from the CLI and HTTP: done ones ``commands`` (7 days),
  all of them ``commands_max`` rows;
- ``state``: named snapshots (aggregator, rules, alerts): one row per name.

``prune(now)`` applies it (the daemon runs it every few minutes); ``shed(before)`` is what
the disk budget takes, oldest first, before it would ever drop a record a sink has not taken.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from telemetry.model import Aggregate, Rejected

NS = 1_000_000_000
DAY_S = 86400.0
DEADLETTER_PAYLOAD_MAX = 4096  # bytes kept of a rejected payload: enough to see what was wrong
_DIAGNOSTICS_KEPT_WHEN_SHEDDING = 100  # the newest rows of quarantine, dead letters and deliveries


@dataclass(frozen=True)
class Retention:
    """How long (seconds) and how many rows each side table keeps."""

    windows: float = 8 * DAY_S
    quarantine: float = 30 * DAY_S
    quarantine_max: int = 10_000
    deadletters: float = 30 * DAY_S
    deadletter_max: int = 10_000
    deliveries: float = 90 * DAY_S
    deliveries_max: int = 10_000
    commands: float = 7 * DAY_S
    commands_max: int = 10_000

    @property
    def alert_log_max(self) -> int:
        return self.deliveries_max * 10


# (table, time column, seconds field, row-cap field or "")
_AGED: tuple[tuple[str, str, str, str], ...] = (
    ("windows", "start_ns", "windows", ""),
    ("hj212_acked", "start_ns", "windows", ""),
    ("quarantine", "at_ns", "quarantine", "quarantine_max"),
    ("deadletter", "at_ns", "deadletters", "deadletter_max"),
    ("deliveries", "at_ns", "deliveries", "deliveries_max"),
    ("alert_log", "at_ns", "deliveries", "alert_log_max"),
)


class SideStores:
    """Windows, acknowledgements, snapshots, commands, diagnostics (mixed into ``Outbox``)."""

    _db: sqlite3.Connection
    retention: Retention
    deleted: Counter[tuple[str, str]]  # rows deleted by (table, "retention" | "budget"), for the metrics

    # -- retention ------------------------------------------------------------------------------

    def prune(self, now_ns: int | None = None) -> dict[str, int]:
        """Apply the retention; returns rows deleted per table (tables with none left out)."""
        now = time.time_ns() if now_ns is None else now_ns
        keep = self.retention
        out: dict[str, int] = {}
        for table, column, seconds, cap in _AGED:
            before = now - int(getattr(keep, seconds) * NS)
            # Table and column names are this module's constants, never input.
            deleted = self._db.execute(f"DELETE FROM {table} WHERE {column} < ?", (before,)).rowcount  # noqa: S608
            if cap:
                deleted += self._keep_newest(table, getattr(keep, cap))
            if deleted:
                out[table] = deleted
        done = self._db.execute(
            "DELETE FROM commands WHERE done = 1 AND at_ns < ?", (now - int(keep.commands * NS),)
        ).rowcount
        done += self._keep_newest("commands", keep.commands_max)
        if done:
            out["commands"] = done
        self.deleted.update({(table, "retention"): n for table, n in out.items()})
        return out

    def shed(self, before_ns: int) -> dict[str, int]:
        """Side data the disk budget takes before any record a sink has not taken: diagnostics
        down to their newest rows, and windows and acknowledgements older than ``before_ns``."""
        out: dict[str, int] = {}
        for table in ("quarantine", "deadletter", "deliveries", "alert_log"):
            if deleted := self._keep_newest(table, _DIAGNOSTICS_KEPT_WHEN_SHEDDING):
                out[table] = deleted
        for table in ("windows", "hj212_acked"):
            # Table names are this module's constants, never input.
            deleted = self._db.execute(f"DELETE FROM {table} WHERE start_ns < ?", (before_ns,)).rowcount  # noqa: S608
            if deleted:
                out[table] = deleted
        self.deleted.update({(table, "budget"): n for table, n in out.items()})
        return out

    def _keep_newest(self, table: str, rows: int) -> int:
        # Table names are this module's constants, never input.
        query = f"DELETE FROM {table} WHERE id <= (SELECT MAX(id) FROM {table}) - ?"  # noqa: S608
        return int(self._db.execute(query, (rows,)).rowcount)

    def side_rows(self) -> dict[str, int]:
        """Rows per side table, for the year's bench (``telemetry outbox status`` reads a copy)."""
        return side_rows(self._db)

    # -- closed windows ---------------------------------------------------------------------------

    def windows(
        self, site: str, window: str, start_ns: int, end_ns: int, points: Sequence[str] | None = None
    ) -> list[Aggregate]:
        """Closed windows of a site (of these monitoring points) starting in [start_ns, end_ns), oldest first."""
        return windows(self._db, site, window, start_ns, end_ns, points)

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

    # -- HJ 212 acknowledgements -----------------------------------------------------------------

    def hj212_acked(self, platform: str) -> set[tuple[str, int]]:
        rows = self._db.execute("SELECT cn, start_ns FROM hj212_acked WHERE platform = ?", (platform,)).fetchall()
        return {(str(cn), int(start)) for cn, start in rows}

    def hj212_acked_counts(self, platform: str, start_ns: int, end_ns: int) -> dict[str, int]:
        return hj212_acked_counts(self._db, platform, start_ns, end_ns)

    def alert_log(self, site: str, start_ns: int, end_ns: int) -> list[tuple[int, str, dict[str, Any]]]:
        return alert_log(self._db, site, start_ns, end_ns)

    def hj212_mark_acked(self, platform: str, cn: str, start_ns: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO hj212_acked VALUES (?, ?, ?, ?)", (platform, cn, start_ns, time.time_ns())
        )

    # -- snapshots and commands -------------------------------------------------------------------

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

    # -- diagnostics --------------------------------------------------------------------------------

    def log_ack(self, site: str, alert_id: str, rule: str, by: str, at_ns: int) -> None:
        """An acknowledgement, beside the transitions ``append`` logs (for the daily report)."""
        body = orjson.dumps({"id": alert_id, "rule": rule, "by": by})
        self._db.execute(
            "INSERT INTO alert_log (at_ns, site, kind, body) VALUES (?, ?, 'acknowledged', ?)", (at_ns, site, body)
        )

    def log_delivery(self, channel: str, alerts: str, ok: bool, detail: str) -> None:
        self._db.execute(
            "INSERT INTO deliveries (at_ns, channel, alerts, ok, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time_ns(), channel, alerts, int(ok), detail),
        )
        self._keep_newest("deliveries", self.retention.deliveries_max)

    def _dead_letters(self, rejected: Sequence[Rejected]) -> None:
        self._db.executemany(
            "INSERT INTO deadletter (at_ns, source, topic, reason, detail, payload) VALUES (?, ?, ?, ?, ?, ?)",
            [(r.ts, r.source, r.topic, r.reason, r.detail[:500], r.payload[:DEADLETTER_PAYLOAD_MAX]) for r in rejected],
        )
        self._keep_newest("deadletter", self.retention.deadletter_max)

    def dead_letters(self, limit: int = 50) -> list[Rejected]:
        """The newest dead letters, newest first."""
        return dead_letters(self._db, limit)


def windows(
    db: sqlite3.Connection, site: str, window: str, start_ns: int, end_ns: int, points: Sequence[str] | None = None
) -> list[Aggregate]:
    """Closed windows of a site (of these monitoring points) starting in [start_ns, end_ns), oldest first."""
    rows = db.execute(
        "SELECT body FROM windows WHERE site = ? AND window = ? AND start_ns >= ? AND start_ns < ?"  # noqa: S608
        f" AND {_POINTS} ORDER BY start_ns, device, quantity",  # a constant clause: no input in the text
        (site, window, start_ns, end_ns, *_points(points)),
    ).fetchall()
    return [Aggregate.from_dict(orjson.loads(body)) for (body,) in rows]


def alert_log(db: sqlite3.Connection, site: str, start_ns: int, end_ns: int) -> list[tuple[int, str, dict[str, Any]]]:
    """A site's alert transitions and acknowledgements in [start_ns, end_ns), oldest first."""
    rows = db.execute(
        "SELECT at_ns, kind, body FROM alert_log WHERE site = ? AND at_ns >= ? AND at_ns < ? ORDER BY at_ns, id",
        (site, start_ns, end_ns),
    ).fetchall()
    return [(int(at), str(kind), orjson.loads(body)) for at, kind, body in rows]


def hj212_acked_counts(db: sqlite3.Connection, platform: str, start_ns: int, end_ns: int) -> dict[str, int]:
    """Periods of each CN a platform acknowledged that start in [start_ns, end_ns)."""
    rows = db.execute(
        "SELECT cn, COUNT(*) FROM hj212_acked WHERE platform = ? AND start_ns >= ? AND start_ns < ? GROUP BY cn",
        (platform, start_ns, end_ns),
    ).fetchall()
    return {str(cn): int(n) for cn, n in rows}


def side_rows(db: sqlite3.Connection) -> dict[str, int]:
    tables = ("windows", "hj212_acked", "quarantine", "deadletter", "deliveries", "alert_log", "commands", "state")
    return {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables}  # noqa: S608


def dead_letters(db: sqlite3.Connection, limit: int) -> list[Rejected]:
    rows = db.execute(
        "SELECT at_ns, source, topic, reason, detail, payload FROM deadletter ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [Rejected(int(a), s, t, r, d, bytes(p)) for a, s, t, r, d, p in rows]


_POINTS = "(? IS NULL OR point IN (?, ?))"  # any point, or one of (at most) two


def _points(points: Sequence[str] | None) -> tuple[str | None, str | None, str | None]:
    if not points:
        return None, None, None
    if len(points) > 2:
        raise ValueError("at most two point names")
    return points[0], points[0], points[-1]
