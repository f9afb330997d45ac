"""Steps of the host's wall clock (NTP stepping, ``date -s``, a VM resumed), found by
watching the wall clock against the monotonic one.

Rules and the alert lifecycle measure time between wall-clock stamps (a reading's ts,
the tick's now). Without this, a step forward counts as silence or as a condition held
for the whole step, and a step back holds every timer for as long.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from telemetry.model import Reading

NS = 1_000_000_000
STEP_NS = NS  # smaller changes are jitter or slewing, which timers may follow
SETTLE_NS = 10 * NS  # readings stamped before a step may reach the rules this long after it


class ClockWatch:
    def __init__(self, wall: Callable[[], int] = time.time_ns, mono: Callable[[], int] = time.monotonic_ns) -> None:
        self._wall = wall
        self._mono = mono
        self._offset = wall() - mono()
        self._step: tuple[int, int, int] | None = None  # monotonic and wall time when seen, size

    def check(self) -> int:
        """The size of a step since the last check, in ns (0 if there was none)."""
        mono, wall = self._mono(), self._wall()
        delta = wall - mono - self._offset
        self._offset = wall - mono
        if abs(delta) < STEP_NS:
            return 0
        self._step = (mono, wall, delta)
        return delta

    def align(self, readings: Sequence[Reading]) -> Sequence[Reading]:
        """Readings stamped before the latest step but seen after it, moved by the step so
        the rules see one timeline. Which side a reading was stamped on is told by which
        "now" its ts is nearer: the old clock's or the new one's."""
        if self._step is None:
            return readings
        seen_mono, seen_wall, delta = self._step
        if self._mono() - seen_mono > SETTLE_NS:
            self._step = None
            return readings
        old_now = seen_wall - delta
        return [r._replace(ts=r.ts + delta) if abs(r.ts - old_now) < abs(r.ts - seen_wall) else r for r in readings]
