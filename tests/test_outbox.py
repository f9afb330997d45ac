"""The outbox: commits survive restarts and kill -9; cursors are independent."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import deque
from pathlib import Path

import orjson
import pytest

from telemetry.errors import OutboxFull
from telemetry.model import Aggregate, AlertEvent, AlertState, Flag, Reading, Record, Rejected
from telemetry.outbox import Batch, Outbox


def values(batch: Batch) -> list[float]:
    """The values of a batch that holds only readings."""
    readings = [r for _, r in batch.items if isinstance(r, Reading)]
    assert len(readings) == len(batch.items)
    return [r.value for r in readings]


def reading(i: int, site: str = "s") -> Reading:
    return Reading(ts=1_700_000_000_000_000_000 + i, site=site, device="d", quantity="cod", value=float(i), unit="mg/L")


def test_append_then_each_consumer_reads_through_its_own_cursor(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    box.register("a")
    box.register("b")
    box.append([reading(i) for i in range(10)])
    first = box.begin("a", 4)
    assert values(first) == [0, 1, 2, 3]
    box.end(first)
    assert box.backlog() == {"a": 6, "b": 10}
    assert values(box.begin("a", 100)) == [4, 5, 6, 7, 8, 9]
    assert values(box.begin("b", 2)) == [0, 1]


def test_cursors_and_records_survive_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "o.sqlite")
    box = Outbox(path)
    box.register("a")
    box.append([reading(i) for i in range(5)])
    box.end(box.begin("a", 3))
    box.close()
    box = Outbox(path)
    assert box.register("a") == 3
    assert values(box.begin("a", 10)) == [3, 4]


def test_readings_committed_as_objects_by_an_older_version_are_still_delivered(tmp_path: Path) -> None:
    """Readings are stored as compact rows now; an outbox kept over an upgrade holds objects."""
    path = str(tmp_path / "o.sqlite")
    box = Outbox(path)
    box.register("a")
    box.append([reading(0)])
    box.close()
    old = reading(1)._replace(flag=Flag.C)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO records (kind, body) VALUES ('reading', ?)", (orjson.dumps(old.to_dict()),))
        stored = [body for (body,) in db.execute("SELECT body FROM records ORDER BY id")]
    assert [body[:1] for body in stored] == [b"[", b"{"]
    box = Outbox(path)  # reopened: nothing in memory, both come from the file
    box.register("a")
    assert [r for _, r in box.begin("a", 10).items] == [reading(0), old]


def test_records_everyone_took_are_compacted_and_ids_never_reused(tmp_path: Path) -> None:
    path = str(tmp_path / "o.sqlite")
    box = Outbox(path)
    box.register("a")
    box.register("b")
    box.append([reading(i) for i in range(4)])
    box.end(box.begin("a", 10))
    assert box.count() == 4  # b has not taken them
    box.end(box.begin("b", 10))
    assert box.count() == 0
    box.close()
    box = Outbox(path)  # after a restart with an empty table, ids must continue, not restart at 1
    box.register("a")
    box.append([reading(9)])
    batch = box.begin("a", 10)
    assert [rid for rid, _ in batch.items] == [5]


def test_quarantine_keeps_the_refused_record_and_the_reason(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    box.register("a")
    box.append([reading(1), reading(2)])
    batch = box.begin("a", 10)
    batch.rejected = [(batch.items[1][0], "HTTP 400: bad point")]
    box.end(batch)
    [(consumer, record, reason)] = box.quarantined()
    assert (consumer, reason) == ("a", "HTTP 400: bad point")
    assert record == reading(2)


def test_alert_events_round_trip(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    box.register("a")
    event = AlertEvent(1, "s", "cod", "critical", AlertState.FIRING, "high", 120.0, 100.0, {"device": "d"})
    flagged = Reading(2, "s", "d", "cod", 1.0, "mg/L", Flag.C)
    box.append([event, flagged])
    assert [r for _, r in box.begin("a", 10).items] == [event, flagged]


WRITER = textwrap.dedent(
    """
    import sys
    from telemetry.model import Reading
    from telemetry.outbox import Batch, Outbox
    box = Outbox(sys.argv[1])
    i = 0
    while True:
        batch = [Reading(ts=i * 100 + k, site="s", device="d", quantity="q", value=float(i)) for k in range(100)]
        last = box.append(batch)
        print(last, flush=True)  # printed only after append returned: committed
        i += 1
    """
)


def test_kill_9_loses_no_committed_record_and_leaves_a_readable_db(tmp_path: Path) -> None:
    path = str(tmp_path / "o.sqlite")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    assert proc.stdout is not None
    committed = 0
    for _ in range(50):  # let it commit 50 batches, then kill it mid-stream
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    box = Outbox(path)
    box.register("check")
    assert box.count() >= committed
    ids = [rid for rid, _ in box.begin("check", 1_000_000).items]
    assert ids[:committed] == list(range(1, committed + 1))
    assert box._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_batches_served_from_memory_equal_what_the_database_holds(tmp_path: Path) -> None:
    """A caught-up consumer reads recent records from memory; ids and records must be exactly
    those a fresh process (reading back from SQLite) sees, across batch edges and the ring's end."""
    path = str(tmp_path / "o.sqlite")
    box = Outbox(path)
    box.register("a")
    box.register("b")
    box.append([reading(i) for i in range(7)])
    box.append([reading(i) for i in range(7, 8)])
    box.append([reading(i) for i in range(8, 20)])
    memory: list[tuple[int, Record]] = []
    while batch := box.begin("a", 6):
        memory += batch.items
        box.end(batch)
    fresh = Outbox(path)
    assert not fresh._recent  # a reopened outbox has nothing in memory: it reads the database
    fresh.register("b")
    assert memory == fresh.begin("b", 100).items
    assert [rid for rid, _ in memory] == list(range(1, 21))
    # Behind the ring's start the consumer falls back to the database, without a gap.
    small = Outbox(str(tmp_path / "small.sqlite"))
    small._recent = deque(maxlen=5)
    small.register("c")
    small.append([reading(i) for i in range(12)])
    assert values(small.begin("c", 100)) == [float(i) for i in range(12)]


