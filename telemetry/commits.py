"""When records were committed, on the daemon's own clock: how long a sink has kept them waiting.

A reading's timestamp says when it was measured, not how long it has waited for a sink:
readings stamped minutes ago (an MQTT backlog, an analyzer's sample time) would make a
healthy sink look stuck, and readings stamped ahead by a device's clock would hide a real
outage. The outbox needs no commit time for its guarantee and keeps none, so the pipeline
notes each commit here: the id of its last record and the monotonic time (a wall-clock
step moves nothing).

Memory stays bounded however long a sink is down: commits less than ``resolution`` apart
share an entry, entries every consumer has passed are released, and past ``max_entries``
neighbours are joined where that moves a commit time by a small fraction of its age (as
a log scale keeps figures). A record's commit time is taken as the earliest of its entry:
never later than it was, and off by less than a ``resolution`` for recent records, by
a few per cent of its age for old ones (a week of one commit a second: at most 4,096
entries, within 3 %). Records committed before this process started count from its start.

The pipeline writes it on the event loop; /readyz and /metrics read it from the HTTP
thread, hence the lock.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable


class CommitLog:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, resolution: float = 1.0, max_entries: int = 4096
    ) -> None:
        self.now = clock
        self.started = clock()
        self._resolution = resolution
        self._max = max(2, max_entries)
        self._before: int | None = None  # ids up to here were committed before this process started
        self._ids: list[int] = []  # last record id of each entry, ascending
        self._times: list[float] = []  # the earliest commit time of the records in that entry
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def committed(self, last_id: int, count: int) -> None:
        """``count`` records up to ``last_id`` were just committed."""
        if count <= 0:
            return
        now = self.now()
        with self._lock:
            if self._before is None:
                self._before = last_id - count
            if self._ids and now - self._times[-1] < self._resolution:
                self._ids[-1] = last_id  # the same second: one entry, its earliest time kept
                return
            self._ids.append(last_id)
            self._times.append(now)
            if len(self._ids) > self._max:
                self._thin()

    def since(self, record_id: int) -> float:
        """When ``record_id`` was committed (monotonic seconds); this process's start for a
        record committed before it, now for one not noted yet."""
        with self._lock:
            if self._before is None or record_id <= self._before:
                return self.started
            index = bisect_left(self._ids, record_id)
            if index < len(self._ids):
                return self._times[index]
        return self.now()

    def release(self, through_id: int) -> None:
        """Every consumer has taken the records up to ``through_id``: forget their entries."""
        with self._lock:
            drop = bisect_right(self._ids, through_id)
            if drop:
                del self._ids[:drop]
                del self._times[:drop]

    def _thin(self) -> None:
        """Down to half of ``max_entries``: an entry joins the older one before it (taking its
        time) where that moves its records' commit time by at most ``fraction`` of their age;
        1 % first, doubled until it is enough. Recent entries keep their ``resolution``."""
        now = self.now()
        fraction = 0.01
        while len(self._ids) > self._max // 2:
            ids, times = self._ids[:1], self._times[:1]
            for last_id, at in zip(self._ids[1:], self._times[1:], strict=True):
                if at - times[-1] <= fraction * (now - at):
                    ids[-1] = last_id
                else:
                    ids.append(last_id)
                    times.append(at)
            self._ids, self._times = ids, times
            fraction *= 2
