"""The pipeline as a supervisor: a task that dies stops the daemon, quickly and visibly."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from telemetry.errors import OutboxError, TaskFailed
from telemetry.model import Reading
from tests.daemon import start_daemon
from tests.services import free_port


async def test_a_dead_committer_fails_the_emits_it_left_and_stops_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings queued behind the commit that killed the committer used to wait for ever, and
    their driver with them (until cancelled 15 s into the shutdown)."""
    config = tmp_path / "site.yaml"
    config.write_text(f'sites: [{{id: s}}]\nmetrics: {{enabled: false}}\noutbox: {{path: "{tmp_path}/o.sqlite"}}\n')
    daemon = await start_daemon(config)
    pipeline = daemon.pipeline
    appending, go_on = threading.Event(), threading.Event()
    append = pipeline.outbox.append

    def held_append(*args: Any) -> int:
        appending.set()
        go_on.wait(10)
        return append(*args)

    def broken_committer() -> None:  # the rules, the uplinks and observers are contained; this is not
        raise RuntimeError("injected: a bug in the committer")

    monkeypatch.setattr(pipeline.outbox, "append", held_append)
    monkeypatch.setattr(pipeline, "_watch_clock", broken_committer)
    now = time.time_ns()
    first = asyncio.ensure_future(pipeline.emit([Reading(now, "s", "a", "cod", 1.0)]))
    assert await asyncio.to_thread(appending.wait, 10)  # the committer is on this commit
    second = asyncio.ensure_future(pipeline.emit([Reading(now + 1, "s", "a", "cod", 2.0)]))
    await asyncio.sleep(0)  # (a loop turn, not a delay) the second emit queues its readings
    go_on.set()
    await asyncio.wait_for(first, 10)  # committed; then the committer raises and dies
    with pytest.raises(OutboxError, match="the committer has stopped"):
        await asyncio.wait_for(second, 10)  # its source keeps the readings (MQTT: unacknowledged)
    with pytest.raises(TaskFailed) as failed:
        await asyncio.wait_for(daemon.task, 30)
    assert failed.value.task == "committer"
    assert str(failed.value) == "committer stopped unexpectedly: RuntimeError('injected: a bug in the committer')"
    assert isinstance(failed.value.__cause__, RuntimeError)


async def test_a_failing_uplink_or_observer_costs_its_part_never_the_commit_loop(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: s}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
hj212:
  - {{name: city, host: 127.0.0.1, port: {free_port()}, site: s, mn: "010000A8900016F000169DC0", pw: "123456"}}
"""
    )

    def broken(*_args: object) -> None:
        raise OverflowError("cannot convert float infinity to integer")  # as RtdInterval=inf once did

    daemon = await start_daemon(path, observer=broken)
    try:
        daemon.uplink().observe = broken  # type: ignore[method-assign,assignment]
        now = time.time_ns()
        for i in range(3):  # each emit returns: committed, whatever the uplink and the observer did
            await daemon.pipeline.emit([Reading(now + i, "s", "an", "cod", 40.0 + i, "mg/L")])
        assert daemon.pipeline.outbox.backlog() == {}  # no sink here: nothing waits, nothing was lost
        committer = daemon.pipeline._committer
        assert committer is not None
        assert not committer.done()
        errors = daemon.sample(
            "telemetry_errors_total", {"component": "pipeline", "stage": "hj212", "error_type": "exception"}
        )
        assert errors == 3
        observer_errors = daemon.sample(
            "telemetry_errors_total", {"component": "pipeline", "stage": "observer", "error_type": "exception"}
        )
        assert observer_errors == 3
    finally:
        await daemon.close()


async def test_a_failing_rule_tick_or_window_close_costs_that_tick_never_the_ticker(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        f"""
sites: [{{id: s}}]
metrics: {{enabled: false}}
outbox: {{path: "{tmp_path}/outbox.sqlite"}}
rules: [{{kind: nodata, name: silent, quantity: cod, for: 1m}}]
"""
    )

    def broken(*_args: object) -> None:
        raise ZeroDivisionError("a rule's bug")

    daemon = await start_daemon(path)
    try:
        aggregator = daemon.pipeline.aggregator
        assert aggregator is not None
        aggregator.advance = broken  # type: ignore[method-assign,assignment]
        daemon.desk().rules.tick = broken  # type: ignore[method-assign,assignment]
        now = time.time_ns()
        assert daemon.pipeline.tick(now) == []  # neither raises out of the tick
        assert daemon.pipeline.tick(now + 10**9) == []
        await daemon.pipeline.emit([Reading(now, "s", "an", "cod", 40.0, "mg/L")])  # the daemon goes on
        assert not daemon.task.done()
        for stage in ("aggregator", "rules"):
            labels = {"component": "pipeline", "stage": stage, "error_type": "exception"}
            assert daemon.sample("telemetry_errors_total", labels) == 2, stage
    finally:
        await daemon.close()
