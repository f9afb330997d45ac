"""Aggregation windows: alignment to local time, validity, flow-weighted days, Cou, restart."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from telemetry.aggregate import Aggregator, Override, Validity, rules_from
from telemetry.calendar import NS
from telemetry.model import Aggregate, Flag, Reading
from telemetry.outbox import Outbox
from tests.daemon import start_daemon

BJ = timezone(timedelta(hours=8))


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=BJ).timestamp()) * NS


def minutes(
    start: int, n: int, value: float, quantity: str = "cod", flag: Flag = Flag.N, unit: str = "mg/L"
) -> list[Reading]:
    return [Reading(start + m * 60 * NS + 10 * NS, "s", "an", quantity, value, unit, flag) for m in range(n)]


def agg(**kw: object) -> Aggregator:
    return Aggregator({"s": "Asia/Shanghai"}, grace_s=60, **kw)  # type: ignore[arg-type]


def closed(a: Aggregator, now: int, window: str) -> list[Aggregate]:
    return [x for x in a.advance(now) if x.window == window]


def test_hour_statistics_count_only_valid_values() -> None:
    a = agg()
    start = at(2026, 3, 1, 10)
    a.add(minutes(start, 50, 80.0) + minutes(start + 50 * 60 * NS, 10, 500.0, flag=Flag.C))
    [hour] = closed(a, start + 3600 * NS + 60 * NS, "1h")
    assert (hour.ts, hour.count, hour.valid_count, hour.valid) == (start, 60, 50, True)
    assert (hour.min, hour.avg, hour.max) == (80.0, 80.0, 80.0)  # the calibration values are left out


def test_hour_with_40_valid_minutes_is_invalid_and_flagged() -> None:
    a = agg()
    start = at(2026, 3, 1, 10)
    a.add(minutes(start, 40, 120.0) + minutes(start + 40 * 60 * NS, 20, 0.0, flag=Flag.M))
    [hour] = closed(a, start + 3660 * NS, "1h")
    assert (hour.valid, hour.valid_count, hour.flag) == (False, 40, Flag.M)
    assert hour.avg == 120.0


def test_override_for_an_analyzer_with_an_hourly_cycle() -> None:
    a = agg(rules=rules_from(Validity(), [Override("cod", {"hour_min_valid_minutes": 1})]))
    start = at(2026, 3, 1, 10)
    a.add([Reading(start + 30 * 60 * NS, "s", "an", "cod", 55.0, "mg/L")])
    [hour] = closed(a, start + 3660 * NS, "1h")
    assert hour.valid


def test_minute_windows() -> None:
    a = agg()
    start = at(2026, 3, 1, 10, 0)
    a.add([Reading(start + 5 * NS, "s", "an", "cod", 1.0), Reading(start + 35 * NS, "s", "an", "cod", 3.0)])
    [minute] = closed(a, start + 120 * NS + 1, "1m")
    assert (minute.ts, minute.avg, minute.count, minute.valid) == (start, 2.0, 2, True)


def test_days_close_at_local_midnight_not_utc_midnight() -> None:
    a = agg()
    # 22:00 to 02:00 Beijing time = 14:00 to 18:00 UTC; UTC midnight (08:00 local) is no boundary.
    start = at(2026, 3, 1, 22)
    a.add(minutes(start, 240, 10.0))
    days = closed(a, at(2026, 3, 3, 0) + 61 * NS, "1d")
    assert [d.ts for d in days] == [at(2026, 3, 1), at(2026, 3, 2)]
    assert [d.ts for d in days] == [
        int(datetime(2026, 2, 28, 16, tzinfo=UTC).timestamp()) * NS,
        int(datetime(2026, 3, 1, 16, tzinfo=UTC).timestamp()) * NS,
    ]
    assert [d.count for d in days] == [120, 120]
    assert [d.valid for d in days] == [False, False]  # 2 valid hours each, 20 needed


def test_day_valid_with_20_hours_and_flow_weighted_mean_and_cou() -> None:
    a = agg()
    day = at(2026, 3, 1)
    readings: list[Reading] = []
    for h in range(24):
        start = day + h * 3600 * NS
        flow = 2.0 if h < 12 else 6.0  # m3/h
        cod = 40.0 if h < 12 else 80.0
        readings += minutes(start, 60, flow, "flow", unit="m3/h")
        if h != 5:  # one hour missing: 23 valid hours
            readings += minutes(start, 60, cod)
    a.add(readings)
    out = a.advance(day + 86400 * NS + 61 * NS)
    cod_day = next(x for x in out if x.window == "1d" and x.quantity == "cod")
    flow_day = next(x for x in out if x.window == "1d" and x.quantity == "flow")
    assert cod_day.valid
    assert flow_day.cou == pytest.approx(12 * 2.0 + 12 * 6.0)  # m3
    # Flow-weighted: 11 h x 40 x 2 m3 + 12 h x 80 x 6 m3 over 11 x 2 + 12 x 6 m3.
    assert cod_day.avg == pytest.approx((11 * 40 * 2 + 12 * 80 * 6) / (11 * 2 + 12 * 6))
    assert cod_day.cou == pytest.approx((11 * 40 * 2 + 12 * 80 * 6) / 1000)  # kg
    hour = next(x for x in out if x.window == "1h" and x.quantity == "cod" and x.ts == day)
    assert hour.cou == pytest.approx(40 * 2 / 1000)


def test_late_reading_inside_grace_counts_and_after_is_counted_late() -> None:
    a = agg()
    start = at(2026, 3, 1, 10)
    a.add(minutes(start, 60, 10.0))
    assert closed(a, start + 3600 * NS + 30 * NS, "1h") == []  # still in grace
    a.add([Reading(start + 59 * 60 * NS + 50 * NS, "s", "an", "cod", 70.0)])
    [hour] = closed(a, start + 3600 * NS + 61 * NS, "1h")
    assert hour.count == 61
    a.add([Reading(start + 10 * NS, "s", "an", "cod", 1.0)])
    assert a.late == 1


def test_snapshot_and_restore_resume_open_windows() -> None:
    a = agg()
    start = at(2026, 3, 1, 10)
    a.add(minutes(start, 30, 10.0))
    snapshot = orjson.loads(a.snapshot())  # as the outbox stores it
    older = copy.deepcopy(snapshot)  # earlier versions kept valid minutes as a list of numbers
    for _, _, acc in older["open"]["1h"]:
        acc["minutes"] = [m for m in range(60) if int(acc["minutes"], 16) >> m & 1]
    assert older["open"]["1h"][0][2]["minutes"] == list(range(30))
    for saved in (snapshot, older):
        b = agg()
        b.restore(saved)
        b.add(minutes(start + 30 * 60 * NS, 30, 20.0))
        [hour] = closed(b, start + 3660 * NS, "1h")
        assert (hour.count, hour.avg, hour.valid) == (60, 15.0, True)


async def test_after_a_kill_windows_stored_since_the_snapshot_are_not_closed_again_with_less(tmp_path: Path) -> None:
    """The snapshot holds half of an hour; the whole hour closed and was stored after it; then a
    SIGKILL. On restart the restored half must not close again over the stored hour, and the
    day takes the stored hour, as it did when the hour closed."""
    yesterday = datetime.now(BJ) - timedelta(days=1)  # within the outbox's retention of windows (2 days)
    hour_start = at(yesterday.year, yesterday.month, yesterday.day, 10)
    day_start = at(yesterday.year, yesterday.month, yesterday.day)
    before = agg()
    before.add(minutes(hour_start, 30, 40.0))  # the snapshot: 30 of the hour's 60 minutes
    snapshot = before.snapshot()
    whole = agg()
    whole.add(minutes(hour_start, 60, 40.0))
    [stored] = closed(whole, hour_start + 3600 * NS + 61 * NS, "1h")  # closed after the snapshot
    path = tmp_path / "outbox.sqlite"
    box = Outbox(str(path))
    box.append([stored])
    box.save_state("aggregator", snapshot)
    box.close()
    config = tmp_path / "site.yaml"
    config.write_text(
        f"sites: [{{id: s}}]\naggregation: {{windows: [1h, 1d], grace: 60s}}\n"
        f'metrics: {{enabled: false}}\noutbox: {{path: "{path}"}}\n'
    )
    daemon = await start_daemon(config)
    try:
        pipeline = daemon.pipeline
        await pipeline.started.wait()  # state restored
        pipeline.tick(day_start + 86400 * NS + 61 * NS)  # every window of that day is due now
        await pipeline.emit([])  # the committer has taken what the tick closed
        hours = await pipeline.db(pipeline.outbox.windows, "s", "1h", hour_start, hour_start + 1)
        days = await pipeline.db(pipeline.outbox.windows, "s", "1d", day_start, day_start + 1)
    finally:
        await daemon.close()
    assert [(h.count, h.valid) for h in hours] == [(60, True)]  # not replaced by the half hour
    assert [d.count for d in days] == [60]  # the day took the stored hour
