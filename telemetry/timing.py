"""Waiting and back-off shared by drivers, sinks and notifiers."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()


class Backoff:
    """Exponential back-off with jitter, so many daemons do not retry in step.

    The n-th delay is drawn from [base/2, base] with base = initial * 2**n capped
    at ``maximum``; a server's Retry-After, when given, wins if it is longer.
    """

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, rng: Callable[[], float] = random.random) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self.attempts = 0

    def next(self, hint: float | None = None) -> float:
        base = min(self.maximum, self.initial * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        delay: float = base * (0.5 + self._rng() / 2)
        return max(delay, min(hint, self.maximum * 5)) if hint else delay

    def reset(self) -> None:
        self.attempts = 0


async def until_committed(
    commit: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    failed: Callable[[BaseException, int], None],
    first: Awaitable[None] | None = None,
) -> int | None:
    """Await a commit (``first`` if one is already under way, else ``commit()``); while it
    fails (a broken or full disk), report it through ``failed`` (the error and how many
    attempts failed so far) and ``commit()`` again with back-off, so the data stays with its
    source instead of being dropped. The number of failed attempts once it succeeds; None if
    ``stop`` came first, the data still uncommitted."""
    retry = Backoff(initial=1.0, maximum=30.0)
    attempt = first if first is not None else commit()
    while True:
        try:
            await attempt
            return retry.attempts
        except Exception as err:  # whatever the commit raised, the data is kept and retried
            failed(err, retry.attempts + 1)
            if await wait_event(stop, retry.next()):
                return None
            attempt = commit()