def test_commits_wait_when_the_disk_is_short_of_min_free_and_a_reserve_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(str(path), min_free=1 << 62)  # more than any disk has: always "nearly full"
    box.register("a")
    assert (tmp_path / "o.sqlite.reserve").stat().st_size == 1 << 20  # room kept for deletes
    with pytest.raises(OutboxFull, match="nearly full"):
        box.append([reading(1)])
    assert box.count() == 0  # nothing half-written
    box.min_free = 0
    box.append([reading(2)])
    assert box.count() == 1


def test_a_database_from_before_monitoring_points_is_migrated_and_its_windows_kept(tmp_path: Path) -> None:
    """Windows stored before points existed get point "" and stay readable; new ones carry their point."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE windows (site TEXT NOT NULL, device TEXT NOT NULL, quantity TEXT NOT NULL,
        window TEXT NOT NULL, start_ns INTEGER NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (site, device, quantity, window, start_ns));"""
    )
    old = Aggregate(3600, "1h", "s", "an", "cod", "mg/L", 1.0, 2.0, 3.0, 60, 60, True)
    body = orjson.dumps({k: v for k, v in old.to_dict().items() if k not in ("point", "method", "sample_ts")})
    db.execute("INSERT INTO windows VALUES ('s', 'an', 'cod', '1h', 3600, ?)", (body,))
    db.commit()
    db.close()
    box = Outbox(str(path))
    new = Aggregate(7200, "1h", "s", "raw", "cod", "mg/L", 9.0, 9.0, 9.0, 60, 60, True, point="inlet")
    box.append([new])
    assert [w.ts for w in box.windows("s", "1h", 0, 10_000)] == [3600, 7200]
    assert [w.ts for w in box.windows("s", "1h", 0, 10_000, ("s", ""))] == [3600]  # the inferred point owns old rows
    assert [w.point for w in box.windows("s", "1h", 0, 10_000, ("inlet",))] == ["inlet"]
    assert box.window_starts("s", "1h", 0, ("inlet",)) == [7200]
    box.close()


def window(start_ns: int, quantity: str = "cod") -> Aggregate:
    return Aggregate(start_ns, "1m", "s", "an", quantity, "mg/L", 1.0, 2.0, 3.0, 1, 1, True)


