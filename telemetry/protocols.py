"""The interfaces the pipeline sees: a driver produces readings through ``emit``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Protocol

from telemetry.model import Reading, Rejected


class Emit(Protocol):
    """Hands readings (and inputs rejected on the way, for the dead-letter table) to the
    pipeline; returns once both are committed to the outbox."""

    def __call__(self, readings: Sequence[Reading], rejected: Sequence[Rejected] = ()) -> Awaitable[None]: ...


class Driver(Protocol):
    """A source of readings. ``run`` returns when ``stop`` is set."""

    name: str

    async def run(self, emit: Emit, stop: asyncio.Event) -> None: ...
