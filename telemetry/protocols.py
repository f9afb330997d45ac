"""The interfaces the pipeline sees: a driver produces readings through ``emit``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from telemetry.model import Reading

Emit = Callable[[Sequence[Reading]], Awaitable[None]]
"""Hands readings to the pipeline; returns once they are committed to the outbox."""


class Driver(Protocol):
    """A source of readings. ``run`` returns when ``stop`` is set."""

    name: str

    async def run(self, emit: Emit, stop: asyncio.Event) -> None: ...
