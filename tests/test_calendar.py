"""The local calendar: day and hour bounds from local midnights, DST days included."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.calendar import HOUR_NS, NS, calendar


def utc_ns(zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone)).timestamp()) * NS


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Berlin", (2024, 3, 31), 23),
        ("Europe/Berlin", (2024, 10, 27), 25),
        ("Europe/Berlin", (2024, 6, 1), 24),
        ("Asia/Shanghai", (2026, 11, 30), 24),
        ("America/Sao_Paulo", (2018, 11, 4), 23),  # the clocks went forward at midnight: the day starts at 01:00
    ],
)
def test_a_day_runs_from_local_midnight_to_the_next(zone: str, day: tuple[int, int, int], hours: int) -> None:
    cal = calendar(zone)
    noon = utc_ns(zone, *day, 12)
    start = cal.day_start(noon)
    assert cal.day_end(start) - start == hours * HOUR_NS
    assert cal.local(start).date() == datetime(*day).date()
    assert cal.local(start - NS).date() < datetime(*day).date()  # a second before is the day before
    for ts in (start, start + HOUR_NS, cal.day_end(start) - 1):  # every instant of the day maps to it
        assert cal.day_start(ts) == start


def test_hours_follow_the_local_clock_in_a_half_hour_zone() -> None:
    cal = calendar("Asia/Kolkata")  # UTC+5:30
    ts = utc_ns("Asia/Kolkata", 2026, 11, 30, 10, 45)
    assert cal.local(cal.start("1h", ts)).strftime("%H:%M") == "10:00"
    assert cal.local(cal.start("10m", ts)).strftime("%H:%M") == "10:40"


@settings(max_examples=200)
@given(
    zone=st.sampled_from(["Europe/Berlin", "Asia/Shanghai", "America/New_York", "Australia/Lord_Howe"]),
    seconds=st.integers(1_500_000_000, 1_900_000_000),
)
def test_day_start_is_the_first_instant_of_the_local_date(zone: str, seconds: int) -> None:
    """Oracle: step back from the instant minute by minute while the local date stays the same."""
    cal = calendar(zone)
    ts = seconds * NS
    tz = ZoneInfo(zone)
    date = datetime.fromtimestamp(seconds, tz).date()
    start = cal.day_start(ts)
    assert datetime.fromtimestamp(start / NS, tz).date() == date
    assert datetime.fromtimestamp(start / NS - 60, tz).date() == date - timedelta(days=1)
    end = cal.day_end(start)
    assert datetime.fromtimestamp(end / NS, tz).date() == date + timedelta(days=1)
    assert datetime.fromtimestamp(end / NS - 60, tz).date() == date
