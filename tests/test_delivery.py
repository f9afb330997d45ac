"""Delivery from the outbox to a sink: retry keeps everything, a bad point is isolated."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from telemetry.commits import CommitLog
from telemetry.delivery import Delivery
from telemetry.errors import SinkError
from telemetry.metrics import Metrics
from telemetry.model import Reading
from telemetry.outbox import Outbox
from telemetry.sinks import BAD_DATA, classify
from telemetry.timing import Backoff
from tests.daemon import direct_db
from tests.test_commits import FakeClock


class FakeSink:
    """Refuses any batch containing a line with ``poison``; fails the first ``down`` writes."""

    name = "fake"
    batch_size = 100
    flush_interval = 0.0
    timeout = 1.0

    def __init__(self, down: int = 0) -> None:
        self.down = down
        self.written: list[str] = []
        self.calls = 0

    def write(self, lines: list[str]) -> None:
        self.calls += 1
        if self.down > 0:
            self.down -= 1
            raise SinkError(self.name, "connection refused", retryable=True, reason="network")
        if any("poison" in line for line in lines):
            raise SinkError(self.name, "HTTP 400: partial write", retryable=False, reason=BAD_DATA)
        self.written += lines

    def healthcheck(self) -> None: ...

    def close(self) -> None: ...


async def run_once(sink: FakeSink, box: Outbox, metrics: Metrics) -> Delivery:
    delivery = Delivery(sink, box, direct_db, metrics, asyncio.Event())
    box.register(delivery.consumer)
    return delivery


async def test_bad_point_is_quarantined_and_its_neighbours_written(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    metrics = Metrics(CollectorRegistry())
    sink = FakeSink()
    delivery = await run_once(sink, box, metrics)
    readings = [Reading(i, "s", "d", "poison" if i == 13 else "cod", float(i)) for i in range(40)]
    box.append(readings)
    assert await delivery.deliver(box.begin(delivery.consumer, 100))
    assert len(sink.written) == 39
    assert not any("poison" in line for line in sink.written)
    [(_, record, reason)] = box.quarantined()
    assert record == readings[13]
    assert "HTTP 400" in reason
    assert box.backlog() == {"influx:fake": 0}
    assert metrics.registry.get_sample_value("telemetry_sink_points_rejected_total", {"sink": "fake"}) == 1
    assert metrics.registry.get_sample_value("telemetry_sink_points_written_total", {"sink": "fake"}) == 39


async def test_transient_failure_keeps_the_batch_for_the_next_attempt(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    metrics = Metrics(CollectorRegistry())
    sink = FakeSink(down=2)
    delivery = await run_once(sink, box, metrics)
    box.append([Reading(i, "s", "d", "cod", float(i)) for i in range(5)])
    assert not await delivery.deliver(box.begin(delivery.consumer, 100))
    assert not await delivery.deliver(box.begin(delivery.consumer, 100))
    assert box.backlog() == {"influx:fake": 5}
    assert await delivery.deliver(box.begin(delivery.consumer, 100))
    assert len(sink.written) == 5
    assert box.backlog() == {"influx:fake": 0}
    errors = {"sink": "fake", "error_type": "network"}
    assert metrics.registry.get_sample_value("telemetry_sink_write_errors_total", errors) == 2


async def test_a_batch_goes_as_soon_as_it_is_full_not_after_the_flush_interval(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    full = threading.Event()

    class Sink(FakeSink):
        batch_size, flush_interval = 10, 60.0

        def write(self, lines: list[str]) -> None:
            super().write(lines)
            full.set()

    sink = Sink()
    wake, stop = asyncio.Event(), asyncio.Event()

    delivery = Delivery(sink, box, direct_db, Metrics(CollectorRegistry()), wake)
    box.register(delivery.consumer)
    box.append([Reading(i, "s", "d", "cod", float(i)) for i in range(3)])
    runner = asyncio.create_task(delivery.run(stop))
    for _ in range(5):
        await asyncio.sleep(0)  # let it take the first 3 and start waiting for more
    assert sink.calls == 0
    box.append([Reading(i, "s", "d", "cod", float(i)) for i in range(3, 10)])
    wake.set()  # what a commit does
    assert await asyncio.to_thread(full.wait, 10)  # long before the 60 s flush interval
    assert len(sink.written) == 10
    assert sink.calls == 1
    stop.set()
    await runner


async def test_the_batch_read_ahead_is_dropped_when_the_one_before_fails(tmp_path: Path) -> None:
    """Full batches are read ahead while the previous one is written; a failed write must
    not let the next batch go first, nor lose or repeat anything."""
    box = Outbox(str(tmp_path / "o.sqlite"))
    done = threading.Event()

    class Sink(FakeSink):
        batch_size, flush_interval = 10, 60.0

        def write(self, lines: list[str]) -> None:
            self.down = 1 if self.calls == 1 else 0  # the second write fails once
            super().write(lines)
            if len(self.written) == 30:  # the last 5 wait for the flush interval, or the stop
                done.set()

    sink = Sink()
    stop = asyncio.Event()

    delivery = Delivery(sink, box, direct_db, Metrics(CollectorRegistry()), asyncio.Event(), Backoff(0.01, 0.01))
    box.register(delivery.consumer)
    box.append([Reading(i, "s", "d", "cod", float(i)) for i in range(35)])
    runner = asyncio.create_task(delivery.run(stop))
    assert await asyncio.to_thread(done.wait, 10)
    stop.set()
    await runner
    assert [float(line.split("value=")[1].split()[0]) for line in sink.written] == list(range(35))
    assert sink.calls == 5  # 10, 10 refused, the same 10 again, 10, and the last 5 at the final flush
    assert box.backlog() == {"influx:fake": 0}


async def test_lag_counts_from_the_commit_on_the_daemons_clock_not_from_the_readings_stamps(tmp_path: Path) -> None:
    """Readings stamped 5 min ago used to make a healthy sink look 300 s behind, and readings
    stamped ahead (a device clock running fast) hid a sink that had taken nothing for minutes."""
    box = Outbox(str(tmp_path / "o.sqlite"))
    clock = FakeClock(1000.0)
    commits = CommitLog(clock)
    writing, answer = threading.Event(), threading.Event()

    class Slow(FakeSink):
        batch_size = 5

        def write(self, lines: list[str]) -> None:
            writing.set()
            answer.wait(10)  # the server takes its time, then accepts
            super().write(lines)

    delivery = Delivery(Slow(), box, direct_db, Metrics(CollectorRegistry()), asyncio.Event(), commits=commits)
    delivery.cursor = box.register(delivery.consumer)
    now = time.time_ns()
    stale = [Reading(now - 300 * 10**9 + i, "s", "d", "cod", float(i)) for i in range(5)]
    ahead = [Reading(now + 600 * 10**9 + i, "s", "d", "cod", float(i)) for i in range(5)]
    commits.committed(box.append(stale), len(stale))
    clock.t = 1002.0
    commits.committed(box.append(ahead), len(ahead))
    clock.t = 1003.0
    assert delivery.lag_seconds() == 3.0
    sending = asyncio.create_task(delivery.deliver(box.begin(delivery.consumer, 5)))
    assert await asyncio.to_thread(writing.wait, 10)
    assert delivery.lag_seconds() == 3.0  # while it is being written, as before
    answer.set()
    assert await sending
    assert delivery.lag_seconds() == 1.0  # the batch stamped ahead, committed at 1002
    clock.t = 1400.0
    assert delivery.lag_seconds() == 398.0
    assert await delivery.deliver(box.begin(delivery.consumer, 5))
    assert delivery.lag_seconds() == 0.0


async def test_records_from_before_a_restart_wait_from_the_start(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    box.register("influx:fake")
    box.append([Reading(i, "s", "d", "cod", float(i)) for i in range(5)])  # before the restart
    clock = FakeClock(5000.0)
    commits = CommitLog(clock)  # the new process knows no commit times
    delivery = Delivery(
        FakeSink(down=99), box, direct_db, Metrics(CollectorRegistry()), asyncio.Event(), commits=commits
    )
    delivery.cursor = box.register(delivery.consumer)
    clock.t = 5060.0
    commits.committed(box.append([Reading(9, "s", "d", "cod", 9.0)]), 1)
    clock.t = 5100.0
    assert not await delivery.deliver(box.begin(delivery.consumer, 100))  # still down
    assert delivery.lag_seconds() == 100.0


CONFLICT = (
    'partial write: field type conflict: input field "value" on measurement "telemetry" is type float,'
    " already exists as type string dropped={}"
)


class InfluxLikeSink(FakeSink):
    """Answers as influxd 1.6 does (bodies as tests/test_sinks.py gets them from the real
    server): lines with ``poison`` are dropped and counted, lines with ``garbage`` are quoted
    as unparseable; the rest is written."""

    batch_size = 5000

    def write(self, lines: list[str]) -> None:
        self.calls += 1
        garbage = [line for line in lines if "garbage" in line]
        dropped = sum("poison" in line for line in lines)
        self.written += [line for line in lines if "poison" not in line and "garbage" not in line]
        if garbage:
            said = "\n".join(f"unable to parse '{line}': missing fields" for line in garbage)
            body = json.dumps({"error": f"partial write: {said} dropped={dropped}"})
            raise classify(self.name, 400, body, None, lines)
        if dropped:
            raise classify(self.name, 400, json.dumps({"error": CONFLICT.format(dropped)}) + "\n", None, lines)


def readings_marked(n: int, bad: set[int], word: str = "poison") -> list[Reading]:
    return [Reading(i, "s", "d", word if i in bad else "cod", float(i)) for i in range(n)]


async def isolate(box: Outbox, sink: FakeSink, readings: list[Reading]) -> Metrics:
    metrics = Metrics(CollectorRegistry())
    delivery = await run_once(sink, box, metrics)
    box.append(readings)
    assert await delivery.deliver(box.begin(delivery.consumer, len(readings)))
    assert box.backlog() == {"influx:fake": 0}
    return metrics


async def test_a_batch_refused_whole_costs_one_request_and_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """5,000 refused points used to cost 9,999 requests and 5,000 warnings; influxd's
    ``dropped=5000`` says they are all refused."""
    box = Outbox(str(tmp_path / "o.sqlite"))
    sink = InfluxLikeSink()
    readings = readings_marked(5000, set(range(5000)))
    with caplog.at_level(logging.WARNING, "telemetry.delivery"):
        metrics = await isolate(box, sink, readings)
    assert sink.calls == 1
    assert sink.written == []
    quarantined = box.quarantined()
    assert [record for _, record, _ in quarantined] == readings
    assert all("field type conflict" in reason for _, _, reason in quarantined)
    [warning] = caplog.records
    assert "refused 5000 of 5000 points" in warning.getMessage()
    assert metrics.registry.get_sample_value("telemetry_sink_points_rejected_total", {"sink": "fake"}) == 5000


@pytest.mark.parametrize("start", [0, 1234, 4900])
async def test_a_cluster_of_refused_points_costs_logarithmic_requests(tmp_path: Path, start: int) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    sink = InfluxLikeSink()
    bad = set(range(start, start + 100))
    readings = readings_marked(5000, bad)
    metrics = await isolate(box, sink, readings)
    # Each halving level has at most two parts that straddle the cluster's edges.
    assert sink.calls <= 4 * math.ceil(math.log2(5000)) + 1
    assert sorted(record.ts for _, record, _ in box.quarantined()) == sorted(bad)
    # Every good point written (some more than once: influxd writes the rest of a refused part).
    assert {float(line.split("value=")[1].split()[0]) for line in sink.written} == {
        float(i) for i in range(5000) if i not in bad
    }
    assert metrics.registry.get_sample_value("telemetry_sink_points_written_total", {"sink": "fake"}) == 4900


async def test_lines_the_server_quotes_are_set_aside_without_halving(tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "o.sqlite"))
    sink = InfluxLikeSink()
    bad = {7, 2500, 4999}
    readings = readings_marked(5000, bad, "garbage")
    await isolate(box, sink, readings)
    assert sink.calls == 2  # the batch, then the rest without the three quoted lines
    quarantined = box.quarantined()
    assert sorted(record.ts for _, record, _ in quarantined) == sorted(bad)
    for _, record, reason in quarantined:  # each with the server's words about its own line
        assert reason.startswith("fake: HTTP 400: unable to parse 'telemetry,device=d,quantity=garbage")
        assert reason.endswith(f"value={float(record.ts)!r} {record.ts}': missing fields")
    assert len(sink.written) == 4997 + 4997


async def test_a_server_that_says_only_400_still_gets_every_good_point(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bare 400 tells no more than "something in here": halving is all there is, but the
    log still has one line for the batch."""
    box = Outbox(str(tmp_path / "o.sqlite"))
    sink = FakeSink()
    sink.batch_size = 1000
    bad = {3, 500, 999}
    with caplog.at_level(logging.WARNING, "telemetry.delivery"):
        await isolate(box, sink, readings_marked(1000, bad))
    assert sorted(record.ts for _, record, _ in box.quarantined()) == sorted(bad)
    assert len(sink.written) == 997
    [warning] = caplog.records
    assert "refused 3 of 1000 points" in warning.getMessage()
