"""The sinks against the real servers: what a refusal says, what a re-sent batch leaves behind."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from telemetry import sinks
from telemetry.config import InfluxV1, InfluxV2
from telemetry.delivery import Delivery
from telemetry.errors import SinkError
from telemetry.lineproto import line
from telemetry.metrics import Metrics
from telemetry.model import Reading
from telemetry.outbox import Outbox
from tests.daemon import direct_db
from tests.services import Influx1, Victoria

pytestmark = pytest.mark.service


def test_a_batch_sent_twice_leaves_one_sample_per_timestamp_in_victoriametrics(victoria: Victoria, unique: str) -> None:
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


class Counting:
    """A sink that counts the requests made through it."""

    def __init__(self, inner: sinks.Sink) -> None:
        self.inner = inner
        self.name, self.batch_size, self.flush_interval = inner.name, inner.batch_size, inner.flush_interval
        self.timeout = inner.timeout
        self.requests = 0

    def write(self, lines: list[str]) -> None:
        self.requests += 1
        self.inner.write(lines)

    def healthcheck(self) -> None:
        self.inner.healthcheck()

    def close(self) -> None:
        self.inner.close()


OLD = (int(time.time()) - 30 * 86400) * 10**9  # a shard of its own, a month back


def influx_with_a_string_value(influx1: Influx1, db: str) -> Counting:
    """A database where ``telemetry.value`` is a string in last month's shard (another tool
    wrote it), so every float reading there is a field type conflict; and a sink to it."""
    influx1.create(db)
    influx1.write(db, f'telemetry,device=x,quantity=cod,site=s value="broken analyzer text" {OLD}')
    return Counting(sinks.build(InfluxV1(name="local", api="v1", url=influx1.url, database=db)))


def test_influxdb_1x_names_the_lines_it_cannot_parse_and_counts_the_points_it_drops(
    influx1: Influx1, unique: str
) -> None:
    sink = influx_with_a_string_value(influx1, unique)
    good = f"telemetry,device=a,quantity=cod,site=s value=1.0 {time.time_ns()}"
    try:
        with pytest.raises(SinkError) as parse:
            sink.write(["garbage here", good, "more garbage"])
        with pytest.raises(SinkError) as conflict:
            sink.write([f"telemetry,device=a,quantity=cod,site=s value={i}.0 {OLD + i}" for i in range(1, 4)])
    finally:
        sink.close()
    assert parse.value.named == {
        0: "local: HTTP 400: unable to parse 'garbage here': invalid field format",
        2: "local: HTTP 400: unable to parse 'more garbage': invalid field format",
    }
    assert (conflict.value.named, conflict.value.dropped) == ({}, 3)
    assert "field type conflict" in str(conflict.value)


async def test_influxdb_1x_refusals_are_isolated_in_few_requests(tmp_path: Path, influx1: Influx1, unique: str) -> None:
    """A batch influxd refuses whole costs one request; a cluster of refused points in a batch
    of good ones O(log N); every good point is in InfluxDB, each refused one quarantined."""
    sink = influx_with_a_string_value(influx1, unique)
    box = Outbox(str(tmp_path / "o.sqlite"))
    delivery = Delivery(sink, box, direct_db, Metrics(CollectorRegistry()), asyncio.Event())
    box.register(delivery.consumer)
    now = time.time_ns()
    refused = [Reading(OLD + i, "s", "a", "cod", float(i), "mg/L") for i in range(1, 2001)]
    good = [Reading(now + i, "s", "b", "cod", float(i), "mg/L") for i in range(2000)]
    try:
        box.append(refused)
        assert await delivery.deliver(box.begin(delivery.consumer, 5000))
        assert sink.requests == 1  # was 3,999
        sink.requests = 0
        box.append([*good[:1000], *refused[:500], *good[1000:]])
        assert await delivery.deliver(box.begin(delivery.consumer, 5000))
        assert sink.requests <= 4 * math.ceil(math.log2(2500)) + 1
    finally:
        sink.close()
    quarantined = box.quarantined()
    assert [record for _, record, _ in quarantined] == [*refused, *refused[:500]]
    assert all("field type conflict" in reason for _, _, reason in quarantined)
    rows = await asyncio.to_thread(influx1.query, unique, "SELECT value FROM telemetry WHERE device='b'")
    assert sorted(r["value"] for r in rows) == [float(i) for i in range(2000)]
