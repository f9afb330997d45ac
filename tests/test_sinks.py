"""The sinks against the real servers: what a re-sent batch leaves behind."""

from __future__ import annotations

import time

import pytest

from telemetry import sinks
from telemetry.config import InfluxV2
from telemetry.lineproto import line
from telemetry.model import Reading
from tests.services import Victoria

pytestmark = pytest.mark.service


def test_a_batch_sent_twice_leaves_one_sample_per_timestamp_in_victoriametrics(
    victoria: Victoria, unique: str
) -> None:
    """A batch in flight when the server stalled is sent again after the time-out. InfluxDB
    overwrites the same series and timestamp; VictoriaMetrics keeps both copies unless it runs
    with ``-dedup.minScrapeInterval`` (as README says, and the fixture does)."""
    t0 = (time.time_ns() - 3600 * 10**9) // 10**6 * 10**6  # an hour ago, on whole milliseconds
    readings = [Reading(t0 + i * 10**9, unique, dev, "cod", float(i), "mg/L") for i in range(50) for dev in "ab"]
    sink = sinks.build(InfluxV2(name="vm", api="v2", url=victoria.url, bucket="plant"))
    try:
        batch = [line(r) for r in readings]
        sink.write(batch)
        sink.write(batch)  # the same batch again, as after a stall
    finally:
        sink.close()
    series = victoria.export(f'{{__name__="telemetry_value",site="{unique}"}}')
    got = {s["metric"]["device"]: list(zip(s["timestamps"], s["values"], strict=True)) for s in series}
    expected = {dev: [(r.ts // 10**6, r.value) for r in readings if r.device == dev] for dev in "ab"}
    assert got == expected  # 50 samples per series, not 100
