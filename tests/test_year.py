"""A year unattended, compressed: 400 simulated days of a station through the real pipeline.

The outbox stays bounded (its retention prunes windows, acknowledgements and diagnostics;
records leave once the sink has them), no reading is dropped, the platform gets every
period, and the process's memory does not grow with the days (``tests/year.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.year import run_year

DAYS = 400


# A hang guard, not a speed check: 400 days take 90-180 s depending on the machine, more than
# the suite's 120 s default per test.
@pytest.mark.timeout(600)
async def test_four_hundred_days_keep_the_outbox_and_memory_bounded_and_lose_nothing(tmp_path: Path) -> None:
    months = await run_year(tmp_path, days=DAYS, every_min=15, budget=64 << 20)
    last, second = months[-1], months[1]
    assert last.day == DAYS
    assert last.dropped == 0
    assert last.delivered == last.readings  # every reading reached the sink
    assert last.periods_acked >= DAYS * (24 + 24 + 1) - 3  # 2051 (hourly MinInterval), 2061 and 2031 every day
    # Bounded: after the first weeks the outbox no longer grows with the days it has seen.
    windows = [m.side_rows["windows"] for m in months[1:]]
    assert max(windows) <= windows[0] * 1.05 + 50
    assert last.outbox_bytes <= second.outbox_bytes * 1.5 + (1 << 20)
    assert last.outbox_bytes < 64 << 20
    assert last.side_rows["hj212_acked"] <= 9 * (24 + 24 + 1)  # backfill 7 days + a day, per kind
    # Memory: what the process holds after 400 days is not more than after two months by more
    # than allocator noise (the per-series state is bounded; history is not kept in memory).
    assert last.rss_bytes - second.rss_bytes < 16 << 20
    assert last.alerts <= 4  # 57 weekly excursions fired and resolved: resolved alerts are forgotten after a day
