"""The pipeline as a supervisor: a task that dies stops the daemon, quickly and visibly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from telemetry.errors import OutboxError, TaskFailed
from telemetry.model import Reading
from tests.daemon import start_daemon


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

    def broken_rules(readings: Sequence[Reading]) -> list[object]:
        raise RuntimeError("injected: a bug in the rules")

    monkeypatch.setattr(pipeline.outbox, "append", held_append)
    monkeypatch.setattr(pipeline.alerts, "feed", broken_rules)
    now = time.time_ns()
    first = asyncio.ensure_future(pipeline.emit([Reading(now, "s", "a", "cod", 1.0)]))
    assert await asyncio.to_thread(appending.wait, 10)  # the committer is on this commit
    second = asyncio.ensure_future(pipeline.emit([Reading(now + 1, "s", "a", "cod", 2.0)]))
    await asyncio.sleep(0)  # (a loop turn, not a delay) the second emit queues its readings
    go_on.set()
    await asyncio.wait_for(first, 10)  # committed; then the rules raise and the committer dies
    with pytest.raises(OutboxError, match="the committer has stopped"):
        await asyncio.wait_for(second, 10)  # its source keeps the readings (MQTT: unacknowledged)
    with pytest.raises(TaskFailed) as failed:
        await asyncio.wait_for(daemon.task, 30)
    assert failed.value.task == "committer"
    assert str(failed.value) == "committer stopped unexpectedly: RuntimeError('injected: a bug in the rules')"
    assert isinstance(failed.value.__cause__, RuntimeError)
