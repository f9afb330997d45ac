"""The daemon running in the test's event loop: one way to start and stop it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from alerts.desk import AlertDesk
from telemetry import app
from telemetry.hj212.uplink import Uplink
from telemetry.model import AlertEvent, Reading
from telemetry.pipeline import Observer, Pipeline


async def direct_db(fn: Callable[..., Any], *args: Any) -> Any:
    """``Pipeline.db`` without the outbox's thread: for tests of what the pipeline drives
    (deliveries, the alert desk) with an outbox in the test's own thread."""
    return fn(*args)


@dataclass
class RunningDaemon:
    pipeline: Pipeline
    stop: asyncio.Event
    task: asyncio.Task[None]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def uplink(self, index: int = 0) -> Uplink:
        """The HJ 212 uplink the composition root built (the pipeline sees only a ``Consumer``)."""
        uplink = self.pipeline.uplinks[index]
        assert isinstance(uplink, Uplink)
        return uplink

    def desk(self) -> AlertDesk:
        """The alert desk the composition root built (the pipeline sees only an ``AlertPath``)."""
        desk = self.pipeline.alerts
        assert isinstance(desk, AlertDesk)
        return desk


class Observed:
    """The daemon's observer in a test: every reading it committed and every alert event, and
    ``done`` set once ``until(self)`` holds (an event to await, not a sleep)."""

    def __init__(self, until: Callable[[Observed], bool]) -> None:
        self.readings: list[Reading] = []
        self.events: list[AlertEvent] = []
        self.until = until
        self.done = asyncio.Event()

    def __call__(self, readings: Sequence[Reading], events: Sequence[AlertEvent]) -> None:
        self.readings += readings
        self.events += events
        if self.until(self):
            self.done.set()


async def start_daemon(config: Path, observer: Observer | None = None) -> RunningDaemon:
    """Load ``config`` (no environment) and run the daemon until ``close()``."""
    dep = app.load(str(config), {})
    registry = CollectorRegistry()
    stop = asyncio.Event()
    ready: asyncio.Future[Pipeline] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.serve(dep, stop, observer=observer, registry=registry, pipeline_ready=ready))
    return RunningDaemon(await asyncio.wait_for(ready, 10), stop, task, registry)
