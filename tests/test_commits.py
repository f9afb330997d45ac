"""Commit times on the daemon's clock: exact for recent records, bounded memory for old ones."""

from __future__ import annotations

from telemetry.commits import CommitLog


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_each_record_has_the_time_of_its_commit() -> None:
    clock = FakeClock()
    log = CommitLog(clock)
    clock.t = 1010.0
    log.committed(last_id=105, count=5)  # ids 101-105; 1-100 were there before the start
    clock.t = 1020.0
    log.committed(last_id=110, count=5)
    clock.t = 1030.0
    assert [log.since(i) for i in (1, 100, 101, 105, 106, 110)] == [1000.0, 1000.0, 1010.0, 1010.0, 1020.0, 1020.0]
    assert log.since(111) == 1030.0  # not noted yet: committed just now


def test_before_any_commit_everything_counts_from_the_start() -> None:
    clock = FakeClock()
    log = CommitLog(clock)
    clock.t = 1500.0
    assert log.since(42) == 1000.0


def test_commits_within_the_resolution_share_an_entry_with_the_earliest_time() -> None:
    clock = FakeClock()
    log = CommitLog(clock, resolution=1.0)
    for i in range(1, 11):
        clock.t = 1000.0 + i * 0.05
        log.committed(last_id=i, count=1)
    assert len(log) == 1
    assert log.since(10) == 1000.05  # never later than its commit, less than a second earlier


def test_released_entries_are_forgotten_and_the_rest_stay_exact() -> None:
    clock = FakeClock()
    log = CommitLog(clock)
    for i in range(1, 101):
        clock.t = 1000.0 + i
        log.committed(last_id=i * 10, count=10)
    log.release(through_id=500)  # every sink has taken ids up to 500
    assert len(log) == 50
    assert log.since(501) == 1051.0
    assert log.since(1000) == 1100.0


def test_a_week_of_backlog_stays_bounded_and_close() -> None:
    """A sink down for a week, a commit every second: memory stays bounded, and a record's
    commit time is never later than it was and off by a small fraction of its age."""
    clock = FakeClock(0.0)
    log = CommitLog(clock, max_entries=4096)
    week = 7 * 86400
    for second in range(1, week + 1):
        clock.t = float(second)
        log.committed(last_id=second, count=1)  # record n committed at second n
    assert len(log) <= 4096
    clock.t = float(week)
    for record in [*range(1, week, 997), week - 60, week - 1, week]:
        noted = log.since(record)
        age = week - record
        assert noted <= record
        assert record - noted <= max(1.0, 0.05 * age), (record, noted)
    assert [log.since(week - i) for i in range(30)] == [week - i for i in range(30)]  # the last minute: exact