def test_retention_prunes_each_side_table_by_age_and_row_cap(tmp_path: Path) -> None:
    from telemetry.outbox import Retention  # noqa: PLC0415

    day = 86400 * 10**9
    now = time.time_ns()
    keep = Retention(windows=8 * 86400, quarantine=30 * 86400, quarantine_max=3, deadletter_max=2, commands=86400)
    box = Outbox(str(tmp_path / "o.sqlite"), retention=keep)
    box.register("influx:a")
    box.append([window(now - 9 * day), window(now - 7 * day), window(now - day)])
    box.hj212_mark_acked("city", "2061", now - 9 * day)
    box.hj212_mark_acked("city", "2061", now - day)
    box.append([], [Rejected(now - i, "mqtt", "t", "bad", "x", b"p") for i in range(4)])
    for i in range(5):
        batch = box.begin("influx:a", 1)
        batch.rejected = [(batch.items[0][0], f"refused {i}")] if batch.items else []
        if batch.items:
            box.end(batch)
        box.append([reading(i)])
    box._db.execute("INSERT INTO commands (kind, body, at_ns, done) VALUES ('ack', '{}', ?, 1)", (now - 2 * day,))
    box._db.execute("INSERT INTO commands (kind, body, at_ns, done) VALUES ('ack', '{}', ?, 0)", (now - 2 * day,))
    pruned = box.prune(now)
    assert sorted(w.ts for w in box.windows("s", "1m", 0, now)) == [now - 7 * day, now - day]
    assert box.hj212_acked("city") == {("2061", now - day)}
    assert box.side_rows()["quarantine"] == 3  # the newest three refusals
    assert box.side_rows()["deadletter"] == 2
    assert box.side_rows()["commands"] == 1  # the done one went; the pending one waits for the daemon
    assert pruned["windows"] == 1
    assert pruned["hj212_acked"] == 1
    assert box.deleted[("windows", "retention")] == 1
    box.close()


def test_over_budget_side_data_goes_before_any_reading_a_sink_has_not_taken(tmp_path: Path) -> None:
    """Closed windows fill the budget; new readings still commit and stay for the sink: windows
    older than the oldest pending reading are shed first (once they went, every new reading
    was deleted right after its commit)."""
    now = time.time_ns()
    box = Outbox(str(tmp_path / "o.sqlite"), when_full="drop_oldest")
    box.register("influx:a")
    old = [window(now - 3 * 86400 * 10**9 + i * 60 * 10**9, f"q{i % 50}") for i in range(4000)]
    for i in range(0, len(old), 500):
        box.append(old[i : i + 500])
    while batch := box.begin("influx:a", 1000):  # the sink took the windows' records
        box.end(batch)
    assert box.side_rows()["windows"] == 4000
    box.max_bytes = box.used_bytes() + 10_000  # the windows fill the budget
    fresh = [Reading(now + i, "s", "d", "cod", float(i), "mg/L") for i in range(200)]
    box.append(fresh)
    assert box.dropped == 0  # no reading was dropped ...
    assert values(box.begin("influx:a", 1000))[-200:] == [float(i) for i in range(200)]  # ... all wait for the sink
    assert box.deleted[("windows", "budget")] > 0  # the old windows made the room
    assert not box.over_budget(0.9)
    box.close()


def test_without_a_sink_records_are_not_kept_and_old_ones_are_released(tmp_path: Path) -> None:
    path = str(tmp_path / "o.sqlite")
    box = Outbox(path)
    box.register("influx:gone")
    box.append([reading(i) for i in range(200)])
    box.close()
    box = Outbox(path)  # the sink was removed from the configuration
    assert box.set_consumers([]) == ["influx:gone"]
    assert box.count() == 0
    box.append([reading(i) for i in range(200)])
    box.append([window(time.time_ns())])
    assert box.count() == 0  # the aggregator, rules and uplink read them from memory at the commit
    assert box.side_rows()["windows"] == 1  # the uplink's periods are kept
    box.close()


def test_the_outbox_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "state" / "deep" / "o.sqlite"
        box = Outbox(str(path))
        box.register("influx:a")
        box.append([reading(1)])
        modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
        dirs = [path.parent.stat().st_mode & 0o777, path.parent.parent.stat().st_mode & 0o777]
        box.close()
    finally:
        os.umask(old)
    assert modes["o.sqlite"] == 0o600
    assert modes["o.sqlite-wal"] == 0o600
    assert modes["o.sqlite.reserve"] == 0o600
    assert dirs == [0o700, 0o700]
