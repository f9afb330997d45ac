"""The interfaces the pipeline sees: a driver produces readings through ``emit``; the alert
path judges them and tells people. Only the composition root (``telemetry.app``) knows the
classes behind them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from telemetry.model import Aggregate, AlertEvent, Reading, Rejected


class Emit(Protocol):
    """Hands readings (and inputs rejected on the way, for the dead-letter table) to the
    pipeline; returns once both are committed to the outbox. A source that sends its own
    aggregates (an HJ 212 station's periods) hands them over as ``Aggregate`` records."""

    def __call__(
        self, readings: Sequence[Reading | Aggregate], rejected: Sequence[Rejected] = ()
    ) -> Awaitable[None]: ...


class Driver(Protocol):
    """A source of readings. ``run`` returns when ``stop`` is set."""

    name: str

    async def run(self, emit: Emit, stop: asyncio.Event) -> None: ...


Db = Callable[..., Awaitable[Any]]
"""Runs an outbox method on the outbox's own thread: ``await db(outbox.load_state, name)``."""


class AlertPath(Protocol):
    """Rules, alert lifecycle and notification (``alerts.desk.AlertDesk``), as the pipeline uses
    them: readings, closed windows and time in, rule transitions out; transitions in, messages out."""

    def attach(self, db: Db, outbox: Any) -> None:
        """Where its state is saved and commands are read (the outbox, through its thread)."""

    async def restore(self) -> None: ...

    def feed(self, readings: Sequence[Reading]) -> list[AlertEvent]:
        """Rule transitions the committed readings cause."""

    def on_windows(self, windows: Sequence[Aggregate]) -> list[AlertEvent]: ...

    def use_clock(self, now: Callable[[], int]) -> None:
        """The daemon's clock: presence (``nodata``) is judged by arrival."""

    def tick_rules(self, now_ns: int) -> list[AlertEvent]:
        """Transitions of rules about time passing (silence, the end of a plant day)."""

    def status_readings(self, now_ns: int) -> list[Reading]:
        """Figures the rules keep that operators chart (a furnace's exempt hours used, its
        furnace temperature events today), as readings to commit; at most once a minute."""

    def events(self, events: list[AlertEvent]) -> None:
        """Transitions to notify (firing and resolved)."""

    async def tick(self, now_ns: int) -> None:
        """Commands applied, messages due sent, state saved."""

    async def run(self, stop: asyncio.Event) -> None:
        """Sending, until ``stop``."""

    def clock_stepped(self, delta_ns: int) -> None: ...

    def counts(self) -> Mapping[tuple[str, str], int]:
        """What rules adjusted or ignored in the data, by (rule, reason), for the metrics."""

    async def save_rules(self) -> None:
        """Store the rules' state (a day's tonnage, timers), with the open windows' snapshot."""

    async def close(self) -> None: ...


class Consumer(Protocol):
    """An HJ 212 platform connection (``telemetry.hj212.uplink.Uplink``): it reads the committed
    readings from memory and the closed windows from the outbox, and sends what is due."""

    name: str
    now: Callable[[], int]  # the pipeline's wall clock
    wake: asyncio.Event  # set when closed windows were committed
    on_alert: Callable[[AlertEvent], None] | None

    def attach(self, db: Db, outbox: Any) -> None: ...

    def attach_aggregator(
        self, closed_through: Callable[[str], int], cycle_of: Callable[[tuple[str, str, str]], tuple[float, bool]]
    ) -> None: ...

    def observe(self, readings: Sequence[Reading]) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...
