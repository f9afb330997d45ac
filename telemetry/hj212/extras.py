"""What a reading cannot carry but a platform wants with it: the analyzer's ``SampleTime`` and
the device's ``EFlag``, as a data acquisition unit reported them for its real-time values.

The input driver (``drivers.hj212``) notes them per series and reading time; the uplink's
encoder adds them to the relayed 2011 value of the same series and time. In memory only,
bounded: real-time data is never back-filled, so nothing older than the newest value per
series is needed, and a restart loses nothing a platform would still be sent. (A period's
sample time travels in its stored window, ``Aggregate.sample_ts``.)
"""

from __future__ import annotations

from typing import NamedTuple

MAX_SERIES = 100_000


class Extra(NamedTuple):
    ts: int  # the reading's time: the extras belong to that reading only
    sample_ts: int | None
    eflag: str


class Extras:
    def __init__(self) -> None:
        self._by_series: dict[tuple[str, str, str], Extra] = {}

    def note(self, site: str, device: str, quantity: str, extra: Extra) -> None:
        if len(self._by_series) >= MAX_SERIES and (site, device, quantity) not in self._by_series:
            self._by_series.clear()  # series come from stations others run: stay bounded
        self._by_series[(site, device, quantity)] = extra

    def get(self, site: str, device: str, quantity: str, ts: int) -> Extra | None:
        extra = self._by_series.get((site, device, quantity))
        return extra if extra is not None and extra.ts == ts else None
