"""The outbox database: its tables, upgrades of older files, and opening it privately.

The file holds readings, dead-letter payloads and alert state: it, its WAL and the
directories the daemon makes for it are private to the daemon's user (0600/0700)
whatever the umask. SQLite creates the -wal and -shm files with the database file's
mode, so making that file 0600 before SQLite opens it is enough.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SCHEMA = """
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
CREATE INDEX IF NOT EXISTS windows_by_start ON windows (start_ns);  -- retention
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
CREATE TABLE IF NOT EXISTS alert_log (  -- alert transitions and acknowledgements: the daily report's
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ns INTEGER NOT NULL,
    site TEXT NOT NULL,
    kind TEXT NOT NULL,  -- firing, resolved, acknowledged
    body BLOB NOT NULL   -- the event (rule, labels, message, value, limit), or the ack (alert id, by)
);
CREATE INDEX IF NOT EXISTS alert_log_by_site ON alert_log (site, at_ns);
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


def migrate(db: sqlite3.Connection) -> None:
    """Bring a database written by an earlier version up to this schema (after ``SCHEMA``)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(windows)")}
    if "point" not in columns:  # before monitoring points: every row belongs to its site's inferred point
        db.execute("ALTER TABLE windows ADD COLUMN point TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX IF NOT EXISTS windows_by_start ON windows (start_ns)")


def make_private(path: str) -> None:
    """Create the database file's missing directories 0700 and the file itself 0600 (an
    existing file is made 0600): whatever the umask, only the daemon's user reads it."""
    if path == ":memory:":
        return
    file = Path(path)
    missing = [p for p in [file.parent, *file.parent.parents] if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    fd = os.open(file, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for companion in (Path(f"{path}-wal"), Path(f"{path}-shm")):  # left by an earlier version
        if companion.exists():
            companion.chmod(0o600)
